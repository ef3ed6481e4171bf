//! Reading wal2json's format-version 2 output and turning it into [`ChangeEvent`]s; also
//! the one JSON representation of a column value that snapshot rows and streamed rows
//! share, so a row read by the snapshot and the same row streamed compare equal.
//!
//! Format version 2 writes one JSON object per row of `pg_logical_slot_peek_changes`:
//! `{"action":"B","xid":..,"lsn":<commit record>,"nextlsn":<end of commit>,"timestamp":..}`
//! opens a transaction, `I`/`U`/`D`/`T` are its changes (`schema`, `table`, `columns`:
//! the new row, `identity`: the replica-identity columns of the old row, `pk`), and `C`
//! closes it. Messages (`M`) are ignored.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::PostgresError;
use super::setup::TableInfo;
use super::state::Lsn;
use crate::event::{ChangeEvent, Connector, Op, SourceInfo, SourcePosition};

/// One decoded transaction, complete from `B` to `C`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transaction {
    /// The 32-bit transaction id as decoding reports it.
    pub xid: u32,
    /// Where the commit record starts.
    pub commit_lsn: Lsn,
    /// Where the commit record ends: the position to advance the slot to.
    pub end_lsn: Lsn,
    /// The commit time in milliseconds since the epoch.
    pub ts_ms: Option<i64>,
    /// The row changes, in the order the transaction made them.
    pub changes: Vec<Change>,
}

/// One row change of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Change {
    pub action: Action,
    pub lsn: Lsn,
    pub schema: String,
    pub table: String,
    /// The new row (insert, update).
    pub columns: Option<Map<String, Value>>,
    /// The old row's replica-identity columns (update, delete).
    pub identity: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Insert,
    Update,
    Delete,
    Truncate,
}

#[derive(Deserialize)]
struct Record {
    action: String,
    #[serde(default)]
    xid: Option<u32>,
    #[serde(default)]
    lsn: Option<String>,
    #[serde(default)]
    nextlsn: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    columns: Option<Vec<Column>>,
    #[serde(default)]
    identity: Option<Vec<Column>>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type", default)]
    type_name: String,
    #[serde(default)]
    value: Value,
}

/// Assembles transactions from the rows of one peek, in the order the server returns
/// them (commit order).
#[derive(Default)]
pub(crate) struct Decoder {
    open: Option<Transaction>,
}

impl Decoder {
    /// Feeds one row (`lsn`, `data`); returns the transaction it completes, if any.
    pub fn push(
        &mut self,
        row_lsn: &str,
        data: &str,
    ) -> Result<Option<Transaction>, PostgresError> {
        let bad = |reason: String| PostgresError::Decode {
            what: format!("wal2json output at {row_lsn}"),
            reason,
        };
        let rec: Record = serde_json::from_str(data).map_err(|e| bad(format!("{e}: {data}")))?;
        let row_lsn: Lsn = row_lsn.parse().map_err(bad)?;
        let lsn_of = |s: &Option<String>, field: &str| -> Result<Lsn, PostgresError> {
            s.as_deref()
                .ok_or_else(|| bad(format!("`{field}` missing (include-lsn must be on)")))?
                .parse()
                .map_err(bad)
        };
        match rec.action.as_str() {
            "B" => {
                let xid = rec
                    .xid
                    .ok_or_else(|| bad("`xid` missing (include-xids must be on)".to_owned()))?;
                self.open = Some(Transaction {
                    xid,
                    commit_lsn: lsn_of(&rec.lsn, "lsn")?,
                    end_lsn: lsn_of(&rec.nextlsn, "nextlsn")?,
                    ts_ms: rec.timestamp.as_deref().and_then(parse_timestamp_ms),
                    changes: Vec::new(),
                });
                Ok(None)
            }
            "C" => {
                let mut tx = self
                    .open
                    .take()
                    .ok_or_else(|| bad("a commit without a begin".to_owned()))?;
                // The row's own LSN for a commit is the end of the commit record, the
                // position decoding resumes from.
                tx.end_lsn = tx.end_lsn.max(row_lsn);
                Ok(Some(tx))
            }
            "I" | "U" | "D" | "T" => {
                let action = match rec.action.as_str() {
                    "I" => Action::Insert,
                    "U" => Action::Update,
                    "D" => Action::Delete,
                    _ => Action::Truncate,
                };
                let tx = self
                    .open
                    .as_mut()
                    .ok_or_else(|| bad("a change outside a transaction".to_owned()))?;
                let (Some(schema), Some(table)) = (rec.schema, rec.table) else {
                    return Err(bad("`schema` or `table` missing".to_owned()));
                };
                tx.changes.push(Change {
                    action,
                    lsn: match rec.lsn {
                        Some(l) => l.parse().map_err(bad)?,
                        None => row_lsn,
                    },
                    schema,
                    table,
                    columns: rec.columns.map(columns_to_map),
                    identity: rec.identity.map(columns_to_map),
                });
                Ok(None)
            }
            // Logical messages and anything newer are not row changes.
            _ => Ok(None),
        }
    }
}

