//! Layered configuration: built-in defaults ← `config/default.toml` (when
//! present in the working directory) ← the file given with `--config` ←
//! environment variables `CONCORD__SECTION__KEY`.
//!
//! Unknown keys and wrong types fail at start with the key and the reason.
//! Secrets are [`SecretString`]s: they never reach logs, errors or `concord
//! config check`, and passwords inside URLs are masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// The file read, when present, after the built-in defaults.
pub const DEFAULT_FILE: &str = "config/default.toml";
/// Environment variables with this prefix (and `__` between levels) override
/// any file: `CONCORD__STORE__URL`.
pub const ENV_PREFIX: &str = "CONCORD";

/// Why the configuration could not be loaded. Always a usage problem (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("invalid configuration ({sources})")]
    Invalid {
        sources: String,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration: {key}: {reason}")]
    Value { key: String, reason: String },
}

/// All of concord's settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where concord keeps its state.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// Where system definitions live.
    pub connectors: ConnectorsSettings,
    /// System instances: `[systems.xero_main]`, one per account concord
    /// talks to.
    #[serde(serialize_with = "serialize_systems")]
    pub systems: BTreeMap<String, SystemSettings>,
    /// Where mappings live.
    pub mappings: MappingsSettings,
    /// Sync jobs: `[[jobs]]`, each from one source to its targets.
    pub jobs: Vec<crate::sync::JobSettings>,
    /// Merge policies per canonical entity: `[merge.customer]`.
    pub merge: BTreeMap<crate::model::EntityKind, crate::sync::merge::MergePolicies>,
    /// Delivery to targets.
    pub delivery: crate::sync::DeliverySettings,
    /// The admin API: which fields viewers see masked.
    pub api: crate::api::ApiSettings,
    /// The work queue of `concord serve`.
    pub queue: crate::queue::QueueSettings,
    /// `concord serve`: listen address, shutdown, workers.
    pub server: crate::serve::ServerSettings,
    /// Webhook intake: limits and, per system, verification and how an
    /// event becomes records.
    pub webhooks: crate::serve::WebhookSettings,
    /// Data-quality rules, thresholds and alert sinks: `[quality]`.
    pub quality: crate::quality::QualitySettings,
    /// Reconciliation thresholds: `[reconcile]`.
    pub reconcile: ReconcileSettings,
}

/// Reconciliation thresholds (`concord reconcile`, file and store mode).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Confidence at or above which a match is made without review (0.90).
    pub auto_threshold: f64,
    /// Confidence at or above which a match is suggested (0.50).
    pub suggest_threshold: f64,
    /// A second candidate this close to the best makes a match ambiguous,
    /// never automatic (0.05).
    pub ambiguity_margin: f64,
    /// Push confirmed and manual allocations to an ERP as payments:
    /// `[reconcile.push]` (off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::reconcile::push::PaymentPushSettings>,
    /// `concord serve` runs reconciliation over the store on this cron
    /// schedule (sec min hour day month weekday), then delivers the
    /// payments `[reconcile.push]` holds; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The IANA time zone `schedule` is read in (UTC when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        let c = crate::reconcile::Config::default();
        ReconcileSettings {
            auto_threshold: c.auto_threshold,
            suggest_threshold: c.suggest_threshold,
            ambiguity_margin: c.ambiguity_margin,
            push: None,
            schedule: None,
            timezone: None,
        }
    }
}

impl ReconcileSettings {
    /// The engine's configuration with these thresholds.
    pub fn config(&self) -> crate::reconcile::Config {
        crate::reconcile::Config {
            auto_threshold: self.auto_threshold,
            suggest_threshold: self.suggest_threshold,
            ambiguity_margin: self.ambiguity_margin,
            ..crate::reconcile::Config::default()
        }
    }
}

/// Where mappings live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingsSettings {
    /// The folder of mapping files (searched recursively).
    pub dir: PathBuf,
}

impl Default for MappingsSettings {
    fn default() -> Self {
        MappingsSettings {
            dir: PathBuf::from("mappings"),
        }
    }
}

/// Where system definitions live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorsSettings {
    /// The folder of `*.toml` system definitions, relative to the working
    /// directory.
    pub dir: PathBuf,
}

