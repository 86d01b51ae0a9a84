//! `concord serve`: the daemon. One process runs the HTTP server (webhook
//! intake, health checks), the scheduler and inbox workers over one store.
//! With `[queue] kind = "amqp"` webhook events travel through the broker
//! instead of the store's inbox ([`queue_worker`]).
//!
//! On SIGTERM or SIGINT it stops taking requests and starting work, lets
//! requests in flight finish (each is answered after its event is
//! committed), lets running jobs and the inbox event being processed finish
//! within `server.shutdown_timeout_secs`, gives back whatever did not
//! finish (claimed inbox events become pending again, job leases are
//! released) and exits. Nothing acknowledged is lost.

pub mod intake;
pub mod prune;
pub mod queue_worker;
pub mod scheduler;
pub mod settings;
pub mod verify;
pub mod webhook;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use settings::{ServerSettings, WebhookSettings};

use crate::queue::{AmqpQueue, Queue, QueueError, QueueKind};
use crate::settings::Settings;
use crate::store::Store;
use crate::sync::Engine;

/// What the HTTP handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    receiver: webhook::Receiver,
    /// The broker queue when `[queue] kind = "amqp"`, checked by `/readyz`.
    queue: Option<Arc<dyn Queue>>,
    /// Set at shutdown: `/readyz` then says 503 so load balancers move on.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        store: Store,
        receiver: webhook::Receiver,
        queue: Option<Arc<dyn Queue>>,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                receiver,
                queue,
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// The daemon's own routes; [`start`] merges the admin API and `/metrics`
/// into them.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/webhooks/{system}", post(webhook::receive))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": "ok" }))).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.inner.draining.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let store_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.inner.store.ping()).await,
        Ok(Ok(()))
    );
    let mut checks = json!({ "store": if store_ok { "ok" } else { "unreachable" } });
    let mut ready = store_ok;
    if let Some(queue) = &state.inner.queue {
        let broker_ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), queue.depth()).await,
            Ok(Ok(_))
        );
        checks["broker"] = json!(if broker_ok { "ok" } else { "unreachable" });
        ready &= broker_ok;
    }
    let (status, text) = if ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        axum::Json(json!({ "status": text, "checks": checks })),
    )
        .into_response()
}

async fn not_found() -> Response {
    webhook::error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> Response {
    webhook::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// A started daemon.
pub struct Running {
    /// Where the HTTP server listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Begins a graceful shutdown (as SIGTERM does).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the daemon has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the daemon's task failed")?
    }
}

fn instance_name(settings: &ServerSettings) -> String {
    settings.instance.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "concord".to_owned());
        let tag = uuid::Uuid::now_v7().simple().to_string();
        format!("{host}-{}-{}", std::process::id(), &tag[tag.len() - 6..])
    })
}

/// Who the scheduled reconciliation acts as in allocation history.
pub const RECONCILE_ACTOR: &str = "concord serve (scheduled)";

/// The scheduled reconciliation (`[reconcile] schedule`): matches the bank
/// receipts in the store to open invoices as `concord reconcile run` does,
/// runs the data-quality rules on the outcome, then delivers what
/// `[reconcile.push]` holds — payments of confirmed and manual allocations,
/// and retries of earlier ones.
async fn reconcile_and_push(engine: &Engine, settings: &Settings) -> anyhow::Result<()> {
    let opts = crate::reconcile::stored::RunOptions {
        since: None,
        actor: RECONCILE_ACTOR.to_owned(),
        config: settings.reconcile.config(),
    };
    let report = crate::reconcile::stored::run(engine.store(), &opts).await?;
    tracing::info!(
        message = "Reconciliation run.",
        receipts = report.receipts,
        invoices = report.invoices,
        auto = report.auto,
        suggested = report.suggested,
        open = report.open,
        alerts = report.alerts_raised
    );
    crate::quality::run_after(engine.store(), settings, "scheduled reconciliation").await;
    if settings.reconcile.push.is_some() {
        let mut pushed = crate::sync::JobReport {
            job: crate::sync::engine::PAYMENT_PUSH.to_owned(),
            ..crate::sync::JobReport::default()
        };
        engine.deliver_payments(&mut pushed).await?;
        tracing::info!(
            message = "Payments delivered.",
            delivered = pushed.delivered,
            retry_later = pushed.retry_later,
            dead_lettered = pushed.dead_lettered
        );
    }
    Ok(())
}

