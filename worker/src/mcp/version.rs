//! The MCP protocol revisions this server speaks, and which wire features each one has.
//!
//! Every revision-dependent decision (batches, structured tool output, how argument errors are
//! reported, the request envelope) asks a [`ProtocolVersion`] instead of comparing strings.

use std::fmt;

/// One MCP protocol revision; ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// The first public revision (HTTP+SSE era; no tool annotations).
    V2024_11_05,
    /// Streamable HTTP, tool annotations, JSON-RPC batches.
    V2025_03_26,
    /// No batches; structured tool output, titles, the `MCP-Protocol-Version` header.
    V2025_06_18,
    /// Argument-validation failures reported as tool results (`isError`).
    V2025_11_25,
    /// Stateless: no handshake, `server/discover`, per-request `_meta`, `resultType`.
    V2026_07_28,
}

use ProtocolVersion::*;

impl ProtocolVersion {
    /// Every revision served, oldest first.
    pub const ALL: [ProtocolVersion; 5] = [V2024_11_05, V2025_03_26, V2025_06_18, V2025_11_25, V2026_07_28];

    /// The revision a request without `MCP-Protocol-Version` is taken to use (2025-06-18 rule).
    pub const ASSUMED_WITHOUT_HEADER: ProtocolVersion = V2025_03_26;

    /// What `initialize` offers when the client asks for a revision it cannot have.
    pub const LATEST_HANDSHAKE: ProtocolVersion = V2025_11_25;

    /// The newest revision served.
    pub const LATEST: ProtocolVersion = V2026_07_28;

    /// Reads a revision string exactly as it appears on the wire (case-sensitive).
    pub fn parse(s: &str) -> Option<ProtocolVersion> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            V2024_11_05 => "2024-11-05",
            V2025_03_26 => "2025-03-26",
            V2025_06_18 => "2025-06-18",
            V2025_11_25 => "2025-11-25",
            V2026_07_28 => "2026-07-28",
        }
    }

    /// True for revisions that carry version and capabilities in every request's `_meta`.
    pub fn is_modern(self) -> bool {
        self >= V2026_07_28
    }

    /// JSON-RPC batches exist only up to 2025-03-26.
    pub fn allows_batches(self) -> bool {
        self <= V2025_03_26
    }

    /// Tool `annotations` (read-only, destructive, … hints) exist from 2025-03-26.
    pub fn has_tool_annotations(self) -> bool {
        self >= V2025_03_26
    }

    /// `title`, `outputSchema` and `structuredContent` exist from 2025-06-18.
    pub fn has_structured_output(self) -> bool {
        self >= V2025_06_18
    }

    /// From 2025-11-25 on, arguments that fail the input schema are an `isError` tool result
    /// (so a model can correct itself); before, they were a JSON-RPC -32602 error.
    pub fn argument_errors_are_results(self) -> bool {
        self >= V2025_11_25
    }

    /// The revision `initialize` answers with: the requested one when it is a handshake
    /// revision we serve, else the latest handshake revision.
    pub fn negotiate(requested: &str) -> ProtocolVersion {
        match Self::parse(requested) {
            Some(v) if !v.is_modern() => v,
            _ => Self::LATEST_HANDSHAKE,
        }
    }

    /// Every served revision as wire strings, newest first (for discovery and error data).
    pub fn supported_strings() -> Vec<&'static str> {
        Self::ALL.iter().rev().map(|v| v.as_str()).collect()
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_revision() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ProtocolVersion::parse("2025-06-19"), None);
        assert_eq!(ProtocolVersion::parse(" 2025-06-18"), None);
        assert_eq!(ProtocolVersion::parse(""), None);
    }

    /// What `initialize` offers for what a client asks: the unit test here and the dispatcher's
    /// end-to-end test both run it.
    pub(crate) const NEGOTIATION: [(&str, &str); 8] = [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        // Modern revisions have no handshake: offer the newest handshake revision.
        ("2026-07-28", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
        ("2030-01-01", "2025-11-25"),
        ("garbage", "2025-11-25"),
    ];

    #[test]
    fn negotiation_matrix() {
        for (asked, got) in NEGOTIATION {
            assert_eq!(ProtocolVersion::negotiate(asked).as_str(), got, "asked {asked}");
        }
    }

    #[test]
    fn feature_gates_follow_the_changelogs() {
        assert!(V2024_11_05.allows_batches() && V2025_03_26.allows_batches());
        assert!(!V2025_06_18.allows_batches() && !V2026_07_28.allows_batches());
        assert!(!V2024_11_05.has_tool_annotations() && V2025_03_26.has_tool_annotations());
        assert!(!V2025_03_26.has_structured_output() && V2025_06_18.has_structured_output());
        assert!(!V2025_06_18.argument_errors_are_results());
        assert!(V2025_11_25.argument_errors_are_results());
        assert!(V2026_07_28.is_modern() && !V2025_11_25.is_modern());
    }

    #[test]
    fn supported_list_is_newest_first() {
        assert_eq!(
            ProtocolVersion::supported_strings(),
            ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
        );
    }
}
