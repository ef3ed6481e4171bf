//! The configuration file. Each component owns the struct of its section (so its
//! documentation sits beside the code that reads it); this crate assembles them into one
//! TOML document, applies the embedded defaults, the file, then environment overrides,
//! and rejects unknown keys. Every key is described in `docs/configuration.md`.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_analytics::AnalyticsConfig;
use tidewater_answer::AnswerConfig;
use tidewater_core::EventTimePolicy;
use tidewater_embed::EmbedderConfig;
use tidewater_engine::EngineConfig;
use tidewater_knowledge::KnowledgeConfig;
use tidewater_lake::LakeConfig;
use tidewater_log::LogConfig;
use tidewater_metrics::HealthConfig;
use tidewater_profiles::ProfilesConfig;
use tidewater_sources::FilesConfig;

mod server;

pub use server::ServerConfig;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the log, state and index live.
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// The embedded log.
    pub log: LogConfig,
    /// How pipelines consume their topics.
    pub engine: EngineConfig,
    /// The knowledge pipeline (chunking, index).
    pub knowledge: KnowledgeConfig,
    /// The embedding model.
    pub embedding: EmbedderConfig,
    /// Sources of documents.
    pub sources: SourcesConfig,
    /// The reconcile pass that proves the index matches the sources.
    pub reconcile: ReconcileConfig,
    /// Unified customer profiles from change events (off unless the section is present).
    pub profiles: Option<ProfilesConfig>,
    /// Windowed KPIs over conversations and feedback.
    pub analytics: AnalyticsConfig,
    /// Which event times the event-time pipelines (analytics) accept.
    pub event_time: EventTimePolicy,
    /// Answers (`/v1/ask`): retrieval, prompt template, language model.
    pub answer: AnswerConfig,
    /// The Parquet lake.
    pub lake: LakeConfig,
    /// When a source or pipeline counts as stalled.
    pub health: HealthConfig,
    /// The HTTP API's hosts, connection limits and timeouts.
    pub server: ServerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tidewater-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log: LogConfig::default(),
            engine: EngineConfig::default(),
            knowledge: KnowledgeConfig::default(),
            embedding: EmbedderConfig::default(),
            sources: SourcesConfig::default(),
            reconcile: ReconcileConfig::default(),
            profiles: None,
            analytics: AnalyticsConfig::default(),
            event_time: EventTimePolicy::default(),
            answer: AnswerConfig::default(),
            lake: LakeConfig::default(),
            health: HealthConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// Sources of documents.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Folders to scan and watch (`[[sources.files]]`, one table per root).
    pub files: Vec<FilesConfig>,
    /// PostgreSQL databases read by logical decoding (`[[sources.postgres]]`); their
    /// changes go to the profiles topic.
    pub postgres: Vec<tidewater_cdc::PostgresConfig>,
    /// Topics of the `[log.kafka]` broker read into a pipeline (`[[sources.kafka]]`).
    pub kafka: Vec<tidewater_sources::KafkaSourceConfig>,
}

