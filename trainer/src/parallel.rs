//! Independent tasks over scoped threads, for the families that train several models at once
//! (forest trees, boosting outputs, one-vs-rest SVMs).

/// Runs `task(i)` for every `i` in `0..count` on up to `threads` threads (task `i` on thread
/// `i % threads`) and returns `(i, result)` in index order, so what is trained never depends on
/// the thread budget. A thread that panicked (a bug) loses its results; callers treat missing
/// indices as untrained.
pub fn map_indexed<T, F>(count: usize, threads: usize, task: F) -> Vec<(usize, T)>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let threads = threads.clamp(1, count.max(1));
    let task = &task;
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..count)
                        .step_by(threads)
                        .map(|i| (i, task(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_index_order_whatever_the_threads() {
        for threads in [0, 1, 3, 16] {
            let squares = map_indexed(7, threads, |i| i * i);
            assert_eq!(
                squares,
                (0..7).map(|i| (i, i * i)).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
        assert!(map_indexed(0, 4, |i| i).is_empty());
    }
}