fn columns_to_map(cols: Vec<Column>) -> Map<String, Value> {
    cols.into_iter()
        .map(|c| {
            let v = normalise_streamed(&c.type_name, c.value);
            (c.name, v)
        })
        .collect()
}

/// wal2json writes `json`/`jsonb` values as strings; they are stored parsed, as the
/// snapshot stores them.
fn normalise_streamed(type_name: &str, value: Value) -> Value {
    match (type_name, value) {
        ("json" | "jsonb", Value::String(s)) => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (_, v) => v,
    }
}

/// A column value from its text form and type, the way wal2json writes it: integer,
/// floating-point and numeric types as JSON numbers (except `NaN` and infinities, which
/// JSON cannot hold, as strings), booleans as booleans, `json`/`jsonb` parsed, everything
/// else as the type's text output (timestamps in the session's `DateStyle`, arrays as
/// `{1,2}`), so snapshot and stream agree.
pub(crate) fn text_to_value(type_oid: u32, text: Option<String>) -> Value {
    const BOOL: u32 = 16;
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const OID: u32 = 26;
    const JSON: u32 = 114;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const NUMERIC: u32 = 1700;
    const JSONB: u32 = 3802;
    let Some(text) = text else {
        return Value::Null;
    };
    match type_oid {
        // `bool::text` prints `true`, the output function `t`.
        BOOL => Value::Bool(text == "t" || text == "true"),
        INT2 | INT4 | INT8 | OID | FLOAT4 | FLOAT8 | NUMERIC | JSON | JSONB => {
            // Parsed as JSON exactly as a reader of wal2json's output parses it; NaN and
            // the infinities are not JSON and stay strings, as wal2json quotes them.
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        }
        _ => Value::String(text),
    }
}

