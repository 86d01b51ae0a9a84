//! Prometheus metrics, served at `/metrics` in the Prometheus text format
//! (version 0.0.4).
//!
//! Two kinds:
//! - **events**, counted in this process as they happen: records pulled,
//!   quarantined and conflicted per job and source system ([`job_run`]),
//!   records pushed per job, target and outcome and the push latency per
//!   target ([`push`]), webhook requests per system and outcome
//!   ([`webhook`]);
//! - **state**, read from the store at each scrape ([`render`]): queue
//!   depth per queue and status and the age of the oldest pending entry,
//!   dead letters per target, open conflicts per entity, open alerts per
//!   rule and severity, open quarantine per system. Several instances on one
//!   PostgreSQL store report the same state; sum the event counters, not the
//!   state gauges.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `concord_records_pulled_total` | counter | job, system |
//! | `concord_records_quarantined_total` | counter | job, system |
//! | `concord_records_conflicted_total` | counter | job, system |
//! | `concord_records_pushed_total` | counter | job, system, outcome (`delivered`, `rejected`, `retry`, `failed`) |
//! | `concord_push_duration_seconds` | histogram | system |
//! | `concord_webhook_requests_total` | counter | system, outcome |
//! | `concord_queue_depth` | gauge | queue (`outbox`, `inbox`), status |
//! | `concord_queue_oldest_age_seconds` | gauge | queue (pending entries) |
//! | `concord_dead_letters` | gauge | system |
//! | `concord_open_conflicts` | gauge | entity |
//! | `concord_open_alerts` | gauge | rule, severity |
//! | `concord_open_quarantine` | gauge | system |

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::connector::{ConnectorError, PushOutcome};
use crate::store::{Store, StoreError};
use crate::sync::JobReport;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobSystem {
    job: String,
    system: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Pushed {
    job: String,
    system: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct System {
    system: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SystemOutcome {
    system: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStatus {
    queue: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Entity {
    entity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleSeverity {
    rule: String,
    severity: String,
}

/// Push latency buckets: 5 ms … ~20 s.
#[derive(Clone)]
struct PushBuckets;

impl MetricConstructor<Histogram> for PushBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 13))
    }
}

struct Metrics {
    registry: Registry,
    pulled: Family<JobSystem, Counter>,
    quarantined: Family<JobSystem, Counter>,
    conflicted: Family<JobSystem, Counter>,
    pushed: Family<Pushed, Counter>,
    push_seconds: Family<System, Histogram, PushBuckets>,
    webhooks: Family<SystemOutcome, Counter>,
    queue_depth: Family<QueueStatus, Gauge>,
    queue_oldest: Family<Queue, Gauge<f64, AtomicU64>>,
    dead_letters: Family<System, Gauge>,
    open_conflicts: Family<Entity, Gauge>,
    open_alerts: Family<RuleSeverity, Gauge>,
    open_quarantine: Family<System, Gauge>,
    /// One scrape at a time sets the state gauges and encodes them.
    scrape: tokio::sync::Mutex<()>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("concord");
        let m = Metrics {
            registry: Registry::default(),
            pulled: Family::default(),
            quarantined: Family::default(),
            conflicted: Family::default(),
            pushed: Family::default(),
            push_seconds: Family::new_with_constructor(PushBuckets),
            webhooks: Family::default(),
            queue_depth: Family::default(),
            queue_oldest: Family::default(),
            dead_letters: Family::default(),
            open_conflicts: Family::default(),
            open_alerts: Family::default(),
            open_quarantine: Family::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        registry.register(
            "records_pulled",
            "Records read from a job's source (including those quarantined)",
            m.pulled.clone(),
        );
        registry.register(
            "records_quarantined",
            "Records a job could not take in and set aside with a reason",
            m.quarantined.clone(),
        );
        registry.register(
            "records_conflicted",
            "Conflicts a job opened for an operator",
            m.conflicted.clone(),
        );
        registry.register(
            "records_pushed",
            "Changes pushed to a target, by outcome",
            m.pushed.clone(),
        );
        registry.register(
            "push_duration_seconds",
            "Time one push request to a target took",
            m.push_seconds.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests received, by system and outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "queue_depth",
            "Entries in the store's queues, by status",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest pending entry of a queue",
            m.queue_oldest.clone(),
        );
        registry.register(
            "dead_letters",
            "Deliveries given up on, waiting for a replay",
            m.dead_letters.clone(),
        );
        registry.register(
            "open_conflicts",
            "Conflicts waiting for an operator",
            m.open_conflicts.clone(),
        );
        registry.register(
            "open_alerts",
            "Open data-quality alerts",
            m.open_alerts.clone(),
        );
        registry.register(
            "open_quarantine",
            "Quarantined records not replayed yet",
            m.open_quarantine.clone(),
        );
        Metrics { registry, ..m }
    })
}

/// Counts what one job run read: called once per run by the engine, with
/// the run's final report.
pub fn job_run(source_system: &str, report: &JobReport) {
    let m = metrics();
    let labels = JobSystem {
        job: report.job.clone(),
        system: source_system.to_owned(),
    };
    m.pulled.get_or_create(&labels).inc_by(report.pulled as u64);
    m.quarantined
        .get_or_create(&labels)
        .inc_by(report.quarantined as u64);
    m.conflicted
        .get_or_create(&labels)
        .inc_by(report.conflicts as u64);
}

/// Counts one push request to `target` and how long it took.
pub fn push(
    job: &str,
    target: &str,
    elapsed: Duration,
    outcomes: &Result<Vec<PushOutcome>, ConnectorError>,
    sent: usize,
) {
    let m = metrics();
    m.push_seconds
        .get_or_create(&System {
            system: target.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
    let count = |outcome: &'static str, n: usize| {
        if n > 0 {
            m.pushed
                .get_or_create(&Pushed {
                    job: job.to_owned(),
                    system: target.to_owned(),
                    outcome,
                })
                .inc_by(n as u64);
        }
    };
    match outcomes {
        Ok(outcomes) => {
            let (mut delivered, mut rejected, mut retry) = (0, 0, 0);
            for o in outcomes {
                match o {
                    PushOutcome::Created { .. } | PushOutcome::Updated { .. } => delivered += 1,
                    PushOutcome::Rejected { .. } => rejected += 1,
                    PushOutcome::RetryLater { .. } => retry += 1,
                }
            }
            count("delivered", delivered);
            count("rejected", rejected);
            count("retry", retry);
        }
        Err(_) => count("failed", sent),
    }
}

/// Counts one webhook request. `system` is the configured system the
/// request was addressed to — pass `"unknown"` for a path naming no
/// configured system, so a caller cannot grow the label set. `outcome` is
/// one of a small fixed set, e.g. `accepted`, `duplicate`,
/// `invalid_signature`, `expired`, `too_large`, `bad_request`, `error`.
pub fn webhook(system: &str, outcome: &str) {
    metrics()
        .webhooks
        .get_or_create(&SystemOutcome {
            system: system.to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// The exposition: the event counters of this process and the store's
/// state, read now.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let m = metrics();
    let snap = store.metrics_snapshot().await?;
    let _one_at_a_time = m.scrape.lock().await;
    let now = Utc::now();
    m.queue_depth.clear();
    m.queue_oldest.clear();
    for queue in ["outbox", "inbox"] {
        // Present even when empty: an absent series reads as "no data".
        m.queue_oldest
            .get_or_create(&Queue {
                queue: queue.into(),
            })
            .set(0.0);
    }
    for (queue, status, n, oldest) in &snap.queues {
        m.queue_depth
            .get_or_create(&QueueStatus {
                queue: queue.clone(),
                status: status.clone(),
            })
            .set(*n);
        if status == "pending"
            && let Some(oldest) = oldest
        {
            let age = (now - *oldest).num_milliseconds().max(0) as f64 / 1000.0;
            m.queue_oldest
                .get_or_create(&Queue {
                    queue: queue.clone(),
                })
                .set(age);
        }
    }
    let set = |family: &Family<System, Gauge>, rows: &[(String, i64)]| {
        family.clear();
        for (system, n) in rows {
            family
                .get_or_create(&System {
                    system: system.clone(),
                })
                .set(*n);
        }
    };
    set(&m.dead_letters, &snap.dead_letters);
    set(&m.open_quarantine, &snap.open_quarantine);
    m.open_conflicts.clear();
    for (entity, n) in &snap.open_conflicts {
        m.open_conflicts
            .get_or_create(&Entity {
                entity: entity.clone(),
            })
            .set(*n);
    }
    m.open_alerts.clear();
    for (rule, severity, n) in &snap.open_alerts {
        m.open_alerts
            .get_or_create(&RuleSeverity {
                rule: rule.clone(),
                severity: severity.clone(),
            })
            .set(*n);
    }
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry)
        .expect("writing to a String cannot fail");
    Ok(text)
}

/// `GET /metrics`, for merging into the server.
pub fn router(store: Store) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let store = store.clone();
            async move {
                match render(&store).await {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        )],
                        text,
                    )
                        .into_response(),
                    Err(error) => {
                        tracing::error!(message = "Cannot read metrics from the store.", error = %error);
                        unavailable()
                    }
                }
            }
        }),
    )
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "# the store cannot be read now; see the server log\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_counts_appear_in_the_exposition() {
        webhook("unit_test_system", "accepted");
        webhook("unit_test_system", "accepted");
        webhook("unit_test_system", "invalid_signature");
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics().registry)
            .unwrap();
        assert!(
            text.contains(
                "concord_webhook_requests_total{system=\"unit_test_system\",outcome=\"accepted\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "concord_webhook_requests_total{system=\"unit_test_system\",outcome=\"invalid_signature\"} 1"
        ));
        assert!(text.contains("# TYPE concord_webhook_requests_total counter"));
    }

    #[test]
    fn push_latency_lands_in_a_bucket_per_target() {
        let ok: Result<Vec<PushOutcome>, ConnectorError> = Ok(vec![
            PushOutcome::Created {
                external_id: crate::model::ExternalId::parse("X1").unwrap(),
            },
            PushOutcome::Rejected {
                message: "no".into(),
            },
        ]);
        push("unit_job", "unit_target", Duration::from_millis(30), &ok, 2);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics().registry)
            .unwrap();
        assert!(
            text.contains(
                "concord_push_duration_seconds_bucket{le=\"0.04\",system=\"unit_target\"} 1"
            ) || text.contains(
                "concord_push_duration_seconds_bucket{system=\"unit_target\",le=\"0.04\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "concord_records_pushed_total{job=\"unit_job\",system=\"unit_target\",outcome=\"delivered\"} 1"
        ));
        assert!(text.contains(
            "concord_records_pushed_total{job=\"unit_job\",system=\"unit_target\",outcome=\"rejected\"} 1"
        ));
    }
}