impl Default for ConnectorsSettings {
    fn default() -> Self {
        ConnectorsSettings {
            dir: PathBuf::from("connectors"),
        }
    }
}

/// One account of a system: which definition it uses, and the values the
/// definition's `${…}` placeholders take.
///
/// ```toml
/// [systems.xero_main]
/// connector = "xero"
/// tenant_id = "${XERO_TENANT_ID}"
/// client_secret = "${XERO_CLIENT_SECRET}"
/// ```
///
/// Every key besides `connector` and `base_url` is such a value. Values
/// may name environment variables (`${XERO_CLIENT_SECRET}`), which keeps
/// secrets out of files; a literal value is treated as a secret and masked
/// wherever settings are shown.
#[derive(Debug, Clone, Deserialize)]
pub struct SystemSettings {
    /// The definition's name: `connectors/<connector>.toml`.
    pub connector: String,
    /// Replaces the definition's base URL (a sandbox, a mock server).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Values for the definition's placeholders.
    #[serde(flatten)]
    pub vars: BTreeMap<String, SecretString>,
}

impl SystemSettings {
    /// The connector instance these settings describe.
    pub fn instance(&self, name: &str) -> crate::connector::Instance {
        crate::connector::Instance {
            name: name.to_owned(),
            base_url: self.base_url.clone(),
            vars: self.vars.clone(),
        }
    }
}

fn serialize_systems<S: Serializer>(
    systems: &BTreeMap<String, SystemSettings>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    use serde::ser::SerializeMap;
    let mut outer = s.serialize_map(Some(systems.len()))?;
    for (name, system) in systems {
        let mut shown = BTreeMap::new();
        shown.insert("connector".to_owned(), system.connector.clone());
        if let Some(url) = &system.base_url {
            shown.insert("base_url".to_owned(), redact_url(url));
        }
        for (key, value) in &system.vars {
            let value = value.expose_secret();
            let placeholder_only =
                value.starts_with("${") && value.ends_with('}') && value.matches("${").count() == 1;
            let shown_value = if placeholder_only {
                value.to_owned()
            } else {
                MASK.to_owned()
            };
            shown.insert(key.clone(), shown_value);
        }
        outer.serialize_entry(name, &shown)?;
    }
    outer.end()
}

