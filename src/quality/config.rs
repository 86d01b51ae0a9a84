//! `[quality]`: which rules run, their thresholds, and where alerts go.
//!
//! ```toml
//! [quality]
//! time_zone = "Europe/Berlin"
//!
//! [quality.rules.overdue_receivable]
//! days = 30
//!
//! [quality.rules.large_outside_hours.thresholds]
//! EUR = "10000"
//!
//! [quality.sinks.webhook]
//! url = "https://alerts.example.com/concord"
//! secret = "${ALERT_WEBHOOK_SECRET}"   # or CONCORD__QUALITY__SINKS__WEBHOOK__SECRET
//! ```
//!
//! Every rule has `enabled` (default true) and `severity` (each rule's
//! default is documented on its struct). Amounts are decimal strings keyed
//! by ISO 4217 currency code; a currency without a threshold is not
//! checked by that rule.

use std::collections::BTreeMap;

use chrono::{NaiveTime, Weekday};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use crate::model::Currency;
use crate::store::Severity;

/// Data-quality rules and alert sinks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualitySettings {
    /// Run the rules after each `concord sync run` and `concord bank
    /// import` (default true). `concord alerts check` runs them regardless.
    pub run_after_sync: bool,
    /// IANA time zone for business hours (default `UTC`).
    pub time_zone: String,
    /// When people work: large amounts booked outside these hours are
    /// flagged.
    pub business_hours: BusinessHours,
    /// The rules, each with its thresholds.
    pub rules: RulesSettings,
    /// Where newly raised alerts go besides the store.
    pub sinks: SinksSettings,
}

impl Default for QualitySettings {
    fn default() -> Self {
        QualitySettings {
            run_after_sync: true,
            time_zone: "UTC".to_owned(),
            business_hours: BusinessHours::default(),
            rules: RulesSettings::default(),
            sinks: SinksSettings::default(),
        }
    }
}

/// Working hours, in [`QualitySettings::time_zone`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessHours {
    /// Start of the working day, `HH:MM` (default `08:00`).
    pub start: String,
    /// End of the working day, `HH:MM`, exclusive (default `18:00`).
    pub end: String,
    /// Working days, `mon` … `sun` (default Monday to Friday).
    pub days: Vec<String>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours {
            start: "08:00".to_owned(),
            end: "18:00".to_owned(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// Business hours parsed: what the rules use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    pub tz: chrono_tz::Tz,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub days: Vec<Weekday>,
}

macro_rules! rule_settings {
    (
        $(#[$meta:meta])*
        $name:ident, severity = $severity:expr, {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Whether the rule runs (default true).
            pub enabled: bool,
            /// The severity of the alerts it raises.
            pub severity: Severity,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    severity: $severity,
                    $( $field: $default, )*
                }
            }
        }
    };
}

rule_settings! {
    /// `mapping_failure`: a quarantined record (mapping or validation
    /// failed), or a stored record that no longer parses. Default: warning.
    MappingFailureRule, severity = Severity::Warning, {}
}

rule_settings! {
    /// `duplicate_record`: two canonical records share an invoice number,
    /// a tax id or an IBAN. Default: warning.
    DuplicateRule, severity = Severity::Warning, {
        /// Which keys are compared: `invoice_number`, `tax_id`, `iban`.
        keys: Vec<String> = vec!["invoice_number".into(), "tax_id".into(), "iban".into()],
    }
}

rule_settings! {
    /// `missing_in_linked_system`: a record linked to a job's source but
    /// not to its target, while delivery to the target is dead or never
    /// happened. Default: warning.
    MissingLinkRule, severity = Severity::Warning, {}
}

rule_settings! {
    /// `field_mismatch`: a record's last-synced views in two systems
    /// disagree on a field both carry. Default: warning.
    FieldMismatchRule, severity = Severity::Warning, {
        /// Top-level canonical fields not compared, besides `id` (which
        /// never is). Default: none.
        ignore_fields: Vec<String> = Vec::new(),
    }
}

rule_settings! {
    /// `consistency_rate`: the share of records linked in two or more
    /// systems whose fields agree fell below `min_rate`. Default: warning.
    ConsistencyRule, severity = Severity::Warning, {
        /// The lowest acceptable share, 0 to 1 (default 0.95).
        min_rate: f64 = 0.95,
        /// Fewer linked records than this are not judged (default 20).
        min_records: usize = 20,
    }
}

