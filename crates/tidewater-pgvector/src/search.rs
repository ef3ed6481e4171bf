//! Top-k search by cosine similarity, with filters compiled to SQL.
//!
//! The nearest rows come from an inner query that pgvector's index serves (`ORDER BY
//! embedding <=> $1 LIMIT k`); the filters sit in its `WHERE`. An HNSW scan yields at most
//! `ef_search` candidates and an IVFFlat scan only the probed lists' rows, so a selective
//! filter would leave fewer than `k`: with a filter, pgvector 0.8's iterative scan
//! (`relaxed_order`) keeps the scan going until `k` rows pass. Relaxed order may return
//! the rows slightly out of order, so an outer query sorts them again, as pgvector's README
//! advises.

use pgvector::Vector;
use postgres::types::ToSql;
use serde_json::{Map, Value};

use crate::config::{default_probes, effective_ef_search, IndexMethod};
use crate::error::PgVectorError;
use crate::schema::Tables;

/// Which chunks a search may return. The default lets every chunk through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only chunks of documents whose id starts with this (`%`, `_` and `\` match
    /// themselves).
    pub doc_id_prefix: Option<String>,
    /// Only chunks whose document's metadata contains these keys with these values (JSON
    /// containment: `{"tags": ["a"]}` matches a document tagged `a` among others).
    pub metadata: Map<String, Value>,
}

impl Filter {
    /// Whether the filter lets every chunk through.
    pub fn is_empty(&self) -> bool {
        self.doc_id_prefix.as_deref().is_none_or(str::is_empty) && self.metadata.is_empty()
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct PgHit {
    /// The chunk.
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// The chunk's text.
    pub text: String,
    /// Cosine similarity to the query, `1 - cosine distance`, in `[-1, 1]`.
    pub score: f32,
    /// The document's metadata.
    pub metadata: Map<String, Value>,
}

/// How the store searches: the method and its settings, fixed at open.
#[derive(Debug, Clone)]
pub(crate) struct SearchSettings {
    pub(crate) method: IndexMethod,
    pub(crate) ef_search: Option<u32>,
    pub(crate) probes: Option<u32>,
    /// IVFFlat lists of the index when this process opened or rebuilt it.
    pub(crate) lists: u32,
    /// pgvector 0.8 or later.
    pub(crate) iterative_scan: bool,
}

impl SearchSettings {
    /// The `SET LOCAL` statements for a top-`k` search.
    pub(crate) fn session_settings(&self, k: usize, filtered: bool) -> String {
        let mut sql = match self.method {
            IndexMethod::Hnsw => format!(
                "SET LOCAL hnsw.ef_search = {}",
                effective_ef_search(self.ef_search, k)
            ),
            IndexMethod::Ivfflat => {
                let lists = self.lists.max(1);
                let probes = self.probes.unwrap_or_else(|| default_probes(lists));
                format!("SET LOCAL ivfflat.probes = {}", probes.min(lists))
            }
        };
        // Without a filter a plain scan already yields k rows (ef_search >= k; all probed
        // lists), unless k exceeds ef_search's cap.
        if self.iterative_scan && (filtered || k > effective_ef_search(self.ef_search, k) as usize)
        {
            let method = self.method.access_method();
            sql.push_str(&format!(
                "; SET LOCAL {method}.iterative_scan = relaxed_order"
            ));
        }
        sql
    }
}

/// A search statement and its parameters.
pub(crate) struct SearchQuery {
    pub(crate) sql: String,
    params: Vec<Box<dyn ToSql + Sync>>,
}

impl SearchQuery {
    pub(crate) fn new(tables: &Tables, vector: &[f32], k: usize, filter: &Filter) -> Self {
        let mut params: Vec<Box<dyn ToSql + Sync>> = vec![
            Box::new(Vector::from(vector.to_vec())),
            Box::new(i64::try_from(k).unwrap_or(i64::MAX)),
        ];
        let mut conditions = Vec::new();
        if !filter.metadata.is_empty() {
            params.push(Box::new(Value::Object(filter.metadata.clone())));
            conditions.push(format!("metadata @> ${}", params.len()));
        }
        if let Some(prefix) = filter.doc_id_prefix.as_deref().filter(|p| !p.is_empty()) {
            params.push(Box::new(format!("{}%", escape_like(prefix))));
            conditions.push(format!("doc_id LIKE ${}", params.len()));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // `distance + 0` in the outer ORDER BY keeps the planner from pushing the sort into
        // the index scan again (pgvector's README); chunk_id breaks ties.
        let sql = format!(
            "WITH nearest AS MATERIALIZED (
                 SELECT chunk_id, doc_id, text, metadata, embedding <=> $1 AS distance
                 FROM {chunks}
                 {filter_sql}
                 ORDER BY distance
                 LIMIT $2
             )
             SELECT chunk_id, doc_id, text, metadata, distance FROM nearest
             ORDER BY distance + 0, chunk_id",
            chunks = tables.chunks
        );
        Self { sql, params }
    }

    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }
}

/// A hit from a row of [`SearchQuery`].
pub(crate) fn hit(row: &postgres::Row) -> Result<PgHit, PgVectorError> {
    let distance: f64 = row.get(4);
    Ok(PgHit {
        chunk_id: row.get(0),
        doc_id: row.get(1),
        text: row.get(2),
        score: (1.0 - distance) as f32,
        metadata: object(row.get(3))?,
    })
}

/// A stored `metadata` value, which this crate only writes as an object.
pub(crate) fn object(value: Value) -> Result<Map<String, Value>, PgVectorError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(PgVectorError::Decode {
            what: "metadata",
            reason: format!("expected a JSON object, found {other}"),
        }),
    }
}

/// `text` as a `LIKE` pattern matching itself (with the default escape character `\`).
pub(crate) fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
        assert_eq!(escape_like("plain/é"), "plain/é");
    }

    #[test]
    fn iterative_scans_only_for_filters_or_a_k_beyond_ef_search() {
        let mut settings = SearchSettings {
            method: IndexMethod::Hnsw,
            ef_search: None,
            probes: None,
            lists: 0,
            iterative_scan: true,
        };
        assert_eq!(
            settings.session_settings(10, false),
            "SET LOCAL hnsw.ef_search = 40"
        );
        assert_eq!(
            settings.session_settings(10, true),
            "SET LOCAL hnsw.ef_search = 40; SET LOCAL hnsw.iterative_scan = relaxed_order"
        );
        assert!(settings
            .session_settings(5000, false)
            .ends_with("relaxed_order"));
        settings.iterative_scan = false;
        assert_eq!(
            settings.session_settings(10, true),
            "SET LOCAL hnsw.ef_search = 40"
        );
        settings.method = IndexMethod::Ivfflat;
        settings.lists = 100;
        assert_eq!(
            settings.session_settings(10, false),
            "SET LOCAL ivfflat.probes = 10"
        );
        settings.probes = Some(500);
        assert_eq!(
            settings.session_settings(10, false),
            "SET LOCAL ivfflat.probes = 100"
        );
    }

    #[test]
    fn an_empty_prefix_filters_nothing() {
        let filter = Filter {
            doc_id_prefix: Some(String::new()),
            ..Filter::default()
        };
        assert!(filter.is_empty());
        let query = SearchQuery::new(&Tables::new("t"), &[1.0], 3, &filter);
        assert!(!query.sql.contains("WHERE"), "{}", query.sql);
        assert_eq!(query.params().len(), 2);
    }
}
