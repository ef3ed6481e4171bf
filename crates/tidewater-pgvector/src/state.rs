//! Pipeline state in PostgreSQL: a redb database whose storage is a table of blocks, so
//! the state that one member at a time owns (the identity graph, the analytics windows)
//! outlives that member and is taken over, as it was last committed, by the next.
//!
//! redb calls [`redb::StorageBackend::sync_data`] at the end of each durable commit. The
//! [`PgStateBackend`] keeps the image in memory and, at each sync, writes the blocks
//! written since the last one in one PostgreSQL transaction. So PostgreSQL always holds
//! the image as of a sync: the last commit whole, or (at a sync redb makes while it grows
//! the file) the last commit plus pages of free space, which redb ignores, exactly the
//! images a crash of a local file can leave.
//!
//! Ownership is fenced. [`PgStateStore::acquire`] raises the store's owner token and
//! loads the image in one transaction; every later write checks the token. A member that
//! lost the store (it froze past its lease, or its partition moved) finds its next commit
//! refused ([`PgVectorError::StateTaken`]) instead of overwriting its successor's state.
//!
//! Tables, with the configured prefix: `{prefix}_state_stores` (one row per store: the
//! owner token, a version counted by writes, and the image's length) and
//! `{prefix}_state_blocks` (the image in blocks of [`STATE_BLOCK`] bytes, each with the
//! version that last wrote it, so that readers fetch only what changed).

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::PgVectorConfig;
use crate::error::PgVectorError;
use crate::pool::Pool;
use crate::schema::lock_prefix;

/// Bytes per stored block: redb's page size.
pub const STATE_BLOCK: usize = 4096;

/// A store's tables.
#[derive(Debug, Clone)]
struct StateTables {
    stores: String,
    blocks: String,
}

/// One named state image in PostgreSQL: acquire it to write, snapshot it to read.
pub struct PgStateStore {
    pool: Arc<Pool>,
    tables: StateTables,
    name: String,
}

impl std::fmt::Debug for PgStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStateStore")
            .field("name", &self.name)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

/// A copy of a store's image as last written, for reading.
#[derive(Debug, Clone, Default)]
pub struct StateSnapshot {
    /// The store's write count when the copy was taken (0: nothing was ever stored).
    pub version: i64,
    /// The image.
    pub bytes: Vec<u8>,
}

