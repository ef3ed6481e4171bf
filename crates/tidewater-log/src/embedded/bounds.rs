//! A partition's bounds file: what the segment files alone cannot prove after damage or a
//! power loss. It holds the first offset retention kept (`start`), an upper bound on every
//! offset ever handed out (`reserved`), where the records ended at the last clean close,
//! and the gaps in the offset sequence that the log itself made.
//!
//! With it the log never hands an offset out twice — after a torn or damaged tail it
//! resumes at `reserved`, leaving a declared gap — and it can tell records lost to damage
//! from records retention deleted on purpose.

use std::path::{Path, PathBuf};

use super::config::Durability;
use super::fsutil::write_atomically;
use super::fsutil::{decode_checked_text, encode_checked_text, read_full_at, write_all_at};
use crate::LogError;

/// Name of the bounds file in a partition directory.
pub(crate) const BOUNDS_FILE: &str = "bounds";
/// First-line kind of the bounds file.
const BOUNDS_KIND: &str = "tidewater-partition-bounds";
/// Version of the bounds file layout.
const BOUNDS_VERSION: u32 = 1;

/// What the bounds file says about a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// First offset retention kept; records below it were deleted on purpose.
    pub(crate) start: u64,
    /// Every offset handed out so far is below this.
    pub(crate) reserved: u64,
    /// The end of the partition's records at the last clean close; `None` while the log
    /// is open (or after a crash). Fewer records on open means records were lost.
    pub(crate) closed_end: Option<u64>,
    /// The durability policy of the session that last opened the partition: after it
    /// stopped uncleanly, `os` means acknowledged records may have been lost with the page
    /// cache, so appends resume at `reserved`.
    pub(crate) durability: Durability,
    /// Declared gaps, oldest first: a segment may start at `to` while the one before it
    /// ends at `from`.
    pub(crate) gaps: Vec<Gap>,
}

/// Offsets `from..to` that no record will ever have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// End of the segment before the gap.
    pub(crate) from: u64,
    /// Base of the segment after it.
    pub(crate) to: u64,
}

/// A partition's bounds file and the values last written to it.
#[derive(Debug)]
pub(crate) struct BoundsFile {
    path: PathBuf,
    current: Bounds,
}

impl BoundsFile {
    /// Reads the bounds file of the partition in `dir`; `None` for a partition written
    /// before bounds files existed.
    pub(crate) fn read(dir: &Path) -> Result<Option<Bounds>, LogError> {
        let path = dir.join(BOUNDS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = fs_err::read_to_string(&path)?;
        decode(&path, &text).map(Some)
    }

    /// Writes `bounds` durably and keeps them as the current values.
    pub(crate) fn create(dir: &Path, bounds: Bounds) -> Result<Self, LogError> {
        let path = dir.join(BOUNDS_FILE);
        write_atomically(&path, encode(&bounds).as_bytes())?;
        Ok(Self {
            path,
            current: bounds,
        })
    }

    /// The values last written.
    #[cfg(test)]
    pub(crate) fn current(&self) -> &Bounds {
        &self.current
    }

    /// Changes the bounds with `change` and writes them durably; on failure the current
    /// values stay as they were on disk.
    pub(crate) fn update(&mut self, change: impl FnOnce(&mut Bounds)) -> Result<(), LogError> {
        let mut next = self.current.clone();
        change(&mut next);
        if next == self.current {
            return Ok(());
        }
        write_atomically(&self.path, encode(&next).as_bytes())?;
        self.current = next;
        Ok(())
    }
}

/// Name of the acknowledged-end file in a partition directory.
pub(crate) const ACKED_FILE: &str = "acked";
/// Bytes of the acknowledged-end file: the end (`u64` LE) and a CRC-32 of it (`u32` LE).
const ACKED_LEN: usize = 12;

/// A partition's acknowledged end under `Durability::Fsync`: rewritten in place after
/// every fsync that acknowledges appends, and never fsynced itself. A process crash keeps
/// it (it is in the page cache); a power loss may leave an older value, which is still
/// below what the fsyncs made durable. So on open, fewer records than it says means
/// acknowledged records were lost to damage — and their offsets are not handed out again.
#[derive(Debug)]
pub(crate) struct AckedEnd {
    file: fs_err::File,
}

impl AckedEnd {
    /// The value stored in the partition in `dir`, if there is a readable one.
    pub(crate) fn read(dir: &Path) -> Result<Option<u64>, LogError> {
        let path = dir.join(ACKED_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let file = fs_err::File::open(&path)?;
        let mut bytes = [0u8; ACKED_LEN];
        if read_full_at(&file, &mut bytes, 0)? < ACKED_LEN {
            return Ok(None);
        }
        let (end, crc) = bytes.split_at(8);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        // A torn or damaged value is no evidence either way.
        Ok((crc32fast::hash(end) == crc).then(|| {
            u64::from_le_bytes([
                end[0], end[1], end[2], end[3], end[4], end[5], end[6], end[7],
            ])
        }))
    }

    /// Opens (creating) the file of the partition in `dir` and stores `end` in it.
    pub(crate) fn create(dir: &Path, end: u64) -> Result<Self, LogError> {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(ACKED_FILE))?;
        let acked = Self { file };
        acked.store(end)?;
        Ok(acked)
    }

