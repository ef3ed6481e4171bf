//! Chunking a text: splitting, packing, the overlap between neighbouring chunks, and the
//! token cap.

use std::ops::Range;

use crate::config::ChunkerConfig;
use crate::pack::pack;
use crate::split::{char_len, split};

/// One chunk of a text.
///
/// `start..end` is the byte range of the chunk's *own* text in the input, overlap
/// excluded; own ranges of consecutive chunks do not overlap, are in order, and only
/// whitespace lies between them. `text` is the overlap followed by the own text, and is
/// itself a slice of the input: `text == input[start - overlap_len()..end]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The text to embed and return: the tail of the previous chunk (the overlap, possibly
    /// empty), then this chunk's own text.
    pub text: String,
    /// Byte offset in the input where the chunk's own text starts.
    pub start: usize,
    /// Byte offset in the input where the chunk's own text ends (exclusive).
    pub end: usize,
}

impl Chunk {
    /// The chunk's own text, without the overlap.
    pub fn own_text(&self) -> &str {
        &self.text[self.overlap_len()..]
    }

    /// Length in bytes of the overlap at the start of `text`.
    pub fn overlap_len(&self) -> usize {
        self.text.len() - (self.end - self.start)
    }
}

/// Splits `text` into chunks for embedding.
///
/// Guarantees, for a valid `cfg` (see [`ChunkerConfig::validate`]; an invalid one is
/// clamped to `max_chars >= 1` and `overlap_chars < max_chars`):
///
/// - every chunk's own text is non-empty and at most `cfg.max_chars` characters, its
///   overlap at most `cfg.overlap_chars` characters, so its `text` is at most
///   `max_chars + overlap_chars` characters;
/// - `count_tokens(&chunk.text) <= max_tokens`, unless a single character alone is over
///   the cap, in which case that character is returned as a chunk of its own without
///   overlap;
/// - the own texts, in order, hold all the non-whitespace text of the input;
/// - the result depends only on the input, and boundaries depend on the text around them,
///   not on their position, so an edit changes only the chunks near it;
/// - an empty or all-whitespace input gives no chunks.
///
/// The overlap of a chunk is the end of the previous chunk's own text (plus the whitespace
/// between the two), starting at a word boundary, at most `overlap_chars` characters long;
/// it is empty where no word boundary lies within that distance.
///
/// `count_tokens` is called once for each chunk, and once more for each chunk that is over
/// `max_tokens` and split again (the parts are split with a character limit scaled down by
/// the measured characters per token).
pub fn chunk_text(
    text: &str,
    cfg: &ChunkerConfig,
    max_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<Chunk> {
    let max_chars = cfg.max_chars.max(1);
    let overlap_chars = cfg.overlap_chars.min(max_chars - 1);
    let chunker = TokenCap {
        text,
        max_tokens,
        count_tokens,
    };
    let mut chunks = Vec::new();
    for range in pack(text, &split(text, 0..text.len(), max_chars), max_chars) {
        chunker.emit(range, overlap_chars, &mut chunks);
    }
    chunks
}

/// Fraction of the estimated character budget used when a chunk is split for being over
/// the token cap: token density varies along a text, so aiming a little low saves another
/// round of splitting and counting.
const TOKEN_SAFETY: f64 = 0.9;

struct TokenCap<'a> {
    text: &'a str,
    max_tokens: usize,
    count_tokens: &'a dyn Fn(&str) -> usize,
}

impl TokenCap<'_> {
    /// Adds the chunk with own range `own` to `out`, split further while it is over the
    /// token cap.
    fn emit(&self, own: Range<usize>, overlap_chars: usize, out: &mut Vec<Chunk>) {
        let previous = out.last().map(|chunk| chunk.start..chunk.end);
        let start = overlap_start(self.text, previous, own.start, overlap_chars);
        let candidate = &self.text[start..own.end];
        let tokens = (self.count_tokens)(candidate);
        if tokens <= self.max_tokens {
            out.push(self.chunk(start, own));
            return;
        }
        let own_chars = char_len(self.text, &own);
        if own_chars <= 1 {
            // Nothing left to split: keep the text rather than lose it.
            out.push(self.chunk(own.start, own));
            return;
        }
        // Characters that fit the cap at this chunk's density of characters per token.
        let chars_per_token = candidate.chars().count() as f64 / tokens as f64;
        let budget = (self.max_tokens as f64 * chars_per_token * TOKEN_SAFETY) as usize;
        // A quarter of the budget at most goes to overlap, so that a tight cap still
        // leaves room for new text in each chunk.
        let overlap_chars = overlap_chars.min(budget / 4);
        // Strictly shorter than now, so that the recursion ends even when the estimate is
        // off (a counter that is not proportional to length).
        let max_chars = budget
            .saturating_sub(overlap_chars)
            .min(own_chars * 9 / 10)
            .max(1);
        let pieces = split(self.text, own, max_chars);
        for range in pack(self.text, &pieces, max_chars) {
            self.emit(range, overlap_chars.min(max_chars - 1), out);
        }
    }

    fn chunk(&self, text_start: usize, own: Range<usize>) -> Chunk {
        Chunk {
            text: self.text[text_start..own.end].to_string(),
            start: own.start,
            end: own.end,
        }
    }
}

