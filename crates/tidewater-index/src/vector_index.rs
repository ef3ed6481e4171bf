//! The interface every vector index implements.

use std::path::Path;

use crate::error::IndexError;

/// One search result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The key the vector was stored under.
    pub key: u64,
    /// Similarity to the query; higher is better. By [`crate::Metric`]:
    /// `Cosine` — cosine similarity in `[-1, 1]`; `InnerProduct` — the dot product;
    /// `L2` — the negated squared Euclidean distance (0 for an identical vector).
    pub score: f32,
}

/// A set of vectors, each under a `u64` key, searchable by similarity.
///
/// All methods take `&self`: implementations synchronise internally, so one index can be
/// shared between a writer and many concurrent searchers.
pub trait VectorIndex: Send + Sync {
    /// Length of every vector in the index.
    fn dimension(&self) -> usize;

    /// Stores `vector` under `key`, replacing the vector already there.
    fn upsert(&self, key: u64, vector: &[f32]) -> Result<(), IndexError>;

    /// Stores every `(key, vector)` of `items`, as [`VectorIndex::upsert`] one by one
    /// would. Keys must be distinct. An index may insert them in parallel; on an error
    /// some may be stored and others not (upserting them all again is safe).
    fn upsert_many(&self, items: &[(u64, Vec<f32>)]) -> Result<(), IndexError> {
        items
            .iter()
            .try_for_each(|(key, vector)| self.upsert(*key, vector))
    }

    /// Removes `key`; returns whether it was present.
    fn remove(&self, key: u64) -> Result<bool, IndexError>;

    /// The (at most) `k` vectors most similar to `query`, best first. With a `filter`,
    /// only keys for which it returns `true` are returned; the filter must not panic.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Hit>, IndexError>;

    /// Number of vectors stored.
    fn len(&self) -> usize;

    /// Whether no vector is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a vector is stored under `key`.
    fn contains(&self, key: u64) -> bool;

    /// Writes the index to `path` atomically: to a temporary file in the same directory,
    /// flushed to disk, then renamed over `path`, and the directory flushed, so that a
    /// crash leaves either the old file or the new one.
    fn save(&self, path: &Path) -> Result<(), IndexError>;
}
