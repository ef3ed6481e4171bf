//! Chunking properties: edit stability on long documents, and limits, completeness and
//! determinism on random texts.

use std::collections::HashSet;
use std::ops::Range;

use proptest::prelude::*;
use tidewater_chunk::{chunk_text, Chunk, ChunkerConfig};

/// Token counter for tests: whitespace-separated words.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Deterministic pseudo-random numbers (splitmix64), so documents are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }
}

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "tra", "ven", "sor", "el", "qui", "pa", "dex", "ru", "no", "sta", "fi",
    "gor", "un", "be", "chi", "ma", "zel", "o", "wen", "tho", "ar",
];

fn word(rng: &mut Rng) -> String {
    (0..rng.between(1, 4))
        .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
        .collect()
}

fn sentence(rng: &mut Rng) -> String {
    let count = rng.between(4, 24);
    let mut out = String::new();
    for i in 0..count {
        let mut w = word(rng);
        if i == 0 {
            let mut chars = w.chars();
            w = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
        } else {
            out.push(' ');
        }
        out.push_str(&w);
        if i + 1 < count && rng.below(10) == 0 {
            out.push(',');
        }
    }
    out.push(match rng.below(10) {
        0 => '!',
        1 => '?',
        _ => '.',
    });
    out
}

/// A document as paragraphs of sentences; paragraphs run from one short sentence to
/// several that together exceed a chunk.
fn document(seed: u64, bytes: usize) -> Vec<Vec<String>> {
    let mut rng = Rng(seed);
    let mut paragraphs = Vec::new();
    let mut size = 0;
    while size < bytes {
        let count = match rng.below(10) {
            0..=2 => rng.between(1, 2),
            3..=7 => rng.between(3, 6),
            _ => rng.between(7, 14),
        };
        let paragraph: Vec<String> = (0..count).map(|_| sentence(&mut rng)).collect();
        size += paragraph.iter().map(|s| s.len() + 1).sum::<usize>() + 1;
        paragraphs.push(paragraph);
    }
    paragraphs
}

