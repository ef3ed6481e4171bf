//! [`Profiles`]: the running profiles pipeline, event ingestion and profile queries.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::Database;
use serde_json::Value;
use tidewater_engine::{
    open_state_db, Engine, EngineConfig, EngineError, EngineHandle, Ownership, Replica, SharedState,
};
use tidewater_log::{Log, NewRecord, Position};
use tidewater_metrics::Metrics;

use crate::{
    profile, profile_by_identifier, CustomerId, Identifier, Profile, ProfilesConfig, ProfilesError,
    ProfilesPipeline,
};

/// The profiles pipeline of one process.
pub struct Profiles {
    home: Home,
    log: Arc<dyn Log>,
    config: ProfilesConfig,
    metrics: Arc<Metrics>,
    engine: Mutex<Option<EngineHandle>>,
}

/// Where the state lives.
enum Home {
    /// A file of this process's.
    Local(Arc<Database>),
    /// Outside the process, owned by one member at a time; set up by `start`.
    Shared {
        state: Arc<dyn SharedState>,
        ownership: Mutex<Option<Arc<Ownership>>>,
    },
}

impl Profiles {
    /// Opens the state under `dir` (`profiles.redb`) and creates the topic.
    pub fn open(
        dir: &Path,
        config: ProfilesConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ProfilesError> {
        let db = Arc::new(open_state_db(&dir.join("profiles.redb"))?);
        Self::with_home(Home::Local(db), config, log, metrics)
    }

    /// Keeps the state in `state`, which one member at a time owns (the holder of the
    /// lease given to [`Self::start`]) and the others read; creates the topic.
    pub fn open_shared(
        state: Arc<dyn SharedState>,
        config: ProfilesConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ProfilesError> {
        let home = Home::Shared {
            state,
            ownership: Mutex::new(None),
        };
        Self::with_home(home, config, log, metrics)
    }

    fn with_home(
        home: Home,
        config: ProfilesConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ProfilesError> {
        log.ensure_topic(&config.topic, &config.topic_config)?;
        log.ensure_topic(&config.output_topic, &config.topic_config)?;
        Ok(Arc::new(Self {
            home,
            log,
            config,
            metrics,
            engine: Mutex::new(None),
        }))
    }

    /// Starts consuming the change topic.
    ///
    /// With the state in this process: as a [`Replica`] (one per member on Kafka, when no
    /// shared state is configured), this process reads every partition, so its identity
    /// graph sees every record, and it publishes profile changes and dead letters only
    /// while it holds the replica's lease; without one it joins the group `profiles` and
    /// publishes everything.
    ///
    /// With shared state (`replica` is then required): the member holding the replica's
    /// lease owns the state and runs the pipeline over every partition; the others serve
    /// reads from a snapshot of that state.
    pub fn start(
        &self,
        engine_config: EngineConfig,
        replica: Option<Replica>,
    ) -> Result<(), ProfilesError> {
        match &self.home {
            Home::Local(db) => {
                let handle = run(
                    Output::of(self),
                    Arc::clone(db),
                    engine_config,
                    replica,
                    Republish::OnAcquire,
                )?;
                *self.engine.lock() = Some(handle);
            }
            Home::Shared { state, ownership } => {
                let replica = replica
                    .ok_or_else(|| shared_error("the shared state needs a lease to own it by"))?;
                let output = Output::of(self);
                let lease = Arc::clone(&replica.publisher);
                let owned = Ownership::start(Arc::clone(state), lease, move |db| {
                    let handle = run(
                        output.clone(),
                        db,
                        engine_config.clone(),
                        Some(replica.clone()),
                        Republish::Now,
                    )
                    .map_err(shared_error)?;
                    Ok(Box::new(move || handle.stop()))
                })?;
                *ownership.lock() = Some(owned);
            }
        }
        Ok(())
    }

    /// Stops the workers after their current batch.
    pub fn stop(&self) {
        if let Some(handle) = self.engine.lock().take() {
            handle.stop();
        }
        if let Home::Shared { ownership, .. } = &self.home {
            if let Some(ownership) = ownership.lock().take() {
                ownership.stop();
            }
        }
    }

    /// The database reads go to.
    fn db(&self) -> Result<Arc<Database>, ProfilesError> {
        match &self.home {
            Home::Local(db) => Ok(Arc::clone(db)),
            Home::Shared { ownership, .. } => match ownership.lock().as_ref() {
                Some(ownership) => Ok(ownership.db()),
                None => Err(shared_error("the profiles pipeline is not started").into()),
            },
        }
    }

    /// The topic change events go to.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// Appends change events (Debezium records: a value, or `{"key": …, "value": …}`) to
    /// the topic; returns once they are durable. An event that parses is keyed by its
    /// table and canonical primary key, so the changes of one row stay in order; one that
    /// does not is appended unkeyed and dead-lettered by the pipeline with the reason.
    pub fn ingest(&self, events: Vec<Value>) -> Result<Vec<Position>, ProfilesError> {
        let now = tidewater_core::time::now_ms();
        let records = events
            .into_iter()
            .map(|event| to_record(event, now))
            .collect();
        let positions = self.log.append(&self.config.topic, records)?;
        self.metrics
            .log_appended_records
            .with(&[&self.config.topic])
            .add(positions.len() as u64);
        Ok(positions)
    }

    /// The profile of the customer holding `identifier`.
    pub fn by_identifier(&self, identifier: &Identifier) -> Result<Option<Profile>, ProfilesError> {
        profile_by_identifier(&*self.db()?, identifier)
    }

    /// The profile of a customer id (aliases of merged customers are followed).
    pub fn by_customer(&self, customer: CustomerId) -> Result<Option<Profile>, ProfilesError> {
        profile(&*self.db()?, customer)
    }
}

fn shared_error(reason: impl std::fmt::Display) -> EngineError {
    EngineError::shared_state("profiles", reason)
}

/// What a run of the pipeline publishes to, cloned for each run.
#[derive(Clone)]
struct Output {
    log: Arc<dyn Log>,
    config: ProfilesConfig,
    metrics: Arc<Metrics>,
}

impl Output {
    fn of(profiles: &Profiles) -> Self {
        Self {
            log: Arc::clone(&profiles.log),
            config: profiles.config.clone(),
            metrics: Arc::clone(&profiles.metrics),
        }
    }
}

/// When a publishing replica republishes every current profile.
enum Republish {
    /// Each time it acquires the lease (its state is its own).
    OnAcquire,
    /// Once, now (it has just taken the shared state over, holding the lease).
    Now,
}

/// Starts the pipeline's engine on `db`.
fn run(
    output: Output,
    db: Arc<Database>,
    engine_config: EngineConfig,
    replica: Option<Replica>,
    republish: Republish,
) -> Result<EngineHandle, ProfilesError> {
    let Output {
        log,
        config,
        metrics,
    } = output;
    let pipeline = ProfilesPipeline::new("profiles", config.topic.clone(), config.clone(), &db)?
        .with_output(
            Arc::clone(&log),
            config.output_topic.clone(),
            Arc::clone(&metrics),
            replica.as_ref().map(|r| Arc::clone(&r.publisher)),
        );
    // Changes committed before a crash but not yet published.
    pipeline.publish_pending(&db)?;
    let pipeline = Arc::new(pipeline);
    if let Some(replica) = &replica {
        // The new publisher's first output: every current profile, so the latest record
        // of each key on the output topic is the current profile (what a previous
        // publisher left unpublished, non-publishing replicas drop).
        match republish {
            Republish::Now => {
                pipeline.republish_all(&db)?;
            }
            Republish::OnAcquire => {
                let (pipeline, db) = (Arc::downgrade(&pipeline), Arc::downgrade(&db));
                replica.publisher.on_acquire(move || {
                    let (Some(pipeline), Some(db)) = (pipeline.upgrade(), db.upgrade()) else {
                        return;
                    };
                    if let Err(e) = pipeline.republish_all(&db) {
                        tracing::warn!(error = %e, "cannot republish the profiles after acquiring the publisher lease");
                    }
                });
            }
        }
    }
    let mut engine = Engine::new(log, db, pipeline, engine_config, metrics);
    if let Some(replica) = replica {
        engine = engine.replica(replica);
    }
    Ok(engine.start(&config.topic_config)?)
}

impl tidewater_core::EventWriter<tidewater_cdc::ChangeEvent> for Profiles {
    /// Appends the changes of a CDC source, as Debezium records keyed like the events of
    /// `POST /v1/events`, and returns once they are durable.
    fn write(
        &self,
        events: Vec<tidewater_cdc::ChangeEvent>,
    ) -> Result<(), tidewater_core::WriteError> {
        let now = tidewater_core::time::now_ms();
        let records = events
            .iter()
            .map(|event| {
                let (_, value) = tidewater_cdc::to_debezium(event);
                NewRecord {
                    key: Some(event.key_string().into_bytes()),
                    value: value.to_string().into_bytes(),
                    timestamp_ms: event.event_time_ms.unwrap_or(now),
                    headers: Vec::new(),
                }
            })
            .collect();
        let positions = self
            .log
            .append(&self.config.topic, records)
            .map_err(|e| tidewater_core::WriteError::new("cannot append the changes", e))?;
        self.metrics
            .log_appended_records
            .with(&[&self.config.topic])
            .add(positions.len() as u64);
        Ok(())
    }
}

/// One HTTP/NDJSON event as a log record: the Debezium key (made canonical, so that
/// wrapped and bare forms of one key route alike) and the value as given.
fn to_record(event: Value, now: i64) -> NewRecord {
    let (key, value) = match event {
        Value::Object(mut fields)
            if fields.len() == 2 && fields.contains_key("key") && fields.contains_key("value") =>
        {
            (
                fields.remove("key"),
                fields.remove("value").unwrap_or(Value::Null),
            )
        }
        other => (None, other),
    };
    let parsed = tidewater_cdc::parse_debezium_value(&value, key.as_ref()).ok();
    // The canonical, unwrapped key of a parsed change: bare key JSON is what the parser
    // accepts back, and equal keys give equal bytes.
    let key = match parsed {
        Some(tidewater_cdc::Parsed::Change(change)) if !change.key.is_empty() => {
            Some(change.key_string().into_bytes())
        }
        Some(tidewater_cdc::Parsed::Tombstone { key }) => {
            let mut out = String::new();
            tidewater_cdc::canonical_json(&Value::Object(key), &mut out);
            Some(out.into_bytes())
        }
        _ => key.map(|k| k.to_string().into_bytes()),
    };
    let value = if value.is_null() {
        Vec::new()
    } else {
        value.to_string().into_bytes()
    };
    NewRecord {
        key,
        value,
        timestamp_ms: now,
        headers: Vec::new(),
    }
}
