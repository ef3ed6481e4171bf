//! Text extraction (HTML → text) and chunking: recursive splitting at paragraph →
//! sentence → word boundaries, with overlap, a token cap, and boundaries chosen so that
//! an edit in one place changes only the chunks around it.
//!
//! The pipeline for one document is [`extract_text`] then [`chunk_text`]:
//!
//! 1. the `split` module cuts the text into *pieces* — sentences, or words and
//!    character runs where a sentence is longer than `max_chars` — and remembers how
//!    strong the boundary before each piece is (paragraph > sentence > word > character).
//! 2. the `pack` module groups consecutive pieces into chunks of at most `max_chars`.
//!    Where a chunk ends is decided by content, not by position: each boundary has a key
//!    (its strength, then the blake3 hash of the piece after it); a boundary with the best
//!    key within `max_chars / 2` characters either side always ends a chunk, and between
//!    those, each chunk ends at the best boundary that leaves it at least half full. Two
//!    packings of texts that differ in one place therefore pick the same boundaries again
//!    right after the difference, and the chunks further on are identical.
//! 3. the `chunker` module prefixes each chunk with the tail of the previous one
//!    (the overlap) and splits any chunk whose token count exceeds the cap.
//!
//! Lengths are counted in characters (Unicode scalar values); positions are byte offsets
//! into the text given to [`chunk_text`].
#![warn(missing_docs)]

mod chunker;
mod config;
mod extract;
mod pack;
mod split;

pub use chunker::{chunk_text, Chunk};
pub use config::{ChunkerConfig, ChunkerConfigError};
pub use extract::extract_text;
