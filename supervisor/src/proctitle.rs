//! Process titles, so `ps`, `top` and `systemctl status` say what each process is
//! (`awswhitelist: supervisor gen 3`, `awswhitelist: worker 2 gen 3 (draining)`).
//!
//! Linux has no `setproctitle(3)`. `prctl(PR_SET_NAME)` sets only `comm`, 15 bytes (what `top`
//! shows by default and `pgrep` matches). What `ps aux`, `ps -o args`, `top -c` and
//! `systemctl status` show is `/proc/<pid>/cmdline`, which the kernel reads from the process's
//! own memory: the argument strings it placed at `exec`, between `arg_start` and `arg_end`
//! (fields of `/proc/self/stat`). Without privileges (`PR_SET_MM` needs `CAP_SYS_RESOURCE`)
//! the only way to change it is to overwrite those bytes, as nginx, PostgreSQL and Python's
//! `setproctitle` do. Done narrowly here:
//! - [`init`], once, while the process is single-threaded: copies the environment to the heap
//!   (the environment strings follow the argument strings, and a title longer than the
//!   arguments needs their room), and records the area;
//! - [`set`]: writes the title at the start of the area and zeroes the rest of the argument
//!   strings (and whatever a longer title before it covered); environment strings the title
//!   does not reach stay, so `/proc/<pid>/environ` keeps most of its content.
//!
//! The kernel shows `[arg_start, arg_end)` when the byte at `arg_end - 1` is NUL (the title and
//! its NUL padding), and the string from `arg_start` up to its NUL when the title overran it.
//! Either way a reader splitting `cmdline` at NULs sees the title. Once a title is set nothing
//! may read the arguments again (`std::env::args` would return the title): read them first.

use std::ffi::CString;
use std::sync::Mutex;

/// The memory that holds the title: `len` writable bytes from `start`, the last kept NUL.
struct Area {
    start: usize,
    len: usize,
    /// Bytes the longest title so far covered, its NUL included.
    written: usize,
}

/// The area, once [`init`] found it; the lock also keeps two `set` calls from interleaving.
static AREA: Mutex<Option<Area>> = Mutex::new(None);

/// Where the kernel put the arguments and the environment of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    arg_start: usize,
    arg_end: usize,
    env_start: usize,
    env_end: usize,
}

/// Finds the argument area and moves the environment out of the way of longer titles; false
/// when the area cannot be found (titles then change `comm` only).
///
/// # Safety
/// No other thread may exist: the environment is cleared and rebuilt, and another thread
/// reading it meanwhile (`getenv`) would race with that.
pub unsafe fn init() -> bool {
    let mut area = AREA.lock().unwrap_or_else(|e| e.into_inner());
    if area.is_some() {
        return true;
    }
    let Some(b) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_stat(&s)) else {
        return false;
    };
    if !holds_argv0(b.arg_start, b.arg_end) {
        return false;
    }
    // The environment strings directly follow the arguments (the kernel's layout, and what it
    // requires to show a title that runs past `arg_end`): take their room too, once they live
    // elsewhere.
    let end = if b.env_start == b.arg_end && b.env_end > b.env_start && relocate_environment() {
        b.env_end
    } else {
        b.arg_end
    };
    // The argument strings are cleared by the first title, however short.
    *area = Some(Area { start: b.arg_start, len: end - b.arg_start, written: b.arg_end - b.arg_start });
    true
}

/// Sets the title shown in `cmdline` (truncated to the area) and `comm` (its first 15 bytes,
/// or `comm` when given). Does nothing to `cmdline` unless [`init`] succeeded.
pub fn set(title: &str, comm: Option<&str>) {
    set_comm(comm.unwrap_or(title));
    let mut area = AREA.lock().unwrap_or_else(|e| e.into_inner());
    let Some(area) = area.as_mut() else {
        return;
    };
    let bytes = render(title, area.len, area.written);
    area.written = bytes.len();
    // SAFETY: `[start, start + len)` is this process's argument (and relocated environment)
    // area, mapped writable by the kernel at exec for the whole life of the process; `init`
    // checked it holds argv[0]. No Rust reference points into it: std reads the arguments only
    // through raw pointers in `std::env::args`, which nothing calls once titles are set (module
    // doc), and the environment strings were moved to the heap first. The lock held here
    // serialises writers, and `render` writes at most `len` bytes and never a non-NUL into the
    // last one (the final NUL of the environment), so a C string read from anywhere in the area
    // ends inside it.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), area.start as *mut u8, bytes.len()) };
}