rule_settings! {
    /// `receipt_unmatched`: a receipt (credit bank line) not matched to an
    /// invoice `days` after booking and after concord imported it (a
    /// statement imported late gives reconciliation `days` too).
    /// Default: warning.
    UnmatchedReceiptRule, severity = Severity::Warning, {
        /// Days after the booking date (default 5).
        days: u32 = 5,
    }
}

rule_settings! {
    /// `overdue_receivable`: an invoice with an open amount `days` past its
    /// due date. Default: warning.
    OverdueRule, severity = Severity::Warning, {
        /// Days past the due date (default 30).
        days: u32 = 30,
    }
}

rule_settings! {
    /// `duplicate_payment`: the same payer paid the same amount with the
    /// same reference twice within `window_days`. Default: critical.
    DuplicatePaymentRule, severity = Severity::Critical, {
        /// Days between the two payments (default 30).
        window_days: u32 = 30,
    }
}

rule_settings! {
    /// `overpayment`: an invoice paid beyond its total (negative open
    /// amount, or allocations over the total). Default: warning.
    OverpaymentRule, severity = Severity::Warning, {
        /// Excess below this is ignored, in any currency (default 0.01).
        tolerance: Decimal = Decimal::new(1, 2),
    }
}

rule_settings! {
    /// `payer_account_changed`: a customer's bank accounts changed. A
    /// second change within `window_days` raises `repeat_severity`.
    /// Default: warning.
    AccountChangeRule, severity = Severity::Warning, {
        /// Window for repeated changes (default 90 days).
        window_days: u32 = 90,
        /// Severity when changed more than once in the window (default critical).
        repeat_severity: Severity = Severity::Critical,
    }
}

rule_settings! {
    /// `large_outside_hours`: a payment or bank line of at least the
    /// currency's threshold booked outside business hours. Default:
    /// warning.
    LargeOutsideHoursRule, severity = Severity::Warning, {
        /// Threshold per currency code (`EUR = "10000"`); absent: not checked.
        thresholds: BTreeMap<String, Decimal> = BTreeMap::new(),
    }
}

rule_settings! {
    /// `split_order`: several orders of one customer within `window_days`,
    /// each just under the approval limit (within `margin`), together
    /// above it. Default: warning.
    SplitOrderRule, severity = Severity::Warning, {
        /// Approval limit per currency code; absent: not checked.
        approval_limits: BTreeMap<String, Decimal> = BTreeMap::new(),
        /// "Just under": at least `limit × (1 − margin)` (default 0.2).
        margin: Decimal = Decimal::new(2, 1),
        /// Days the orders fall within (default 7).
        window_days: u32 = 7,
    }
}

rule_settings! {
    /// `credit_limit_exceeded`: open receivables plus an open order exceed
    /// the customer's credit limit. Default: critical.
    CreditLimitRule, severity = Severity::Critical, {
        /// Order statuses (lower case) that no longer count as open.
        closed_statuses: Vec<String> = ["cancelled", "canceled", "closed", "completed", "invoiced", "void"]
            .map(str::to_owned).to_vec(),
    }
}

rule_settings! {
    /// `credit_usage`: open receivables reached a level (percent) of the
    /// customer's credit limit. The highest level reached is alerted:
    /// below 90 `severity` (default info), 90 and up warning, 100 and up
    /// critical.
    CreditUsageRule, severity = Severity::Info, {
        /// Levels in percent, ascending (default 75, 90, 100).
        levels: Vec<u32> = vec![75, 90, 100],
    }
}

/// Every rule's settings: `[quality.rules.<name>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesSettings {
    pub mapping_failure: MappingFailureRule,
    pub duplicate_record: DuplicateRule,
    pub missing_in_linked_system: MissingLinkRule,
    pub field_mismatch: FieldMismatchRule,
    pub consistency_rate: ConsistencyRule,
    pub receipt_unmatched: UnmatchedReceiptRule,
    pub overdue_receivable: OverdueRule,
    pub duplicate_payment: DuplicatePaymentRule,
    pub overpayment: OverpaymentRule,
    pub payer_account_changed: AccountChangeRule,
    pub large_outside_hours: LargeOutsideHoursRule,
    pub split_order: SplitOrderRule,
    pub credit_limit_exceeded: CreditLimitRule,
    pub credit_usage: CreditUsageRule,
}

