//! Pluggable sentiment scoring of feedback comments.

/// Scores a text's sentiment in `-1.0..=1.0` (negative to positive).
pub trait SentimentScorer {
    /// Sentiment of `text`, in `-1.0..=1.0`.
    fn score(&self, text: &str) -> f64;
}

const POSITIVE: &[&str] = &[
    "good",
    "great",
    "excellent",
    "helpful",
    "useful",
    "clear",
    "correct",
    "accurate",
    "fast",
    "love",
    "like",
    "perfect",
    "thanks",
    "awesome",
    "nice",
    "right",
    "amazing",
    "happy",
];
const NEGATIVE: &[&str] = &[
    "bad",
    "wrong",
    "useless",
    "unhelpful",
    "slow",
    "confusing",
    "incorrect",
    "terrible",
    "awful",
    "hate",
    "poor",
    "broken",
    "irrelevant",
    "outdated",
    "missing",
    "unclear",
    "worse",
];
const NEGATORS: &[&str] = &["not", "no", "never"];

/// Lexicon scorer: counts words from small built-in positive and negative lists; "not",
/// "no" and "never" flip the polarity of the next word. Score is
/// `(pos - neg) / (pos + neg)`, or 0 when no lexicon word occurs.
#[derive(Debug, Clone, Copy, Default)]
pub struct LexiconScorer;

impl SentimentScorer for LexiconScorer {
    fn score(&self, text: &str) -> f64 {
        let (mut pos, mut neg) = (0u32, 0u32);
        let mut negate = false;
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            if NEGATORS.contains(&word.as_str()) {
                negate = true;
                continue;
            }
            let polarity = if POSITIVE.contains(&word.as_str()) {
                1
            } else if NEGATIVE.contains(&word.as_str()) {
                -1
            } else {
                0
            };
            match (polarity, negate) {
                (1, false) | (-1, true) => pos += 1,
                (-1, false) | (1, true) => neg += 1,
                _ => {}
            }
            negate = false;
        }
        if pos + neg == 0 {
            0.0
        } else {
            (f64::from(pos) - f64::from(neg)) / f64::from(pos + neg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_scores() {
        let s = LexiconScorer;
        assert_eq!(s.score("Great answer, very helpful!"), 1.0);
        assert_eq!(s.score("wrong and slow"), -1.0);
        assert_eq!(s.score("good but slow"), 0.0);
        assert_eq!(s.score(""), 0.0);
        assert_eq!(s.score("the weather today"), 0.0);
    }

    #[test]
    fn negation_flips_only_the_next_word() {
        let s = LexiconScorer;
        assert_eq!(s.score("not helpful"), -1.0);
        assert_eq!(s.score("NEVER wrong"), 1.0);
        assert_eq!(s.score("no, bad"), 1.0);
        // "not" is consumed by "really", so "good" stays positive.
        assert_eq!(s.score("not really good"), 1.0);
        // not helpful (neg) + great (pos) + bad (neg) => (1 - 2) / 3
        assert!((s.score("not helpful, great, bad") - (-1.0 / 3.0)).abs() < 1e-12);
    }
}
