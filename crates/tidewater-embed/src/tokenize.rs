//! What both local engines share: the tokenizer (truncating at the configured length,
//! without padding), an untruncated copy for counting tokens, and the thread pool that
//! inference runs in.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::EmbedError;

/// The tokenizers and thread pool of a local engine.
pub(crate) struct TextInput {
    /// Truncates at `max_seq_len`; never pads (the engines do, or pack).
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    max_seq_len: usize,
    /// Set when `threads` is configured: inference runs inside it.
    pool: Option<rayon::ThreadPool>,
}

impl TextInput {
    /// Loads `tokenizer.json` from `path`, truncating at `max_seq_len`, with a pool of
    /// `threads` when given.
    pub(crate) fn load(
        path: &Path,
        max_seq_len: usize,
        threads: Option<usize>,
    ) -> Result<Self, EmbedError> {
        let (tokenizer, counter) = load_tokenizers(path, max_seq_len)?;
        Ok(Self {
            tokenizer,
            counter,
            max_seq_len,
            pool: thread_pool(threads)?,
        })
    }

    /// Tokens per input at most.
    pub(crate) fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Tokens `text` has, special tokens included, without truncation.
    pub(crate) fn count_tokens(&self, text: &str) -> usize {
        // A text the tokenizer rejects cannot be embedded either; counting it as too long
        // makes callers split it, and `embed` reports the error.
        self.counter
            .encode(text, true)
            .map_or(usize::MAX, |e| e.len())
    }

    /// `texts` tokenised with special tokens, truncated.
    pub(crate) fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>, EmbedError> {
        self.tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|source| EmbedError::Tokenize { source })
    }

    /// Runs `f` in the configured pool, or in the caller's.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }
}

/// The tokenizer truncating at `max_seq_len` and without padding, and an untruncated copy
/// for counting.
fn load_tokenizers(path: &Path, max_seq_len: usize) -> Result<(Tokenizer, Tokenizer), EmbedError> {
    let bytes = fs_err::read(path)?;
    let mut counter = Tokenizer::from_bytes(&bytes).map_err(|e| EmbedError::ModelFormat {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Padding is the backends' business; the file's fixed padding would not fit them.
    counter.with_padding(None);
    let mut tokenizer = counter.clone();
    // Keep the file's strategy and direction, but not its length: the sentence models' files
    // say 128 while sentence-transformers runs them at 256 (MiniLM) or 384 (MPNet).
    let truncation = TruncationParams {
        max_length: max_seq_len,
        ..tokenizer.get_truncation().cloned().unwrap_or_default()
    };
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(|e| EmbedError::ModelFormat {
            path: path.to_path_buf(),
            reason: format!("cannot truncate at {max_seq_len} tokens: {e}"),
        })?;
    counter
        .with_truncation(None)
        .map_err(|e| EmbedError::ModelFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok((tokenizer, counter))
}

/// The model's name: its directory's name, e.g. `all-MiniLM-L6-v2`.
pub(crate) fn model_id_of(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A thread pool of `threads` when configured; inference runs inside it.
fn thread_pool(threads: Option<usize>) -> Result<Option<rayon::ThreadPool>, EmbedError> {
    threads
        .map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("tidewater-embed-{i}"))
                .build()
                .map_err(|source| EmbedError::ThreadPool { threads: n, source })
        })
        .transpose()
}
