//! Scoped worker threads: one per part of a job, results in part order.
//!
//! Side effects: none beyond the threads themselves; a panic in a worker
//! is re-raised on the caller's thread.

/// CPUs this process may run on (`sched_getaffinity(2)` through
/// [`std::thread::available_parallelism`]), at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Waits for a scoped thread and returns its result, re-raising its panic.
pub fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Runs `f` on every part, each on its own scoped thread (the calling
/// thread does a single part itself), and returns the results in part order.
pub fn map<P: Sync, R: Send>(parts: &[P], f: impl Fn(&P) -> R + Sync) -> Vec<R> {
    if parts.len() <= 1 {
        return parts.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = parts.iter().map(|p| s.spawn(move || f(p))).collect();
        handles.into_iter().map(join).collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_back_in_part_order() {
        let parts: Vec<u64> = (0..5).collect();
        assert_eq!(super::map(&parts, |p| p * 10), vec![0, 10, 20, 30, 40]);
        assert_eq!(super::map(&[7u64], |p| p + 1), vec![8]);
        assert!(super::map(&[] as &[u64], |p| *p).is_empty());
    }
}
