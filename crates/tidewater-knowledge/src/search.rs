//! Search requests and results (the body of `POST /v1/search`).

use serde::{Deserialize, Serialize};

/// Most results one search returns.
pub const MAX_K: usize = 100;

/// A search request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The text to search for.
    pub query: String,
    /// How many results (1..=100, default 5).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Restricts results to matching documents.
    #[serde(default)]
    pub filter: Option<SearchFilter>,
}

fn default_k() -> usize {
    5
}

/// Conditions a result's document must meet (all of them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchFilter {
    /// The document id starts with this.
    #[serde(default)]
    pub doc_id_prefix: Option<String>,
    /// Each of these metadata fields equals the given JSON value.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl SearchFilter {
    pub(crate) fn matches(
        &self,
        doc_id: &str,
        metadata: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        if let Some(prefix) = &self.doc_id_prefix {
            if !doc_id.starts_with(prefix.as_str()) {
                return false;
            }
        }
        self.metadata
            .iter()
            .all(|(k, v)| metadata.and_then(|m| m.get(k)) == Some(v))
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The chunk's id (`<doc_id>#<hash of its text>`).
    pub chunk_id: String,
    /// Its document.
    pub doc_id: String,
    /// The chunk's text.
    pub text: String,
    /// Similarity to the query; higher is closer (cosine similarity by default).
    pub score: f32,
    /// The document's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}
