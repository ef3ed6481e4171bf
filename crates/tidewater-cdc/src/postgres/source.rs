//! The PostgreSQL source: snapshot, stream, deliver, then advance.
//!
//! # How the snapshot meets the stream
//!
//! Without the replication protocol a slot cannot export its snapshot, so the two are
//! joined by transaction visibility instead:
//!
//! 1. The slot is created first. Its consistent point C is the position from which every
//!    transaction that commits later is decoded whole.
//! 2. Then a `REPEATABLE READ` transaction takes the snapshot. It starts after C, so every
//!    transaction committed before C is visible in it. Its `txid_current_snapshot()` says
//!    exactly which later ones are, and `pg_current_wal_lsn()` read right after gives S:
//!    a transaction whose commit record starts at or after S cannot be visible.
//! 3. Streaming starts at C and skips each decoded transaction that the snapshot sees
//!    (commit record before S and visible by `xmin`/`xmax`/`xip`). Everything else comes
//!    after the snapshot. So no change is lost (committed before C: in the snapshot;
//!    after: decoded) and none is doubled (decoded and visible: skipped).
//!
//! # Delivery and the slot
//!
//! Each round peeks at most `batch_size` changes (whole transactions), sends the events of
//! the transactions not yet delivered to the writer, and only after the sink
//! returns records the end of the last transaction in the progress file and advances the
//! slot to it with `pg_replication_slot_advance`. A failing sink therefore leaves the slot
//! where it was and the next round sends the same transactions again. When a round finds
//! fewer changes than it asked for, decoding reached the WAL flush position read before
//! the peek, and the slot is advanced to it even without any change for these tables, so
//! WAL written for other tables is not pinned.
//!
//! # Restart
//!
//! With the progress file saying the snapshot completed and the slot present, streaming
//! resumes from the slot's confirmed position, skipping transactions that end at or before
//! the recorded position (the file is written before the slot is advanced). If the
//! snapshot never completed, the slot is dropped and created again and the snapshot taken
//! anew: its partial output was already sent, and the sink sees those rows again as
//! snapshot reads, which apply as upserts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tidewater_metrics::{Heartbeat, Watchdog};
use tokio::sync::{watch, Mutex};
use tokio_postgres::Client;

use super::config::{PostgresConfig, TableName};
use super::error::PostgresError;
use super::setup::{self, parse_lsn, TableInfo};
use super::snapshot;
use super::state::ProgressState;
use super::wal2json::{Decoder, EventContext};
use tidewater_core::EventWriter;

use crate::ChangeEvent;

/// Captures changes of PostgreSQL tables through a logical replication slot.
pub struct PostgresSource {
    config: PostgresConfig,
    tables: Vec<TableName>,
    state_path: PathBuf,
    inner: Mutex<Inner>,
    /// Where the source reports its progress, when watched.
    heartbeat: Option<Heartbeat>,
}

struct Inner {
    conn: Option<Connection>,
    state: Option<ProgressState>,
    /// The last 64-bit transaction id seen, which places the next 32-bit xid in its epoch.
    xid_base: Option<u64>,
}

struct Connection {
    client: Client,
    database: String,
    tables: HashMap<(String, String), TableInfo>,
}

impl PostgresSource {
    /// A source for `config` that keeps its progress in the file `state_path`. Checks the
    /// configuration and reads the progress file; connects on first use.
    pub fn new(
        config: PostgresConfig,
        state_path: impl Into<PathBuf>,
    ) -> Result<Self, PostgresError> {
        let tables = config.table_names()?;
        let state_path = state_path.into();
        let state = ProgressState::load(&state_path)?;
        if let Some(st) = &state {
            if st.slot != config.slot {
                return Err(PostgresError::Config {
                    reason: format!(
                        "the progress file {state_path:?} belongs to slot {:?}, the config names {:?}",
                        st.slot, config.slot
                    ),
                });
            }
        }
        Ok(Self {
            config,
            tables,
            state_path,
            inner: Mutex::new(Inner {
                conn: None,
                state,
                xid_base: None,
            }),
            heartbeat: None,
        })
    }

    /// Reports to `watchdog` as `source postgres:<slot>`: working through the snapshot,
    /// progressing with every round that delivered changes, idle when a round found none.
    /// A source whose rounds keep failing is reported by whoever retries it.
    pub fn watched(mut self, watchdog: &Watchdog) -> Self {
        self.heartbeat = Some(watchdog.register(format!("source postgres:{}", self.config.slot)));
        self
    }

