//! The shared table of buckets: a memory-mapped file every worker of the host maps, striped,
//! each stripe behind its own lock.
//!
//! # The shared table
//!
//! ```text
//! header (4096 B): magic|layout|stripe count · salt[2] · forced evictions
//! stripe 0 (1088 B): lock byte range (own cache line) · 64 slots of { key hash u64, tat u64 }
//! stripe 1 …
//! ```
//!
//! A client key is hashed with SHA-256 under a random salt kept in the header (so nobody can
//! aim keys at one stripe), giving a 64-bit key hash (0 means "empty slot"); its low bits pick
//! the stripe, its top 6 bits where linear probing within the stripe starts. Every check locks
//! the stripe. With the lock held, the probe runs from the start slot until the key (full 64-bit
//! comparison), an empty slot, or the end of the stripe; a missing key takes the first reusable
//! slot seen (empty or full bucket), and only if there is none the bucket with the smallest
//! `tat` (counted as a forced eviction: the table is too small for the number of clients active
//! at once, and the evicted client gets a fresh bucket — a limit can only loosen, never tighten,
//! under pressure).
//!
//! Why a lock, not a lock-free compare-exchange on the slot: a bucket is a key and a state, and
//! a slot changes owner. Lock-free, two workers can each claim a different slot for the same new
//! key (two buckets, twice the burst), and a worker can charge a slot that was re-keyed between
//! its key read and its state update. Under the stripe lock a check is a plain read-modify-write
//! of at most 64 slots, so both races are impossible; stripes (1024 by default) keep workers
//! from meeting except on the same client.
//!
//! # The stripe lock: one the kernel releases
//!
//! The lock is an open-file-description record lock (`fcntl(F_OFD_SETLKW)`, write lock) on the
//! first byte of the stripe in the table file, taken by each process on its own open of the
//! file. The kernel drops it when the holder's file is closed — and so when the holder dies,
//! however it dies (`kill -9` in the middle of a check included), before its pid can even be
//! reaped, let alone reused. Nothing in the lock names a process, so a recycled pid means
//! nothing to it. (The first version kept the holder's pid in a word of the stripe and took the
//! lock over when `kill(pid, 0)` said the holder was gone: a killed holder not yet reaped, or
//! its pid reused, hung every worker of the host on that stripe. That word is unused now.)
//!
//! Threads of one process share the open file description, and an OFD lock does not exclude
//! its own description, so a process first takes an in-process mutex for the stripe (one of
//! [`LOCAL_LOCKS`], by stripe number) and then the file lock; both are released in reverse. A
//! check costs two `fcntl` system calls more than a memory-only spin lock would: 2.4–2.7 µs per
//! lock + unlock against 4 ns for the old compare-exchange (10⁶ rounds, uncontended, on a busy
//! 2-core VM), small beside the rest of a request.
//!
//! Memory ordering: the kernel's lock hand-over orders the previous holder's writes before the
//! next holder's reads (taking and releasing a file lock are full barriers in the kernel), and
//! the in-process mutex does the same between threads. Slot words are atomics read and written
//! `Relaxed` inside the critical section. The critical section writes slots so that any prefix
//! of it leaves a valid table: a claimed slot first gets `tat = 0` (a fresh bucket) and then its
//! new key, then the charged `tat`, so a holder killed in the middle loosens one client's limit
//! by one request at most.
//!
//! The table opener checks that the file system takes OFD locks (a boot error names the file
//! if not); a lock request failing later (it cannot, short of a kernel out of lock memory) is
//! logged and the check goes on under the in-process mutex alone.
//!
//! A `tat` beyond `now + W` cannot come from this limiter (a file from an earlier boot, whose
//! monotonic clock was further along, or a limiter with a bigger burst): it is taken as a fresh
//! bucket rather than locking the client out.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use memmap2::MmapMut;

use super::gcra::{decide, decide_n, timing, Clock, Decision, Limits, MonotonicClock};