/// Where the overlap of a chunk starting at `start` begins: the earliest word start within
/// the previous chunk's own range that is at most `overlap_chars` characters before
/// `start`. Returns `start` for no overlap.
fn overlap_start(
    text: &str,
    previous: Option<Range<usize>>,
    start: usize,
    overlap_chars: usize,
) -> usize {
    let Some(previous) = previous else {
        return start;
    };
    if overlap_chars == 0 {
        return start;
    }
    // Earliest position at most `overlap_chars` characters back.
    let mut position = start;
    for (taken, (i, _)) in text[previous.start..start].char_indices().rev().enumerate() {
        if taken == overlap_chars {
            break;
        }
        position = previous.start + i;
    }
    // Never start inside a word: if the character before is part of the same word, move
    // past the rest of that word.
    let is_space_before = position == previous.start
        || text[..position]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
    let rest = &text[position..start];
    let skip = if is_space_before {
        rest.len() - rest.trim_start().len()
    } else {
        let after_word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tail = &rest[after_word..];
        after_word + (tail.len() - tail.trim_start().len())
    };
    let position = position + skip;
    if position >= previous.end {
        // Only the whitespace between the chunks is within reach.
        start
    } else {
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn cfg(max_chars: usize, overlap_chars: usize) -> ChunkerConfig {
        ChunkerConfig {
            max_chars,
            overlap_chars,
        }
    }

    #[test]
    fn overlap_starts_at_a_word() {
        let text = "alpha beta gamma. delta epsilon.";
        // Previous chunk "alpha beta gamma." (0..17), next starts at 18.
        assert_eq!(overlap_start(text, Some(0..17), 18, 8), 11);
        assert_eq!(&text[11..18], "gamma. ");
        // Reaching back exactly to a word start.
        assert_eq!(overlap_start(text, Some(0..17), 18, 7), 11);
        // Only part of "gamma." is in reach: no overlap rather than half a word.
        assert_eq!(overlap_start(text, Some(0..17), 18, 6), 18);
        // Reaching past the start of the previous chunk stops there.
        assert_eq!(overlap_start(text, Some(6..17), 18, 100), 6);
        assert_eq!(overlap_start(text, None, 18, 100), 18);
        assert_eq!(overlap_start(text, Some(0..17), 18, 0), 18);
    }

    #[test]
    fn chunks_carry_overlap() {
        let text = "One two three four five. Six seven eight nine ten. \
                    Eleven twelve thirteen. Fourteen fifteen sixteen.";
        let chunks = chunk_text(text, &cfg(40, 15), usize::MAX, &words);
        assert!(chunks.len() > 1);
        for pair in chunks.windows(2) {
            let overlap = &pair[1].text[..pair[1].overlap_len()];
            assert!(!overlap.is_empty(), "{pair:?}");
            assert!(
                pair[0].text.trim_end().ends_with(overlap.trim_end()),
                "{pair:?}"
            );
            assert_eq!(
                &text[pair[1].start - pair[1].overlap_len()..pair[1].end],
                pair[1].text
            );
        }
    }

    #[test]
    fn token_cap_splits_dense_chunks() {
        // 1000 characters fit max_chars, but at one token per character they are far over
        // a 100-token cap.
        let text = "ab cd ef gh. ".repeat(80);
        let chars = |s: &str| s.chars().count();
        let chunks = chunk_text(&text, &cfg(1000, 100), 100, &chars);
        assert!(chunks.len() >= 10, "{}", chunks.len());
        for chunk in &chunks {
            assert!(chars(&chunk.text) <= 100, "{chunk:?}");
        }
        let own: String = chunks.iter().map(Chunk::own_text).collect();
        assert_eq!(
            own.split_whitespace().collect::<String>(),
            text.split_whitespace().collect::<String>()
        );
    }

    #[test]
    fn counts_tokens_once_per_chunk_when_under_the_cap() {
        let text = "Some words here. ".repeat(300);
        let calls = std::cell::Cell::new(0);
        let counter = |s: &str| {
            calls.set(calls.get() + 1);
            words(s)
        };
        let chunks = chunk_text(&text, &ChunkerConfig::default(), 512, &counter);
        assert_eq!(calls.get(), chunks.len());
    }

    #[test]
    fn a_single_character_over_the_cap_is_kept() {
        let chunks = chunk_text("a b", &cfg(10, 2), 0, &|s: &str| s.len());
        let own: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(own, vec!["a", "b"]);
    }

    #[test]
    fn invalid_config_is_clamped() {
        let chunks = chunk_text("abc def", &cfg(0, 5), usize::MAX, &words);
        assert_eq!(chunks.len(), 6);
        assert!(chunks.iter().all(|c| c.text.chars().count() == 1));
    }
}