impl PgStateStore {
    /// Connects and creates the state tables if they are missing (safe from several
    /// processes at once). `name` names the image (e.g. `profiles`).
    pub fn open(config: &PgVectorConfig, name: &str) -> Result<Self, PgVectorError> {
        config.validate().map_err(PgVectorError::Config)?;
        let pool = Pool::new(&config.dsn, 2)?;
        let prefix = &config.table_prefix;
        let tables = StateTables {
            stores: format!("{prefix}_state_stores"),
            blocks: format!("{prefix}_state_blocks"),
        };
        {
            let mut conn = pool.get()?;
            let mut tx = conn
                .transaction()
                .map_err(PgVectorError::query("starting a transaction"))?;
            lock_prefix(&mut tx, &format!("{prefix}_state"))?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {stores} (
                     name text PRIMARY KEY,
                     owner bigint NOT NULL,
                     version bigint NOT NULL,
                     trimmed bigint NOT NULL DEFAULT 0,
                     len bigint NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS {blocks} (
                     name text NOT NULL,
                     block bigint NOT NULL,
                     version bigint NOT NULL,
                     data bytea NOT NULL,
                     PRIMARY KEY (name, block)
                 );
                 ALTER TABLE {blocks} ALTER COLUMN data SET STORAGE EXTERNAL;
                 CREATE INDEX IF NOT EXISTS {blocks}_version ON {blocks} (name, version);",
                stores = tables.stores,
                blocks = tables.blocks,
            ))
            .map_err(PgVectorError::query("creating the state tables"))?;
            tx.commit()
                .map_err(PgVectorError::query("committing the state tables"))?;
        }
        Ok(Self {
            pool: Arc::new(pool),
            tables,
            name: name.to_owned(),
        })
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes the store over: raises its owner token, which refuses every later write of
    /// the previous owner, and loads the image. A store that holds nothing yet is given
    /// `initial` (a new, empty database image), in the same transaction.
    pub fn acquire(&self, initial: &[u8]) -> Result<PgStateBackend, PgVectorError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn
            .transaction()
            .map_err(PgVectorError::query("starting a transaction"))?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO {} (name, owner, version, len) VALUES ($1, 1, 0, 0)
                     ON CONFLICT (name) DO UPDATE SET owner = {0}.owner + 1
                     RETURNING owner, version, len",
                    self.tables.stores
                ),
                &[&self.name],
            )
            .map_err(PgVectorError::query("taking the state over"))?;
        let (owner, version, len): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let bytes = if version == 0 {
            // Never written: store the empty database, so that the image is whole from
            // the first commit on.
            let blocks: Vec<(i64, &[u8])> = initial
                .chunks(STATE_BLOCK)
                .enumerate()
                .filter(|(_, data)| data.iter().any(|&b| b != 0))
                .map(|(i, data)| (i as i64, data))
                .collect();
            write_blocks(&mut tx, &self.tables, &self.name, 1, &blocks)?;
            tx.execute(
                &format!(
                    "UPDATE {} SET version = 1, len = $2 WHERE name = $1",
                    self.tables.stores
                ),
                &[&self.name, &(initial.len() as i64)],
            )
            .map_err(PgVectorError::query("recording the new state"))?;
            initial.to_vec()
        } else {
            let mut bytes = vec![0; len as usize];
            patch(&mut tx, &self.tables, &self.name, 0, &mut bytes)?;
            bytes
        };
        tx.commit()
            .map_err(PgVectorError::query("committing the takeover"))?;
        drop(conn);
        tracing::debug!(store = %self.name, owner, bytes = bytes.len(), "took the state over");
        let len = bytes.len() as u64;
        Ok(PgStateBackend {
            pool: Arc::clone(&self.pool),
            tables: self.tables.clone(),
            name: self.name.clone(),
            owner,
            image: RwLock::new(bytes),
            pending: Mutex::new(Pending {
                dirty: BTreeSet::new(),
                min_len: len,
                written_len: len,
            }),
            failed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The image as last written, updating `previous` (fetching only the blocks written
    /// since its version) or loading it whole. `None`: nothing was ever stored.
    pub fn snapshot(
        &self,
        previous: Option<StateSnapshot>,
    ) -> Result<Option<StateSnapshot>, PgVectorError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(PgVectorError::query("starting a transaction"))?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT version, len, trimmed FROM {} WHERE name = $1",
                    self.tables.stores
                ),
                &[&self.name],
            )
            .map_err(PgVectorError::query("reading the state's version"))?
        else {
            return Ok(None);
        };
        let (version, len, trimmed): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if version == 0 {
            return Ok(None);
        }
        let mut snapshot = match previous {
            Some(previous) if previous.version == version => return Ok(Some(previous)),
            // After a write that trimmed blocks (the image shrank), bytes past the
            // shorter end may be stale here: only a whole load is sure to match.
            Some(previous) if previous.version < version && trimmed <= previous.version => previous,
            _ => StateSnapshot::default(),
        };
        snapshot.bytes.resize(len as usize, 0);
        patch(
            &mut tx,
            &self.tables,
            &self.name,
            snapshot.version,
            &mut snapshot.bytes,
        )?;
        snapshot.version = version;
        tx.commit()
            .map_err(PgVectorError::query("ending the state's read"))?;
        Ok(Some(snapshot))
    }
}

