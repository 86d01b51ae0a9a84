//! Group commit for the inbox: one writer task takes every event waiting,
//! stores them in one transaction, and answers each request only after that
//! transaction committed. Many concurrent webhooks cost one commit (one
//! fsync) instead of one each, and no request is acknowledged before its
//! event is durable.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{InboxEvent, Store};

/// What storing an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New, with its inbox id.
    New(i64),
    /// An event with this id was stored before.
    Duplicate,
}

/// The store could not take the event; nothing is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

struct Pending {
    event: InboxEvent,
    reply: oneshot::Sender<Result<Stored, Unavailable>>,
}

/// The handle requests use. Cheap to clone; the writer stops when every
/// handle is dropped and what was queued is committed.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the writers. `max_batch` bounds one transaction. SQLite gets
    /// one writer (it has one writer anyway); PostgreSQL a few, so one
    /// batch's commit overlaps the next batch's insert.
    pub fn start(
        store: Store,
        max_batch: usize,
        sync_full: bool,
    ) -> (Intake, tokio::task::JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let writers = match store.backend() {
            crate::store::Backend::Sqlite => 1,
            crate::store::Backend::Postgres => 4,
        };
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let rx = Arc::new(Mutex::new(rx));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..writers {
            tasks.spawn(write_loop(store.clone(), rx.clone(), max_batch, sync_full));
        }
        let all = tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
        (Intake { tx }, all)
    }

    /// Stores one event; returns once it is committed (or known not to be).
    pub async fn push(&self, event: InboxEvent) -> Result<Stored, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| Unavailable)?;
        answer.await.map_err(|_| Unavailable)?
    }
}

async fn write_loop(
    store: Store,
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
    sync_full: bool,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        // Take what is waiting, then let another writer take the next batch
        // while this one commits.
        let got = rx.lock().await.recv_many(&mut batch, max_batch).await;
        if got == 0 {
            break;
        }
        let (events, replies): (Vec<InboxEvent>, Vec<_>) =
            batch.drain(..).map(|p| (p.event, p.reply)).unzip();
        match store.inbox_push_many(&events, sync_full).await {
            Ok(ids) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(match id {
                        Some(id) => Stored::New(id),
                        None => Stored::Duplicate,
                    }));
                }
            }
            Err(e) => {
                tracing::error!(message = "Webhook events could not be stored; the senders are told to retry.", events = events.len(), error = %e);
                for reply in replies {
                    let _ = reply.send(Err(Unavailable));
                }
            }
        }
    }
}