/// When the reconcile pass runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Run once the initial scan is indexed.
    pub on_start: bool,
    /// Then every this long (`"0s"` turns the schedule off).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            on_start: true,
            interval: Duration::from_secs(300),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// The file is not valid TOML or has an unknown key or a wrong value.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with the line.
        message: String,
    },
    /// An environment override has a value that cannot be used.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Values that do not fit together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The embedded defaults, then `path` if given, then environment overrides
    /// (`TIDEWATER_DATA_DIR`, `TIDEWATER_LISTEN`).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::parse(&fs_err::read_to_string(path)?, &path.display().to_string())?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Parses a TOML document (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // One line: where, then what (toml's own Display spans several lines).
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_owned(),
            };
            ConfigError::Parse {
                path: origin.to_owned(),
                message,
            }
        })
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(dir) = var("TIDEWATER_DATA_DIR") {
            self.data_dir = PathBuf::from(dir);
        }
        if let Some(listen) = var("TIDEWATER_LISTEN") {
            self.listen = listen.parse().map_err(|e| ConfigError::Env {
                name: "TIDEWATER_LISTEN",
                message: format!("'{listen}' is not an address: {e}"),
            })?;
        }
        if let Some(dsn) = var("TIDEWATER_PGVECTOR_DSN") {
            self.knowledge.index.set_pgvector_dsn(dsn);
        }
        Ok(())
    }

    /// The lake directory: `lake.dir`, or `<data_dir>/lake`.
    pub fn lake_dir(&self) -> PathBuf {
        self.lake
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("lake"))
    }

    /// Checks values that each parse on their own but not together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.knowledge
            .chunking
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("knowledge.chunking: {e}")))?;
        let mut names = std::collections::HashSet::new();
        for files in &self.sources.files {
            if !names.insert(&files.name) {
                return Err(ConfigError::Invalid(format!(
                    "two [[sources.files]] roots are named '{}'; names must be unique",
                    files.name
                )));
            }
        }
        if !self.sources.postgres.is_empty() && self.profiles.is_none() {
            return Err(ConfigError::Invalid(
                "[[sources.postgres]] feeds the profiles pipeline: add a [profiles] section".into(),
            ));
        }
        let mut slots = std::collections::HashSet::new();
        for pg in &self.sources.postgres {
            if !slots.insert(&pg.slot) {
                return Err(ConfigError::Invalid(format!(
                    "two [[sources.postgres]] use the slot '{}'; slots must be unique",
                    pg.slot
                )));
            }
        }
        self.validate_kafka_sources()?;
        if let Some(profiles) = &self.profiles {
            profiles
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("profiles: {e}")))?;
            // Every profile must fit one record of the output topic.
            if profiles.max_profile_bytes > self.log.max_record_bytes as u64 {
                return Err(ConfigError::Invalid(format!(
                    "profiles.max_profile_bytes ({}) is larger than log.max_record_bytes ({}): \
                     a profile that size could never be published",
                    profiles.max_profile_bytes, self.log.max_record_bytes
                )));
            }
        }
        self.answer.validate().map_err(ConfigError::Invalid)?;
        self.server.validate().map_err(ConfigError::Invalid)?;
        self.analytics
            .window
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("analytics.window: {e}")))?;
        if self.engine.batch_max_records == 0 {
            return Err(ConfigError::Invalid(
                "engine.batch_max_records must be at least 1".into(),
            ));
        }
        self.validate_limits()
    }

    /// `[[sources.kafka]]`: well formed, uniquely named, read from the log's broker, and
    /// feeding a pipeline that runs.
    fn validate_kafka_sources(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for source in &self.sources.kafka {
            source.validate().map_err(ConfigError::Invalid)?;
            if !names.insert(source.name()) {
                return Err(ConfigError::Invalid(format!(
                    "two [[sources.kafka]] are named '{}'; give each a unique name",
                    source.name()
                )));
            }
            if self.log.backend != tidewater_log::LogBackend::Kafka {
                return Err(ConfigError::Invalid(format!(
                    "[[sources.kafka]] '{}' reads the broker of [log.kafka]: set log.backend = \"kafka\"",
                    source.name()
                )));
            }
            if source.into == tidewater_sources::kafka::KafkaInto::Profiles
                && self.profiles.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "[[sources.kafka]] '{}' feeds the profiles pipeline: add a [profiles] section",
                    source.name()
                )));
            }
        }
        Ok(())
    }

    /// The checks the components would otherwise make only when `run` starts them (a topic's
    /// partitions when the log creates it, a source's limits when it starts): here, so that
    /// `check-config` refuses what `run` would. Sizes, counts and intervals of zero make no
    /// sense anywhere: a record limit of 0 would refuse every write.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| Err(ConfigError::Invalid(reason));
        let at_least_one = |key: &str, value: u64| match value {
            0 => invalid(format!("{key} must be at least 1")),
            _ => Ok(()),
        };
        let positive = |key: &str, value: Duration| match value.is_zero() {
            true => invalid(format!("{key} must be longer than 0s")),
            false => Ok(()),
        };
        self.log.validate().map_err(ConfigError::Invalid)?;
        let topic_configs = [
            ("knowledge", Some(&self.knowledge.topic_config)),
            ("analytics", Some(&self.analytics.topic_config)),
            ("profiles", self.profiles.as_ref().map(|p| &p.topic_config)),
        ];
        for (section, topic_config) in topic_configs {
            if topic_config.is_some_and(|t| t.partitions == 0) {
                return invalid(format!(
                    "{section}.topic_config.partitions must be at least 1: a topic needs a partition"
                ));
            }
        }
        self.knowledge
            .index
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("knowledge: {e}")))?;
        match &self.embedding {
            EmbedderConfig::Local(local) => {
                at_least_one("embedding.batch_size", local.batch_size as u64)?;
                if local.max_seq_len.is_some_and(|n| n < 2) {
                    return invalid("embedding.max_seq_len must be at least 2".into());
                }
                if local.threads == Some(0) {
                    return invalid("embedding.threads must be at least 1".into());
                }
            }
            EmbedderConfig::Openai(openai) => {
                tidewater_embed::OpenAiEmbedder::check_config(openai)
                    .map_err(|e| ConfigError::Invalid(format!("embedding: {e}")))?;
            }
        }
        for files in &self.sources.files {
            if files.name.is_empty() {
                return invalid("sources.files.name must not be empty".into());
            }
            let key = |field: &str| format!("sources.files '{}': {field}", files.name);
            positive(&key("relist_interval"), files.relist_interval)?;
            at_least_one(&key("max_file_bytes"), files.max_file_bytes)?;
        }
        for pg in &self.sources.postgres {
            pg.validate().map_err(|e| {
                ConfigError::Invalid(format!("sources.postgres '{}': {e}", pg.slot))
            })?;
        }
        if let Some(profiles) = &self.profiles {
            at_least_one(
                "profiles.graph.max_cluster_size",
                profiles.graph.max_cluster_size as u64,
            )?;
        }
        at_least_one("lake.max_rows_per_file", self.lake.max_rows_per_file as u64)?;
        positive("health.stall_after", self.health.stall_after)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::parse("data_dir = \"x\"\nlisten_addr = \"1.2.3.4:5\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
        let err = Config::parse(
            "[knowledge.chunking]\nmax_chars = 500\nsize = 3\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("size"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
            data_dir = "/var/lib/tidewater"
            listen = "0.0.0.0:9000"
            [log]
            durability = "os"
            [engine]
            batch_max_records = 32
            poll_interval = "100ms"
            [knowledge]
            snapshot_interval = "5m"
            [knowledge.chunking]
            max_chars = 800
            overlap_chars = 80
            [knowledge.index]
            metric = "inner_product"
            [embedding]
            backend = "openai"
            base_url = "http://127.0.0.1:8081"
            model = "text-embedding-3-small"
            dimension = 1536
            [[sources.files]]
            name = "handbook"
            root = "/srv/handbook"
            include = ["**/*.md"]
            [reconcile]
            interval = "10m"
            [analytics.window]
            size = "5m"
            slide = "1m"
            allowed_lateness = "1m"
            [answer]
            k = 4
            [answer.llm]
            base_url = "http://127.0.0.1:8000/v1"
            model = "llama-3.1-8b-instruct"
            [lake]
            flush_interval = "30s"
        "#;
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.knowledge.chunking.max_chars, 800);
        assert_eq!(config.sources.files[0].name, "handbook");
        assert_eq!(config.reconcile.interval, Duration::from_secs(600));
        assert!(matches!(config.embedding, EmbedderConfig::Openai(_)));
        assert_eq!(config.analytics.window.size, Duration::from_secs(300));
        assert_eq!(config.analytics.window.slide(), Duration::from_secs(60));
        assert_eq!(
            config.answer.llm.as_ref().unwrap().model,
            "llama-3.1-8b-instruct"
        );
        assert_eq!(config.lake.flush_interval, Duration::from_secs(30));
        config.validate().unwrap();
    }

    #[test]
    fn a_slide_longer_than_the_window_is_refused() {
        let text = "[analytics.window]\nsize = \"1m\"\nslide = \"2m\"\n";
        let error = Config::parse(text, "t").unwrap().validate().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("analytics.window: window slide 2m"),
            "{error}"
        );
    }

    #[test]
    fn env_overrides_the_file() {
        let mut config = Config::default();
        config
            .apply_env(|n| match n {
                "TIDEWATER_LISTEN" => Some("127.0.0.1:9999".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.listen.port(), 9999);
        config
            .apply_env(|n| {
                (n == "TIDEWATER_PGVECTOR_DSN").then(|| "host=pg password=s3cret".into())
            })
            .unwrap();
        let pgvector = config.knowledge.index.pgvector.as_ref().unwrap();
        assert_eq!(pgvector.dsn, "host=pg password=s3cret");
        assert_eq!(
            pgvector.table_prefix, "tidewater",
            "the other settings keep their defaults"
        );
        let bad = config.apply_env(|n| (n == "TIDEWATER_LISTEN").then(|| "nope".to_owned()));
        assert!(bad.is_err());
    }

    #[test]
    fn l2_zero_sizes_and_counts_are_refused_naming_the_key() {
        let pg = "[profiles]\n[[profiles.tables]]\ntable = \"a.public.t\"\n\
                  [[sources.postgres]]\ndsn = \"host=h\"\ntables = [\"public.t\"]\n";
        let cases = [
            (
                "[knowledge.topic_config]\npartitions = 0\n".to_owned(),
                "knowledge.topic_config.partitions",
            ),
            (
                "[analytics.topic_config]\npartitions = 0\n".to_owned(),
                "analytics.topic_config.partitions",
            ),
            (
                "[profiles]\ntables = []\n[profiles.topic_config]\npartitions = 0\n".to_owned(),
                "profiles.topic_config.partitions",
            ),
            (
                "[log]\nmax_record_bytes = 0\n".to_owned(),
                "log.max_record_bytes",
            ),
            ("[log]\nsegment_bytes = 0\n".to_owned(), "log.segment_bytes"),
            (
                "[engine]\nbatch_max_records = 0\n".to_owned(),
                "engine.batch_max_records",
            ),
            (
                "[embedding]\nbackend = \"local\"\nbatch_size = 0\n".to_owned(),
                "embedding.batch_size",
            ),
            (
                "[embedding]\nbackend = \"openai\"\nbase_url = \"http://h\"\nmodel = \"m\"\n\
                 dimension = 0\n"
                    .to_owned(),
                "embedding: invalid embedder configuration: dimension",
            ),
            (
                "[knowledge.index]\nef_search = 0\n".to_owned(),
                "index.ef_search",
            ),
            (
                "[[sources.files]]\nroot = \"/d\"\nmax_file_bytes = 0\n".to_owned(),
                "max_file_bytes",
            ),
            (
                "[[sources.files]]\nroot = \"/d\"\nrelist_interval = \"0s\"\n".to_owned(),
                "relist_interval",
            ),
            (format!("{pg}batch_size = 0\n"), "batch_size"),
            (
                pg.replace("public.t\"]", "t\"]"),
                "sources.postgres 'tidewater': postgres source config: table",
            ),
            (
                "[profiles]\ntables = []\n[profiles.graph]\nmax_cluster_size = 0\n".to_owned(),
                "profiles.graph.max_cluster_size",
            ),
            (
                "[lake]\nmax_rows_per_file = 0\n".to_owned(),
                "lake.max_rows_per_file",
            ),
            (
                "[health]\nstall_after = \"0s\"\n".to_owned(),
                "health.stall_after",
            ),
            (
                "[answer.llm]\nbase_url = \"http://h/v1\"\nmodel = \"m\"\nmax_response_bytes = 0\n"
                    .to_owned(),
                "answer.llm.max_response_bytes",
            ),
            (
                "[[sources.kafka]]\ntopics = [\"t\"]\nformat = \"documents\"\ninto = \"knowledge\"\n"
                    .to_owned(),
                "set log.backend = \"kafka\"",
            ),
            (
                "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"h:9092\"\n\
                 [[sources.kafka]]\ntopics = [\"t\"]\nformat = \"debezium\"\ninto = \"profiles\"\n"
                    .to_owned(),
                "add a [profiles] section",
            ),
            (
                "[[sources.kafka]]\ntopics = [\"t\"]\nformat = \"debezium\"\ninto = \"knowledge\"\n"
                    .to_owned(),
                "debezium → profiles",
            ),
        ];
        for (text, key) in cases {
            let config = Config::parse(&text, "t").unwrap_or_else(|e| panic!("{text}: {e}"));
            let error = config
                .validate()
                .expect_err(&format!("accepted:\n{text}"))
                .to_string();
            assert!(error.contains(key), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