/// Where alerts go besides the store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksSettings {
    /// Log each new alert (tracing, target `concord::quality`; default true).
    pub log: bool,
    /// POST each new alert as JSON, signed.
    pub webhook: Option<WebhookSinkSettings>,
    /// Publish each new alert to an exchange, with publisher confirms.
    pub amqp: Option<AmqpSinkSettings>,
}

impl Default for SinksSettings {
    fn default() -> Self {
        SinksSettings {
            log: true,
            webhook: None,
            amqp: None,
        }
    }
}

/// `[quality.sinks.webhook]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkSettings {
    /// The endpoint (http or https).
    pub url: String,
    /// HMAC-SHA256 key: the `X-Concord-Signature: sha256=<hex>` header is
    /// the HMAC of the request body under it.
    #[serde(serialize_with = "mask")]
    pub secret: SecretString,
    /// Per-request timeout in seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Retries after a failed attempt, with exponential back-off (default 3).
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// First back-off delay in milliseconds (default 500).
    #[serde(default = "default_delay")]
    pub retry_delay_ms: u64,
}

/// `[quality.sinks.amqp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkSettings {
    /// `amqp://user:password@host:5672/vhost`: a secret, as it may carry a
    /// password.
    #[serde(serialize_with = "mask")]
    pub url: SecretString,
    /// The exchange alerts are published to.
    pub exchange: String,
    /// Routing key; `{rule}` and `{severity}` are replaced (default
    /// `concord.alert.{severity}.{rule}`).
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// Declare the exchange (durable, `topic`) if it does not exist
    /// (default false: it must exist).
    #[serde(default)]
    pub declare: bool,
    /// How long to wait for the broker's confirms, in ms (default 5000).
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_ms: u64,
}

fn default_timeout() -> u64 {
    10
}
fn default_retries() -> usize {
    3
}
fn default_delay() -> u64 {
    500
}
fn default_routing_key() -> String {
    "concord.alert.{severity}.{rule}".to_owned()
}
fn default_confirm_timeout() -> u64 {
    5_000
}

fn mask<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("********")
}

/// Parses `HH:MM`.
fn parse_time(text: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M").ok()
}