fn render(paragraphs: &[Vec<String>]) -> String {
    paragraphs
        .iter()
        .map(|p| p.join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Byte offset of the start of paragraph `index` in the rendered document.
fn paragraph_offset(paragraphs: &[Vec<String>], index: usize) -> usize {
    render(&paragraphs[..index]).len() + if index > 0 { 2 } else { 0 }
}

fn chunk(text: &str) -> Vec<Chunk> {
    chunk_text(text, &ChunkerConfig::default(), 512, &words)
}

/// Indices of the chunks of `new` whose text is not a chunk text of `old`.
fn changed(old: &[Chunk], new: &[Chunk]) -> Vec<usize> {
    let old: HashSet<&str> = old.iter().map(|c| c.text.as_str()).collect();
    new.iter()
        .enumerate()
        .filter(|(_, c)| !old.contains(c.text.as_str()))
        .map(|(i, _)| i)
        .collect()
}

/// Checks that few chunks changed, that they are consecutive, and that they are the chunks
/// around `edit` (a byte range in the new text).
fn assert_local_change(old: &[Chunk], new: &[Chunk], edit: Range<usize>) -> usize {
    let changed = changed(old, new);
    assert!(!changed.is_empty(), "the edit changed no chunk");
    assert!(
        changed.len() <= 4,
        "{} of {} chunks changed: {changed:?}",
        changed.len(),
        new.len()
    );
    assert!(
        changed.windows(2).all(|w| w[1] == w[0] + 1),
        "changed chunks are not adjacent: {changed:?}"
    );
    let first = &new[changed[0]];
    let last = &new[changed[changed.len() - 1]];
    let reach = first.start - first.overlap_len()..last.end;
    assert!(
        reach.start <= edit.end && edit.start <= reach.end,
        "changed chunks {reach:?} do not cover the edit {edit:?}"
    );
    changed.len()
}

const DOC_BYTES: usize = 100_000;

#[test]
fn generated_document_has_over_a_hundred_chunks() {
    let text = render(&document(1, DOC_BYTES));
    let chunks = chunk(&text);
    assert!((100..=200).contains(&chunks.len()), "{}", chunks.len());
}

#[test]
fn inserting_a_sentence_changes_only_nearby_chunks() {
    let mut paragraphs = document(1, DOC_BYTES);
    let old = chunk(&render(&paragraphs));
    let middle = paragraphs.len() / 2;
    let inserted =
        "Meanwhile the committee quietly approved an entirely new budget for the harbour.";
    assert!((75..=85).contains(&inserted.len()));
    paragraphs[middle].insert(1, inserted.to_string());
    let new_text = render(&paragraphs);
    let new = chunk(&new_text);
    let at = new_text.find(inserted).expect("inserted sentence");
    let n = assert_local_change(&old, &new, at..at + inserted.len());
    eprintln!("insert: {n} of {} chunks changed", new.len());
}

#[test]
fn deleting_a_sentence_changes_only_nearby_chunks() {
    let mut paragraphs = document(2, DOC_BYTES);
    let old = chunk(&render(&paragraphs));
    let middle = (paragraphs.len() / 2..paragraphs.len())
        .find(|&i| paragraphs[i].len() >= 3)
        .expect("a paragraph of three sentences");
    paragraphs[middle].remove(1);
    let new_text = render(&paragraphs);
    let new = chunk(&new_text);
    let at = paragraph_offset(&paragraphs, middle) + paragraphs[middle][0].len();
    let n = assert_local_change(&old, &new, at..at + 1);
    eprintln!("delete: {n} of {} chunks changed", new.len());
}

#[test]
fn changing_a_word_changes_only_nearby_chunks() {
    let mut paragraphs = document(3, DOC_BYTES);
    let old = chunk(&render(&paragraphs));
    let middle = paragraphs.len() / 2;
    let sentence = &mut paragraphs[middle][0];
    // The second word, replaced by another of a different length.
    let start = sentence.find(' ').expect("a sentence of several words") + 1;
    let end = start
        + sentence[start..]
            .find([' ', ','])
            .unwrap_or(sentence.len() - start - 1);
    sentence.replace_range(start..end, "harbour");
    let new_text = render(&paragraphs);
    let new = chunk(&new_text);
    let at = paragraph_offset(&paragraphs, middle) + start;
    let n = assert_local_change(&old, &new, at..at + "harbour".len());
    eprintln!("word: {n} of {} chunks changed", new.len());
}

/// Random edits of the three kinds above at random places of many documents: the changed
/// chunks stay few on average and never many.
#[test]
fn edits_anywhere_stay_local() {
    let mut counts = Vec::new();
    for seed in 10..40 {
        let paragraphs = document(seed, DOC_BYTES / 4);
        let old = chunk(&render(&paragraphs));
        let mut rng = Rng(seed * 7919);
        for _ in 0..10 {
            let mut edited = paragraphs.clone();
            let p = rng.below(edited.len());
            let s = rng.below(edited[p].len());
            match rng.below(3) {
                0 => edited[p].insert(s, sentence(&mut rng)),
                1 if edited[p].len() > 1 => {
                    edited[p].remove(s);
                }
                _ => {
                    let w = word(&mut rng);
                    edited[p][s] = format!("{w} {}", edited[p][s]);
                }
            }
            let new = chunk(&render(&edited));
            counts.push(changed(&old, &new).len());
        }
    }
    counts.sort_unstable();
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let p99 = counts[counts.len() * 99 / 100];
    eprintln!(
        "changed chunks over {} edits: mean {mean:.2}, p99 {p99}, max {}",
        counts.len(),
        counts[counts.len() - 1]
    );
    assert!(mean <= 2.0, "mean {mean}");
    assert!(counts[counts.len() - 1] <= 6, "{counts:?}");
}

/// Random text over an alphabet that exercises every splitting level: words, sentence
/// punctuation, line and paragraph breaks, long runs without spaces, multi-byte characters.
fn random_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        8 => "[a-z]{1,8}",
        2 => Just(" ".to_string()),
        1 => Just(". ".to_string()),
        1 => Just("! ".to_string()),
        1 => Just("\n".to_string()),
        1 => Just("\n\n".to_string()),
        1 => Just(" \t\r\n \n".to_string()),
        1 => "[éü日本語。]{1,6}",
        1 => "[a-z]{20,60}",
    ];
    prop::collection::vec(token, 0..300).prop_map(|tokens| {
        let mut text = String::new();
        for token in tokens {
            if token.starts_with(|c: char| c.is_alphanumeric())
                && !text.is_empty()
                && separate(&text)
            {
                text.push(' ');
            }
            text.push_str(&token);
        }
        text
    })
}

