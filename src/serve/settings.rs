//! `[server]` and `[webhooks]`: the daemon's settings.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// `[server]`: where `concord serve` listens and how it stops.
///
/// ```toml
/// [server]
/// listen = "127.0.0.1:8080"      # CONCORD__SERVER__LISTEN
/// shutdown_timeout_secs = 30
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on. Default `127.0.0.1:8080`.
    pub listen: String,
    /// On SIGTERM/SIGINT, how long running jobs and inbox work may take to
    /// finish, in seconds. Default 30. Work still running then is given
    /// back (its inbox events are pending again), never lost.
    pub shutdown_timeout_secs: u64,
    /// Run the scheduler in this process. Default true.
    pub scheduler: bool,
    /// Run inbox workers in this process. Default 1 (0 turns them off).
    pub workers: usize,
    /// Inbox events a worker claims at once. Default 64.
    pub claim_batch: u32,
    /// How long a claim (and a schedule lease) lasts before another
    /// instance may take it over, in seconds; renewed while work runs.
    /// Default 60.
    pub lease_secs: u64,
    /// This instance's name in leases and claims; default host name and
    /// process id plus a random suffix.
    pub instance: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".to_owned(),
            shutdown_timeout_secs: 30,
            scheduler: true,
            workers: 1,
            claim_batch: 64,
            lease_secs: 60,
            instance: None,
        }
    }
}

/// `[webhooks]`: limits for every system, and `[webhooks.systems.NAME]`
/// for each system that pushes events (NAME is a `[systems.NAME]`
/// instance).
///
/// ```toml
/// [webhooks]
/// max_body_bytes = 1048576
/// tolerance_secs = 300
///
/// [webhooks.systems.crm_main]
/// scheme = "standard"                     # webhook-id/-timestamp/-signature
/// secrets = ["${CRM_WEBHOOK_SECRET}"]     # whsec_…; several while rotating
/// entity = "company"                      # the job reading crm_main company
/// records = "/data"                       # the payload is the record
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Largest body accepted, in bytes; larger gets 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// How far a signed timestamp may be from now, in seconds, before the
    /// request is refused as a replay. Default 300.
    pub tolerance_secs: u64,
    /// Attempts at processing an event before it is marked dead. Default 5.
    pub max_attempts: u32,
    /// First retry delay after a failed attempt, in seconds; doubles each
    /// attempt. Default 30.
    pub retry_secs: u64,
    /// Most events committed in one inbox transaction (group commit).
    /// Default 512.
    pub group_commit_max: usize,
    /// SQLite: commit each inbox batch with `synchronous = FULL`, so an
    /// acknowledged event survives a power cut, not only a crash. Default
    /// true (group commit keeps it cheap).
    pub sync_full: bool,
    /// How long a request waits for its event to be durable (committed to
    /// the inbox, or confirmed by the broker) before it is answered 503,
    /// in milliseconds. Default 5000: a slow or locked store gets the
    /// sender's retry instead of its timeout. An event stored after its
    /// 503 is not lost or doubled: the retry is answered 200 (duplicate).
    pub store_timeout_ms: u64,
    /// Push records taken in from events to the job's targets right away.
    /// Default true.
    pub deliver: bool,
    /// Each system that sends webhooks.
    pub systems: BTreeMap<String, WebhookSystem>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_body_bytes: 1 << 20,
            tolerance_secs: 300,
            max_attempts: 5,
            retry_secs: 30,
            group_commit_max: 512,
            sync_full: true,
            store_timeout_ms: 5_000,
            deliver: true,
            systems: BTreeMap::new(),
        }
    }
}

/// How a system's webhooks are verified and what they carry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSystem {
    /// `standard` (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`), `stripe` (`Stripe-Signature: t=…,v1=…`) or
    /// `hmac` (HMAC-SHA256 of the raw body in `signature_header`: Shopify,
    /// Xero, and similar).
    pub scheme: Scheme,
    /// Signing secrets; several while a key is rotated (any one may match).
    /// `standard`: `whsec_` + base64; `stripe` and `hmac`: used as given.
    /// `${VAR}` takes the value from the environment or the system's
    /// `[systems.NAME]` values.
    #[serde(serialize_with = "serialize_secrets")]
    pub secrets: Vec<SecretString>,
    /// `hmac`: the header holding the signature (e.g.
    /// `X-Shopify-Hmac-Sha256`, `x-xero-signature`).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// `hmac`: how the signature is written. Default base64.
    #[serde(default)]
    pub encoding: Encoding,
    /// The header holding the event id (e.g. `X-Shopify-Webhook-Id`).
    /// `standard` always uses `webhook-id`.
    #[serde(default)]
    pub id_header: Option<String>,
    /// Else a JSON pointer to the event id in the body (`stripe` default
    /// `/id`). Without either, the body's SHA-256 is the event id.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// The system's entity the events are about; the job whose source is
    /// this system and entity takes them in.
    pub entity: String,
    /// `record`: the payload holds the record(s); `pull`: it names ids,
    /// fetched with the connector's `get`. Default `record`.
    #[serde(default)]
    pub mode: EventMode,
    /// JSON pointer to the record (or array of records) in `record` mode,
    /// to the id (or array of ids) in `pull` mode. Default: the whole body.
    #[serde(default)]
    pub records: String,
    /// `record` mode: JSON pointer to a record's id within the record.
    /// Default `/id`.
    #[serde(default = "default_record_id")]
    pub record_id: String,
}

fn default_record_id() -> String {
    "/id".to_owned()
}

fn serialize_secrets<S: Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(secrets.len()))?;
    for secret in secrets {
        let v = secret.expose_secret();
        let placeholder = v.starts_with("${") && v.ends_with('}') && v.matches("${").count() == 1;
        seq.serialize_element(if placeholder { v } else { "********" })?;
    }
    seq.end()
}

/// Signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Standard,
    Stripe,
    Hmac,
}

/// How a plain HMAC signature is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Base64,
    Hex,
}

/// What an event carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    #[default]
    Record,
    Pull,
}
