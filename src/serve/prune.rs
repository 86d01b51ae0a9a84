//! Forgets old done-markers (`work_done`, see [`crate::queue`]) and
//! processed webhook events (`inbox`): every item applied once leaves a
//! marker and every event a row, so without pruning both tables grow with
//! every webhook for as long as the daemon runs. Dead and unfinished
//! events are kept for the operator.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// How often the daemon prunes.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Deletes markers and processed events older than `keep` now and every
/// `every` until `stop`.
/// Several instances may prune the same store: the delete is idempotent.
pub async fn run(store: Store, keep: Duration, every: Duration, mut stop: watch::Receiver<bool>) {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        let before = crate::store::now_ms().saturating_sub(keep_ms);
        match prune(&store, before, &stop).await {
            Ok((0, 0)) => {}
            Ok((markers, events)) => tracing::info!(
                message = "Forgot old done-markers and processed webhook events.",
                markers,
                events,
                kept_days = keep.as_secs() / 86_400
            ),
            Err(e) => {
                tracing::warn!(message = "Could not prune done-markers; trying again later.", error = %e)
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Markers deleted per statement: a short write transaction each.
const STEP: u32 = 5_000;

/// Deletes markers and processed events older than `before_ms` a step at
/// a time, stopping early at shutdown. Returns how many of each.
async fn prune(
    store: &Store,
    before_ms: i64,
    stop: &watch::Receiver<bool>,
) -> Result<(u64, u64), crate::store::StoreError> {
    let mut markers = 0;
    loop {
        let n = store.work_done_prune_some(before_ms, STEP).await?;
        markers += n;
        if *stop.borrow() {
            return Ok((markers, 0));
        }
        if n < u64::from(STEP) {
            break;
        }
        tokio::task::yield_now().await;
    }
    let before = chrono::DateTime::from_timestamp_millis(before_ms).unwrap_or_default();
    let mut events = 0;
    loop {
        let n = store.inbox_prune_some(before, STEP).await?;
        events += n;
        if n < u64::from(STEP) || *stop.borrow() {
            return Ok((markers, events));
        }
        tokio::task::yield_now().await;
    }
}
