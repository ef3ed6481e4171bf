//! Where the local model lives on disk, and the check that it is there.
//!
//! The location never depends on the working directory, so the server, the tests and
//! `scripts/fetch-model.sh` (which resolves it the same way) all find the same copy.

use std::path::{Path, PathBuf};

use crate::EmbedError;

/// Environment variable that names the model directory, overriding the default.
pub const MODEL_DIR_ENV: &str = "TIDEWATER_MODEL_DIR";

/// Directory name of the default model under the cache directory.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Files a model directory must contain for the candle backend.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The model directory used when the configuration names none.
///
/// `$TIDEWATER_MODEL_DIR` if set, else `$XDG_CACHE_HOME/tidewater/models/all-MiniLM-L6-v2`,
/// else `$HOME/.cache/tidewater/models/all-MiniLM-L6-v2`. Empty variables count as unset,
/// as the XDG specification asks. Without `HOME` either, falls back to a path relative to
/// the system temporary directory rather than the working directory.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = non_empty_env(MODEL_DIR_ENV) {
        return PathBuf::from(dir);
    }
    cache_dir().join("models").join(DEFAULT_MODEL_NAME)
}

/// Tidewater's cache directory, where the scripts put models and corpora:
/// `$XDG_CACHE_HOME/tidewater`, else `$HOME/.cache/tidewater`, else under the system
/// temporary directory.
pub fn cache_dir() -> PathBuf {
    non_empty_env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty_env("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("tidewater")
}

/// Checks that `dir` holds a model: the directory and each of [`REQUIRED_FILES`] exist.
///
/// The error names the first missing path and says to run `scripts/fetch-model.sh`.
pub fn check_model_dir(dir: &Path) -> Result<(), EmbedError> {
    if !dir.is_dir() {
        return Err(EmbedError::ModelMissing {
            path: dir.to_path_buf(),
        });
    }
    for file in REQUIRED_FILES {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(EmbedError::ModelMissing { path });
        }
    }
    Ok(())
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_dir_is_absolute_and_named_after_the_model() {
        // Whatever the environment, the default must not depend on the working directory.
        let dir = default_model_dir();
        if std::env::var_os(MODEL_DIR_ENV).is_none() {
            assert!(dir.is_absolute(), "{}", dir.display());
            assert!(
                dir.ends_with("tidewater/models/all-MiniLM-L6-v2"),
                "{}",
                dir.display()
            );
        }
    }

    #[test]
    fn a_missing_dir_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("absent");
        let err = check_model_dir(&missing).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    }

    #[test]
    fn a_dir_without_weights_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::write(tmp.path().join("config.json"), "{}").unwrap();
        fs_err::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
        let err = check_model_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
