//! The local backends' tokenizer: truncating at the configured length, without padding,
//! plus an untruncated copy for counting tokens.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::EmbedError;

/// The tokenizer truncating at `max_seq_len` and without padding, and an untruncated copy
/// for counting.
pub(crate) fn load_tokenizers(
    path: &Path,
    max_seq_len: usize,
) -> Result<(Tokenizer, Tokenizer), EmbedError> {
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
pub(crate) fn thread_pool(threads: Option<usize>) -> Result<Option<rayon::ThreadPool>, EmbedError> {
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
