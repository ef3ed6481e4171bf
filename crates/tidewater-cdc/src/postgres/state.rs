//! The source's progress file and the two values it is built from: log sequence numbers
//! and the snapshot's transaction-id snapshot.
//!
//! The file is JSON, written atomically (a temporary file beside it, fsync, rename, fsync
//! of the folder), so a crash leaves either the old or the new progress:
//!
//! ```json
//! {"version":1,"slot":"tidewater","tables":["public.a"],"snapshot_done":true,
//!  "consistent_lsn":"0/1526048","snapshot_lsn":"0/1527000",
//!  "snapshot":{"xmin":729,"xmax":731,"xip":[730]},"last_lsn":"0/1530000",
//!  "last_txid":745}
//! ```

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::PostgresError;

/// A PostgreSQL write-ahead-log position, written `X/Y` (two hexadecimal halves) as
/// PostgreSQL's `pg_lsn` type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN like 0/16B3748"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|e| format!("{s:?}: {e}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Self((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which transactions a snapshot sees, as `txid_current_snapshot()` gives it: 64-bit
/// transaction ids (the 32-bit xid with the epoch above it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxidSnapshot {
    /// Every transaction below this one had finished when the snapshot was taken.
    pub xmin: u64,
    /// No transaction from this one on had started.
    pub xmax: u64,
    /// Transactions in `xmin..xmax` still running at the snapshot.
    pub xip: Vec<u64>,
}

impl FromStr for TxidSnapshot {
    type Err = String;

    /// Parses `xmin:xmax:xip,xip,...`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("{s:?} is not a txid snapshot like 10:20:10,14,15: {why}");
        let mut parts = s.splitn(3, ':');
        let num = |p: Option<&str>| -> Result<u64, String> {
            p.ok_or_else(|| bad("missing part"))?
                .parse::<u64>()
                .map_err(|e| bad(&e.to_string()))
        };
        let xmin = num(parts.next())?;
        let xmax = num(parts.next())?;
        let xip = match parts.next() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|x| x.parse::<u64>().map_err(|e| bad(&e.to_string())))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { xmin, xmax, xip })
    }
}

impl TxidSnapshot {
    /// Whether the snapshot sees the (committed) transaction `txid`: PostgreSQL's own rule
    /// (`XidInMVCCSnapshot`) for a transaction known to have committed.
    pub fn sees(&self, txid: u64) -> bool {
        if txid < self.xmin {
            true
        } else if txid >= self.xmax {
            false
        } else {
            !self.xip.contains(&txid)
        }
    }

    /// The 64-bit id of a 32-bit xid as logical decoding reports it.
    ///
    /// wal2json gives the xid without its epoch. The source only asks about transactions
    /// that committed before the snapshot's LSN (later ones cannot be visible), and those
    /// were running or finished no more than 2^31 transactions before the snapshot's
    /// `xmin`: PostgreSQL stops assigning xids before an old xid could wrap (its
    /// wraparound protection), and `xmax` is at most a few hundred thousand transactions
    /// after `xmin` in practice. So the xid belongs to the epoch that puts it nearest to
    /// `xmin`, which is the epoch of `xmin` or the one before or after when the counter
    /// wrapped between the transaction and the snapshot.
    pub fn widen(&self, xid: u32) -> u64 {
        widen_xid(self.xmin, xid)
    }
}

/// The 64-bit id nearest to `base` whose low 32 bits are `xid`: the epoch of `base`, or
/// the one before or after when the counter wrapped in between. Exact while the two are
/// less than 2^31 transactions apart, which PostgreSQL's wraparound protection guarantees
/// for transactions that are both still of interest. The stream widens each xid against
/// the previous transaction's (starting from the snapshot's `xmin`), so the base follows
/// the counter across epochs.
pub(crate) fn widen_xid(base: u64, xid: u32) -> u64 {
    const HALF: u64 = 1 << 31;
    let epoch = base >> 32;
    let candidate = (epoch << 32) | u64::from(xid);
    if candidate > base.saturating_add(HALF) && epoch > 0 {
        candidate - (1 << 32)
    } else if candidate.saturating_add(HALF) < base {
        candidate + (1 << 32)
    } else {
        candidate
    }
}

