//! Group commit: many concurrent enqueues, one transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Enqueued, Lease, Nacked, Queue, QueueError, WorkItem};

type Reply = oneshot::Sender<Result<Enqueued, Arc<QueueError>>>;

/// Wraps a [`Queue`] so that concurrent [`Queue::enqueue`] calls share a
/// commit: each writer task takes every enqueue waiting (up to `max_batch`),
/// stores them with one [`Queue::enqueue_many`] and answers each caller
/// when that batch is durable. Nobody waits for a batch to fill: a lone
/// enqueue is committed at once, and under load the batch is whatever
/// arrived while the previous commit ran. With SQLite use one writer (the
/// database takes one write transaction at a time); with PostgreSQL or a
/// broker several writers keep several batches in flight.
///
/// Everything else is passed through to the wrapped queue.
pub struct GroupCommit {
    inner: Arc<dyn Queue>,
    sender: mpsc::Sender<(super::WorkItem, Reply)>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts `writers` writer tasks (at least one) on the current runtime.
    pub fn new(inner: Arc<dyn Queue>, max_batch: usize, writers: usize) -> GroupCommit {
        let max_batch = max_batch.max(1);
        let (sender, receiver) = mpsc::channel::<(WorkItem, Reply)>(max_batch * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = (0..writers.max(1))
            .map(|_| {
                let receiver = receiver.clone();
                let inner = inner.clone();
                tokio::spawn(async move {
                    let mut batch = Vec::with_capacity(max_batch);
                    loop {
                        {
                            let mut rx = receiver.lock().await;
                            let Some(first) = rx.recv().await else { return };
                            batch.push(first);
                            while batch.len() < max_batch {
                                match rx.try_recv() {
                                    Ok(next) => batch.push(next),
                                    Err(_) => break,
                                }
                            }
                        }
                        let (items, replies): (Vec<WorkItem>, Vec<Reply>) =
                            std::mem::take(&mut batch).into_iter().unzip();
                        match inner.enqueue_many(items).await {
                            Ok(done) => {
                                for (reply, d) in replies.into_iter().zip(done) {
                                    let _ = reply.send(Ok(d));
                                }
                            }
                            Err(e) => {
                                let e = Arc::new(e);
                                for reply in replies {
                                    let _ = reply.send(Err(e.clone()));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        GroupCommit {
            inner,
            sender,
            writers,
        }
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Arc<dyn Queue> {
        &self.inner
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        for w in &self.writers {
            w.abort();
        }
    }
}

#[async_trait]
impl Queue for GroupCommit {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn enqueue(&self, item: WorkItem) -> Result<Enqueued, QueueError> {
        let (reply, answer) = oneshot::channel();
        let closed = || QueueError::Group {
            queue: self.inner.name().to_owned(),
            message: "its writer stopped".to_owned(),
        };
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| closed())?;
        match answer.await {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(QueueError::Group {
                queue: self.inner.name().to_owned(),
                message: e.to_string(),
            }),
            Err(_) => Err(closed()),
        }
    }

    async fn enqueue_many(&self, items: Vec<WorkItem>) -> Result<Vec<Enqueued>, QueueError> {
        self.inner.enqueue_many(items).await
    }

    async fn receive(&self, max: usize) -> Result<Vec<Lease>, QueueError> {
        self.inner.receive(max).await
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        self.inner.ack(lease).await
    }

    async fn ack_many(&self, leases: &[Lease]) -> Result<usize, QueueError> {
        self.inner.ack_many(leases).await
    }

    async fn nack(&self, lease: &Lease, error: &str) -> Result<Nacked, QueueError> {
        self.inner.nack(lease, error).await
    }

    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        self.inner.dead_letter(lease, reason).await
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.inner.depth().await
    }

    async fn oldest_age(&self) -> Result<Option<Duration>, QueueError> {
        self.inner.oldest_age().await
    }

    async fn dead_count(&self) -> Result<u64, QueueError> {
        self.inner.dead_count().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    /// Records the size of each batch; a batch takes 5 ms to "commit".
    #[derive(Default)]
    struct Recorder {
        batches: StdMutex<Vec<usize>>,
    }

    #[async_trait]
    impl Queue for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        async fn enqueue_many(&self, items: Vec<WorkItem>) -> Result<Vec<Enqueued>, QueueError> {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.batches.lock().unwrap().push(items.len());
            if items.iter().any(|i| i.kind == "fail") {
                return Err(QueueError::Config {
                    key: "name",
                    reason: "refused".into(),
                });
            }
            Ok(items
                .iter()
                .map(|i| {
                    if i.work_id.ends_with("dup") {
                        Enqueued::Duplicate
                    } else {
                        Enqueued::Stored
                    }
                })
                .collect())
        }
        async fn receive(&self, _max: usize) -> Result<Vec<Lease>, QueueError> {
            Ok(Vec::new())
        }
        async fn ack_many(&self, _leases: &[Lease]) -> Result<usize, QueueError> {
            Ok(0)
        }
        async fn nack(&self, _lease: &Lease, _error: &str) -> Result<Nacked, QueueError> {
            Ok(Nacked::Dead)
        }
        async fn dead_letter(&self, _lease: &Lease, _reason: &str) -> Result<(), QueueError> {
            Ok(())
        }
        async fn depth(&self) -> Result<u64, QueueError> {
            Ok(0)
        }
        async fn oldest_age(&self) -> Result<Option<Duration>, QueueError> {
            Ok(None)
        }
        async fn dead_count(&self) -> Result<u64, QueueError> {
            Ok(0)
        }
    }

    fn item(id: String, kind: &str) -> WorkItem {
        WorkItem::new(id, kind, serde_json::json!({}))
    }

    #[tokio::test]
    async fn concurrent_enqueues_share_commits_and_each_gets_its_answer() {
        let recorder = Arc::new(Recorder::default());
        let group = Arc::new(GroupCommit::new(recorder.clone(), 64, 1));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let group = group.clone();
                let id = if i % 50 == 0 {
                    format!("w{i}-dup")
                } else {
                    format!("w{i}")
                };
                tokio::spawn(async move { group.enqueue(item(id, "webhook")).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().unwrap());
        }
        let dups = answers
            .iter()
            .filter(|a| **a == Enqueued::Duplicate)
            .count();
        assert_eq!(dups, 4, "each caller gets its own item's answer");
        let batches = recorder.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 200);
        assert!(batches.iter().all(|&b| b <= 64), "{batches:?}");
        assert!(
            batches.len() < 20,
            "200 concurrent enqueues took {} commits: {batches:?}",
            batches.len()
        );
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_enqueue_in_it() {
        let recorder = Arc::new(Recorder::default());
        let group = GroupCommit::new(recorder, 8, 1);
        let err = group
            .enqueue(item("x".into(), "fail"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("refused"), "{err}");
        // The writer survives a failed batch.
        assert_eq!(
            group.enqueue(item("y".into(), "webhook")).await.unwrap(),
            Enqueued::Stored
        );
    }
}
