//! The lake's settings: the `[lake]` section of the config.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which topics the lake writes, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Whether the lake runs at all.
    pub enabled: bool,
    /// Directory of the Parquet files. Unset: `<data_dir>/lake` (the caller resolves it).
    pub dir: Option<PathBuf>,
    /// Topics written to the lake. `conversations`, `feedback`, `kpis` and `profiles` get
    /// typed columns (see `docs/lake-format.md`); any other topic only the common ones.
    /// A topic that does not exist yet is waited for, never created by the lake.
    pub topics: Vec<String>,
    /// A partition's buffered records are written at least this often (`"10s"`).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Most log records one batch (one set of files, one per date) takes from a partition.
    /// A backlog is written in batches of this size without waiting for `flush_interval`.
    pub max_rows_per_file: usize,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            topics: ["conversations", "feedback", "kpis", "profiles"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            flush_interval: Duration::from_secs(10),
            max_rows_per_file: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_the_defaults_and_durations_are_human_readable() {
        let parsed: LakeConfig = serde_json::from_str("{}").expect("empty section parses");
        assert_eq!(parsed, LakeConfig::default());
        let parsed: LakeConfig =
            serde_json::from_str(r#"{"flush_interval": "500ms", "topics": ["kpis"]}"#)
                .expect("section parses");
        assert_eq!(parsed.flush_interval, Duration::from_millis(500));
        assert_eq!(parsed.topics, vec!["kpis".to_owned()]);
        assert!(serde_json::from_str::<LakeConfig>(r#"{"flush_intervall": "1s"}"#).is_err());
    }
}
