//! The chunker's settings and their validation.

use serde::{Deserialize, Serialize};

/// How documents are cut into chunks.
///
/// Defaults: `max_chars = 1000`, `overlap_chars = 100` — about 200–250 tokens of English
/// per chunk, well inside the 512-token window of common embedding models, with enough
/// shared context that a sentence cut by a chunk boundary is still found whole.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkerConfig {
    /// Maximum length of a chunk's own text in characters, overlap not included
    /// (a chunk's full text is at most `max_chars + overlap_chars`). Chunks end at the
    /// strongest boundary (paragraph, then sentence, then word) that leaves them at least
    /// half full, so most chunks hold between half and all of this. Must be at least 1.
    pub max_chars: usize,
    /// How many characters at most of the previous chunk's end are repeated at the start
    /// of the next chunk, cut at a word boundary. Must be less than `max_chars`; 0 turns
    /// the overlap off.
    pub overlap_chars: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        Self {
            max_chars: 1000,
            overlap_chars: 100,
        }
    }
}

impl ChunkerConfig {
    /// Checks the settings; call it where the configuration is loaded, so that a bad value
    /// is reported to the user instead of being clamped silently by [`crate::chunk_text`].
    pub fn validate(&self) -> Result<(), ChunkerConfigError> {
        if self.max_chars == 0 {
            return Err(ChunkerConfigError::ZeroMaxChars);
        }
        if self.overlap_chars >= self.max_chars {
            return Err(ChunkerConfigError::OverlapTooLarge {
                overlap_chars: self.overlap_chars,
                max_chars: self.max_chars,
            });
        }
        Ok(())
    }
}

/// An invalid [`ChunkerConfig`]. Always a user-input error: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkerConfigError {
    /// `max_chars` is 0, so no text could ever be placed in a chunk.
    ZeroMaxChars,
    /// The overlap is as long as a whole chunk or longer.
    OverlapTooLarge {
        /// The configured overlap.
        overlap_chars: usize,
        /// The configured chunk length.
        max_chars: usize,
    },
}

impl std::fmt::Display for ChunkerConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ZeroMaxChars => write!(f, "chunker.max_chars must be at least 1"),
            Self::OverlapTooLarge {
                overlap_chars,
                max_chars,
            } => write!(
                f,
                "chunker.overlap_chars ({overlap_chars}) must be less than chunker.max_chars ({max_chars})"
            ),
        }
    }
}

impl std::error::Error for ChunkerConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ChunkerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_zero_max_and_large_overlap() {
        let zero = ChunkerConfig {
            max_chars: 0,
            overlap_chars: 0,
        };
        assert_eq!(zero.validate(), Err(ChunkerConfigError::ZeroMaxChars));
        let big = ChunkerConfig {
            max_chars: 100,
            overlap_chars: 100,
        };
        let err = big.validate().unwrap_err();
        assert!(err.to_string().contains("must be less than"), "{err}");
    }
}
