//! Extractive answers, given when no language model is configured: the retrieved sentences
//! that share the most (rare) words with the question, each with the `[n]` of its chunk.

use std::collections::{BTreeSet, HashSet};

use crate::ContextChunk;

/// The answer when no sentence matches the question.
pub const NO_ANSWER: &str = "No answer to this question was found in the indexed documents.";

/// An answer made of retrieved sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extractive {
    /// The sentences, each followed by its chunk's marker (` [n]`, `n` = index + 1), or
    /// [`NO_ANSWER`].
    pub answer: String,
    /// Indices into the chunks, each once, in the order the answer cites them.
    pub cited: Vec<usize>,
}

/// Answers `question` with at most `max_sentences` (at least one) sentences of `chunks`.
///
/// Sentences are scored by the question words they contain, lower-cased, stopwords
/// removed and plurals folded, each word weighted by its rarity among all the sentences
/// (`ln(1 + sentences / sentences holding it)`), so that a word every sentence shares
/// counts little. The best are kept, ties going to the better-ranked chunk and then to
/// the earlier sentence; a sentence repeated by overlapping chunks is kept once. They are
/// given in reading order (chunk rank, then position), so that "It was founded…" follows
/// the sentence it refers to. No chunks, or no sentence sharing a word with the question:
/// [`NO_ANSWER`] and no citations.
pub fn extractive_answer(
    question: &str,
    chunks: &[ContextChunk],
    max_sentences: usize,
) -> Extractive {
    let wanted: BTreeSet<String> = terms(question).collect();
    let candidates: Vec<Candidate> = chunks
        .iter()
        .enumerate()
        .flat_map(|(chunk, c)| {
            split_sentences(&c.text)
                .into_iter()
                .enumerate()
                .map(move |(position, text)| Candidate::new(chunk, position, text))
        })
        .collect();

    let sentences = candidates.len() as f64;
    let weight = |term: &String| {
        let holding = candidates.iter().filter(|c| c.terms.contains(term)).count();
        (1.0 + sentences / holding.max(1) as f64).ln()
    };
    let weights: Vec<(&String, f64)> = wanted.iter().map(|t| (t, weight(t))).collect();
    let mut scored: Vec<(f64, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let score = weights
                .iter()
                .filter(|(term, _)| c.terms.contains(*term))
                .map(|(_, w)| w)
                .sum();
            (score, c)
        })
        .filter(|(score, _)| *score > 0.0)
        .collect();
    // The sort is stable and candidates are in (chunk, position) order: ties keep it.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));

    let mut seen = HashSet::new();
    let mut chosen: Vec<&Candidate> = scored
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| seen.insert(c.text.to_lowercase()))
        .take(max_sentences.max(1))
        .collect();
    if chosen.is_empty() {
        return Extractive {
            answer: NO_ANSWER.to_owned(),
            cited: Vec::new(),
        };
    }
    chosen.sort_by_key(|c| (c.chunk, c.position));

    let mut cited = Vec::new();
    let parts: Vec<String> = chosen
        .iter()
        .map(|c| {
            if !cited.contains(&c.chunk) {
                cited.push(c.chunk);
            }
            format!("{} [{}]", c.text, c.chunk + 1)
        })
        .collect();
    Extractive {
        answer: parts.join(" "),
        cited,
    }
}

/// A sentence that may answer.
struct Candidate {
    chunk: usize,
    position: usize,
    text: String,
    terms: HashSet<String>,
}

impl Candidate {
    fn new(chunk: usize, position: usize, text: String) -> Self {
        let terms = terms(&text).collect();
        Self {
            chunk,
            position,
            text,
            terms,
        }
    }
}

/// The words of `text` that carry meaning: lower-cased, stopwords and single letters
/// dropped, plurals folded ("centuries" → "century", "Normans" → "norman").
fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().nth(1).is_some() || word.chars().all(|c| c.is_numeric()))
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .filter(|word| !STOPWORDS.contains(&word.as_str()))
        .map(fold_plural)
}

/// A crude singular: enough for "Normans" to match "Norman", never a full stemmer.
fn fold_plural(word: String) -> String {
    let chars = word.chars().count();
    if chars > 4 && word.ends_with("ies") {
        format!("{}y", &word[..word.len() - 3])
    } else if chars > 3
        && word.ends_with('s')
        && !(word.ends_with("ss") || word.ends_with("us") || word.ends_with("is"))
    {
        word[..word.len() - 1].to_owned()
    } else {
        word
    }
}

