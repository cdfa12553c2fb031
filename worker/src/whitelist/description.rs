//! Rule descriptions: the operator's template filled in, checked against what EC2 accepts,
//! and the signed marker ([`super::marker`]) that records that this service made the rule and
//! when it expires appended.
//!
//! The marker lives in the description itself, so the expiry survives restarts and is visible
//! to anyone reading the group in the console:
//! `… [awswl exp=2026-11-24T20:00:00Z mac=…]`, or `… [awswl mac=…]` for a rule without expiry.

use std::time::{Duration, SystemTime};

/// EC2's limit on a rule description.
pub const MAX_LEN: usize = 255;
/// Punctuation EC2 accepts in a rule description, besides letters, digits and spaces.
const ALLOWED_PUNCTUATION: &str = "._-:/()#,@[]+=&;{}!$*";
/// The template used when neither the call nor the config gives one.
pub const DEFAULT_TEMPLATE: &str = "Added by MCP on {date} for {user}";
const PLACEHOLDERS: [&str; 4] = ["{date}", "{user}", "{reason}", "{expires}"];

/// The values a template may use.
#[derive(Debug, Clone)]
pub struct Fill<'a> {
    /// Who asked (default `MCP`).
    pub user: &'a str,
    /// Why (default `API access`).
    pub reason: &'a str,
    /// Now.
    pub now: SystemTime,
    /// When the rule expires, if it does.
    pub expires: Option<SystemTime>,
}

/// Checks a template names only known placeholders (used at config load and per call).
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        match after.find('}') {
            Some(end) if PLACEHOLDERS.contains(&&after[..=end]) => rest = &after[end + 1..],
            Some(end) => {
                return Err(format!(
                    "unknown placeholder {} in description template (known: {{date}}, {{user}}, {{reason}}, {{expires}})",
                    &after[..=end]
                ))
            }
            None => return Err("unclosed '{' in description template".to_string()),
        }
    }
    Ok(())
}

/// Fills `template`, appends `marker` (made by [`super::marker::MarkerKey::marker`]), and
/// checks the result is a description EC2 accepts. Errors name the field and the character at
/// fault.
pub fn render(template: &str, fill: &Fill<'_>, marker: &str) -> Result<String, String> {
    check_template(template)?;
    check_text("user", fill.user)?;
    check_text("reason", fill.reason)?;
    check_text("description", template)?;
    let text = template
        .replace("{date}", &rfc3339(fill.now)[..10])
        .replace("{user}", fill.user)
        .replace("{reason}", fill.reason)
        .replace("{expires}", &fill.expires.map_or("never".to_string(), rfc3339));
    let full = if text.is_empty() { marker.to_string() } else { format!("{} {marker}", text.trim_end()) };
    if full.chars().count() > MAX_LEN {
        return Err(format!(
            "the description would be {} characters; EC2 allows {MAX_LEN} (the expiry marker takes {}): shorten the description, user or reason",
            full.chars().count(),
            marker.len() + 1
        ));
    }
    Ok(full)
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
    for (i, c) in text.chars().enumerate() {
        if !(c.is_ascii_alphanumeric() || c == ' ' || ALLOWED_PUNCTUATION.contains(c)) {
            return Err(format!(
                "{field} contains {c:?} at position {}; EC2 rule descriptions allow only letters, digits, spaces and {ALLOWED_PUNCTUATION}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// The longest `duration` any rule may have, whatever the policy: 10 years (of 365.25 days,
/// so `"10y"` is accepted). Expiries stay far inside what timestamps and markers can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(315_576_000);

/// Parses `duration` (`"8h"`, `"30m"`, `"1h30m"`, `"2d"`); at least one second, at most
/// [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let too_long = || format!("duration {s:?} is longer than 10 years, the longest any rule may have");
    let d = humantime::parse_duration(s.trim()).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(),
        _ => format!("duration {s:?} is not like \"30m\", \"8h\" or \"2d\""),
    })?;
    if d < Duration::from_secs(1) {
        return Err(format!("duration {s:?} is shorter than a second"));
    }
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// UTC timestamp to the second, as written in markers.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(user: &'static str, reason: &'static str, expires: Option<SystemTime>) -> Fill<'static> {
        Fill { user, reason, now: humantime::parse_rfc3339("2026-11-24T10:00:00Z").unwrap(), expires }
    }

    const M: &str = "[awswl mac=AAAAAAAAAAAAAAAA]";

    fn render(template: &str, fill: &Fill<'_>) -> Result<String, String> {
        super::render(template, fill, M)
    }

    #[test]
    fn default_template_with_and_without_expiry() {
        let d = render(DEFAULT_TEMPLATE, &fill("alice", "API access", None)).unwrap();
        assert_eq!(d, format!("Added by MCP on 2026-11-24 for alice {M}"));
        let at = humantime::parse_rfc3339("2026-11-24T18:00:00Z").unwrap();
        let d = render("{reason} until {expires}", &fill("bob", "deploy", Some(at))).unwrap();
        assert_eq!(d, format!("deploy until 2026-11-24T18:00:00Z {M}"));
        assert_eq!(render("", &fill("bob", "deploy", None)).unwrap(), M, "the marker alone");
    }

    #[test]
    fn bad_characters_are_named_with_their_field() {
        let e = render(DEFAULT_TEMPLATE, &fill("al<ice", "x", None)).unwrap_err();
        assert!(e.contains("user") && e.contains("'<'") && e.contains("position 3"), "{e}");
        let e = render("rule \"quoted\"", &fill("a", "b", None)).unwrap_err();
        assert!(e.contains("description") && e.contains("'\"'"), "{e}");
        let e = render("{reason}", &fill("a", "ünïcode", None)).unwrap_err();
        assert!(e.contains("reason"), "{e}");
        assert!(
            render("ok ._-:/()#,@[]+=&;{}!$*", &fill("a", "b", None)).is_err(),
            "{{}} is not a placeholder"
        );
        assert!(render("ok ._-:/()#,@[]+=&;!$*", &fill("a", "b", None)).is_ok());
    }

    #[test]
    fn unknown_placeholders_and_length() {
        assert!(check_template("{date} {who}").unwrap_err().contains("{who}"));
        assert!(check_template("{date").is_err());
        let long = "x".repeat(250);
        assert!(render(&long, &fill("a", "b", None)).unwrap_err().contains("255"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(8 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(2 * 86400));
        for bad in ["", "8", "soon", "500ms", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_have_a_hard_upper_bound() {
        let ten_years = Duration::from_secs(315_576_000);
        assert_eq!(parse_duration("10y").unwrap(), ten_years);
        for huge in ["10000y", "10y 1s", "3653d", "18446744073709551615s", "99999999999999999999h"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("10 years") || e.contains("is not like"), "{huge:?}: {e}");
        }
        let e = parse_duration("10000y").unwrap_err();
        assert!(e.contains("10 years"), "{e}");
        assert!(rfc3339(SystemTime::now() + ten_years).starts_with("20"));
    }
}
