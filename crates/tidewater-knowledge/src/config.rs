//! Settings of the knowledge pipeline (the `[knowledge]` section of the config).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_chunk::ChunkerConfig;
use tidewater_index::{IndexConfig, IndexError, Metric};
use tidewater_log::TopicConfig;
use tidewater_pgvector::PgVectorConfig;

/// How documents become searchable chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// The topic document events are written to and consumed from.
    pub topic: String,
    /// How that topic is created (partitions, retention).
    pub topic_config: TopicConfig,
    /// Chunk sizes.
    pub chunking: ChunkerConfig,
    /// The vector index: the built-in HNSW index or a shared PostgreSQL.
    pub index: KnowledgeIndexConfig,
    /// How often the built-in index is snapshotted (so a restart replays little).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            topic: "documents".into(),
            topic_config: TopicConfig::default(),
            chunking: ChunkerConfig::default(),
            index: KnowledgeIndexConfig::default(),
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

/// Where the chunks' vectors are indexed and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexBackend {
    /// An HNSW index in this process, derived from its own state database
    /// (`knowledge.redb`): one process per corpus.
    #[default]
    Hnsw,
    /// PostgreSQL with pgvector (`[knowledge.index.pgvector]`), shared by every member:
    /// each batch commits with its partition's offset in one transaction.
    Pgvector,
}

/// `[knowledge.index]`: the backend, the built-in index's settings and the shared one's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeIndexConfig {
    /// `"hnsw"` (built in, the default) or `"pgvector"`.
    pub backend: IndexBackend,
    /// Distance metric. Fixed when the index is created. pgvector compares by cosine
    /// similarity only.
    pub metric: Metric,
    /// Built-in index: HNSW links per node on each graph level (at least 2).
    pub m: usize,
    /// Built-in index: candidate list size while inserting (at least 1).
    pub ef_construction: usize,
    /// Built-in index: candidate list size while searching (at least 1; raised to `k`).
    pub ef_search: usize,
    /// `[knowledge.index.pgvector]`: the PostgreSQL that `backend = "pgvector"` uses.
    pub pgvector: Option<PgVectorConfig>,
}

impl Default for KnowledgeIndexConfig {
    fn default() -> Self {
        let hnsw = IndexConfig::default();
        Self {
            backend: IndexBackend::default(),
            metric: hnsw.metric,
            m: hnsw.m,
            ef_construction: hnsw.ef_construction,
            ef_search: hnsw.ef_search,
            pgvector: None,
        }
    }
}

/// Why `[knowledge.index]` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexConfigError {
    /// A setting of the built-in index is out of range.
    #[error(transparent)]
    Hnsw(#[from] IndexError),
    /// `backend = "pgvector"` without its section.
    #[error(
        "index.backend = \"pgvector\" needs a [knowledge.index.pgvector] section with at \
         least `dsn`"
    )]
    MissingPgvector,
    /// pgvector is searched by cosine distance only.
    #[error(
        "index.metric = \"{}\": the pgvector backend compares by cosine similarity; set \
         metric = \"cosine\" or leave it out",
        metric_name(*.0)
    )]
    PgvectorMetric(Metric),
    /// A key of `[knowledge.index.pgvector]` is invalid.
    #[error("index.pgvector.{0}")]
    Pgvector(String),
}

impl KnowledgeIndexConfig {
    /// The settings of the built-in HNSW index.
    pub fn hnsw(&self) -> IndexConfig {
        IndexConfig {
            metric: self.metric,
            m: self.m,
            ef_construction: self.ef_construction,
            ef_search: self.ef_search,
        }
    }

    /// Connects pgvector with `dsn` (from the environment, so a password need not sit in
    /// the file), keeping the section's other settings or their defaults.
    pub fn set_pgvector_dsn(&mut self, dsn: String) {
        self.pgvector
            .get_or_insert_with(PgVectorConfig::default)
            .dsn = dsn;
    }

    /// The pgvector settings when `backend = "pgvector"`, checked.
    pub fn pgvector(&self) -> Result<Option<&PgVectorConfig>, IndexConfigError> {
        match self.backend {
            IndexBackend::Hnsw => Ok(None),
            IndexBackend::Pgvector => {
                let pgvector = self
                    .pgvector
                    .as_ref()
                    .ok_or(IndexConfigError::MissingPgvector)?;
                if self.metric != Metric::Cosine {
                    return Err(IndexConfigError::PgvectorMetric(self.metric));
                }
                pgvector.validate().map_err(IndexConfigError::Pgvector)?;
                Ok(Some(pgvector))
            }
        }
    }

    /// Checks the settings without connecting anywhere; `Knowledge::open` calls it too.
    /// The built-in index's keys are checked whatever the backend, so switching back
    /// never meets an invalid file.
    pub fn validate(&self) -> Result<(), IndexConfigError> {
        self.hnsw().validate()?;
        self.pgvector().map(|_| ())
    }
}

/// A metric as the config file spells it.
fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "l2",
        Metric::InnerProduct => "inner_product",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> KnowledgeConfig {
        toml::from_str(toml_text).expect("valid [knowledge] section")
    }

    #[test]
    fn existing_index_sections_keep_parsing_as_hnsw() {
        let config = parse("[index]\nmetric = \"inner_product\"\nm = 32\nef_search = 64\n");
        assert_eq!(config.index.backend, IndexBackend::Hnsw);
        assert_eq!(
            config.index.hnsw(),
            IndexConfig {
                metric: Metric::InnerProduct,
                m: 32,
                ef_search: 64,
                ..IndexConfig::default()
            }
        );
        assert_eq!(
            KnowledgeConfig::default().index.hnsw(),
            IndexConfig::default()
        );
        assert!(config.index.validate().is_ok());
        assert!(toml::from_str::<KnowledgeConfig>("[index]\nlists = 3\n").is_err());
    }

    #[test]
    fn pgvector_takes_its_own_section() {
        let config = parse(
            "[index]\nbackend = \"pgvector\"\n[index.pgvector]\ndsn = \"host=db\"\n\
             method = \"ivfflat\"\nprobes = 4\n",
        );
        let pgvector = config.index.pgvector().unwrap().unwrap();
        assert_eq!(pgvector.dsn, "host=db");
        assert_eq!(pgvector.probes, Some(4));
        assert_eq!(pgvector.table_prefix, "tidewater");
    }

    #[test]
    fn pgvector_without_its_section_or_with_another_metric_is_refused() {
        let missing = parse("[index]\nbackend = \"pgvector\"\n").index.validate();
        let message = missing.unwrap_err().to_string();
        assert!(message.contains("[knowledge.index.pgvector]"), "{message}");

        let l2 = parse(
            "[index]\nbackend = \"pgvector\"\nmetric = \"l2\"\n[index.pgvector]\ndsn = \"x\"\n",
        );
        let message = l2.index.validate().unwrap_err().to_string();
        assert!(message.starts_with("index.metric = \"l2\""), "{message}");

        let no_dsn = parse("[index]\nbackend = \"pgvector\"\n[index.pgvector]\nm = 8\n");
        let message = no_dsn.index.validate().unwrap_err().to_string();
        assert!(message.starts_with("index.pgvector.dsn:"), "{message}");

        // The section alone does not switch the backend.
        let unused = parse("[index]\nmetric = \"l2\"\n[index.pgvector]\ndsn = \"x\"\n");
        assert!(unused.index.validate().is_ok());
        assert!(unused.index.pgvector().unwrap().is_none());
    }
}