/// English words too common to say what a question is about, question words included.
const STOPWORDS: &[&str] = &[
    "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are",
    "as", "at", "be", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "else", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "if", "in", "into", "is", "it", "its", "itself", "just", "many", "may", "me", "might", "more",
    "most", "much", "must", "my", "no", "nor", "not", "now", "of", "off", "on", "once", "only",
    "or", "other", "our", "ours", "out", "over", "own", "same", "shall", "she", "should", "so",
    "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "us", "very",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "whose", "why",
    "will", "with", "would", "you", "your", "yours",
];

/// Abbreviations after which a period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "approx", "co", "corp", "dept", "dr", "etc", "fig", "gen", "inc", "jr", "ltd", "mr", "mrs",
    "ms", "mt", "no", "prof", "sr", "st", "vs",
];

/// Splits `text` into sentences, whitespace collapsed. A blank line always ends one; a
/// `.`, `!` or `?` (with any closing quotes or brackets) ends one when whitespace and a
/// character that is not a lower-case letter follow, unless a period closes an
/// abbreviation or an initial ("Dr.", "e.g.", "J. R. R. Tolkien"). A single line break is
/// taken for wrapping, not an end.
fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    for paragraph in paragraphs(text) {
        let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
        let byte_at = |i: usize| chars.get(i).map_or(paragraph.len(), |&(at, _)| at);
        let mut start = 0;
        let mut i = 0;
        while i < chars.len() {
            let (at, c) = chars[i];
            if !matches!(c, '.' | '!' | '?') {
                i += 1;
                continue;
            }
            let mut end = i + 1;
            while end < chars.len() && is_closing(chars[end].1) {
                end += 1;
            }
            let mut next = end;
            while next < chars.len() && chars[next].1.is_whitespace() {
                next += 1;
            }
            let ends = next > end
                && chars.get(next).is_none_or(|&(_, c)| !c.is_lowercase())
                && !(c == '.' && is_abbreviation(&paragraph[byte_at(start)..at]));
            if ends {
                sentences.push(paragraph[byte_at(start)..byte_at(end)].to_owned());
                start = next;
            }
            i = end;
        }
        sentences.push(paragraph[byte_at(start)..].to_owned());
    }
    sentences.retain(|s| !s.trim().is_empty());
    sentences
}

/// The paragraphs of `text` (separated by blank lines), each on one line with its
/// whitespace collapsed to single spaces.
fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !words.is_empty() {
                paragraphs.push(words.join(" "));
                words.clear();
            }
        } else {
            words.extend(line.split_whitespace());
        }
    }
    if !words.is_empty() {
        paragraphs.push(words.join(" "));
    }
    paragraphs
}

/// Punctuation that may follow a sentence's end: more of it, quotes, brackets.
fn is_closing(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '"' | '\'' | '”' | '’' | ')' | ']')
}

