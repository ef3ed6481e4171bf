//! Configuration of one file source root.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One folder to turn into documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Name of the root; events carry `source = "files:<name>"`, which search can filter on.
    #[serde(default = "default_name")]
    pub name: String,
    /// The folder to list and watch. Document ids are paths relative to it.
    pub root: PathBuf,
    /// Globs (relative to `root`, `/`-separated) a file must match to become a document.
    /// `*` does not cross `/`; `**/` matches any number of directories, including none;
    /// matching is case-sensitive.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// Globs that remove files (and whole directories) matched by `include`; by default
    /// hidden files and everything under hidden directories.
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
    /// How often the whole tree is re-listed to catch changes the watcher missed.
    #[serde(default = "default_relist_interval", with = "humantime_serde")]
    pub relist_interval: Duration,
    /// How long file-system notifications are gathered before the affected paths are
    /// re-checked; an editor's save is usually several notifications.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
    /// Files larger than this many bytes are reported and skipped.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

impl FilesConfig {
    /// The defaults for a source over `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            name: default_name(),
            root: root.into(),
            include: default_include(),
            exclude: default_exclude(),
            relist_interval: default_relist_interval(),
            debounce: default_debounce(),
            max_file_bytes: default_max_file_bytes(),
        }
    }

    /// The `source` field of every event this root emits: `files:<name>`.
    pub fn source_name(&self) -> String {
        format!("files:{}", self.name)
    }
}

fn default_name() -> String {
    "docs".to_owned()
}

fn default_include() -> Vec<String> {
    [
        "**/*.txt",
        "**/*.md",
        "**/*.markdown",
        "**/*.html",
        "**/*.htm",
    ]
    .map(String::from)
    .to_vec()
}

fn default_exclude() -> Vec<String> {
    ["**/.*", "**/.*/**"].map(String::from).to_vec()
}

fn default_relist_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_debounce() -> Duration {
    Duration::from_millis(50)
}

fn default_max_file_bytes() -> u64 {
    16 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_defaults_and_parses_durations() {
        let config: FilesConfig =
            serde_json::from_str(r#"{"root": "/srv/docs", "debounce": "200ms"}"#).unwrap();
        let mut expected = FilesConfig::new("/srv/docs");
        expected.debounce = Duration::from_millis(200);
        assert_eq!(config, expected);
        assert_eq!(config.source_name(), "files:docs");
    }

    #[test]
    fn rejects_unknown_keys() {
        let err =
            serde_json::from_str::<FilesConfig>(r#"{"root": "d", "recursive": true}"#).unwrap_err();
        assert!(err.to_string().contains("recursive"), "{err}");
    }
}