/// Copies into `bytes` the blocks written after `since`, clipped to its length.
fn patch(
    tx: &mut postgres::Transaction<'_>,
    tables: &StateTables,
    name: &str,
    since: i64,
    bytes: &mut [u8],
) -> Result<(), PgVectorError> {
    let rows = tx
        .query(
            &format!(
                "SELECT block, data FROM {} WHERE name = $1 AND version > $2",
                tables.blocks
            ),
            &[&name, &since],
        )
        .map_err(PgVectorError::query("reading the state's blocks"))?;
    for row in rows {
        let (block, data): (i64, &[u8]) = (row.get(0), row.get(1));
        let start = block as usize * STATE_BLOCK;
        if start >= bytes.len() {
            continue;
        }
        let end = (start + data.len()).min(bytes.len());
        bytes[start..end].copy_from_slice(&data[..end - start]);
    }
    Ok(())
}

/// Upserts `blocks` under `version`.
fn write_blocks(
    tx: &mut postgres::Transaction<'_>,
    tables: &StateTables,
    name: &str,
    version: i64,
    blocks: &[(i64, &[u8])],
) -> Result<(), PgVectorError> {
    if blocks.is_empty() {
        return Ok(());
    }
    let numbers: Vec<i64> = blocks.iter().map(|(n, _)| *n).collect();
    let data: Vec<&[u8]> = blocks.iter().map(|(_, d)| *d).collect();
    tx.execute(
        &format!(
            "INSERT INTO {} (name, block, version, data)
             SELECT $1, b, $2, d FROM unnest($3::bigint[], $4::bytea[]) AS t(b, d)
             ON CONFLICT (name, block) DO UPDATE
             SET version = EXCLUDED.version, data = EXCLUDED.data",
            tables.blocks
        ),
        &[&name, &version, &numbers, &data],
    )
    .map_err(PgVectorError::query("writing the state's blocks"))?;
    Ok(())
}

/// What changed since the last write to PostgreSQL.
#[derive(Debug)]
struct Pending {
    /// Blocks written.
    dirty: BTreeSet<u64>,
    /// The smallest length the image had: blocks past it are deleted before the dirty
    /// ones are written.
    min_len: u64,
    /// The length PostgreSQL holds.
    written_len: u64,
}

/// The redb storage of one owner of a [`PgStateStore`]: the image in memory, written to
/// PostgreSQL at each sync (see the module's documentation).
///
/// Every call is blocking; a sync called from a thread that runs a tokio runtime does its
/// PostgreSQL work on a thread of its own.
pub struct PgStateBackend {
    pool: Arc<Pool>,
    tables: StateTables,
    name: String,
    /// This owner's token.
    owner: i64,
    image: RwLock<Vec<u8>>,
    pending: Mutex<Pending>,
    /// Set by a failed write: what PostgreSQL holds is unknown to this image.
    failed: Arc<AtomicBool>,
}