/// What the source has done, persisted after every delivered batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressState {
    /// Format version of this file.
    pub version: u32,
    /// The slot the progress belongs to.
    pub slot: String,
    /// The tables the snapshot covered, as `schema.table`.
    pub tables: Vec<String>,
    /// Whether every snapshot row was delivered.
    pub snapshot_done: bool,
    /// The slot's consistent point: decoding starts with transactions committed after it.
    pub consistent_lsn: Lsn,
    /// The WAL insert position read inside the snapshot transaction, after the snapshot
    /// was taken: a transaction whose commit record starts at or after it cannot be
    /// visible in the snapshot.
    pub snapshot_lsn: Lsn,
    /// The snapshot's transaction-id snapshot.
    pub snapshot: TxidSnapshot,
    /// The end of the last transaction delivered to the sink (or of WAL known to hold
    /// nothing for it); the stream skips transactions ending at or before it.
    pub last_lsn: Lsn,
    /// The 64-bit id of the last transaction streamed, against which the next 32-bit xid
    /// is widened (0 before the first).
    #[serde(default)]
    pub last_txid: u64,
}

impl ProgressState {
    pub const VERSION: u32 = 1;

    /// Reads the file, `None` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, PostgresError> {
        let bytes = match fs_err::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PostgresError::StateIo { source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| PostgresError::StateCorrupt {
                path: path.to_owned(),
                source,
            })
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, path: &Path) -> Result<(), PostgresError> {
        let io = |source| PostgresError::StateIo { source };
        let json =
            serde_json::to_vec_pretty(self).map_err(|source| PostgresError::StateCorrupt {
                path: path.to_owned(),
                source,
            })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => Path::new(".").to_owned(),
        };
        // The folder may not exist yet (a data directory with no other source in it).
        fs_err::create_dir_all(&dir).map_err(io)?;
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let tmp = dir.join(name);
        let mut f = fs_err::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs_err::rename(&tmp, path).map_err(io)?;
        // The rename is durable only once the folder's entry is.
        fs_err::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
    }

    #[test]
    fn snapshot_visibility() {
        let s: TxidSnapshot = "10:20:12,15".parse().unwrap();
        assert!(s.sees(9));
        assert!(s.sees(11));
        assert!(!s.sees(12));
        assert!(!s.sees(15));
        assert!(s.sees(19));
        assert!(!s.sees(20));
        assert_eq!(
            "5:5:".parse::<TxidSnapshot>().unwrap().xip,
            Vec::<u64>::new()
        );
    }

    #[test]
    fn widening_follows_the_epoch() {
        let epoch2 = 2u64 << 32;
        let s = TxidSnapshot {
            xmin: epoch2 + 100,
            xmax: epoch2 + 200,
            xip: vec![],
        };
        assert_eq!(s.widen(150), epoch2 + 150);
        // Just before the wrap: the previous epoch.
        assert_eq!(s.widen(u32::MAX - 5), epoch2 - 6);
        let late = TxidSnapshot {
            xmin: epoch2 + u64::from(u32::MAX) - 10,
            xmax: epoch2 + u64::from(u32::MAX) + 20,
            xip: vec![],
        };
        // Just after the wrap: the next epoch.
        assert_eq!(late.widen(3), (3u64 << 32) + 3);
    }

    /// Regression: with no file source, `<data_dir>/sources` did not exist and every
    /// delivery failed to save its progress (and was sent again).
    #[test]
    fn save_creates_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sources/postgres-slot.json");
        let st = ProgressState {
            version: ProgressState::VERSION,
            slot: "s".into(),
            tables: vec!["public.a".into()],
            snapshot_done: false,
            consistent_lsn: Lsn(1),
            snapshot_lsn: Lsn(1),
            snapshot: "1:3:2".parse().unwrap(),
            last_lsn: Lsn(1),
            last_txid: 0,
        };
        st.save(&path).unwrap();
        assert_eq!(ProgressState::load(&path).unwrap(), Some(st));
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        assert!(ProgressState::load(&path).unwrap().is_none());
        let st = ProgressState {
            version: ProgressState::VERSION,
            slot: "s".into(),
            tables: vec!["public.a".into()],
            snapshot_done: true,
            consistent_lsn: Lsn(1),
            snapshot_lsn: Lsn(2),
            snapshot: "1:3:2".parse().unwrap(),
            last_lsn: Lsn(5),
            last_txid: 0,
        };
        st.save(&path).unwrap();
        assert_eq!(ProgressState::load(&path).unwrap(), Some(st));
    }
}
