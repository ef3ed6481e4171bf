//! The change-event model: one row- or document-level change, where it came from, and
//! its place in the source's log.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json::canonical_json;

/// What happened to the row or document. Serialised as Debezium's one-letter code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// A row was inserted (`c`).
    #[serde(rename = "c")]
    Create,
    /// A row was updated (`u`).
    #[serde(rename = "u")]
    Update,
    /// A row was deleted (`d`).
    #[serde(rename = "d")]
    Delete,
    /// A row was read by a snapshot (`r`); applied like an upsert.
    #[serde(rename = "r")]
    Read,
    /// A whole table was truncated (`t`); the event has no key.
    #[serde(rename = "t")]
    Truncate,
    /// A generic message written to the source's log (`m`), such as PostgreSQL's
    /// `pg_logical_emit_message`.
    #[serde(rename = "m")]
    Message,
}

impl Op {
    /// The operation for a Debezium `op` code, if it is one.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "c" => Self::Create,
            "u" => Self::Update,
            "d" => Self::Delete,
            "r" => Self::Read,
            "t" => Self::Truncate,
            "m" => Self::Message,
            _ => return None,
        })
    }

    /// The Debezium `op` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Create => "c",
            Self::Update => "u",
            Self::Delete => "d",
            Self::Read => "r",
            Self::Truncate => "t",
            Self::Message => "m",
        }
    }
}

/// The kind of database an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Connector {
    /// PostgreSQL (logical decoding).
    Postgresql,
    /// MySQL or MariaDB (binlog).
    Mysql,
    /// MongoDB (oplog or change streams).
    Mongodb,
    /// Another connector, by the name the event gives.
    Other(String),
    /// The event names no connector and its source block fits none of the known ones.
    Unknown,
}

impl Connector {
    /// The connector for a Debezium `source.connector` name.
    pub fn from_name(name: &str) -> Self {
        match name {
            "postgresql" => Self::Postgresql,
            "mysql" | "mariadb" => Self::Mysql,
            "mongodb" => Self::Mongodb,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Where an event sits in its source's log. Comparable within one source with
/// [`SourcePosition::cmp_position`], which is how per-key order is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourcePosition {
    /// A PostgreSQL write-ahead-log position.
    PostgresLsn {
        /// The LSN of the change.
        lsn: u64,
        /// The PostgreSQL transaction id (`txId`).
        tx_id: Option<u64>,
        /// The LSN of the last commit before this change: the first element of
        /// Debezium's `sequence`.
        last_commit_lsn: Option<u64>,
    },
    /// A MySQL binlog coordinate.
    MysqlBinlog {
        /// Binlog file name, e.g. `mysql-bin.000003`.
        file: String,
        /// Byte position of the event in the file.
        pos: u64,
        /// Row number within the binlog event.
        row: u64,
        /// The GTID of the transaction, if GTIDs are enabled.
        gtid: Option<String>,
        /// The MySQL server id.
        server_id: Option<u64>,
    },
    /// A MongoDB oplog position.
    Mongo {
        /// The oplog timestamp in milliseconds (second resolution).
        ts_ms: i64,
        /// The ordinal of the operation within that second.
        ord: i64,
        /// The replica set name.
        rs: Option<String>,
        /// The legacy operation hash `h`.
        h: Option<i64>,
    },
    /// No position is known.
    Unknown,
}

impl SourcePosition {
    /// Orders two positions of the same source: PostgreSQL by LSN, MySQL by binlog file
    /// (base name equal, then numeric extension), position and row, MongoDB by oplog
    /// timestamp and ordinal. `None` when they cannot be compared: different kinds,
    /// [`SourcePosition::Unknown`], different binlog base names or server ids, or
    /// different replica sets.
    ///
    /// For one PostgreSQL row, LSN order is commit order: a change to a row waits for
    /// every earlier transaction holding that row's lock to commit.
    pub fn cmp_position(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::PostgresLsn { lsn: a, .. }, Self::PostgresLsn { lsn: b, .. }) => Some(a.cmp(b)),
            (
                Self::MysqlBinlog {
                    file: fa,
                    pos: pa,
                    row: ra,
                    server_id: sa,
                    ..
                },
                Self::MysqlBinlog {
                    file: fb,
                    pos: pb,
                    row: rb,
                    server_id: sb,
                    ..
                },
            ) => {
                if matches!((sa, sb), (Some(a), Some(b)) if a != b) {
                    return None;
                }
                let (base_a, idx_a) = split_binlog_name(fa);
                let (base_b, idx_b) = split_binlog_name(fb);
                if base_a != base_b {
                    return None;
                }
                Some(idx_a.cmp(&idx_b).then(pa.cmp(pb)).then(ra.cmp(rb)))
            }
            (
                Self::Mongo {
                    ts_ms: ta,
                    ord: oa,
                    rs: ra,
                    ..
                },
                Self::Mongo {
                    ts_ms: tb,
                    ord: ob,
                    rs: rb,
                    ..
                },
            ) => {
                if matches!((ra, rb), (Some(a), Some(b)) if a != b) {
                    return None;
                }
                Some(ta.cmp(tb).then(oa.cmp(ob)))
            }
            _ => None,
        }
    }
}