/// `"AWR"` and the layout version, in the high half of header word 0.
const MAGIC: u32 = 0x4157_5200 | LAYOUT_VERSION;
const LAYOUT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
const SLOTS_PER_STRIPE: usize = 64;
const SLOT_BYTES: usize = 16;
const LOCK_BYTES: usize = 64;
const STRIPE_BYTES: usize = LOCK_BYTES + SLOTS_PER_STRIPE * SLOT_BYTES;
const MAX_STRIPES: usize = 1 << 20;
/// Default capacity: clients whose bucket is not full, at once.
pub const DEFAULT_SLOTS: usize = 65_536;

// Header words.
const H_MAGIC_STRIPES: usize = 0;
const H_SALT: usize = 1;
const H_FORCED_EVICTIONS: usize = 3;

const EMPTY: u64 = 0;
/// In-process mutexes in front of the stripes' file locks (threads share one file description).
pub const LOCAL_LOCKS: usize = 64;

/// How a table is opened besides its limits.
#[derive(Clone)]
pub struct Options {
    /// Capacity in slots when this call creates the table (rounded up to a power-of-two number
    /// of 64-slot stripes); an existing table keeps its own.
    pub slots: usize,
    /// The time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Options {
        Options { slots: DEFAULT_SLOTS, clock: Arc::new(MonotonicClock) }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("slots", &self.slots).finish_non_exhaustive()
    }
}

/// A rate limiter whose buckets are shared with every process that opened the same file.
pub struct RateLimiter {
    /// Keeps the mapping alive; all access goes through `base`.
    _map: MmapMut,
    /// This process's own open of the table: the stripes' file locks are taken through it.
    file: File,
    /// In front of the file locks, for the threads of this process.
    local: Box<[Mutex<()>]>,
    base: NonNull<u8>,
    stripes: usize,
    salt: [u64; 2],
    limits: Limits,
    /// `T`: nanoseconds per token.
    interval_ns: u64,
    /// `W = burst · T`.
    window_ns: u64,
    clock: Arc<dyn Clock>,
}

// SAFETY: `base` points into `_map`, which lives as long as the limiter and is only ever accessed
// through atomics, so sharing or moving the limiter between threads is as safe as sharing atomics.
unsafe impl Send for RateLimiter {}
// SAFETY: as for Send: every access through `base` is an atomic operation.
unsafe impl Sync for RateLimiter {}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("stripes", &self.stripes).field("limits", &self.limits).finish()
    }
}

impl RateLimiter {
    /// Opens (creating and initialising if needed) the shared table at `path`, with the default
    /// capacity and the monotonic clock.
    pub fn open(path: impl AsRef<Path>, limits: Limits) -> io::Result<RateLimiter> {
        RateLimiter::open_with(path, limits, Options::default())
    }

    /// [`open`](Self::open) with a capacity and a clock.
    pub fn open_with(path: impl AsRef<Path>, limits: Limits, options: Options) -> io::Result<RateLimiter> {
        let path = path.as_ref();
        let (interval_ns, window_ns) = timing(limits)?;
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("rate-limit table {}: {e}", path.display()));
        let file = crate::host::state_file::open(path).map_err(context)?;
        let want = options.slots.div_ceil(SLOTS_PER_STRIPE).clamp(1, MAX_STRIPES).next_power_of_two();

        // Refuse a foreign file before writing anything into it.
        let len = file.metadata().map_err(context)?.len();
        if len > 0 {
            let mut word = [0u8; 8];
            if len < 8 || file.read_exact_at(&mut word, 0).is_err() {
                return Err(context(invalid("too short to be a rate-limit table")));
            }
            check_magic(u64::from_ne_bytes(word)).map_err(context)?;
        }
        // Only ever grows; zeroes are an empty table with no salt yet.
        crate::host::state_file::grow(&file, table_bytes(want) as u64).map_err(context)?;
        let mut map = map(&file).map_err(context)?;