    /// The heartbeat given by [`Self::watched`].
    pub fn heartbeat(&self) -> Option<&Heartbeat> {
        self.heartbeat.as_ref()
    }

    /// The progress file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Takes the snapshot if it is not complete, then streams changes to `sink` until
    /// `stop` holds `true` (or its sender is dropped). Returns the first error; the caller
    /// decides whether to run again ([`PostgresError::retry_hint`]).
    pub async fn run(
        &self,
        sink: &dyn EventWriter<ChangeEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), PostgresError> {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.working();
        }
        self.snapshot_if_needed(sink).await?;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let n = self.stream_round(sink).await?;
            if let Some(heartbeat) = &self.heartbeat {
                if n.events > 0 {
                    heartbeat.progress();
                } else {
                    heartbeat.idle();
                }
            }
            if n.full {
                continue;
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// One round: the snapshot when it is not complete, else one streaming round. Returns
    /// the number of events sent to `sink`.
    pub async fn poll_once(
        &self,
        sink: &dyn EventWriter<ChangeEvent>,
    ) -> Result<usize, PostgresError> {
        if let Some(n) = self.snapshot_if_needed(sink).await? {
            return Ok(n);
        }
        Ok(self.stream_round(sink).await?.events)
    }

    /// Bytes of WAL the slot holds back: the server's current WAL position minus the slot's
    /// confirmed position (0 when the slot does not exist yet).
    pub async fn slot_lag_bytes(&self) -> Result<u64, PostgresError> {
        let mut inner = self.inner.lock().await;
        let conn = self.connection(&mut inner).await?;
        let row = conn
            .client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await
            .map_err(PostgresError::query("reading the slot's lag"))?;
        let lag: Option<i64> = row.and_then(|r| r.get(0));
        Ok(lag.unwrap_or(0).max(0).unsigned_abs())
    }

    /// Connects (again, if the connection broke) and checks the server and tables.
    async fn connection<'a>(&self, inner: &'a mut Inner) -> Result<&'a Connection, PostgresError> {
        if inner.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            inner.conn = None;
        }
        if inner.conn.is_none() {
            let client = setup::connect(&self.config.dsn).await?;
            let database = setup::preflight(&client).await?;
            let mut tables = HashMap::new();
            for name in &self.tables {
                let info = setup::table_info(&client, name).await?;
                tables.insert((name.schema.clone(), name.table.clone()), info);
            }
            inner.conn = Some(Connection {
                client,
                database,
                tables,
            });
        }
        inner.conn.as_ref().ok_or_else(|| PostgresError::Config {
            reason: "no connection".to_owned(),
        })
    }

    /// Takes the snapshot unless the progress file records a complete one; returns the
    /// number of rows sent, `None` when there was nothing to do.
    async fn snapshot_if_needed(
        &self,
        sink: &dyn EventWriter<ChangeEvent>,
    ) -> Result<Option<usize>, PostgresError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let configured: Vec<String> = self.tables.iter().map(ToString::to_string).collect();
        let state_done = inner.state.as_ref().filter(|s| s.snapshot_done).cloned();
        let conn = self.connection(inner).await?;
        let slot = &self.config.slot;
        let existing = setup::slot_info(&conn.client, slot).await?;
        if let Some((plugin, _)) = &existing {
            if plugin != "wal2json" {
                return Err(PostgresError::SlotPlugin {
                    slot: slot.clone(),
                    plugin: plugin.clone(),
                });
            }
        }
        if let Some(st) = state_done {
            if existing.is_none() {
                return Err(PostgresError::SlotLost {
                    slot: slot.clone(),
                    state: self.state_path.clone(),
                });
            }
            let mut snapshotted = st.tables.clone();
            let mut now = configured.clone();
            snapshotted.sort();
            now.sort();
            if snapshotted != now {
                return Err(PostgresError::TablesChanged {
                    configured,
                    snapshotted: st.tables,
                    state: self.state_path.clone(),
                });
            }
            return Ok(None);
        }
        if existing.is_some() {
            // Changes up to now are covered by the new snapshot; the old slot's position
            // belongs to a snapshot that never finished.
            tracing::info!(slot = %slot, "snapshot incomplete: recreating the replication slot");
            setup::drop_slot(&conn.client, slot).await?;
        }
        let consistent_lsn = setup::create_slot(&conn.client, slot).await?;
        tracing::info!(slot = %slot, lsn = %consistent_lsn, "replication slot created");
        let ctx = EventContext {
            database: &conn.database,
            tables: &conn.tables,
            now_ms: now_ms(),
        };
        let infos: Vec<&TableInfo> = self
            .tables
            .iter()
            .filter_map(|t| conn.tables.get(&(t.schema.clone(), t.table.clone())))
            .collect();
        let taken = snapshot::take(
            &conn.client,
            &ctx,
            &infos,
            consistent_lsn,
            self.config.batch_size,
            sink,
        )
        .await?;
        tracing::info!(rows = taken.rows, snapshot_lsn = %taken.lsn, "snapshot complete");
        let state = ProgressState {
            version: ProgressState::VERSION,
            slot: slot.clone(),
            tables: configured,
            snapshot_done: true,
            consistent_lsn,
            snapshot_lsn: taken.lsn,
            snapshot: taken.txids,
            last_lsn: consistent_lsn,
            last_txid: 0,
        };
        state.save(&self.state_path)?;
        inner.xid_base = Some(state.snapshot.xmin);
        inner.state = Some(state);
        Ok(Some(taken.rows))
    }

    /// Peeks, delivers and advances once.
    async fn stream_round(
        &self,
        sink: &dyn EventWriter<ChangeEvent>,
    ) -> Result<Round, PostgresError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let Some(mut state) = inner.state.clone().filter(|s| s.snapshot_done) else {
            return Err(PostgresError::Config {
                reason: "streaming before the snapshot completed".to_owned(),
            });
        };
        let mut xid_base = inner
            .xid_base
            .unwrap_or(state.snapshot.xmin.max(state.last_txid));
        let conn = self.connection(inner).await?;
        let client = &conn.client;
        let flush = client
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(PostgresError::query("reading the WAL flush position"))?;
        let flush = parse_lsn(&flush.get::<_, String>(0))?;
        let filter = self
            .tables
            .iter()
            .map(TableName::wal2json_filter)
            .collect::<Vec<_>>()
            .join(",");
        let limit = i32::try_from(self.config.batch_size).unwrap_or(i32::MAX);
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, $2::text::pg_lsn, $3, \
                 'format-version', '2', 'include-xids', '1', 'include-lsn', '1', \
                 'include-timestamp', '1', 'include-pk', '1', 'include-transaction', '1', \
                 'add-tables', $4)",
                &[&self.config.slot, &flush.to_string(), &limit, &filter],
            )
            .await
            .map_err(PostgresError::query("reading changes from the replication slot"))?;
        let full = rows.len() >= self.config.batch_size;
        let ctx = EventContext {
            database: &conn.database,
            tables: &conn.tables,
            now_ms: now_ms(),
        };
        let mut decoder = Decoder::default();
        let mut events = Vec::new();
        let mut last_end = state.last_lsn;
        for row in &rows {
            let lsn: String = row.get(0);
            let data: String = row.get(1);
            let Some(tx) = decoder.push(&lsn, &data)? else {
                continue;
            };
            let txid = super::state::widen_xid(xid_base, tx.xid);
            xid_base = xid_base.max(txid);
            let end = tx.end_lsn;
            if end <= state.last_lsn {
                // Delivered before a restart whose slot advance did not happen.
                continue;
            }
            last_end = last_end.max(end);
            if tx.commit_lsn < state.snapshot_lsn && state.snapshot.sees(txid) {
                // Its rows are in the snapshot already.
                tracing::debug!(txid, lsn = %tx.commit_lsn, "skipping a transaction the snapshot holds");
                continue;
            }
            events.extend(ctx.transaction_events(tx, txid)?);
        }
        let delivered = events.len();
        if !events.is_empty() {
            sink.write(events).map_err(PostgresError::Sink)?;
        }
        // Fewer changes than asked for: decoding reached `flush`, so nothing before it is
        // left for these tables.
        let new_last = if full { last_end } else { last_end.max(flush) };
        if new_last > state.last_lsn {
            state.last_lsn = new_last;
            state.last_txid = xid_base;
            // The file first: if the advance is lost, the restart skips by the file.
            state.save(&self.state_path)?;
            let confirmed = setup::slot_info(client, &self.config.slot).await?;
            if confirmed.is_some_and(|(_, c)| new_last > c) {
                client
                    .execute(
                        "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                        &[&self.config.slot, &new_last.to_string()],
                    )
                    .await
                    .map_err(PostgresError::query("advancing the replication slot"))?;
            }
        }
        inner.state = Some(state);
        inner.xid_base = Some(xid_base);
        Ok(Round {
            events: delivered,
            full,
        })
    }
}

struct Round {
    events: usize,
    /// The peek returned as many changes as asked for: more may be waiting.
    full: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