/// Splits `mysql-bin.000003` into (`mysql-bin`, 3); a name without a numeric extension
/// sorts as index 0 under its whole name.
fn split_binlog_name(file: &str) -> (&str, u64) {
    match file.rsplit_once('.') {
        Some((base, ext)) if !ext.is_empty() && ext.bytes().all(|b| b.is_ascii_digit()) => {
            (base, ext.parse().unwrap_or(u64::MAX))
        }
        _ => (file, 0),
    }
}

/// Where a change comes from: the system, the table, and the position in its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The kind of database.
    pub connector: Connector,
    /// The logical server name (Debezium's `topic.prefix`).
    pub name: Option<String>,
    /// The database (`db`).
    pub database: Option<String>,
    /// The schema (PostgreSQL's namespace), if the database has one.
    pub schema: Option<String>,
    /// The table, or the MongoDB collection.
    pub table: Option<String>,
    /// The position in the source's log.
    pub position: SourcePosition,
    /// The transaction the change belongs to: the id transaction markers use
    /// (`transaction.id`) when the event carries one, else the source's own id
    /// (PostgreSQL `txId`, MySQL `gtid`, MongoDB `txnNumber`).
    pub tx_id: Option<String>,
    /// When the change was committed at the source, in milliseconds since the epoch.
    pub ts_ms: Option<i64>,
    /// Whether the event comes from a snapshot, as the source gives it: `"true"`,
    /// `"last"`, `"false"`, `"incremental"`… (a JSON boolean becomes `"true"`/`"false"`).
    pub snapshot: Option<String>,
}

impl SourceInfo {
    /// A source of the given connector with nothing else known.
    pub fn new(connector: Connector) -> Self {
        Self {
            connector,
            name: None,
            database: None,
            schema: None,
            table: None,
            position: SourcePosition::Unknown,
            tx_id: None,
            ts_ms: None,
            snapshot: None,
        }
    }
}

/// One change to one row or document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// Where it happened.
    pub source: SourceInfo,
    /// The primary-key columns (for MongoDB `{"id": <_id>}`); empty when the record
    /// carried no key and none can be derived, in which case the caller must supply it.
    pub key: Map<String, Value>,
    /// The row before the change (for updates and deletes, as far as the source logs it).
    pub before: Option<Map<String, Value>>,
    /// The row after the change. For [`Op::Message`] this holds the message itself
    /// (`prefix`, `content`).
    pub after: Option<Map<String, Value>>,
    /// The fields set by a partial update when the source logs no full `after` image
    /// (MongoDB `updateDescription.updatedFields` or a legacy `$set` patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Map<String, Value>>,
    /// Fields removed by a partial update (MongoDB `removedFields` or `$unset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_fields: Vec<String>,
    /// When the change-capture system processed the event (the envelope's `ts_ms`).
    pub event_time_ms: Option<i64>,
}

impl ChangeEvent {
    /// A change with no images, no patch and no event time.
    pub fn new(op: Op, source: SourceInfo, key: Map<String, Value>) -> Self {
        Self {
            op,
            source,
            key,
            before: None,
            after: None,
            patch: None,
            removed_fields: Vec::new(),
            event_time_ms: None,
        }
    }

    /// `database.schema.table`, leaving out the parts the source does not name
    /// (`inventory.customers` for MySQL); empty when none is known.
    pub fn table_id(&self) -> String {
        let s = &self.source;
        [&s.database, &s.schema, &s.table]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The key as canonical JSON: object members sorted by name at every depth, no
    /// whitespace. Equal keys give equal strings, so it serves as the log record key that
    /// keeps one row's changes in order.
    pub fn key_string(&self) -> String {
        let mut out = String::new();
        canonical_json(&Value::Object(self.key.clone()), &mut out);
        out
    }
}

/// Whether a transaction marker opens or closes a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionStatus {
    /// The transaction begins.
    Begin,
    /// The transaction has ended; the counts are final.
    End,
}

/// A Debezium transaction metadata record: the boundary of one source transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionMarker {
    /// Begin or end.
    pub status: TransactionStatus,
    /// The transaction id, as change events carry it in `transaction.id`.
    pub id: String,
    /// Events the transaction produced (on `End`).
    pub event_count: Option<u64>,
    /// Events per data collection (`schema.table` or similar), on `End`.
    pub data_collections: Vec<(String, u64)>,
    /// When the boundary happened at the source.
    pub ts_ms: Option<i64>,
}

/// What one Debezium record holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
// Almost every record is a change and the value is short-lived: boxing the large variant
// would cost an allocation per event to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A data change.
    Change(ChangeEvent),
    /// A null value with a key: log compaction's marker that follows a delete. Carries
    /// no new information; a consumer that already applied the delete skips it.
    Tombstone {
        /// The deleted row's key.
        key: Map<String, Value>,
    },
    /// A transaction boundary.
    Transaction(TransactionMarker),
}
