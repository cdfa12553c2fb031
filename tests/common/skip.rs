//! The one rule for a test that needs something from outside the repository (a tool such as
//! nginx or moto_server, or root): where the tool is looked for, when its absence fails the test
//! and when it skips it, and how a skip is reported.
//!
//! - A tool is `$ENV_VAR` (scripts/test exports one per tool), else `name` on `PATH`, else
//!   `/usr/bin/name` or `/usr/sbin/name`.
//! - Under CI ([`in_ci`]) a missing tool fails the test: scripts/test installs every tool.
//! - Elsewhere the test skips: [`skip`] prints `SKIPPED: <test binary>::<test>: <why>` on stderr
//!   and appends the same line to the file named by `AWSWL_SKIP_LOG`, which scripts/test sets
//!   and reads after the Rust tests, so that the `total:` line counts the test as skipped, not
//!   as passed (for the test runner it is a pass: the test returned early).
//!
//! Standard library only: `tests/common/mod.rs` includes it, and so do the test files under
//! `worker/tests/` (another crate, which cannot use `tests/common`), with `#[path]`.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::Write;
use std::path::{Path, PathBuf};

/// True under CI: `CI` is set to anything but empty, `false` or `0`. Then every tool the tests
/// use must be there, and a missing one is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The running test, as `<test binary>::<test name>` (libtest names each test's thread after the
/// test; nextest also says it in `NEXTEST_TEST_NAME`).
pub fn test_name() -> String {
    let crate_name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        // `nginx-0123abcd…`: the binary is the test file's name plus a hash.
        .map(|stem| stem.rsplit_once('-').map_or(stem.clone(), |(name, _)| name.to_string()))
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current().name().filter(|n| *n != "main").map(str::to_string);
    let test = thread.or_else(|| std::env::var("NEXTEST_TEST_NAME").ok()).unwrap_or_else(|| "?".into());
    format!("{crate_name}::{test}")
}

/// Reports that the running test skips, and why; the caller returns right after. See the module
/// documentation for where the report goes.
pub fn skip(why: &str) {
    let line = format!("SKIPPED: {}: {why}", test_name());
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("AWSWL_SKIP_LOG").filter(|p| !p.is_empty()) {
        // One short write in append mode: lines from tests running at once do not interleave.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("AWSWL_SKIP_LOG={}: {e}", Path::new(&path).display()));
        file.write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("AWSWL_SKIP_LOG={}: {e}", Path::new(&path).display()));
    }
}

/// An external tool: `$env_var`, else `name` on `PATH`, else `/usr/bin/name` or
/// `/usr/sbin/name`. When it is missing: a failure under CI, else a [`skip`] and `None`.
/// `install` says where it comes from, e.g. "apt package nginx".
pub fn tool(env_var: &str, name: &str, install: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|dir| dir.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = std::env::var_os(env_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(on_path)
        .chain([Path::new("/usr/bin").join(name), Path::new("/usr/sbin").join(name)])
        .find(|c| c.is_file());
    if found.is_none() {
        let why = format!(
            "{name} not found (${env_var}, PATH, /usr/bin, /usr/sbin); scripts/test installs it ({install})"
        );
        assert!(!in_ci(), "{why}, and CI is set: a missing tool is a failure under CI");
        skip(&why);
    }
    found
}