/// Sets `comm`, the 15-byte name `top` and `pgrep` show, of the calling thread (call it from
/// the main thread: its name is the process's).
fn set_comm(name: &str) {
    let cut = floor_char_boundary(name, 15);
    if let Ok(c) = CString::new(name[..cut].replace('\0', " ")) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// The bytes to write at the start of an area of `len` bytes: the title (NULs turned to
/// spaces, cut at a character boundary to leave room for one NUL), then NULs over at least the
/// first `clear` bytes (what earlier titles or the arguments covered) and one after the title.
fn render(title: &str, len: usize, clear: usize) -> Vec<u8> {
    let cut = floor_char_boundary(title, len.saturating_sub(1));
    let mut out = title[..cut].replace('\0', " ").into_bytes();
    let end = (out.len() + 1).max(clear).min(len);
    out.resize(end, 0);
    out
}

/// The largest index `<= at` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Fields 48–51 of `/proc/<pid>/stat` (the command name in field 2 may hold spaces and
/// parentheses: the fields are counted after its last `)`). `None` when absent or zero (the
/// kernel hides them from readers without ptrace access) or out of order.
fn parse_stat(stat: &str) -> Option<Bounds> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (the state).
    let field = |n: usize| fields.get(n - 3)?.parse::<usize>().ok();
    let b = Bounds { arg_start: field(48)?, arg_end: field(49)?, env_start: field(50)?, env_end: field(51)? };
    let sane = b.arg_start > 0 && b.arg_end > b.arg_start && b.env_end >= b.env_start;
    // A few pages at most for any real command line and environment; anything larger is not
    // what this module expects to overwrite.
    let small = b.env_end.saturating_sub(b.arg_start) <= 1 << 20;
    (sane && small).then_some(b)
}

/// Whether the area starts with this process's argv\[0\], NUL-terminated: the fields read
/// describe the memory they claim to.
fn holds_argv0(start: usize, end: usize) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(argv0) = std::env::args_os().next() else {
        return false;
    };
    let want = argv0.as_bytes();
    if want.len() >= end - start {
        return false;
    }
    // SAFETY: the kernel reports `[start, end)` as this process's argument strings, mapped
    // readable for its whole life; only `want.len() + 1 < end - start` bytes are read.
    let got = unsafe { std::slice::from_raw_parts(start as *const u8, want.len() + 1) };
    got[..want.len()] == *want && got[want.len()] == 0
}

/// Copies every environment variable to the heap (clear, then set again: the C library
/// allocates new strings), so the original strings may be overwritten.
fn relocate_environment() -> bool {
    let vars: Vec<_> = std::env::vars_os().collect();
    // SAFETY: `init`'s caller guarantees a single thread, so no one reads the environment
    // while it is cleared and rebuilt; clearenv only resets the C library's `environ`.
    if unsafe { nix::libc::clearenv() } != 0 {
        return false;
    }
    for (k, v) in vars {
        // SAFETY: as above, single-threaded.
        unsafe { std::env::set_var(k, v) };
    }
    true
}

/// The supervisor's title: `<name>: supervisor gen <generation>`, plus what it is doing when it
/// is not simply running (`starting`, `reloading`, `stopping`, …).
pub fn supervisor(name: &str, generation: u64, doing: Option<&str>) -> String {
    with_state(format!("{name}: supervisor gen {generation}"), doing)
}

/// A worker's title: `<name>: worker <slot> gen <generation>`, plus `(draining)` once it is.
pub fn worker(name: &str, slot: u32, generation: u64, draining: bool) -> String {
    with_state(format!("{name}: worker {slot} gen {generation}"), draining.then_some("draining"))
}

fn with_state(title: String, doing: Option<&str>) -> String {
    match doing {
        Some(d) => format!("{title} ({d})"),
        None => title,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_say_what_the_process_is() {
        assert_eq!(supervisor("awswhitelist", 3, None), "awswhitelist: supervisor gen 3");
        assert_eq!(
            supervisor("awswhitelist", 1, Some("starting")),
            "awswhitelist: supervisor gen 1 (starting)"
        );
        assert_eq!(worker("awswhitelist", 2, 3, false), "awswhitelist: worker 2 gen 3");
        assert_eq!(worker("awswhitelist", 2, 3, true), "awswhitelist: worker 2 gen 3 (draining)");
    }

    #[test]
    fn render_pads_truncates_and_keeps_a_final_nul() {
        assert_eq!(render("ab", 9, 5), b"ab\0\0\0", "the old arguments are cleared");
        assert_eq!(render("abcdef", 9, 2), b"abcdef\0", "one NUL after a longer title");
        assert_eq!(render("abcdef", 4, 2), b"abc\0", "cut to the area");
        assert_eq!(render("a\0b", 4, 4), b"a b\0");
        // Never half a character.
        assert_eq!(render("aé", 3, 3), b"a\0\0");
        assert_eq!(render("x", 0, 0), b"");
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        fields[50 - 3] = "1040".into();
        fields[51 - 3] = "1200".into();
        let stat = format!("42 (a) b (c)) {}", fields.join(" "));
        assert_eq!(
            parse_stat(&stat),
            Some(Bounds { arg_start: 1000, arg_end: 1040, env_start: 1040, env_end: 1200 })
        );
        // Hidden (zeros), truncated, or reversed: not used.
        assert_eq!(parse_stat(&stat.replace(" 1000 1040 1040 1200", " 0 0 0 0")), None);
        assert_eq!(parse_stat("42 (a) S 1 2"), None);
        assert_eq!(parse_stat(&stat.replace(" 1000 1040", " 1040 1000")), None);
    }

    #[test]
    fn this_process_has_a_readable_area() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let b = parse_stat(&stat).expect("own stat fields are visible");
        assert!(holds_argv0(b.arg_start, b.arg_end), "{b:?}");
    }
}
