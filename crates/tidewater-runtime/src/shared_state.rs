//! PostgreSQL as what the members share besides the log, on Kafka when the index is
//! pgvector: pipeline state ([`PgStateStore`] as the engine's [`SharedState`]: profiles,
//! analytics) and leases ([`PgAdvisoryLock`] as the engine's [`Lock`]).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::Database;
use tidewater_engine::{
    empty_state_image, open_state_db_on, state_db_from_image, EngineError, Lock, SharedState,
};
use tidewater_pgvector::{
    PgAdvisoryLock, PgStateStore, PgVectorConfig, PgVectorError, StateSnapshot,
};

/// One pipeline's state in PostgreSQL, with the last snapshot read of it.
pub struct PgState {
    store: PgStateStore,
    /// What the tables are called, for errors.
    label: String,
    snapshot: Mutex<Option<StateSnapshot>>,
}

impl PgState {
    /// The state `name` in the database of `config`.
    pub fn open(config: &PgVectorConfig, name: &str) -> Result<Arc<Self>, EngineError> {
        let store = PgStateStore::open(config, name).map_err(|e| error(name, &e))?;
        Ok(Arc::new(Self {
            label: format!("{name} in {}_state_blocks", config.table_prefix),
            store,
            snapshot: Mutex::new(None),
        }))
    }
}

fn error(name: &str, e: &PgVectorError) -> EngineError {
    EngineError::shared_state(name, e)
}

impl SharedState for PgState {
    fn name(&self) -> &str {
        self.store.name()
    }

    fn acquire(&self) -> Result<(Database, Arc<AtomicBool>), EngineError> {
        let backend = self
            .store
            .acquire(&empty_state_image()?)
            .map_err(|e| error(self.name(), &e))?;
        let failed = backend.failure();
        Ok((open_state_db_on(backend, &self.label)?, failed))
    }

    fn refresh(&self, version: i64) -> Result<Option<(i64, Database)>, EngineError> {
        let mut cached = self.snapshot.lock();
        let Some(snapshot) = self
            .store
            .snapshot(cached.take())
            .map_err(|e| error(self.name(), &e))?
        else {
            return Ok(None);
        };
        let fresh = (snapshot.version != version)
            .then(|| state_db_from_image(snapshot.bytes.clone(), &self.label))
            .transpose()?
            .map(|db| (snapshot.version, db));
        *cached = Some(snapshot);
        Ok(fresh)
    }
}

/// A lease's lock: a PostgreSQL advisory lock.
pub(crate) struct PgLock(pub(crate) PgAdvisoryLock);

impl Lock for PgLock {
    fn try_lock(&mut self) -> Result<bool, String> {
        self.0.try_lock().map_err(|e| e.to_string())
    }

    fn check(&mut self) -> Result<bool, String> {
        self.0.check().map_err(|e| e.to_string())
    }

    fn unlock(&mut self) {
        self.0.unlock();
    }
}
