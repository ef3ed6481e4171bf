//! Splitting text into pieces no longer than a limit: sentences, and where a sentence is
//! too long, its words, and where a word is too long, runs of characters. Each piece
//! remembers how strong the boundary before it is, so that the packer can prefer to end
//! chunks at paragraph breaks, then at sentence ends, and only then between words.

use std::ops::Range;

/// How good a place the boundary before a piece is for ending a chunk.
/// Ordered weakest first, so `max` picks the best.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Strength {
    /// Inside a word longer than the limit.
    Char,
    /// Between two words of a sentence longer than the limit.
    Word,
    /// Between two sentences of a paragraph.
    Sentence,
    /// At a blank line.
    Paragraph,
}

/// A run of text that is never cut by the packer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Byte range in the text; trimmed of whitespace and never empty.
    pub range: Range<usize>,
    /// Strength of the boundary just before this piece.
    pub strength: Strength,
}

/// Splits `text[range]` into pieces of at most `max_chars` characters (at least 1),
/// in order. Whitespace between pieces belongs to no piece; nothing else is lost.
pub(crate) fn split(text: &str, range: Range<usize>, max_chars: usize) -> Vec<Piece> {
    let max_chars = max_chars.max(1);
    let mut pieces = Vec::new();
    for paragraph in paragraphs(text, range) {
        let mut strength = Strength::Paragraph;
        for sentence in sentences(text, paragraph) {
            push_sentence(text, sentence, strength, max_chars, &mut pieces);
            strength = Strength::Sentence;
        }
    }
    pieces
}

fn push_sentence(
    text: &str,
    sentence: Range<usize>,
    strength: Strength,
    max_chars: usize,
    pieces: &mut Vec<Piece>,
) {
    if char_len(text, &sentence) <= max_chars {
        pieces.push(Piece {
            range: sentence,
            strength,
        });
        return;
    }
    let mut strength = strength;
    for word in words(text, sentence) {
        if char_len(text, &word) <= max_chars {
            pieces.push(Piece {
                range: word,
                strength,
            });
        } else {
            for run in char_runs(text, word, max_chars) {
                pieces.push(Piece {
                    range: run,
                    strength,
                });
                strength = Strength::Char;
            }
        }
        strength = Strength::Word;
    }
}

/// Number of characters in `text[range]`.
pub(crate) fn char_len(text: &str, range: &Range<usize>) -> usize {
    text[range.clone()].chars().count()
}

/// `range` without leading and trailing whitespace; empty if it is all whitespace.
fn trim(text: &str, range: Range<usize>) -> Range<usize> {
    let slice = &text[range.clone()];
    let start = range.start + (slice.len() - slice.trim_start().len());
    let end = range.end - (slice.len() - slice.trim_end().len());
    if start >= end {
        start..start
    } else {
        start..end
    }
}

/// Paragraphs: runs of lines separated by lines that are empty or all whitespace.
fn paragraphs(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    let mut line_start = range.start;
    for line in text[range].split_inclusive('\n') {
        let line_range = line_start..line_start + line.len();
        line_start = line_range.end;
        if line.trim().is_empty() {
            if let Some(paragraph) = current.take() {
                out.push(paragraph);
            }
        } else {
            match &mut current {
                Some(paragraph) => paragraph.end = line_range.end,
                None => current = Some(line_range),
            }
        }
    }
    out.extend(current);
    out.into_iter()
        .map(|p| trim(text, p))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Characters that end a sentence when followed by whitespace or the end of the text.
fn is_terminal(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// Full-width terminals end a sentence even without a following space: CJK text puts no
/// space between sentences.
fn is_wide_terminal(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// Closing quotes and brackets that stay with the sentence they end (`He said "no."`).
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '」' | '』' | '）'
    )
}

/// Sentences of a paragraph, each ending with its punctuation (and closing quotes).
fn sentences(text: &str, paragraph: Range<usize>) -> Vec<Range<usize>> {
    let base = paragraph.start;
    let slice = &text[paragraph.clone()];
    let mut out = Vec::new();
    let mut sentence_start = 0;
    let mut chars = slice.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !is_terminal(c) && !is_wide_terminal(c) {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, next)) = chars.peek() {
            if !is_closer(next) {
                break;
            }
            end = j + next.len_utf8();
            chars.next();
        }
        let ends_sentence = match chars.peek() {
            None => true,
            Some(&(_, next)) => next.is_whitespace() || is_wide_terminal(c),
        };
        if ends_sentence {
            out.push(base + sentence_start..base + end);
            sentence_start = end;
        }
    }
    out.push(base + sentence_start..paragraph.end);
    out.into_iter()
        .map(|s| trim(text, s))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whitespace-separated words.