        // Initialisation without a lock: the first compare-exchange from 0 wins, everyone else
        // adopts what it wrote. Every opener sized the file before its exchange.
        let header = |map: &mut MmapMut, word: usize| -> *const AtomicU64 {
            // SAFETY: the mapping is at least HEADER_BYTES long and page-aligned.
            unsafe { (map.as_mut_ptr() as *const AtomicU64).add(word) }
        };
        let mine = (u64::from(MAGIC) << 32) | want as u64;
        // SAFETY: see `header`.
        let word0 = unsafe { &*header(&mut map, H_MAGIC_STRIPES) };
        let stripes = match word0.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => want,
            Err(existing) => check_magic(existing).map_err(context)?,
        };
        if map.len() < table_bytes(stripes) {
            // Another opener made a bigger table after we mapped the file.
            map = map_at_least(&file, table_bytes(stripes)).map_err(context)?;
        }
        let mut salt = [0u64; 2];
        for (i, s) in salt.iter_mut().enumerate() {
            // SAFETY: see `header`.
            let word = unsafe { &*header(&mut map, H_SALT + i) };
            let fresh = random_u64().map_err(context)? | 1;
            *s = match word.compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(existing) => existing,
            };
        }
        let base = NonNull::new(map.as_mut_ptr()).ok_or_else(|| invalid("empty mapping"))?;
        // Refuse, at boot, a file system without OFD locks (the lock of stripe 0, taken and let go).
        ofd_lock(&file, 0, nix::libc::F_WRLCK as i16)
            .and_then(|()| ofd_lock(&file, 0, nix::libc::F_UNLCK as i16))
            .map_err(|e| {
                context(io::Error::new(e.kind(), format!("this file system does not take OFD locks: {e}")))
            })?;
        Ok(RateLimiter {
            _map: map,
            file,
            local: (0..LOCAL_LOCKS).map(|_| Mutex::new(())).collect(),
            base,
            stripes,
            salt,
            limits,
            interval_ns,
            window_ns,
            clock: options.clock,
        })
    }

    /// The limits this limiter applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Slots in the table (its capacity in clients whose bucket is not full).
    pub fn capacity(&self) -> usize {
        self.stripes * SLOTS_PER_STRIPE
    }

    /// How many times, since the table was created, a client's bucket had to be given away
    /// before it was full because a stripe was full (the table is too small).
    pub fn forced_evictions(&self) -> u64 {
        self.header(H_FORCED_EVICTIONS).load(Ordering::Relaxed)
    }

    /// Takes one token from `key`'s bucket, or says how long until there is one.
    pub fn check(&self, key: &str) -> Decision {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens from `key`'s bucket at once, or none: a refusal takes nothing. More than
    /// the burst is never allowed (compare `n` with [`limits`](Self::limits) first to say so).
    pub fn check_n(&self, key: &str, n: u32) -> Decision {
        self.check_n_inside(key, n, || {})
    }

    /// [`check`](Self::check), calling `inside` in the middle of the critical section (the
    /// stripe locked, the key's slot claimed, its charge not yet written). A test hook: a test
    /// makes a process stall there and kills it, as if a worker died holding the lock.
    pub fn check_inside(&self, key: &str, inside: impl FnOnce()) -> Decision {
        self.check_n_inside(key, 1, inside)
    }

    fn check_n_inside(&self, key: &str, n: u32, inside: impl FnOnce()) -> Decision {
        let hash = self.hash(key);
        let stripe = (hash as usize) & (self.stripes - 1);
        let _guard = self.lock(stripe);
        let now = self.clock.now_ns();
        let (key_word, tat_word) = self.find_or_claim(stripe, hash, now);
        debug_assert_eq!(key_word.load(Ordering::Relaxed), hash);
        inside();
        let (decision, tat) =
            decide_n(tat_word.load(Ordering::Relaxed), now, self.interval_ns, self.window_ns, n);
        tat_word.store(tat, Ordering::Relaxed);
        decision
    }

    /// Whether `key` could take one token now, without taking it (nor giving the key a slot):
    /// the decision [`check`](Self::check) would make, with nothing charged.
    pub fn peek(&self, key: &str) -> Decision {
        let hash = self.hash(key);
        let stripe = (hash as usize) & (self.stripes - 1);
        let _guard = self.lock(stripe);
        let now = self.clock.now_ns();
        let tat = match self.probe(stripe, hash, now) {
            Ok(index) => self.slot(stripe, index).1.load(Ordering::Relaxed),
            Err(_) => 0,
        };
        decide(tat, now, self.interval_ns, self.window_ns).0
    }

    /// With the stripe locked: the slot holding `hash`, claimed for it if it had none.
    fn find_or_claim(&self, stripe: usize, hash: u64, now: u64) -> (&AtomicU64, &AtomicU64) {
        let (reusable, oldest) = match self.probe(stripe, hash, now) {
            Ok(index) => return self.slot(stripe, index),
            Err(free) => free,
        };
        let index = match (reusable, oldest) {
            (Some(index), _) => index,
            (None, Some((index, _))) => {
                self.header(H_FORCED_EVICTIONS).fetch_add(1, Ordering::Relaxed);
                index
            }
            (None, None) => unreachable!("a stripe has slots"),
        };
        let (key, tat) = self.slot(stripe, index);
        // In this order, a holder dying halfway leaves either the old key or the new one with a
        // fresh bucket: a limit loosened by one request at most, never a wrong charge.
        tat.store(0, Ordering::Relaxed);
        key.store(hash, Ordering::Relaxed);
        (key, tat)
    }

    /// With the stripe locked: the index of the slot holding `hash`, or where it could go (the
    /// first reusable slot, and the slot with the oldest `tat`).
    #[allow(clippy::type_complexity)]
    fn probe(
        &self,
        stripe: usize,
        hash: u64,
        now: u64,
    ) -> Result<usize, (Option<usize>, Option<(usize, u64)>)> {
        let start = (hash >> 58) as usize;
        let mut reusable = None;
        let mut oldest: Option<(usize, u64)> = None;
        for i in 0..SLOTS_PER_STRIPE {
            let index = (start + i) % SLOTS_PER_STRIPE;
            let (key, tat) = self.slot(stripe, index);
            match key.load(Ordering::Relaxed) {
                k if k == hash => return Ok(index),
                EMPTY => {
                    // Keys are only ever placed before the first empty slot of their probe
                    // sequence and slots are never emptied, so the key is not further on.
                    reusable.get_or_insert(index);
                    break;
                }
                _ => {
                    let t = tat.load(Ordering::Relaxed);
                    if t <= now {
                        reusable.get_or_insert(index);
                    }
                    match oldest {
                        Some((_, o)) if o <= t => {}
                        _ => oldest = Some((index, t)),
                    }
                }
            }
        }
        Err((reusable, oldest))
    }

    fn hash(&self, key: &str) -> u64 {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&self.salt[0].to_le_bytes());
        ctx.update(&self.salt[1].to_le_bytes());
        ctx.update(key.as_bytes());
        let digest = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        match u64::from_le_bytes(first) {
            EMPTY => 1,
            h => h,
        }
    }

    fn header(&self, word: usize) -> &AtomicU64 {
        debug_assert!(word * 8 < HEADER_BYTES);
        // SAFETY: the header is HEADER_BYTES long at the page-aligned start of the mapping.
        unsafe { &*(self.base.as_ptr() as *const AtomicU64).add(word) }
    }

    /// Takes the stripe's lock: the in-process mutex, then the file lock (waiting as long as
    /// another process holds it; the kernel releases it if that process dies).
    fn lock(&self, stripe: usize) -> StripeLock<'_> {
        debug_assert!(stripe < self.stripes);
        let local = self.local[stripe % LOCAL_LOCKS].lock().unwrap_or_else(PoisonError::into_inner);
        let offset = lock_offset(stripe);
        let file = match ofd_lock(&self.file, offset, nix::libc::F_WRLCK as i16) {
            Ok(()) => Some(&self.file),
            Err(e) => {
                tracing::error!(error = %e, "cannot lock a rate-limit table stripe; checking under the process lock only");
                None
            }
        };
        StripeLock { file, offset, _local: local }
    }

    fn slot(&self, stripe: usize, index: usize) -> (&AtomicU64, &AtomicU64) {
        debug_assert!(stripe < self.stripes && index < SLOTS_PER_STRIPE);
        let offset = HEADER_BYTES + stripe * STRIPE_BYTES + LOCK_BYTES + index * SLOT_BYTES;
        // SAFETY: stripe < stripes, the mapping holds table_bytes(stripes), and slot offsets are
        // multiples of 16 from a page-aligned base.
        unsafe {
            let p = self.base.as_ptr().add(offset) as *const AtomicU64;
            (&*p, &*p.add(1))
        }
    }

    #[cfg(test)]
    fn stripe_of(&self, key: &str) -> usize {
        (self.hash(key) as usize) & (self.stripes - 1)
    }
}