/// Whether the last word of `before` (the text up to a period) is an abbreviation or an
/// initial.
fn is_abbreviation(before: &str) -> bool {
    let word = before
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .trim_start_matches(|c: char| !c.is_alphanumeric());
    let mut letters = word.chars();
    let single_letter =
        matches!((letters.next(), letters.next()), (Some(c), None) if c.is_alphabetic());
    single_letter || word.contains('.') || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> ContextChunk {
        ContextChunk {
            chunk_id: String::new(),
            doc_id: String::new(),
            text: text.into(),
            score: 0.0,
        }
    }

    /// Paragraphs in the manner of SQuAD's (Wikipedia prose), written for these tests.
    fn paragraphs_like_squad() -> Vec<ContextChunk> {
        vec![
            chunk(
                "The Normans were the people who gave their name to Normandy, a region in \
                 northern France. They descended from Norse raiders and settlers whose leader \
                 was Rollo. Their duchy was established by a treaty with King Charles the \
                 Simple of West Francia in 911. Over the following century the Normans \
                 adopted the French language and the Christian faith.",
            ),
            chunk(
                "The University of Notre Dame is a Catholic research university near South \
                 Bend, Indiana. Notre Dame was founded in 1842 by Edward Sorin, a priest of \
                 the Congregation of Holy Cross.\n\nThe Main Building is crowned by a golden \
                 dome that carries a statue of the Virgin Mary.",
            ),
            chunk(
                "Oxygen is a chemical element with the symbol O and atomic number 8. It was \
                 isolated by Carl Wilhelm Scheele in 1771 and, independently, by Joseph \
                 Priestley in 1774. Oxygen makes up almost half of the Earth's crust by mass.",
            ),
        ]
    }

    #[test]
    fn the_sentence_holding_the_answer_is_picked() {
        let chunks = paragraphs_like_squad();
        for (question, expected, marker) in [
            (
                "Which king signed the treaty that established the Norman duchy?",
                "King Charles the Simple",
                "[1]",
            ),
            ("Who was the leader of the Norse settlers?", "Rollo", "[1]"),
            ("In what year was Notre Dame founded?", "in 1842", "[2]"),
            (
                "What is on top of the golden dome?",
                "statue of the Virgin Mary",
                "[2]",
            ),
            ("Who isolated oxygen in 1774?", "Joseph Priestley", "[3]"),
        ] {
            let answer = extractive_answer(question, &chunks, 1);
            assert!(
                answer.answer.contains(expected),
                "{question}: {}",
                answer.answer
            );
            assert!(
                answer.answer.ends_with(&format!(". {marker}")),
                "{}",
                answer.answer
            );
            let n: usize = marker[1..2].parse().unwrap();
            assert_eq!(answer.cited, [n - 1]);
        }
    }

    #[test]
    fn several_sentences_come_in_reading_order_with_their_markers() {
        let chunks = paragraphs_like_squad();
        let answer = extractive_answer("When was the Notre Dame university founded?", &chunks, 2);
        assert_eq!(
            answer.answer,
            "The University of Notre Dame is a Catholic research university near South Bend, \
             Indiana. [2] Notre Dame was founded in 1842 by Edward Sorin, a priest of the \
             Congregation of Holy Cross. [2]"
        );
        assert_eq!(answer.cited, [1]);

        let across = extractive_answer("Normans and oxygen", &chunks, 3);
        assert_eq!(across.cited, [0, 2]);
        assert!(across.answer.contains("[1]") && across.answer.contains("[3]"));
        assert!(!across.answer.contains("[2]"));
    }

    #[test]
    fn nothing_to_go_on_gives_no_answer() {
        let chunks = paragraphs_like_squad();
        let none = Extractive {
            answer: NO_ANSWER.to_owned(),
            cited: vec![],
        };
        assert_eq!(extractive_answer("Who founded Notre Dame?", &[], 3), none);
        assert_eq!(
            extractive_answer("What is the weather in Lisbon?", &chunks, 3),
            none
        );
        // Only stopwords: nothing to match on.
        assert_eq!(
            extractive_answer("What is it and who was there?", &chunks, 3),
            none
        );
    }

    #[test]
    fn ties_go_to_the_better_ranked_chunk_then_the_earlier_sentence() {
        let a = chunk("Refunds take five days. Refunds need a receipt.");
        let b = chunk("A refund is paid to the original card.");
        let first = extractive_answer("refund", &[a.clone(), b.clone()], 1);
        assert_eq!(first.answer, "Refunds take five days. [1]");
        let swapped = extractive_answer("refund", &[b, a], 1);
        assert_eq!(swapped.answer, "A refund is paid to the original card. [1]");
        // The same input always gives the same answer.
        let chunks = paragraphs_like_squad();
        let once = extractive_answer("Norman French language faith", &chunks, 3);
        for _ in 0..5 {
            assert_eq!(
                extractive_answer("Norman French language faith", &chunks, 3),
                once
            );
        }
    }

    #[test]
    fn a_sentence_repeated_by_overlapping_chunks_is_given_once() {
        let a = chunk("Shipping is free above 50 EUR. Returns are accepted for 30 days.");
        let b = chunk("Returns are accepted for 30 days. Exchanges are free.");
        let answer = extractive_answer("Are returns accepted?", &[a, b], 3);
        assert_eq!(answer.answer, "Returns are accepted for 30 days. [1]");
        assert_eq!(answer.cited, [0]);
    }

    #[test]
    fn rare_words_outweigh_common_ones() {
        let chunks = [chunk(
            "The Normans raided the coast. The Normans settled and signed a treaty in 911.",
        )];
        let answer = extractive_answer("Normans treaty", &chunks, 1);
        assert_eq!(
            answer.answer,
            "The Normans settled and signed a treaty in 911. [1]"
        );
    }

    #[test]
    fn sentences_split_at_ends_not_at_abbreviations() {
        assert_eq!(
            split_sentences(
                "Dr. Smith paid 3.50 EUR, e.g. for tea. J. R. R. Tolkien wrote it!\n\
                 \"Really?\" she asked. (See fig. 2.) Next\nline wraps here.\n\nA heading\n\nlower. case"
            ),
            [
                "Dr. Smith paid 3.50 EUR, e.g. for tea.",
                "J. R. R. Tolkien wrote it!",
                "\"Really?\" she asked.",
                "(See fig. 2.)",
                "Next line wraps here.",
                "A heading",
                "lower. case",
            ]
        );
        assert!(split_sentences(" \n\n ").is_empty());
    }

    #[test]
    fn words_are_normalised() {
        let t: Vec<String> =
            terms("The Normans' centuries of Glass-making, in 1066 & a B").collect();
        assert_eq!(t, ["norman", "century", "glass", "making", "1066"]);
    }
}
