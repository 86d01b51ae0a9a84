//! Work spread over the cores, with results in input order so that they
//! never depend on how the work was split.

/// Maps `f` over `items` on every core, results in input order; each
/// thread threads its own state (made by `init`) through its calls, and
/// the states come back in order.
pub(crate) fn par_map<T: Sync, U: Send, S: Send>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&T, &mut S) -> U + Sync,
) -> (Vec<U>, Vec<S>) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / 4096 + 1);
    if threads <= 1 {
        let mut state = init();
        let out = items.iter().map(|x| f(x, &mut state)).collect();
        return (out, vec![state]);
    }
    let chunk = items.len().div_ceil(threads);
    let (f, init) = (&f, &init);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut state = init();
                    let out = part.iter().map(|x| f(x, &mut state)).collect::<Vec<U>>();
                    (out, state)
                })
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        let mut states = Vec::with_capacity(handles.len());
        for h in handles {
            match h.join() {
                Ok((v, state)) => {
                    out.extend(v);
                    states.push(state);
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        (out, states)
    })
}