fn table_bytes(stripes: usize) -> usize {
    HEADER_BYTES + stripes * STRIPE_BYTES
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The stripe count recorded in header word 0, if the word is ours (or still 0).
fn check_magic(word: u64) -> io::Result<usize> {
    if word == 0 {
        return Ok(0);
    }
    if (word >> 32) as u32 != MAGIC {
        return Err(invalid("not a rate-limit table of this layout version"));
    }
    let stripes = (word as u32) as usize;
    if stripes == 0 || !stripes.is_power_of_two() || stripes > MAX_STRIPES {
        return Err(invalid("corrupt rate-limit table header"));
    }
    Ok(stripes)
}

fn map(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is only accessed through mappings as aligned atomics, by processes of
    // this program; it only ever grows, so the mapped range stays backed.
    unsafe { MmapMut::map_mut(file) }
}

fn map_at_least(file: &File, bytes: usize) -> io::Result<MmapMut> {
    let map = map(file)?;
    if map.len() < bytes {
        return Err(invalid("shorter than its header says"));
    }
    Ok(map)
}

fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| io::Error::other("the system random generator failed"))?;
    Ok(u64::from_ne_bytes(bytes))
}

/// Where stripe `stripe`'s file lock is: the first byte of the stripe.
fn lock_offset(stripe: usize) -> i64 {
    (HEADER_BYTES + stripe * STRIPE_BYTES) as i64
}

/// Takes (`F_WRLCK`, waiting) or releases (`F_UNLCK`) the OFD lock on the byte at `offset`.
fn ofd_lock(file: &File, offset: i64, kind: i16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid `flock`; `l_pid` must be 0 for OFD locks.
    let mut range: nix::libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = kind;
    range.l_whence = nix::libc::SEEK_SET as i16;
    range.l_start = offset;
    range.l_len = 1;
    loop {
        // SAFETY: a valid descriptor and a valid `flock` that outlives the call.
        if unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_OFD_SETLKW, &range) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Holds a stripe lock; frees it when dropped (the file lock first, then the process's mutex).
struct StripeLock<'a> {
    /// `None` when the file lock could not be taken.
    file: Option<&'a File>,
    offset: i64,
    _local: MutexGuard<'a, ()>,
}

impl Drop for StripeLock<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.file {
            if let Err(e) = ofd_lock(file, self.offset, nix::libc::F_UNLCK as i16) {
                tracing::error!(error = %e, "cannot unlock a rate-limit table stripe");
            }
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
