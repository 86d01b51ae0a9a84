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
