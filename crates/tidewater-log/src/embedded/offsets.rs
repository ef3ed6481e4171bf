//! Consumer-group offsets: one small file per group under `offsets/`, replaced atomically
//! on every commit, and an in-memory copy for lookups.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::fsutil::{decode_checked_text, encode_checked_text, write_atomically, TMP_SUFFIX};
use crate::LogError;

/// Extension of a group's offsets file.
const OFFSETS_EXTENSION: &str = ".offsets";
/// First-line kind of an offsets file.
const OFFSETS_KIND: &str = "tidewater-offsets";
/// Version of the offsets file layout.
const OFFSETS_VERSION: u32 = 1;
/// Longest group name in bytes; encoded, it must still fit a file name (255 bytes).
const MAX_GROUP_NAME_LEN: usize = 80;

/// A group's next offsets, keyed by topic and partition.
type GroupOffsets = BTreeMap<(String, u32), u64>;

/// All groups' committed offsets.
pub(crate) struct OffsetStore {
    dir: PathBuf,
    /// One lock per group, so commits of different groups do not wait for each other's
    /// fsyncs while commits of one group are written in order.
    groups: Mutex<HashMap<String, Arc<Mutex<GroupOffsets>>>>,
}

impl OffsetStore {
    /// Loads every group file from `dir` (created if missing).
    pub(crate) fn open(dir: PathBuf) -> Result<Self, LogError> {
        fs_err::create_dir_all(&dir)?;
        let mut groups = HashMap::new();
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                fs_err::remove_file(entry.path())?;
                continue;
            }
            let Some(group) = name
                .strip_suffix(OFFSETS_EXTENSION)
                .and_then(decode_group_name)
            else {
                tracing::warn!(file = %name, "ignoring unknown file in the offsets directory");
                continue;
            };
            let offsets = read_group_file(&entry.path())?;
            groups.insert(group, Arc::new(Mutex::new(offsets)));
        }
        Ok(Self {
            dir,
            groups: Mutex::new(groups),
        })
    }

    /// Stores a group's next offsets for some partitions (topic, partition, next offset);
    /// durable when it returns. One file write, whatever the number of partitions.
    pub(crate) fn commit(&self, group: &str, entries: &[(&str, u32, u64)]) -> Result<(), LogError> {
        let file_name = format!("{}{OFFSETS_EXTENSION}", encode_group_name(group)?);
        let offsets = Arc::clone(self.groups.lock().entry(group.to_owned()).or_default());
        let mut offsets = offsets.lock();
        let before = offsets.clone();
        for &(topic, partition, next_offset) in entries {
            offsets.insert((topic.to_owned(), partition), next_offset);
        }
        if *offsets == before {
            return Ok(());
        }
        if let Err(error) =
            write_atomically(&self.dir.join(file_name), encode_group(&offsets).as_bytes())
        {
            // Keep memory equal to what is on disk.
            *offsets = before;
            return Err(error);
        }
        Ok(())
    }

    /// The lowest next offset any group has committed for a partition: records from
    /// there on are still to be consumed by someone. `None` when no group consumes it.
    pub(crate) fn lowest(&self, topic: &str, partition: u32) -> Option<u64> {
        self.all_committed(topic, partition).into_iter().min()
    }

    /// The highest next offset any group has committed for a partition: records below
    /// it existed.
    pub(crate) fn highest(&self, topic: &str, partition: u32) -> Option<u64> {
        self.all_committed(topic, partition).into_iter().max()
    }

    /// Every group's committed next offset for a partition.
    fn all_committed(&self, topic: &str, partition: u32) -> Vec<u64> {
        let groups: Vec<Arc<Mutex<GroupOffsets>>> =
            self.groups.lock().values().map(Arc::clone).collect();
        let key = (topic.to_owned(), partition);
        groups
            .iter()
            .filter_map(|offsets| offsets.lock().get(&key).copied())
            .collect()
    }

    /// A group's stored next offset for a partition.
    pub(crate) fn get(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let offsets = self.groups.lock().get(group).map(Arc::clone)?;
        let offsets = offsets.lock();
        offsets.get(&(topic.to_owned(), partition)).copied()
    }
}

/// Checks a consumer group's name: 1 to 80 bytes.
pub(crate) fn validate_group_name(group: &str) -> Result<(), LogError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME_LEN {
        return Err(LogError::InvalidGroupName(group.to_owned()));
    }
    Ok(())
}

/// Encodes a group name as a file name: `[A-Za-z0-9_-]` and non-leading `.` stay, every
/// other byte becomes `%XX` (so any UTF-8 name maps to exactly one safe file name).
fn encode_group_name(group: &str) -> Result<String, LogError> {
    validate_group_name(group)?;
    let mut encoded = String::with_capacity(group.len());
    for (i, byte) in group.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-') || (byte == b'.' && i > 0) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

/// Inverse of [`encode_group_name`]; `None` for names it cannot have produced.
fn decode_group_name(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    let group = String::from_utf8(bytes).ok()?;
    (encode_group_name(&group).ok()? == encoded).then_some(group)
}

/// The file's text: one `<topic> <partition> <next_offset>` line per entry.
fn encode_group(offsets: &GroupOffsets) -> String {
    let lines: Vec<String> = offsets
        .iter()
        .map(|((topic, partition), next)| format!("{topic} {partition} {next}"))
        .collect();
    encode_checked_text(OFFSETS_KIND, OFFSETS_VERSION, &lines)
}

fn read_group_file(path: &Path) -> Result<GroupOffsets, LogError> {
    let text = fs_err::read_to_string(path)?;
    let mut offsets = GroupOffsets::new();
    for line in decode_checked_text(path, &text, OFFSETS_KIND, OFFSETS_VERSION)? {
        let mut fields = line.split(' ');
        let parsed = match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some(topic), Some(partition), Some(next), None) => partition
                .parse()
                .ok()
                .zip(next.parse().ok())
                .map(|(partition, next)| (topic, partition, next)),
            _ => None,
        };
        let (topic, partition, next) = parsed.ok_or_else(|| LogError::Corrupt {
            path: path.to_owned(),
            position: 0,
            reason: format!("malformed offsets line '{line}'"),
        })?;
        offsets.insert((topic.to_owned(), partition), next);
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_round_trip_through_file_names() {
        for group in [
            "pipeline",
            "a.b",
            ".hidden",
            "..",
            "with space/slash",
            "ünï",
            "%41",
        ] {
            let encoded = encode_group_name(group).expect("valid");
            assert!(
                !encoded.starts_with('.') && !encoded.contains('/'),
                "{encoded}"
            );
            assert_eq!(decode_group_name(&encoded).as_deref(), Some(group));
        }
        assert!(encode_group_name("").is_err());
        assert_eq!(decode_group_name("a%4"), None);
        assert_eq!(decode_group_name("%61"), None, "not canonical");
    }
}
