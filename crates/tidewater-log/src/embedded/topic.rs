//! A topic on disk: its directory, the `topic.conf` metadata file, atomic creation, and
//! routing of records to partitions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::appended::Appended;
use super::config::EmbeddedLogConfig;
use super::fsutil::{
    decode_checked_text, encode_checked_text, sync_dir, write_atomically, TMP_SUFFIX,
};
use super::partition::{Lost, OpenOptions, Partition};
use crate::{partition_for_key, LogError, TopicConfig};

/// Name of the metadata file in a topic directory.
pub(crate) const TOPIC_META_FILE: &str = "topic.conf";
/// First-line kind of the metadata file.
const TOPIC_META_KIND: &str = "tidewater-topic";
/// Version of the metadata file layout.
const TOPIC_META_VERSION: u32 = 1;
/// Suffix of a topic directory under construction. `~` cannot occur in topic names, so it
/// never collides with a real topic.
pub(crate) const TOPIC_TMP_SUFFIX: &str = "~tmp";
/// Longest topic name (keeps paths well below file-system limits).
const MAX_TOPIC_NAME_LEN: usize = 200;

/// Checks that a topic name is safe to use as a directory name.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), LogError> {
    let valid_chars = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > MAX_TOPIC_NAME_LEN
        || !valid_chars
        || name == "."
        || name == ".."
    {
        return Err(LogError::InvalidTopicName(name.to_owned()));
    }
    Ok(())
}

/// An open topic.
pub(crate) struct Topic {
    name: String,
    dir: PathBuf,
    /// Partition count and retention; retention may change through `ensure_topic`.
    config: RwLock<TopicConfig>,
    partitions: Vec<Partition>,
    /// Next partition for a keyless record.
    round_robin: AtomicU32,
}

impl Topic {
    /// Creates the topic's directory atomically: everything is built under a temporary
    /// name and renamed into place, so a crash never leaves a half-created topic.
    pub(crate) fn create(
        topics_dir: &Path,
        name: &str,
        config: &TopicConfig,
    ) -> Result<(), LogError> {
        let tmp = topics_dir.join(format!("{name}{TOPIC_TMP_SUFFIX}"));
        if tmp.exists() {
            fs_err::remove_dir_all(&tmp)?;
        }
        fs_err::create_dir(&tmp)?;
        for partition in 0..config.partitions {
            Partition::create_empty(&tmp.join(partition.to_string()))?;
        }
        write_atomically(&tmp.join(TOPIC_META_FILE), encode_meta(config).as_bytes())?;
        sync_dir(&tmp)?;
        fs_err::rename(&tmp, topics_dir.join(name))?;
        sync_dir(topics_dir)?;
        Ok(())
    }

    /// Opens an existing topic directory and recovers its partitions. Returns the topic
    /// and the records its partitions found lost, for the caller to report.
    pub(crate) fn open(
        dir: PathBuf,
        name: &str,
        log_config: &EmbeddedLogConfig,
        consumed_to: impl Fn(u32) -> Option<u64>,
        appended: &Arc<Appended>,
    ) -> Result<(Self, Vec<(u32, Lost)>), LogError> {
        let meta = dir.join(TOPIC_META_FILE);
        // A retention update a crash interrupted; the previous file is still in place.
        let unfinished = dir.join(format!("{TOPIC_META_FILE}{TMP_SUFFIX}"));
        if unfinished.exists() {
            fs_err::remove_file(&unfinished)?;
        }
        let config = read_meta(&meta)?;
        let retention_configured =
            config.retention_age.is_some() || config.retention_bytes.is_some();
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut lost = Vec::new();
        for id in 0..config.partitions {
            let (partition, found) = Partition::open(
                name,
                id,
                dir.join(id.to_string()),
                OpenOptions {
                    segment_bytes: log_config.segment_bytes,
                    retention_configured,
                    durability: log_config.durability,
                    consumed_to: consumed_to(id),
                    appended: Arc::clone(appended),
                },
            )?;
            partitions.push(partition);
            lost.extend(found.into_iter().map(|l| (id, l)));
        }
        let topic = Self {
            name: name.to_owned(),
            dir,
            config: RwLock::new(config),
            partitions,
            round_robin: AtomicU32::new(0),
        };
        Ok((topic, lost))
    }

