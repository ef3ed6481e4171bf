//! Vector indexes: the [`VectorIndex`] trait, [`UsearchIndex`] (HNSW, the default) and
//! [`ExactIndex`] (brute force; the quality baseline and test oracle).
//!
//! Both implementations give the same meaning to a [`Hit`]'s score for each [`Metric`]
//! (higher is better), so results can be compared directly, and both save atomically: a
//! crash during [`VectorIndex::save`] leaves the previous file in place.
#![warn(missing_docs)]

mod config;
mod error;
mod exact;
mod hnsw;
mod metric;
mod persist;
mod vector_index;

pub use config::{IndexConfig, Metric};
pub use error::IndexError;
pub use exact::ExactIndex;
pub use hnsw::UsearchIndex;
pub use vector_index::{Hit, VectorIndex};