    /// Stores `end` (one positional write, no fsync).
    pub(crate) fn store(&self, end: u64) -> std::io::Result<()> {
        let mut bytes = [0u8; ACKED_LEN];
        bytes[..8].copy_from_slice(&end.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..8]);
        bytes[8..].copy_from_slice(&crc.to_le_bytes());
        write_all_at(&self.file, &bytes, 0)
    }
}

fn encode(bounds: &Bounds) -> String {
    let mut lines = vec![
        format!("start {}", bounds.start),
        format!("reserved {}", bounds.reserved),
        match bounds.closed_end {
            Some(end) => format!("closed_end {end}"),
            None => "closed_end none".to_owned(),
        },
        match bounds.durability {
            Durability::Fsync => "durability fsync".to_owned(),
            Durability::Os => "durability os".to_owned(),
        },
    ];
    lines.extend(
        bounds
            .gaps
            .iter()
            .map(|gap| format!("gap {} {}", gap.from, gap.to)),
    );
    encode_checked_text(BOUNDS_KIND, BOUNDS_VERSION, &lines)
}

fn decode(path: &Path, text: &str) -> Result<Bounds, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.to_owned(),
        position: 0,
        reason,
    };
    let mut start = None;
    let mut reserved = None;
    let mut closed_end = None;
    let mut durability = None;
    let mut gaps = Vec::new();
    for line in decode_checked_text(path, text, BOUNDS_KIND, BOUNDS_VERSION)? {
        let fields: Vec<&str> = line.split(' ').collect();
        let number = |field: &str| -> Result<u64, LogError> {
            field
                .parse()
                .map_err(|_| corrupt(format!("malformed number in '{line}'")))
        };
        match fields.as_slice() {
            ["start", value] => start = Some(number(value)?),
            ["reserved", value] => reserved = Some(number(value)?),
            ["closed_end", "none"] => closed_end = Some(None),
            ["closed_end", value] => closed_end = Some(Some(number(value)?)),
            ["durability", "fsync"] => durability = Some(Durability::Fsync),
            ["durability", "os"] => durability = Some(Durability::Os),
            ["gap", from, to] => {
                let gap = Gap {
                    from: number(from)?,
                    to: number(to)?,
                };
                if gap.from >= gap.to {
                    return Err(corrupt(format!("empty or inverted gap in '{line}'")));
                }
                gaps.push(gap);
            }
            _ => return Err(corrupt(format!("malformed line '{line}'"))),
        }
    }
    match (start, reserved, closed_end, durability) {
        (Some(start), Some(reserved), Some(closed_end), Some(durability)) => Ok(Bounds {
            start,
            reserved,
            closed_end,
            durability,
            gaps,
        }),
        _ => Err(corrupt(
            "missing start, reserved, closed_end or durability".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bounds = Bounds {
            start: 12,
            reserved: 70_000,
            closed_end: None,
            durability: Durability::Os,
            gaps: vec![Gap {
                from: 40,
                to: 65_536,
            }],
        };
        let mut file = BoundsFile::create(dir.path(), bounds.clone()).expect("create");
        assert_eq!(BoundsFile::read(dir.path()).expect("read"), Some(bounds));
        file.update(|b| b.closed_end = Some(41)).expect("update");
        let read = BoundsFile::read(dir.path()).expect("read").expect("some");
        assert_eq!(read.closed_end, Some(41));
        assert_eq!(&read, file.current());
    }

    #[test]
    fn acked_end_round_trips_and_ignores_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(AckedEnd::read(dir.path()).expect("read"), None);
        let acked = AckedEnd::create(dir.path(), 7).expect("create");
        acked.store(12_345).expect("store");
        assert_eq!(AckedEnd::read(dir.path()).expect("read"), Some(12_345));
        let path = dir.path().join(ACKED_FILE);
        let mut bytes = fs_err::read(&path).expect("read");
        bytes[0] ^= 1;
        fs_err::write(&path, bytes).expect("write");
        assert_eq!(AckedEnd::read(dir.path()).expect("read"), None);
    }

    #[test]
    fn a_damaged_bounds_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        BoundsFile::create(
            dir.path(),
            Bounds {
                start: 0,
                reserved: 5,
                closed_end: Some(5),
                durability: Durability::Fsync,
                gaps: Vec::new(),
            },
        )
        .expect("create");
        let path = dir.path().join(BOUNDS_FILE);
        let text = fs_err::read_to_string(&path).expect("read");
        fs_err::write(&path, text.replace("reserved 5", "reserved 6")).expect("write");
        assert!(matches!(
            BoundsFile::read(dir.path()),
            Err(LogError::Corrupt { .. })
        ));
    }
}