    /// The topic's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Current configuration.
    pub(crate) fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// Applies new retention settings (the partition count never changes) and persists
    /// them if they differ.
    pub(crate) fn update_retention(&self, wanted: &TopicConfig) -> Result<(), LogError> {
        let mut config = self.config.write();
        if config.retention_age == wanted.retention_age
            && config.retention_bytes == wanted.retention_bytes
        {
            return Ok(());
        }
        let updated = TopicConfig {
            partitions: config.partitions,
            retention_age: wanted.retention_age,
            retention_bytes: wanted.retention_bytes,
        };
        write_atomically(
            &self.dir.join(TOPIC_META_FILE),
            encode_meta(&updated).as_bytes(),
        )?;
        *config = updated;
        Ok(())
    }

    /// The partitions, by id.
    pub(crate) fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// The partition a record goes to: by key hash, or round-robin without a key.
    pub(crate) fn route(&self, key: Option<&[u8]>) -> u32 {
        let count = self.partitions.len() as u32;
        match key {
            Some(key) => partition_for_key(key, count),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1),
        }
    }
}

/// The metadata file's text.
fn encode_meta(config: &TopicConfig) -> String {
    let age = config
        .retention_age
        .map_or_else(|| "none".to_owned(), |age| age.as_millis().to_string());
    let bytes = config
        .retention_bytes
        .map_or_else(|| "none".to_owned(), |bytes| bytes.to_string());
    encode_checked_text(
        TOPIC_META_KIND,
        TOPIC_META_VERSION,
        &[
            format!("partitions {}", config.partitions),
            format!("retention_age_ms {age}"),
            format!("retention_bytes {bytes}"),
        ],
    )
}

/// Reads and checks a metadata file.
fn read_meta(path: &Path) -> Result<TopicConfig, LogError> {
    let text = fs_err::read_to_string(path)?;
    let lines = decode_checked_text(path, &text, TOPIC_META_KIND, TOPIC_META_VERSION)?;
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason,
    };
    let mut partitions = None;
    let mut retention_age = None;
    let mut retention_bytes = None;
    for line in lines {
        let (field, value) = line
            .split_once(' ')
            .ok_or_else(|| corrupt(format!("malformed line '{line}'")))?;
        let number = |value: &str| -> Result<Option<u64>, LogError> {
            if value == "none" {
                return Ok(None);
            }
            value
                .parse()
                .map(Some)
                .map_err(|_| corrupt(format!("malformed number in '{line}'")))
        };
        match field {
            "partitions" => partitions = number(value)?,
            "retention_age_ms" => retention_age = number(value)?.map(Duration::from_millis),
            "retention_bytes" => retention_bytes = number(value)?,
            _ => return Err(corrupt(format!("unknown field '{field}'"))),
        }
    }
    let partitions = partitions
        .and_then(|count| u32::try_from(count).ok())
        .filter(|&count| count > 0)
        .ok_or_else(|| corrupt("missing or invalid partition count".into()))?;
    Ok(TopicConfig {
        partitions,
        retention_age,
        retention_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in ["a", "docs.v1", "A-b_c.9", &"x".repeat(200)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a~tmp", "é", &"x".repeat(201)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meta_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOPIC_META_FILE);
        for config in [
            TopicConfig {
                partitions: 3,
                retention_age: None,
                retention_bytes: None,
            },
            TopicConfig {
                partitions: 1,
                retention_age: Some(Duration::from_secs(90)),
                retention_bytes: Some(10),
            },
        ] {
            fs_err::write(&path, encode_meta(&config)).expect("write");
            assert_eq!(read_meta(&path).expect("read"), config);
        }
    }
}