/// Parses PostgreSQL's ISO `timestamptz` output (`2024-01-02 03:04:05.678+00`, offsets
/// such as `+05:30`) to milliseconds since the epoch; `None` for anything else (BC dates,
/// infinity).
pub(crate) fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(' ')?;
    let mut d = date.splitn(3, '-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let split = rest.find(['+', '-'])?;
    let (time, offset) = rest.split_at(split);
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec_str = t.next()?;
    let (sec, frac) = match sec_str.split_once('.') {
        Some((s, f)) => (s.parse::<i64>().ok()?, f),
        None => (sec_str.parse::<i64>().ok()?, ""),
    };
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut o = offset[1..].split(':');
    let off_h: i64 = o.next()?.parse().ok()?;
    let off_m: i64 = o.next().map_or(Some(0), |m| m.parse().ok())?;
    let off_s: i64 = o.next().map_or(Some(0), |m| m.parse().ok())?;
    let days = days_from_civil(year, month, day)?;
    let local = ((days * 24 + hour) * 60 + min) * 60 + sec;
    let utc = local - sign * (off_h * 3600 + off_m * 60 + off_s);
    Some(utc * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// What every event of one source shares.
pub(crate) struct EventContext<'a> {
    pub database: &'a str,
    pub tables: &'a HashMap<(String, String), TableInfo>,
    pub now_ms: i64,
}

impl EventContext<'_> {
    /// A source block for a change at `position`.
    pub fn source(
        &self,
        schema: &str,
        table: &str,
        position: SourcePosition,
        tx_id: Option<u64>,
        ts_ms: Option<i64>,
        snapshot: &str,
    ) -> SourceInfo {
        let mut s = SourceInfo::new(Connector::Postgresql);
        s.database = Some(self.database.to_owned());
        s.schema = Some(schema.to_owned());
        s.table = Some(table.to_owned());
        s.position = position;
        s.tx_id = tx_id.map(|t| t.to_string());
        s.ts_ms = ts_ms;
        s.snapshot = Some(snapshot.to_owned());
        s
    }

    /// The events of one transaction whose 64-bit id is `txid`.
    pub fn transaction_events(
        &self,
        tx: Transaction,
        txid: u64,
    ) -> Result<Vec<ChangeEvent>, PostgresError> {
        let mut out = Vec::with_capacity(tx.changes.len());
        for ch in tx.changes {
            let Some(info) = self.tables.get(&(ch.schema.clone(), ch.table.clone())) else {
                // `add-tables` already filters; a table outside it is not ours.
                continue;
            };
            let position = SourcePosition::PostgresLsn {
                lsn: ch.lsn.0,
                tx_id: Some(txid),
                last_commit_lsn: None,
            };
            let source = self.source(
                &ch.schema,
                &ch.table,
                position,
                Some(txid),
                tx.ts_ms,
                "false",
            );
            let key_of = |row: &Map<String, Value>, which: &str| {
                info.key_of(row).ok_or_else(|| PostgresError::Decode {
                    what: format!(
                        "the {which} row of {}.{} at {}",
                        ch.schema, ch.table, ch.lsn
                    ),
                    reason: format!("it lacks a key column of {:?}", info.key_columns),
                })
            };
            let mut event = |op, key, before, after| {
                let mut e = ChangeEvent::new(op, source.clone(), key);
                e.before = before;
                e.after = after;
                e.event_time_ms = Some(self.now_ms);
                out.push(e);
            };
            match ch.action {
                Action::Insert => {
                    let after = ch.columns.unwrap_or_default();
                    let key = key_of(&after, "new")?;
                    event(Op::Create, key, None, Some(after));
                }
                Action::Update => {
                    let mut after = ch.columns.unwrap_or_default();
                    let key = key_of(&after, "new")?;
                    // wal2json leaves out columns whose value is stored out of line
                    // (TOAST) and did not change; the old row has them when the replica
                    // identity is FULL.
                    if let Some(old) = &ch.identity {
                        for (k, v) in old {
                            if !after.contains_key(k) {
                                after.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    let old_key = match &ch.identity {
                        Some(old) => key_of(old, "old")?,
                        None => key.clone(),
                    };
                    if old_key == key {
                        event(Op::Update, key, ch.identity, Some(after));
                    } else {
                        // A key change is a delete of the old key and a create of the new
                        // one, so that consumers keyed by the primary key see both.
                        event(Op::Delete, old_key, ch.identity, None);
                        event(Op::Create, key, None, Some(after));
                    }
                }
                Action::Delete => {
                    let old = ch.identity.unwrap_or_default();
                    let key = key_of(&old, "old")?;
                    event(Op::Delete, key, Some(old), None);
                }
                Action::Truncate => event(Op::Truncate, Map::new(), None, None),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:01.5+00"), Some(1500));
        assert_eq!(parse_timestamp_ms("1970-01-01 01:00:00+01"), Some(0));
        assert_eq!(
            parse_timestamp_ms("1970-01-01 00:00:00-05:30"),
            Some(19_800_000)
        );
        assert_eq!(
            parse_timestamp_ms("2026-11-21 12:10:56.670687+00"),
            Some(1_795_263_056_670)
        );
        assert_eq!(parse_timestamp_ms("infinity"), None);
    }

    #[test]
    fn values_match_wal2json() {
        assert_eq!(text_to_value(23, Some("42".into())), Value::from(42));
        assert_eq!(text_to_value(1700, Some("1.50".into())), Value::from(1.5));
        assert_eq!(text_to_value(701, Some("NaN".into())), Value::from("NaN"));
        assert_eq!(text_to_value(16, Some("t".into())), Value::Bool(true));
        assert_eq!(text_to_value(25, Some("12".into())), Value::from("12"));
        assert_eq!(text_to_value(25, None), Value::Null);
        assert_eq!(
            text_to_value(3802, Some("{\"x\": 1}".into())),
            serde_json::json!({"x": 1})
        );
    }

    #[test]
    fn decodes_a_transaction() {
        let mut d = Decoder::default();
        let rows = [
            (
                "0/1526048",
                r#"{"action":"B","xid":725,"timestamp":"1970-01-01 00:00:01+00","lsn":"0/1526148","nextlsn":"0/1526178"}"#,
            ),
            (
                "0/1526048",
                r#"{"action":"I","xid":725,"lsn":"0/1526048","schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":1},{"name":"j","type":"jsonb","value":"{\"x\": 1}"}],"pk":[{"name":"id","type":"integer"}]}"#,
            ),
            (
                "0/1526178",
                r#"{"action":"C","xid":725,"lsn":"0/1526148","nextlsn":"0/1526178"}"#,
            ),
        ];
        assert_eq!(d.push(rows[0].0, rows[0].1).unwrap(), None);
        assert_eq!(d.push(rows[1].0, rows[1].1).unwrap(), None);
        let tx = d.push(rows[2].0, rows[2].1).unwrap().unwrap();
        assert_eq!(tx.xid, 725);
        assert_eq!(tx.end_lsn, "0/1526178".parse().unwrap());
        assert_eq!(tx.ts_ms, Some(1000));
        assert_eq!(tx.changes.len(), 1);
        assert_eq!(
            tx.changes[0].columns.as_ref().unwrap()["j"],
            serde_json::json!({"x": 1})
        );
        assert!(d.push("0/1", r#"{"action":"C","xid":1}"#).is_err());
    }
}