fn parse_weekday(text: &str) -> Option<Weekday> {
    Some(match text.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

impl QualitySettings {
    /// Business hours, parsed (validated by [`QualitySettings::validate`]).
    pub fn hours(&self) -> Result<Hours, (String, String)> {
        let tz: chrono_tz::Tz = self.time_zone.parse().map_err(|_| {
            (
                "time_zone".to_owned(),
                format!(
                    "{:?} is not an IANA time zone (e.g. Europe/Berlin)",
                    self.time_zone
                ),
            )
        })?;
        let time = |key: &str, text: &str| {
            parse_time(text).ok_or_else(|| {
                (
                    format!("business_hours.{key}"),
                    format!("{text:?} is not a time: expected HH:MM"),
                )
            })
        };
        let start = time("start", &self.business_hours.start)?;
        let end = time("end", &self.business_hours.end)?;
        if end <= start {
            return Err((
                "business_hours.end".to_owned(),
                "must be after business_hours.start".to_owned(),
            ));
        }
        let days = self
            .business_hours
            .days
            .iter()
            .map(|d| {
                parse_weekday(d).ok_or_else(|| {
                    (
                        "business_hours.days".to_owned(),
                        format!("{d:?} is not a day: use mon, tue, wed, thu, fri, sat or sun"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hours {
            tz,
            start,
            end,
            days,
        })
    }

    /// Checks what can be checked without I/O. Errors are `(key under
    /// quality., reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.hours()?;
        let r = &self.rules;
        for key in &r.duplicate_record.keys {
            if !["invoice_number", "tax_id", "iban"].contains(&key.as_str()) {
                return Err((
                    "rules.duplicate_record.keys".to_owned(),
                    format!("{key:?} is not a key: use invoice_number, tax_id or iban"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&r.consistency_rate.min_rate) {
            return Err((
                "rules.consistency_rate.min_rate".to_owned(),
                "must be between 0 and 1".to_owned(),
            ));
        }
        for (key, map) in [
            (
                "rules.large_outside_hours.thresholds",
                &r.large_outside_hours.thresholds,
            ),
            (
                "rules.split_order.approval_limits",
                &r.split_order.approval_limits,
            ),
        ] {
            for (code, amount) in map {
                Currency::parse(&code.to_ascii_uppercase())
                    .map_err(|e| (format!("{key}.{code}"), e.to_string()))?;
                if *amount <= Decimal::ZERO {
                    return Err((format!("{key}.{code}"), "must be positive".to_owned()));
                }
            }
        }
        if r.split_order.margin <= Decimal::ZERO || r.split_order.margin >= Decimal::ONE {
            return Err((
                "rules.split_order.margin".to_owned(),
                "must be between 0 and 1 (exclusive)".to_owned(),
            ));
        }
        let levels = &r.credit_usage.levels;
        if levels.is_empty() || levels.windows(2).any(|w| w[0] >= w[1]) || levels[0] == 0 {
            return Err((
                "rules.credit_usage.levels".to_owned(),
                "must be positive percentages in ascending order, e.g. [75, 90, 100]".to_owned(),
            ));
        }
        if let Some(w) = &self.sinks.webhook {
            let ok = url::Url::parse(&w.url)
                .is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https");
            if !ok {
                return Err((
                    "sinks.webhook.url".to_owned(),
                    format!(
                        "{:?} is not an http(s) URL",
                        crate::settings::redact_url(&w.url)
                    ),
                ));
            }
        }
        if let Some(a) = &self.sinks.amqp {
            use secrecy::ExposeSecret;
            let url = a.url.expose_secret();
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err((
                    "sinks.amqp.url".to_owned(),
                    "must start with amqp:// or amqps://".to_owned(),
                ));
            }
            if a.exchange.is_empty() || a.exchange.len() > 255 {
                return Err((
                    "sinks.amqp.exchange".to_owned(),
                    "must be 1 to 255 bytes".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        QualitySettings::default().validate().unwrap();
        let h = QualitySettings::default().hours().unwrap();
        assert_eq!(h.days.len(), 5);
        assert_eq!(h.tz, chrono_tz::UTC);
    }

    #[test]
    fn thresholds_parse_from_toml_and_bad_values_are_named() {
        let s: QualitySettings = toml::from_str(
            r#"
            time_zone = "Europe/Berlin"
            [rules.overdue_receivable]
            days = 45
            enabled = false
            [rules.large_outside_hours.thresholds]
            EUR = "10000.00"
            [rules.credit_usage]
            levels = [50, 80]
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.rules.overdue_receivable.days, 45);
        assert!(!s.rules.overdue_receivable.enabled);
        assert_eq!(
            s.rules.large_outside_hours.thresholds["EUR"],
            Decimal::new(1_000_000, 2)
        );
        let mut bad = s.clone();
        bad.time_zone = "Mars/Olympus".into();
        assert_eq!(bad.validate().unwrap_err().0, "time_zone");
        let mut bad = s.clone();
        bad.rules.credit_usage.levels = vec![90, 75];
        assert_eq!(bad.validate().unwrap_err().0, "rules.credit_usage.levels");
        let mut bad = s;
        bad.rules
            .split_order
            .approval_limits
            .insert("XXX".into(), Decimal::ONE);
        assert!(
            bad.validate()
                .unwrap_err()
                .0
                .contains("approval_limits.XXX")
        );
        let err = toml::from_str::<QualitySettings>("[rules.overdue_receivable]\ndayz = 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("dayz"), "{err}");
    }

    #[test]
    fn secrets_are_masked_when_shown() {
        let s: QualitySettings = toml::from_str(
            r#"
            [sinks.webhook]
            url = "https://example.com/hook"
            secret = "s3cret-key"
            [sinks.amqp]
            url = "amqp://u:hunter2@localhost/%2f"
            exchange = "alerts"
            "#,
        )
        .unwrap();
        s.validate().unwrap();
        let shown = format!("{}{:?}", toml::to_string(&s).unwrap(), s);
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