/// The store: SQLite by default, PostgreSQL for production.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://PATH` (the file is created on first use), `sqlite::memory:`
    /// or `postgres://USER@HOST:PORT/DB`. Put the password in
    /// `store.password` (`CONCORD__STORE__PASSWORD`), not here.
    pub url: StoreUrl,
    /// PostgreSQL password; overrides any password in the URL.
    #[serde(serialize_with = "serialize_secret")]
    pub password: Option<SecretString>,
    /// PostgreSQL schema to use (`search_path`); default: the server's.
    pub schema: Option<String>,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection before failing, in seconds.
    pub connect_timeout_secs: u64,
    /// How long SQLite waits on a locked database, in milliseconds.
    pub busy_timeout_ms: u64,
    /// Apply pending migrations when concord starts. Production setups often
    /// turn this off and run `concord db migrate` as a deliberate step.
    pub auto_migrate: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: StoreUrl::from("sqlite://data/concord.db"),
            password: None,
            schema: None,
            max_connections: 8,
            connect_timeout_secs: 10,
            busy_timeout_ms: 5_000,
            auto_migrate: true,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `RUST_LOG`-style filter, e.g. `info` or `concord=debug,sqlx=warn`.
    /// `RUST_LOG` itself, when set, takes precedence.
    pub level: String,
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Settings {
    /// Loads the layers in order. `explicit` is the `--config` file, which
    /// must exist; `config/default.toml` is read only when present.
    pub fn load(explicit: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(Path::new(DEFAULT_FILE), explicit, std::env::vars())
    }

    /// [`Settings::load`] with the default file and the environment given,
    /// so tests need not touch the process environment.
    pub fn load_from(
        default_file: &Path,
        explicit: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut sources = vec!["built-in defaults".to_owned()];
        let mut builder = Config::builder();
        if default_file.is_file() {
            sources.push(default_file.display().to_string());
            builder = builder.add_source(File::from(default_file).format(FileFormat::Toml));
        }
        if let Some(path) = explicit {
            if !path.is_file() {
                return Err(SettingsError::Missing {
                    path: path.to_owned(),
                });
            }
            sources.push(path.display().to_string());
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        if !env.is_empty() {
            let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
            names.sort_unstable();
            sources.push(format!("environment {}", names.join(", ")));
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let invalid = |source| SettingsError::Invalid {
            sources: sources.join(" ← "),
            source,
        };
        let settings: Settings = builder
            .build()
            .map_err(invalid)?
            .try_deserialize()
            .map_err(invalid)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what serde cannot: values that parse but make no sense.
    fn validate(&self) -> Result<(), SettingsError> {
        let url = self.store.url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(SettingsError::Value {
                key: "store.url".to_owned(),
                reason: format!(
                    "{:?} is not a store URL: expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB",
                    redact_url(url)
                ),
            });
        }
        if let Some(schema) = &self.store.schema {
            let plain = schema.len() <= 63
                && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !plain {
                return Err(SettingsError::Value {
                    key: "store.schema".to_owned(),
                    reason: format!(
                        "{schema:?} is not a plain schema name: use lower-case letters, digits and _ (at most 63)"
                    ),
                });
            }
        }
        if self.store.max_connections == 0 {
            return Err(SettingsError::Value {
                key: "store.max_connections".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError::Value {
                key: "log.level".to_owned(),
                reason: format!("{:?} is not a log filter: {e}", self.log.level),
            });
        }
        let mut job_names = std::collections::BTreeSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            job.validate(&self.systems)
                .map_err(|(field, reason)| SettingsError::Value {
                    key: format!(
                        "jobs[{i}]{}{field}",
                        if field.is_empty() { "" } else { "." }
                    ),
                    reason,
                })?;
            if !job_names.insert(job.name.as_str()) {
                return Err(SettingsError::Value {
                    key: format!("jobs[{i}].name"),
                    reason: format!("job {:?} is defined twice", job.name),
                });
            }
        }
        if let Some(push) = &self.reconcile.push {
            push.validate(&self.systems)
                .map_err(|(field, reason)| SettingsError::Value {
                    key: format!(
                        "reconcile.push{}{field}",
                        if field.is_empty() { "" } else { "." }
                    ),
                    reason,
                })?;
        }
        for (entity, policies) in &self.merge {
            policies
                .validate()
                .map_err(|(field, reason)| SettingsError::Value {
                    key: format!("merge.{entity}.{field}"),
                    reason,
                })?;
        }
        self.queue
            .validate()
            .map_err(|(field, reason)| SettingsError::Value {
                key: format!("queue.{field}"),
                reason,
            })?;
        self.quality
            .validate()
            .map_err(|(key, reason)| SettingsError::Value {
                key: format!("quality.{key}"),
                reason,
            })?;
        for (name, system) in &self.systems {
            let key = format!("systems.{name}");
            if !crate::connector::valid_name(name) {
                return Err(SettingsError::Value {
                    key,
                    reason: "system names are 1-64 lowercase letters, digits, `_` or `-`"
                        .to_owned(),
                });
            }
            if !crate::connector::valid_name(&system.connector) {
                return Err(SettingsError::Value {
                    key: format!("{key}.connector"),
                    reason: format!("{:?} is not a connector definition name", system.connector),
                });
            }
            if let Some(url) = &system.base_url
                && url::Url::parse(url).is_err()
            {
                return Err(SettingsError::Value {
                    key: format!("{key}.base_url"),
                    reason: format!("{:?} is not a URL", redact_url(url)),
                });
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

const MASK: &str = "********";

fn serialize_secret<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str(MASK),
        None => s.serialize_none(),
    }
}

/// A store URL. It may carry a password, so it shows itself (Debug, Display,
/// serialisation) only with the password masked; [`StoreUrl::as_str`] is for
/// connecting.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The full URL, password included: only for opening a connection.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for StoreUrl {
    fn from(url: &str) -> Self {
        StoreUrl(url.to_owned())
    }
}

impl From<String> for StoreUrl {
    fn from(url: String) -> Self {
        StoreUrl(url)
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

/// The URL with any password replaced by a mask, for logs and messages.
/// A string that does not parse as a URL is returned only up to its scheme,
/// since it might hold a password in a form we cannot see.
pub fn redact_url(raw: &str) -> String {
    if raw.starts_with("sqlite:") {
        // A file path; SQLite has no credentials.
        return raw.to_owned();
    }
    match url::Url::parse(raw) {
        Ok(mut url) if !url.cannot_be_a_base() => {
            if url.password().is_some() {
                // Cannot fail for URLs that already carry a password.
                let _ = url.set_password(Some(MASK));
            }
            // Query parameters such as `password=` or `sslpassword=`.
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let secret = k.to_ascii_lowercase().contains("password");
                    (
                        k.into_owned(),
                        if secret {
                            MASK.to_owned()
                        } else {
                            v.into_owned()
                        },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        _ => match raw.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:{MASK}"),
            None => MASK.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let default = write(
            &dir,
            "default.toml",
            "[store]\nurl = \"sqlite://a.db\"\nmax_connections = 3\n",
        );
        let explicit = write(&dir, "prod.toml", "[store]\nurl = \"sqlite://b.db\"\n");
        let settings = Settings::load_from(
            &default,
            Some(&explicit),
            env(&[("CONCORD__LOG__FORMAT", "json"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(settings.store.url.as_str(), "sqlite://b.db");
        assert_eq!(settings.store.max_connections, 3);
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.store.busy_timeout_ms, 5_000);
    }

    #[test]
    fn environment_overrides_files_and_parses_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let default = write(&dir, "default.toml", "[store]\nmax_connections = 3\n");
        let settings = Settings::load_from(
            &default,
            None,
            env(&[
                ("CONCORD__STORE__MAX_CONNECTIONS", "12"),
                ("CONCORD__STORE__PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.store.max_connections, 12);
        assert_eq!(
            settings.store.password.as_ref().unwrap().expose_secret(),
            "hunter2"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "c.toml", "[store]\nurll = \"sqlite://x.db\"\n");
        let err =
            Settings::load_from(Path::new("/nonexistent"), Some(&file), env(&[])).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("urll"), "{chain}");
        assert!(chain.contains("c.toml"), "{chain}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            None,
            env(&[("CONCORD__STORE__MAX_CONNECTIONS", "many")]),
        )
        .unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("max_connections"), "{chain}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            Some(Path::new("/nonexistent/prod.toml")),
            env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prod.toml"));
    }

    #[test]
    fn bad_values_are_named() {
        for (key, value, named) in [
            ("CONCORD__STORE__URL", "mysql://db", "store.url"),
            (
                "CONCORD__STORE__MAX_CONNECTIONS",
                "0",
                "store.max_connections",
            ),
            ("CONCORD__LOG__LEVEL", "concord=loud", "log.level"),
            ("CONCORD__STORE__SCHEMA", "a\"; DROP", "store.schema"),
        ] {
            let err = Settings::load_from(Path::new("/nonexistent"), None, env(&[(key, value)]))
                .unwrap_err();
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
    }

    #[test]
    fn secrets_never_render() {
        let settings = Settings::load_from(
            Path::new("/nonexistent"),
            None,
            env(&[
                (
                    "CONCORD__STORE__URL",
                    "postgres://app:s3cret@db:5432/concord?sslpassword=k3y",
                ),
                ("CONCORD__STORE__PASSWORD", "hunter2"),
            ]),
        )
        .unwrap();
        let text = settings.to_redacted_toml();
        let debug = format!("{settings:?}");
        for shown in [&text, &debug] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("k3y"), "{shown}");
        }
        assert!(
            text.contains("postgres://app:********@db:5432/concord"),
            "{text}"
        );
    }

    #[test]
    fn shipped_config_files_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let settings = Settings::load_from(
            &root.join(DEFAULT_FILE),
            Some(&root.join("config/production.example.toml")),
            env(&[]),
        )
        .unwrap();
        assert!(settings.store.url.as_str().starts_with("postgres://"));
    }

    #[test]
    fn redact_url_masks_unparseable_urls() {
        assert_eq!(
            redact_url("postgres://u:p@h/db"),
            "postgres://u:********@h/db"
        );
        assert_eq!(
            redact_url("sqlite://data/concord.db"),
            "sqlite://data/concord.db"
        );
        assert_eq!(redact_url("weird:u:p@@"), "weird:********");
    }
}
