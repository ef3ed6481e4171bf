//! `[knowledge.index.pgvector]`: where the shared index lives and how its vector index is
//! built and searched.

use serde::{Deserialize, Serialize};
use tidewater_core::redact::redact;

/// The longest table prefix: the longest name derived from it
/// (`{prefix}_chunks_embedding_new`, 21 more bytes) stays within PostgreSQL's 63-byte
/// limit on identifiers, which it would otherwise silently truncate.
pub(crate) const MAX_PREFIX_LEN: usize = 41;

/// pgvector's limits on index parameters (pgvector 0.8: `hnsw.c`, `ivfflat.c`).
const HNSW_M: (u32, u32) = (2, 100);
const HNSW_EF_CONSTRUCTION: (u32, u32) = (4, 1000);
const HNSW_EF_SEARCH: (u32, u32) = (1, 1000);
const IVFFLAT_LISTS: (u32, u32) = (1, 32768);

/// The approximate-nearest-neighbour index pgvector builds over the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexMethod {
    /// A graph index: good recall without training, can be built on an empty table, slower
    /// to build and larger than ivfflat.
    #[default]
    Hnsw,
    /// Inverted lists around k-means centres: fast to build and small, but the centres are
    /// learnt from the rows present when it is built, so build it (see
    /// [`crate::PgVectorStore::rebuild_index`]) once the table holds data.
    Ivfflat,
}

impl IndexMethod {
    /// The name of the access method in PostgreSQL (`pg_am.amname`).
    pub fn access_method(self) -> &'static str {
        match self {
            Self::Hnsw => "hnsw",
            Self::Ivfflat => "ivfflat",
        }
    }
}

/// `[knowledge.index.pgvector]`: PostgreSQL with pgvector as the index that several
/// Tidewater processes share.
///
/// Its `Debug` masks the password of the connection string.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgVectorConfig {
    /// The connection string, in libpq's `key=value` or URL form, e.g.
    /// `host=db port=5432 user=tidewater dbname=tidewater`. Required. The role needs to
    /// create tables in the first schema of its `search_path`, and the `vector` extension
    /// must exist or the role must be allowed to create it.
    pub dsn: String,
    /// Prefix of the table names: `{prefix}_meta`, `{prefix}_documents`, `{prefix}_chunks`,
    /// `{prefix}_offsets`. Lower-case letters, digits and `_`, not starting with a digit,
    /// at most 41 bytes. Deployments sharing a database keep apart by prefix.
    pub table_prefix: String,
    /// The vector index: `"hnsw"` or `"ivfflat"`.
    pub method: IndexMethod,
    /// HNSW: links per node on each graph level (2 to 100). Fixed when the index is built;
    /// a change rebuilds it on the next open.
    pub m: u32,
    /// HNSW: candidate list size while building (4 to 1000, at least `2 * m`). Fixed when
    /// the index is built; a change rebuilds it on the next open.
    pub ef_construction: u32,
    /// IVFFlat: the number of lists (1 to 32768). Unset: sized to the row count when the
    /// index is built, as pgvector's README advises: rows / 1000 (at least 1) up to a
    /// million rows, √rows above.
    pub lists: Option<u32>,
    /// HNSW: candidate list size while searching (1 to 1000), raised to `k` when `k` is
    /// larger. Unset: pgvector's default, 40.
    pub ef_search: Option<u32>,
    /// IVFFlat: lists probed per search (at least 1, capped at the index's lists). Unset:
    /// √lists.
    pub probes: Option<u32>,
    /// Connections kept open; batches and searches share them and wait when all are busy.
    /// At least 1.
    pub pool_size: usize,
}

impl Default for PgVectorConfig {
    fn default() -> Self {
        Self {
            dsn: String::new(),
            table_prefix: "tidewater".to_owned(),
            method: IndexMethod::Hnsw,
            m: 16,
            ef_construction: 256,
            lists: None,
            ef_search: None,
            probes: None,
            pool_size: 4,
        }
    }
}

impl std::fmt::Debug for PgVectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the connection string's password must not reach logs.
        f.debug_struct("PgVectorConfig")
            .field("dsn", &redact(&self.dsn))
            .field("table_prefix", &self.table_prefix)
            .field("method", &self.method)
            .field("m", &self.m)
            .field("ef_construction", &self.ef_construction)
            .field("lists", &self.lists)
            .field("ef_search", &self.ef_search)
            .field("probes", &self.probes)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgVectorConfig {
    /// The defaults, connecting to `dsn`.
    pub fn new(dsn: impl Into<String>) -> Self {
        Self {
            dsn: dsn.into(),
            ..Self::default()
        }
    }

    /// Checks what can be checked without a database; [`crate::PgVectorStore::open`]
    /// calls it too. The message names the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.dsn.trim().is_empty() {
            return Err("dsn: a connection string is required".to_owned());
        }
        if !is_valid_prefix(&self.table_prefix) {
            return Err(format!(
                "table_prefix: {:?} must be 1 to {MAX_PREFIX_LEN} lower-case letters, digits or \
                 `_`, not starting with a digit",
                self.table_prefix
            ));
        }
        in_range("m", self.m, HNSW_M)?;
        in_range(
            "ef_construction",
            self.ef_construction,
            HNSW_EF_CONSTRUCTION,
        )?;
        if self.ef_construction < 2 * self.m {
            return Err(format!(
                "ef_construction: {} must be at least 2 * m ({})",
                self.ef_construction,
                2 * self.m
            ));
        }
        if let Some(lists) = self.lists {
            in_range("lists", lists, IVFFLAT_LISTS)?;
        }
        if let Some(ef_search) = self.ef_search {
            in_range("ef_search", ef_search, HNSW_EF_SEARCH)?;
        }
        if self.probes == Some(0) {
            return Err("probes: must be at least 1".to_owned());
        }
        if self.pool_size == 0 {
            return Err("pool_size: must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// `[a-z_][a-z0-9_]{0,40}`: a name PostgreSQL takes unquoted and unchanged.
fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_PREFIX_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn in_range(key: &str, value: u32, (min, max): (u32, u32)) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{key}: {value} is outside {min} to {max}"))
    }
}

