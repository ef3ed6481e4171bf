//! Debezium `source` blocks of PostgreSQL, MySQL and MongoDB: names, log position,
//! transaction id and commit time.

use serde_json::{Map, Value};

use crate::error::CdcError;
use crate::event::{Connector, SourceInfo, SourcePosition};
use crate::json::{join, opt_i64, opt_string, opt_u64, present};

/// Reads a `source` object found at `path`.
pub(crate) fn parse_source(src: &Map<String, Value>, path: &str) -> Result<SourceInfo, CdcError> {
    let connector = match opt_string(src, "connector", path)? {
        Some(name) => Connector::from_name(&name),
        None => infer_connector(src),
    };
    let mut info = SourceInfo::new(connector.clone());
    info.name = opt_string(src, "name", path)?;
    info.database = non_empty(opt_string(src, "db", path)?);
    info.schema = non_empty(opt_string(src, "schema", path)?);
    info.table = non_empty(match opt_string(src, "table", path)? {
        Some(table) => Some(table),
        None => opt_string(src, "collection", path)?,
    });
    info.ts_ms = opt_i64(src, "ts_ms", path)?;
    info.snapshot = match present(src, "snapshot") {
        None => None,
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(CdcError::invalid(
                join(path, "snapshot"),
                format!("expected a boolean or a string, got {v}"),
            ))
        }
    };
    match connector {
        Connector::Postgresql => postgres(src, path, &mut info)?,
        Connector::Mysql => mysql(src, path, &mut info)?,
        Connector::Mongodb => mongo(src, path, &mut info)?,
        _ => {}
    }
    Ok(info)
}

/// Guesses the connector from the fields a source block has when it names none.
fn infer_connector(src: &Map<String, Value>) -> Connector {
    if src.contains_key("lsn") {
        Connector::Postgresql
    } else if src.contains_key("file") && src.contains_key("pos") {
        Connector::Mysql
    } else if src.contains_key("ord") || src.contains_key("rs") {
        Connector::Mongodb
    } else {
        Connector::Unknown
    }
}

/// PostgreSQL sends `""` as schema and table of message events: no name.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn postgres(src: &Map<String, Value>, path: &str, info: &mut SourceInfo) -> Result<(), CdcError> {
    let tx_id = opt_u64(src, "txId", path)?;
    let last_commit_lsn = sequence(src, path)?;
    // `xmin` is read only to validate it; it carries no ordering information.
    opt_u64(src, "xmin", path)?;
    info.tx_id = tx_id.map(|t| t.to_string());
    if let Some(lsn) = opt_u64(src, "lsn", path)? {
        info.position = SourcePosition::PostgresLsn {
            lsn,
            tx_id,
            last_commit_lsn,
        };
    }
    Ok(())
}

/// PostgreSQL's `sequence`: a JSON array, usually stringified, of the last committed LSN
/// and the current LSN, each a string or null. Returns the first.
fn sequence(src: &Map<String, Value>, path: &str) -> Result<Option<u64>, CdcError> {
    let Some(v) = present(src, "sequence") else {
        return Ok(None);
    };
    let path = join(path, "sequence");
    let bad = |why: &str| {
        CdcError::invalid(
            path.clone(),
            format!("expected a JSON array of two LSNs such as [\"24023119\",\"24023128\"]: {why}"),
        )
    };
    let parsed;
    let items = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| bad(&e.to_string()))?;
            parsed.as_array().ok_or_else(|| bad("not an array"))?
        }
        Value::Array(items) => items,
        _ => return Err(bad("not an array")),
    };
    let mut lsns = Vec::with_capacity(items.len());
    for item in items {
        lsns.push(match item {
            Value::Null => None,
            Value::Number(n) => Some(
                n.as_u64()
                    .ok_or_else(|| bad("an LSN is not an unsigned integer"))?,
            ),
            Value::String(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| bad("an LSN is not an unsigned integer"))?,
            ),
            _ => return Err(bad("an element is neither a string, a number nor null")),
        });
    }
    Ok(lsns.first().copied().flatten())
}

fn mysql(src: &Map<String, Value>, path: &str, info: &mut SourceInfo) -> Result<(), CdcError> {
    let gtid = opt_string(src, "gtid", path)?;
    let server_id = opt_u64(src, "server_id", path)?;
    let row = opt_u64(src, "row", path)?.unwrap_or(0);
    let pos = opt_u64(src, "pos", path)?;
    info.tx_id = gtid.clone();
    if let (Some(file), Some(pos)) = (opt_string(src, "file", path)?, pos) {
        info.position = SourcePosition::MysqlBinlog {
            file,
            pos,
            row,
            gtid,
            server_id,
        };
    }
    Ok(())
}

fn mongo(src: &Map<String, Value>, path: &str, info: &mut SourceInfo) -> Result<(), CdcError> {
    let rs = opt_string(src, "rs", path)?;
    let h = opt_i64(src, "h", path)?;
    info.tx_id = match present(src, "txnNumber") {
        Some(_) => opt_i64(src, "txnNumber", path)?.map(|n| n.to_string()),
        None => None,
    };
    if let (Some(ts_ms), Some(ord)) = (info.ts_ms, opt_i64(src, "ord", path)?) {
        info.position = SourcePosition::Mongo { ts_ms, ord, rs, h };
    }
    Ok(())
}