impl std::fmt::Debug for PgStateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStateBackend")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl PgStateBackend {
    /// Set once a write to PostgreSQL failed (the store was taken over, or the outcome is
    /// unknown): the database on this backend must be dropped and the store acquired
    /// again, which loads what PostgreSQL holds.
    pub fn failure(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failed)
    }

    /// Writes the pending blocks and the length atomically, if this is still the owner.
    fn write_pending(&self) -> Result<(), PgVectorError> {
        let (len, blocks, trim) = {
            let image = self.image.read();
            let mut pending = self.pending.lock();
            let len = image.len() as u64;
            let blocks: Vec<(i64, Vec<u8>)> = pending
                .dirty
                .iter()
                .filter_map(|&block| {
                    let start = block as usize * STATE_BLOCK;
                    (start < image.len()).then(|| {
                        let end = (start + STATE_BLOCK).min(image.len());
                        (block as i64, image[start..end].to_vec())
                    })
                })
                .collect();
            let trim = (pending.min_len < pending.written_len).then_some(pending.min_len);
            if blocks.is_empty() && trim.is_none() && len == pending.written_len {
                return Ok(());
            }
            pending.dirty.clear();
            pending.min_len = len;
            pending.written_len = len;
            (len, blocks, trim)
        };
        let mut conn = self.pool.get()?;
        let numbers: Vec<i64> = blocks.iter().map(|(n, _)| *n).collect();
        let data: Vec<&[u8]> = blocks.iter().map(|(_, d)| d.as_slice()).collect();
        let Some(min_len) = trim else {
            // The usual write: one statement (so one round trip to prepare and one to run,
            // atomic on its own), the blocks inserted only if the owner token matched.
            let version: Option<i64> = conn
                .query_opt(
                    &format!(
                        "WITH s AS (
                             UPDATE {stores} SET version = version + 1, len = $3
                             WHERE name = $1 AND owner = $2 RETURNING version
                         ), w AS (
                             INSERT INTO {blocks} (name, block, version, data)
                             SELECT $1, b, s.version, d
                             FROM s, unnest($4::bigint[], $5::bytea[]) AS t(b, d)
                             ON CONFLICT (name, block) DO UPDATE
                             SET version = EXCLUDED.version, data = EXCLUDED.data
                         )
                         SELECT version FROM s",
                        stores = self.tables.stores,
                        blocks = self.tables.blocks,
                    ),
                    &[&self.name, &self.owner, &(len as i64), &numbers, &data],
                )
                .map_err(PgVectorError::query("writing the state"))?
                .map(|row| row.get(0));
            let version = version.ok_or_else(|| PgVectorError::StateTaken {
                store: self.name.clone(),
            })?;
            tracing::trace!(store = %self.name, version, blocks = blocks.len(), len, "wrote the state");
            return Ok(());
        };
        // The image shrank since the last write: trim, then write, in one transaction.
        let mut tx = conn
            .transaction()
            .map_err(PgVectorError::query("starting a transaction"))?;
        let version: i64 = tx
            .query_opt(
                &format!(
                    "UPDATE {} SET version = version + 1, len = $3, trimmed = version + 1
                     WHERE name = $1 AND owner = $2 RETURNING version",
                    self.tables.stores
                ),
                &[&self.name, &self.owner, &(len as i64)],
            )
            .map_err(PgVectorError::query("recording the state's write"))?
            .map(|row| row.get(0))
            .ok_or_else(|| PgVectorError::StateTaken {
                store: self.name.clone(),
            })?;
        // Blocks past the shortest length since the last write hold bytes of the longer
        // image; the dirty blocks written next are those that hold data now.
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE name = $1 AND block >= $2",
                self.tables.blocks
            ),
            &[&self.name, &(min_len.div_ceil(STATE_BLOCK as u64) as i64)],
        )
        .map_err(PgVectorError::query("trimming the state's blocks"))?;
        let refs: Vec<(i64, &[u8])> = numbers.iter().copied().zip(data).collect();
        write_blocks(&mut tx, &self.tables, &self.name, version, &refs)?;
        tx.commit()
            .map_err(PgVectorError::query("committing the state's write"))?;
        tracing::trace!(store = %self.name, version, blocks = blocks.len(), len, "wrote the state");
        Ok(())
    }
}

fn io_error(error: PgVectorError) -> io::Error {
    io::Error::other(error)
}