/// Starts everything on `listener` with an engine already built (so tests
/// can give connectors of their own). Returns once the server listens.
pub async fn start(
    settings: Settings,
    engine: Arc<Engine>,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let store = engine.store().clone();
    let server = settings.server.clone();
    let schedules = if server.scheduler {
        scheduler::plan_all(&settings.jobs, &settings.reconcile)?
    } else {
        Vec::new()
    };
    // `[queue] kind = "amqp"`: webhook events go through the broker;
    // otherwise through the store's inbox (group committed).
    let broker = match settings.queue.kind {
        QueueKind::Amqp => {
            settings
                .queue
                .validate()
                .map_err(|(key, reason)| QueueError::Config { key, reason })?;
            Some(Arc::new(
                AmqpQueue::connect(settings.queue.clone(), store.clone()).await?,
            ))
        }
        QueueKind::Store => None,
    };
    let queue: Option<Arc<dyn Queue>> = broker.clone().map(|q| q as Arc<dyn Queue>);
    let (sink, writer) = match &queue {
        Some(q) => (webhook::Sink::Queue(q.clone()), None),
        None => {
            let (intake, writer) = intake::Intake::start(
                store.clone(),
                settings.webhooks.group_commit_max,
                settings.webhooks.sync_full,
            );
            (webhook::Sink::Inbox(intake), Some(writer))
        }
    };
    let receiver = webhook::Receiver::new(&settings, sink)?;
    let state = AppState::new(store.clone(), receiver, queue.clone());
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let owner = instance_name(&server);
    let lease = Duration::from_secs(server.lease_secs.max(3));
    let hooks = Arc::new(settings.webhooks.clone());
    let mut work: Vec<JoinHandle<()>> = Vec::new();
    let mut worker_owners = Vec::new();
    for i in 0..server.workers {
        if let Some(queue) = &queue {
            let w = queue_worker::QueueWorker {
                engine: engine.clone(),
                settings: hooks.clone(),
                queue: queue.clone(),
                batch: server.claim_batch.max(1) as usize,
            };
            work.push(tokio::spawn(w.run(stop_rx.clone())));
            continue;
        }
        let w = worker::Worker {
            engine: engine.clone(),
            settings: hooks.clone(),
            owner: format!("{owner}/w{i}"),
            claim_batch: server.claim_batch.max(1),
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(60_000),
            idle: Duration::from_millis(200),
        };
        worker_owners.push(w.owner.clone());
        work.push(tokio::spawn(w.run(stop_rx.clone())));
    }
    if settings.queue.keep_done_days > 0 {
        let keep = Duration::from_secs(u64::from(settings.queue.keep_done_days) * 86_400);
        work.push(tokio::spawn(prune::run(
            store.clone(),
            keep,
            prune::EVERY,
            stop_rx.clone(),
        )));
    }
    let scheduled_jobs: Vec<String> = schedules.iter().map(|s| s.job.clone()).collect();
    if !schedules.is_empty() {
        let run_engine = engine.clone();
        let run_settings = Arc::new(settings.clone());
        let sched = scheduler::Scheduler {
            store: store.clone(),
            jobs: schedules,
            owner: owner.clone(),
            lease,
            poll: Duration::from_millis(500),
            run: Arc::new(move |job, _due| {
                let engine = run_engine.clone();
                let settings = run_settings.clone();
                Box::pin(async move {
                    if job == scheduler::RECONCILE {
                        return reconcile_and_push(&engine, &settings).await;
                    }
                    let report = engine
                        .run_job(&job, crate::sync::RunOptions::default())
                        .await?;
                    tracing::info!(message = "Job run.", job = %job, pulled = report.pulled,
                        created = report.created, updated = report.updated,
                        quarantined = report.quarantined, delivered = report.delivered);
                    // The data-quality rules look at what the run changed.
                    crate::quality::run_after(engine.store(), &settings, "scheduled run").await;
                    Ok(())
                })
            }),
        };
        work.push(tokio::spawn(sched.run(stop_rx.clone())));
    }

    // The admin API (bearer tokens per role) and the Prometheus scrape.
    let app = app(state.clone())
        .merge(crate::api::router(crate::api::ApiState::new(
            engine.clone(),
            &settings,
        )))
        .merge(crate::metrics::router(store.clone()));
    let mut http_stop = stop_rx.clone();
    let timeout = Duration::from_secs(server.shutdown_timeout_secs);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        let mut stopped = stop_rx.clone();
        let server_task = tokio::spawn(async move { serve.await });
        tracing::info!(message = "concord serve is listening.", addr = %addr, instance = %owner);
        let _ = stopped.wait_for(|s| *s).await;
        state.inner.draining.store(true, Ordering::Relaxed);
        drop(state);
        tracing::info!(message = "Shutting down: finishing requests and work in flight.");
        let deadline = tokio::time::Instant::now() + timeout;
        // Requests in flight finish (each answered after its commit).
        match tokio::time::timeout_at(deadline, server_task).await {
            Ok(r) => r
                .context("the HTTP server failed")?
                .context("the HTTP server failed")?,
            Err(_) => tracing::warn!(
                message = "Some connections were still open at the shutdown deadline."
            ),
        }
        // Every intake handle is gone with the server: the writer commits
        // what is queued and ends.
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        let mut late = false;
        for mut handle in work {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                late = true;
            }
        }
        if late {
            tracing::warn!(
                message = "Work still running at the shutdown deadline was stopped and given back."
            );
        }
        // Received and not acknowledged: the broker hands it out again.
        if let Some(broker) = &broker {
            broker.close().await;
        }
        for w in &worker_owners {
            if let Err(e) = worker::queue::release(&store, w).await {
                tracing::warn!(message = "Could not give back inbox claims; they expire.", error = %e);
            }
        }
        for job in &scheduled_jobs {
            let _ = store.schedule_release(job, &owner).await;
        }
        tracing::info!(message = "concord serve stopped.");
        Ok(())
    });
    Ok(Running {
        addr,
        stop: stop_tx,
        task,
    })
}

/// `concord serve`: opens the store, binds `server.listen`, runs until
/// SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = Store::open(&settings.store).await?;
    let engine = Arc::new(Engine::new(settings.clone(), store)?);
    let listen = settings.server.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    let running = start(settings, engine.clone(), listener).await?;
    shutdown_signal().await;
    running.shutdown();
    let result = running.wait().await;
    engine.store().close().await;
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
