//! The allocators' tunables: the C allocator keeps the memory librdkafka
//! frees for its next messages ([`keep_freed_memory`]); mimalloc gets no
//! huge pages ([`no_huge_pages`]), gives back the pages a service frees at
//! once ([`purge_freed_at_once`]) and what a restore freed
//! ([`give_back_freed`]).

/// Keeps memory that librdkafka frees for its next messages; call it first
/// thing in `main`. librdkafka allocates every message it queues with the C
/// allocator, not Rust's, and frees it once delivered; glibc gives the free
/// top of each thread's heap back to the system at once and grows a heap
/// page by page, so a producer writing a million rows faults the same
/// memory in again and again (70% of a hand-off's page faults in the worker
/// threads; about 12% of its time). With this, glibc keeps up to 1 GiB free
/// at the top of a heap and grows one by 64 MiB of address space (memory is
/// used only where touched). `MALLOC_TRIM_THRESHOLD_` or `MALLOC_TOP_PAD_`
/// in the environment win over it.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        if !set("MALLOC_TRIM_THRESHOLD_") && !set("MALLOC_TOP_PAD_") {
            // SAFETY: mallopt only changes glibc's tunables; called before
            // any thread of ours allocates with the C allocator.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        }
    }
}

/// Keeps transparent huge pages out of this process; call it first thing
/// in `main`. mimalloc commits its 1 GiB arenas eagerly on Linux and asks
/// for huge pages there (`madvise`), so every 2 MiB page it touches is
/// resident whole: a 28-day backfill peaked at 52 MiB with them and 33 MiB
/// without, in the same time (BENCHMARKS.md, section 7). The first arena
/// exists before `main`, so mimalloc's own option would come too late; the
/// kernel's per-process switch applies to every later page fault.
pub fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Gives the memory this thread freed back to the system now, rather than
/// when the thread next allocates; a worker calls it once a restore is
/// done. A restore allocates and frees several times the state it leaves
/// (rows decoded, exchanged, held until their time is complete), and
/// mimalloc returns freed pages only as a thread goes on allocating: an
/// idle service kept 50 MiB more resident for a 1 M walk-in history than
/// it held (BENCHMARKS.md, section 7). Harmless if mimalloc is not the
/// global allocator (nothing of its heap is in use).
pub fn give_back_freed() {
    // SAFETY: collects this thread's mimalloc heap; touches no live memory.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`; the
/// same in mimalloc 2 and 3, which this build uses).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 3's default purge delay (ms).
const PURGE_DELAY_MS: std::os::raw::c_long = 1_000;

/// While a restore runs: mimalloc gives a page back to the system as soon
/// as it is free, instead of a second later at the freeing thread's next
/// allocation (never, for a thread that goes idle). A restore frees several
/// times the state it builds; with the delay, a service restored from 1 M
/// walk-ins held 126-139 MiB 15 s later and up to 260 MiB when it became
/// ready, without it 112 MiB at both (BENCHMARKS.md, section 7). Applies
/// to the whole process until [`purge_freed_later`];
/// `MIMALLOC_PURGE_DELAY` in the environment wins over both.
pub fn purge_freed_at_once() {
    set_purge_delay(0);
}

/// After a restore: mimalloc's default again (freed pages given back
/// a second later, in batches): what streaming frees is reused soon, and
/// giving each page back at once costs time on the workers.
pub fn purge_freed_later() {
    set_purge_delay(PURGE_DELAY_MS);
}

fn set_purge_delay(ms: std::os::raw::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; any thread may, at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set is mimalloc's purge delay: its default is 1,000 ms
    /// (its neighbours' are 0); it is 0 during a restore and the default
    /// after.
    #[test]
    fn pages_are_purged_at_once_while_restoring() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one of mimalloc's options.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), PURGE_DELAY_MS);
        purge_freed_at_once();
        assert_eq!(get(), 0);
        purge_freed_later();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