impl redb::StorageBackend for PgStateBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.image.read().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let image = self.image.read();
        let start = offset as usize;
        let end = start
            .checked_add(out.len())
            .filter(|&end| end <= image.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(&image[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut image = self.image.write();
        let mut pending = self.pending.lock();
        let old = image.len() as u64;
        image.resize(len as usize, 0);
        if len < old {
            pending.min_len = pending.min_len.min(len);
            pending.dirty.retain(|&b| b * (STATE_BLOCK as u64) < len);
            if !len.is_multiple_of(STATE_BLOCK as u64) {
                // The stored last block runs past the new end; growing again must read
                // zeros there.
                pending.dirty.insert(len / STATE_BLOCK as u64);
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other(format!(
                "the state `{}` failed an earlier write; it must be acquired again",
                self.name
            )));
        }
        let outcome = if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.write_pending())
                    .join()
                    .unwrap_or_else(|_| Err(PgVectorError::Config("state write panicked".into())))
            })
        } else {
            self.write_pending()
        };
        outcome.map_err(|e| {
            self.failed.store(true, Ordering::SeqCst);
            tracing::warn!(store = %self.name, error = %e, "cannot write the state");
            io_error(e)
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut image = self.image.write();
        let start = offset as usize;
        let end = start + data.len();
        if end > image.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end",
            ));
        }
        image[start..end].copy_from_slice(data);
        let mut pending = self.pending.lock();
        let block = STATE_BLOCK as u64;
        for b in offset / block..(end as u64).div_ceil(block) {
            pending.dirty.insert(b);
        }
        Ok(())
    }
}

/// First key of the advisory locks that hold leases ("TWLS"); the second is the hash of
/// the table prefix and the lease's name.
const LEASE_LOCK_CLASS: i32 = 0x5457_4C53;

/// A session-level PostgreSQL advisory lock on a connection of its own: the lock that
/// holds a lease among the members sharing the database. PostgreSQL frees it when the
/// session ends: at once when the holder's process dies, after TCP notices when its
/// network fails. (A process that is frozen but connected keeps it.)
pub struct PgAdvisoryLock {
    config: postgres::Config,
    tls: crate::tls::Tls,
    /// The connection string with its password masked, for errors.
    dsn: String,
    /// `{prefix}.{lease}`, hashed into the lock's second key.
    key: String,
    client: Option<postgres::Client>,
}

impl std::fmt::Debug for PgAdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAdvisoryLock")
            .field("key", &self.key)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl PgAdvisoryLock {
    /// The lock of lease `name` in the database of `config` (keyed by its table prefix
    /// too, so deployments with their own prefix hold their own). Connects lazily.
    pub fn new(config: &PgVectorConfig, name: &str) -> Result<Self, PgVectorError> {
        config.validate().map_err(PgVectorError::Config)?;
        let (client_config, tls) = crate::pool::client_config(&config.dsn)?;
        Ok(Self {
            config: client_config,
            tls,
            dsn: tidewater_core::redact::redact(&config.dsn).into_owned(),
            key: format!("{}.{name}", config.table_prefix),
            client: None,
        })
    }

    /// Tries to take the lock without waiting; `Ok(true)` when this session holds it.
    pub fn try_lock(&mut self) -> Result<bool, PgVectorError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self
                .client
                .insert(self.tls.connect(&self.config).map_err(|source| {
                    PgVectorError::Connect {
                        dsn: self.dsn.clone(),
                        source,
                    }
                })?),
        };
        let outcome = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LEASE_LOCK_CLASS, &self.key],
            )
            .map(|row| row.get::<_, bool>(0))
            .map_err(PgVectorError::query("trying a lease's lock"));
        if outcome.is_err() {
            self.client = None;
        }
        outcome
    }

    /// Whether the session holding the lock is still alive (then so is the lock).
    pub fn check(&mut self) -> Result<bool, PgVectorError> {
        let Some(client) = &mut self.client else {
            return Ok(false);
        };
        match client.simple_query("SELECT 1") {
            Ok(_) => Ok(true),
            Err(e) => {
                self.client = None;
                Err(PgVectorError::Query {
                    what: "checking a lease's lock",
                    source: e,
                })
            }
        }
    }

    /// Gives the lock up, then ends the session. The lock is released explicitly first:
    /// the server frees a closed session's locks only when its backend has exited, a
    /// moment later, and another member trying it at once would still find it held.
    pub fn unlock(&mut self) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        if let Err(e) = client.execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[&LEASE_LOCK_CLASS, &self.key],
        ) {
            // Ending the session (below) frees it all the same.
            tracing::debug!(key = %self.key, error = %e, "releasing a lease's lock");
        }
    }
}