fn words(text: &str, range: Range<usize>) -> Vec<Range<usize>> {
    let base = range.start;
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in text[range.clone()].char_indices() {
        match (c.is_whitespace(), word_start) {
            (true, Some(start)) => {
                out.push(base + start..base + i);
                word_start = None;
            }
            (false, None) => word_start = Some(i),
            _ => {}
        }
    }
    if let Some(start) = word_start {
        out.push(base + start..range.end);
    }
    out
}

/// Consecutive runs of `max_chars` characters (the last one shorter), cut at character
/// boundaries.
fn char_runs(text: &str, range: Range<usize>, max_chars: usize) -> Vec<Range<usize>> {
    let base = range.start;
    let mut out = Vec::new();
    let mut run_start = 0;
    for (n, (i, _)) in text[range.clone()].char_indices().enumerate() {
        if n > 0 && n % max_chars == 0 {
            out.push(base + run_start..base + i);
            run_start = i;
        }
    }
    out.push(base + run_start..range.end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, pieces: &[Piece]) -> Vec<(&'a str, Strength)> {
        pieces
            .iter()
            .map(|p| (&text[p.range.clone()], p.strength))
            .collect()
    }

    #[test]
    fn splits_paragraphs_and_sentences() {
        let text = "  One. Two!  Three?\n\n \n(Four.) \"Five.\" Six\nstill six.\n";
        let pieces = split(text, 0..text.len(), 100);
        assert_eq!(
            texts(text, &pieces),
            vec![
                ("One.", Strength::Paragraph),
                ("Two!", Strength::Sentence),
                ("Three?", Strength::Sentence),
                ("(Four.)", Strength::Paragraph),
                ("\"Five.\"", Strength::Sentence),
                ("Six\nstill six.", Strength::Sentence),
            ]
        );
    }

    #[test]
    fn no_split_inside_numbers_or_urls() {
        let text = "Pi is 3.14 and example.com is a site.";
        let pieces = split(text, 0..text.len(), 100);
        assert_eq!(pieces.len(), 1);
    }

    #[test]
    fn cjk_sentences_split_without_spaces() {
        let text = "今天很好。明天也好！";
        let pieces = split(text, 0..text.len(), 100);
        assert_eq!(
            texts(text, &pieces),
            vec![
                ("今天很好。", Strength::Paragraph),
                ("明天也好！", Strength::Sentence)
            ]
        );
    }

    #[test]
    fn long_sentences_fall_back_to_words_then_chars() {
        let text = "aa bbbbbbb cc.";
        let pieces = split(text, 0..text.len(), 3);
        assert_eq!(
            texts(text, &pieces),
            vec![
                ("aa", Strength::Paragraph),
                ("bbb", Strength::Word),
                ("bbb", Strength::Char),
                ("b", Strength::Char),
                ("cc.", Strength::Word),
            ]
        );
    }

    #[test]
    fn char_runs_respect_utf8() {
        let text = "ééééé";
        let pieces = split(text, 0..text.len(), 2);
        assert_eq!(
            texts(text, &pieces)
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
            vec!["éé", "éé", "é"]
        );
    }

    #[test]
    fn whitespace_only_gives_nothing() {
        let blank = " \n\n\t ";
        assert!(split(blank, 0..blank.len(), 10).is_empty());
        assert!(split("", 0..0, 10).is_empty());
    }

    #[test]
    fn sub_range_offsets_are_absolute() {
        let text = "skip. Keep this. And this.";
        let pieces = split(text, 6..text.len(), 100);
        assert_eq!(pieces[0].range, 6..16);
        assert_eq!(&text[pieces[1].range.clone()], "And this.");
    }
}