/// IVFFlat lists for `rows` rows, as pgvector's README advises: rows / 1000 up to a
/// million rows, √rows above; at least 1 and at most pgvector's limit.
pub(crate) fn default_lists(rows: u64) -> u32 {
    let lists = if rows <= 1_000_000 {
        rows / 1000
    } else {
        (rows as f64).sqrt() as u64
    };
    lists.clamp(1, u64::from(IVFFLAT_LISTS.1)) as u32
}

/// IVFFlat probes for an index of `lists` lists: √lists, at least 1.
pub(crate) fn default_probes(lists: u32) -> u32 {
    (f64::from(lists).sqrt().round() as u32).max(1)
}

/// HNSW `ef_search` for a top-`k` search: the configured value (pgvector's 40 when unset),
/// raised to `k`, within pgvector's limit. An HNSW scan yields at most `ef_search` rows,
/// so a smaller value would return fewer than `k`.
pub(crate) fn effective_ef_search(configured: Option<u32>, k: usize) -> u32 {
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    configured
        .unwrap_or(40)
        .max(k)
        .clamp(HNSW_EF_SEARCH.0, HNSW_EF_SEARCH.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_need_only_a_dsn() {
        let config = PgVectorConfig::default();
        assert_eq!(config.table_prefix, "tidewater");
        assert_eq!(config.method, IndexMethod::Hnsw);
        assert_eq!((config.m, config.ef_construction), (16, 256));
        assert_eq!(config.pool_size, 4);
        assert!(config.validate().unwrap_err().starts_with("dsn:"));
        assert_eq!(PgVectorConfig::new("host=db").validate(), Ok(()));
    }

    #[test]
    fn prefixes_follow_the_pattern() {
        for good in ["tidewater", "_x", "a", "t_1", &"a".repeat(41)] {
            assert!(is_valid_prefix(good), "{good:?}");
        }
        for bad in ["", "1a", "Tide", "a-b", "a b", "a\"b", "é", &"a".repeat(42)] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn out_of_range_settings_name_their_key() {
        let base = PgVectorConfig::new("host=db");
        let cases: [(&str, PgVectorConfig); 7] = [
            (
                "table_prefix",
                PgVectorConfig {
                    table_prefix: "Bad".into(),
                    ..base.clone()
                },
            ),
            (
                "m",
                PgVectorConfig {
                    m: 1,
                    ..base.clone()
                },
            ),
            (
                "ef_construction",
                PgVectorConfig {
                    m: 64,
                    ef_construction: 100,
                    ..base.clone()
                },
            ),
            (
                "lists",
                PgVectorConfig {
                    lists: Some(0),
                    ..base.clone()
                },
            ),
            (
                "ef_search",
                PgVectorConfig {
                    ef_search: Some(1001),
                    ..base.clone()
                },
            ),
            (
                "probes",
                PgVectorConfig {
                    probes: Some(0),
                    ..base.clone()
                },
            ),
            (
                "pool_size",
                PgVectorConfig {
                    pool_size: 0,
                    ..base.clone()
                },
            ),
        ];
        for (key, config) in cases {
            let err = config.validate().unwrap_err();
            assert!(err.starts_with(&format!("{key}:")), "{key}: {err}");
        }
    }

    #[test]
    fn lists_follow_pgvectors_advice() {
        assert_eq!(default_lists(0), 1);
        assert_eq!(default_lists(999), 1);
        assert_eq!(default_lists(50_000), 50);
        assert_eq!(default_lists(1_000_000), 1000);
        assert_eq!(default_lists(4_000_000), 2000);
        assert_eq!(default_probes(1), 1);
        assert_eq!(default_probes(100), 10);
        assert_eq!(effective_ef_search(None, 5), 40);
        assert_eq!(effective_ef_search(None, 100), 100);
        assert_eq!(effective_ef_search(Some(200), 10), 200);
        assert_eq!(effective_ef_search(Some(10), 5000), 1000);
    }

    #[test]
    fn toml_takes_the_documented_keys_and_refuses_others() {
        let config: PgVectorConfig = toml::from_str(
            r#"
            dsn = "host=db user=tw"
            method = "ivfflat"
            lists = 100
            probes = 10
            "#,
        )
        .unwrap();
        assert_eq!(config.method, IndexMethod::Ivfflat);
        assert_eq!((config.lists, config.probes), (Some(100), Some(10)));
        assert_eq!(config.table_prefix, "tidewater");
        assert_eq!(config.validate(), Ok(()));
        let unknown = toml::from_str::<PgVectorConfig>("dsn = \"x\"\nef = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        assert!(toml::from_str::<PgVectorConfig>("method = \"flat\"\n").is_err());
    }

    #[test]
    fn debug_masks_the_password() {
        let config = PgVectorConfig::new("host=db user=tw password=hunter2");
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("password=***"), "{printed}");
    }
}
