//! The initial snapshot: every row of the configured tables as of one MVCC snapshot,
//! taken after the replication slot's consistent point.

use serde_json::Map;
use tokio_postgres::Client;

use super::config::quote_ident;
use super::error::PostgresError;
use super::setup::{parse_lsn, TableInfo};
use super::state::{Lsn, TxidSnapshot};
use super::wal2json::{text_to_value, EventContext};
use crate::event::{ChangeEvent, Op, SourcePosition};
use tidewater_core::EventWriter;

/// What the snapshot saw, for the stream to skip what it already holds.
pub(crate) struct SnapshotTaken {
    pub txids: TxidSnapshot,
    /// The WAL insert position read after the snapshot was taken.
    pub lsn: Lsn,
    pub rows: usize,
}

/// Reads every table in one `REPEATABLE READ` transaction and sends its rows as
/// [`Op::Read`] events positioned at the slot's consistent point.
pub(crate) async fn take(
    client: &Client,
    ctx: &EventContext<'_>,
    tables: &[&TableInfo],
    consistent_lsn: Lsn,
    batch_size: usize,
    sink: &dyn EventWriter<ChangeEvent>,
) -> Result<SnapshotTaken, PostgresError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(PostgresError::query("starting the snapshot transaction"))?;
    let result = read_all(client, ctx, tables, consistent_lsn, batch_size, sink).await;
    // Read-only: ending it either way loses nothing; ROLLBACK also clears a failed one.
    let end = client.batch_execute("ROLLBACK").await;
    let taken = result?;
    end.map_err(PostgresError::query("ending the snapshot transaction"))?;
    Ok(taken)
}

async fn read_all(
    client: &Client,
    ctx: &EventContext<'_>,
    tables: &[&TableInfo],
    consistent_lsn: Lsn,
    batch_size: usize,
    sink: &dyn EventWriter<ChangeEvent>,
) -> Result<SnapshotTaken, PostgresError> {
    // The first statement fixes the transaction's snapshot; `pg_current_wal_lsn()` is
    // evaluated after it is taken, so every transaction the snapshot sees has its commit
    // record before that position.
    let row = client
        .query_one(
            "SELECT txid_current_snapshot()::text, pg_current_wal_lsn()::text",
            &[],
        )
        .await
        .map_err(PostgresError::query("taking the snapshot"))?;
    let txids: TxidSnapshot =
        row.get::<_, String>(0)
            .parse()
            .map_err(|reason| PostgresError::Decode {
                what: "txid_current_snapshot()".to_owned(),
                reason,
            })?;
    let lsn = parse_lsn(&row.get::<_, String>(1))?;
    let fetch = format!("FETCH {batch_size} FROM tidewater_snapshot");
    let mut rows_total = 0;
    for info in tables {
        if info.columns.is_empty() {
            continue;
        }
        let select = info
            .columns
            .iter()
            .map(|(c, _)| format!("{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        // A cursor keeps memory bounded for large tables without a streaming API.
        client
            .batch_execute(&format!(
                "DECLARE tidewater_snapshot NO SCROLL CURSOR FOR SELECT {select} FROM ONLY {}",
                info.name.quoted()
            ))
            .await
            .map_err(PostgresError::query("opening the snapshot cursor"))?;
        loop {
            let rows = client
                .query(fetch.as_str(), &[])
                .await
                .map_err(PostgresError::query("reading snapshot rows"))?;
            if rows.is_empty() {
                break;
            }
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut after = Map::new();
                for (i, (name, oid)) in info.columns.iter().enumerate() {
                    let text: Option<String> = row
                        .try_get(i)
                        .map_err(PostgresError::query("reading a snapshot value"))?;
                    after.insert(name.clone(), text_to_value(*oid, text));
                }
                let key = info.key_of(&after).unwrap_or_default();
                let position = SourcePosition::PostgresLsn {
                    lsn: consistent_lsn.0,
                    tx_id: None,
                    last_commit_lsn: None,
                };
                let source = ctx.source(
                    &info.name.schema,
                    &info.name.table,
                    position,
                    None,
                    None,
                    "true",
                );
                let mut e = ChangeEvent::new(Op::Read, source, key);
                e.after = Some(after);
                e.event_time_ms = Some(ctx.now_ms);
                events.push(e);
            }
            rows_total += events.len();
            sink.write(events).map_err(PostgresError::Sink)?;
        }
        client
            .batch_execute("CLOSE tidewater_snapshot")
            .await
            .map_err(PostgresError::query("closing the snapshot cursor"))?;
    }
    Ok(SnapshotTaken {
        txids,
        lsn,
        rows: rows_total,
    })
}