/// Whether to put a space before the next word: mostly, but not always, so that some
/// words run together into long ones.
fn separate(text: &str) -> bool {
    text.len() % 7 != 3
}

fn non_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn check_chunks(
    text: &str,
    cfg: &ChunkerConfig,
    max_tokens: usize,
    count_tokens: &dyn Fn(&str) -> usize,
    chunks: &[Chunk],
) {
    let mut previous: Option<&Chunk> = None;
    for chunk in chunks {
        let own = chunk.own_text();
        assert!(!own.trim().is_empty(), "empty chunk {chunk:?}");
        assert_eq!(own, own.trim(), "own text is trimmed");
        assert!(own.chars().count() <= cfg.max_chars, "{chunk:?}");
        assert!(count_tokens(&chunk.text) <= max_tokens, "{chunk:?}");
        assert_eq!(&text[chunk.start..chunk.end], own);
        let overlap_start = chunk.start - chunk.overlap_len();
        assert_eq!(&text[overlap_start..chunk.end], chunk.text);
        assert!(text[overlap_start..chunk.start].chars().count() <= cfg.overlap_chars);
        match previous {
            None => assert_eq!(chunk.overlap_len(), 0),
            Some(previous) => {
                assert!(previous.end <= chunk.start, "{previous:?} {chunk:?}");
                assert!(text[previous.end..chunk.start].trim().is_empty());
                if chunk.overlap_len() > 0 {
                    // Whole words from the previous chunk's own text.
                    assert!(overlap_start >= previous.start && overlap_start < previous.end);
                    assert!(!text[overlap_start..].starts_with(char::is_whitespace));
                    assert!(
                        overlap_start == previous.start
                            || text[..overlap_start].ends_with(char::is_whitespace),
                        "overlap starts mid-word: {chunk:?}"
                    );
                }
            }
        }
        previous = Some(chunk);
    }
    let own: String = chunks.iter().map(Chunk::own_text).collect();
    assert_eq!(
        non_whitespace(&own),
        non_whitespace(text),
        "text lost or duplicated"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunks_respect_limits_and_keep_all_text(
        text in random_text(),
        max_chars in 1usize..300,
        overlap_fraction in 0.0f64..1.0,
        max_tokens in 1usize..80,
    ) {
        let cfg = ChunkerConfig {
            max_chars,
            overlap_chars: (max_chars as f64 * overlap_fraction) as usize,
        };
        prop_assume!(cfg.validate().is_ok());
        let chunks = chunk_text(&text, &cfg, max_tokens, &words);
        check_chunks(&text, &cfg, max_tokens, &words, &chunks);
        prop_assert_eq!(&chunks, &chunk_text(&text, &cfg, max_tokens, &words));
    }

    #[test]
    fn default_config_on_random_text(text in random_text()) {
        let cfg = ChunkerConfig::default();
        let chunks = chunk_text(&text, &cfg, 512, &words);
        check_chunks(&text, &cfg, 512, &words, &chunks);
    }

    /// A counter where every character is a token, so that the cap, not `max_chars`,
    /// decides the chunk size and chunks are split again.
    #[test]
    fn token_cap_holds_for_dense_tokens(
        text in random_text(),
        max_chars in 20usize..400,
        max_tokens in 1usize..60,
    ) {
        let cfg = ChunkerConfig { max_chars, overlap_chars: max_chars / 5 };
        let chars = |s: &str| s.chars().count();
        let chunks = chunk_text(&text, &cfg, max_tokens, &chars);
        check_chunks(&text, &cfg, max_tokens, &chars, &chunks);
    }
}
