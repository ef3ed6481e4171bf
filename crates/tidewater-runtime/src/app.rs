//! [`App`]: a running Tidewater — log, model, pipelines, file and PostgreSQL sources,
//! reconcile and retention — built from a [`Config`]. Used by `tidewater run` and by the
//! benchmarks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewater_analytics::Analytics;
use tidewater_answer::ChatClient;
use tidewater_cdc::PostgresSource;
use tidewater_config::Config;
use tidewater_core::RetryHint;
use tidewater_engine::{Lease, Replica, SharedState};
use tidewater_knowledge::Knowledge;
use tidewater_lake::Lake;
use tidewater_log::Log;
use tidewater_metrics::Metrics;
use tidewater_profiles::Profiles;
use tidewater_server::{Answering, AppState};
use tidewater_sources::kafka::KafkaInto;
use tidewater_sources::FileSource;
use tracing::{info, warn};

use crate::kafka_source::{Destination, KafkaSource};
use crate::shared_state::{PgLock, PgState};
use crate::RuntimeError;

type Result<T> = std::result::Result<T, RuntimeError>;

/// How often log retention is enforced.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// A running Tidewater.
pub struct App {
    /// The configuration it runs with.
    pub config: Config,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// The log.
    pub log: Arc<dyn Log>,
    /// The knowledge pipeline.
    pub knowledge: Arc<Knowledge>,
    /// The profiles pipeline, when configured.
    pub profiles: Option<Arc<Profiles>>,
    /// The analytics pipeline.
    pub analytics: Arc<Analytics>,
    /// How `/v1/ask` answers.
    pub answering: Arc<Answering>,
    /// The Parquet lake, when enabled.
    pub lake: Option<Arc<Lake>>,
    /// File sources, one per configured root, each with the lease its member must hold
    /// to list and watch the root.
    pub sources: Vec<(Arc<FileSource>, Arc<Lease>)>,
    /// Set once the initial scan is indexed.
    pub ready: Arc<AtomicBool>,
    /// Every lease this member joined, released at shutdown so the others take over at
    /// once rather than after the session timeout.
    leases: Vec<Arc<Lease>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl App {
    /// Opens the stores, loads the model, starts the pipeline and the sources. Readiness
    /// (initial scan indexed, then the first reconcile) is reached in the background.
    pub fn start(config: Config) -> Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| RuntimeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new(&config.health));
        // On Kafka, several members share the work: what only one may do goes by lease.
        let shared = config.log.backend == tidewater_log::LogBackend::Kafka;
        let mut leases = Vec::new();
        if partial_index(&config) {
            warn!("log.backend = \"kafka\" with the built-in index: this member indexes and searches only the documents partitions the group gives it, and file sources are not reconciled against it; profiles and analytics run on every member, each with state of its own; with several members set [knowledge.index] backend = \"pgvector\" for one shared index and shared state");
        }
        let log = tidewater_log::open_log(&config.log, &data_dir, Arc::clone(&metrics)).map_err(
            |source| RuntimeError::Log {
                path: data_dir.join("log"),
                source: Box::new(source),
            },
        )?;
        let embedder = tidewater_embed::build_embedder(&config.embedding)
            .map_err(|e| RuntimeError::Embedder(Box::new(e)))?;
        let knowledge = Knowledge::open(
            &data_dir.join("knowledge"),
            config.knowledge.clone(),
            embedder,
            Arc::clone(&log),
            Arc::clone(&metrics),
        )?;
        knowledge.start(config.engine.clone())?;
        let profiles = match &config.profiles {
            Some(profiles_config) => {
                // On Kafka with pgvector, the state lives in PostgreSQL and the holder of
                // the `profiles` lease owns and runs it. Without a shared database every
                // member keeps the whole identity graph, and the holder publishes.
                let profiles = match shared_state(&config, "profiles")? {
                    Some(state) => Profiles::open_shared(
                        state,
                        profiles_config.clone(),
                        Arc::clone(&log),
                        Arc::clone(&metrics),
                    )?,
                    None => Profiles::open(
                        &data_dir.join("profiles"),
                        profiles_config.clone(),
                        Arc::clone(&log),
                        Arc::clone(&metrics),
                    )?,
                };
                // A consumer group of its own gives the member every partition.
                let replica = match shared {
                    true => Some(Replica {
                        group: format!("profiles.{}", member_id(&data_dir)?),
                        publisher: lease(&log, &config, "profiles", &mut leases)?,
                    }),
                    false => None,
                };
                profiles.start(config.engine.clone(), replica)?;
                Some(profiles)
            }
            None => None,
        };
        // Like profiles: with a shared database the holder of the lease owns the state and
        // computes the KPIs (from every partition, in one merged order); without one every
        // member computes them and the holder publishes them.
        let analytics = match shared_state(&config, "analytics")? {
            Some(state) => Analytics::open_shared(
                state,
                config.analytics.clone(),
                config.event_time.clone(),
                Arc::clone(&log),
                Arc::clone(&metrics),
            )?,
            None => Analytics::open(
                &data_dir.join("analytics"),
                config.analytics.clone(),
                config.event_time.clone(),
                Arc::clone(&log),
                Arc::clone(&metrics),
            )?,
        };
        let publisher = shared
            .then(|| lease(&log, &config, "analytics", &mut leases))
            .transpose()?;
        analytics.start(config.engine.clone(), publisher)?;
        let client = match &config.answer.llm {
            Some(llm) => Some(ChatClient::new(llm).map_err(|source| RuntimeError::Llm {
                url: tidewater_core::redact::redact(&llm.base_url).into_owned(),
                source: Box::new(source),
            })?),
            None => None,
        };
        let answering = Arc::new(Answering {
            config: config.answer.clone(),
            client,
        });
        let lake = if config.lake.enabled {
            let dir = config.lake_dir();
            let lake = Lake::open(
                &data_dir.join("lake-state").join("lake.redb"),
                &dir,
                config.lake.clone(),
                Arc::clone(&log),
                Arc::clone(&metrics),
            )
            .and_then(|lake| lake.start().map(|()| lake))
            .map_err(|source| RuntimeError::Lake {
                path: dir,
                source: Box::new(source),
            })?;
            Some(lake)
        } else {
            None
        };

        let mut sources = Vec::new();
        for files in &config.sources.files {
            // A file travels as one log record, with its event header in front.
            let mut files = files.clone();
            let fits = config
                .log
                .max_record_bytes
                .saturating_sub(tidewater_core::document::EVENT_HEADER_ROOM)
                as u64;
            if files.max_file_bytes > fits {
                tracing::debug!(
                    source = files.source_name(),
                    max_file_bytes = fits,
                    "files larger than one log record (minus its header) are skipped"
                );
                files.max_file_bytes = fits;
            }
            let state = data_dir
                .join("sources")
                .join(format!("{}.json", files.name));
            let heartbeat = metrics
                .watchdog
                .register(format!("source {}", files.source_name()));
            let source = FileSource::new(files.clone(), state, knowledge.writer(), heartbeat)
                .map_err(|source| RuntimeError::FileSource {
                    name: files.name.clone(),
                    root: files.root.clone(),
                    source: Box::new(source),
                })?;
            // One lease per folder: members that list the same path (a shared mount)
            // share it; a member with a folder of its own holds its own.
            let root = tidewater_core::content_hash(files.root.to_string_lossy().as_bytes());
            let name = format!("files.{}.{}", files.name, &root[..12]);
            let lease = match shared {
                true => lease(&log, &config, &name, &mut leases)?,
                false => Lease::sole(name),
            };
            sources.push((Arc::new(source), lease));
        }
        let mut app = Self {
            config,
            metrics,
            log,
            knowledge,
            profiles,
            analytics,
            answering,
            lake,
            sources,
            ready: Arc::new(AtomicBool::new(false)),
            leases,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        app.spawn_startup()?;
        app.spawn_postgres_sources()?;
        app.spawn_kafka_sources()?;
        Ok(app)
    }

    /// Initial scan → wait until indexed → ready → reconcile → watch; then scheduled
    /// reconciles. A file source whose lease another member holds is left to it: its
    /// thread scans and watches whenever this member acquires the lease.
    fn spawn_startup(&mut self) -> Result<()> {
        let (sources, knowledge, ready, stop) = (
            self.sources.clone(),
            Arc::clone(&self.knowledge),
            Arc::clone(&self.ready),
            Arc::clone(&self.stop),
        );
        let log = Arc::clone(&self.log);
        let mut reconcile = self.config.reconcile.clone();
        if partial_index(&self.config) {
            // A partial index would take the other members' documents for missing.
            reconcile.on_start = false;
            reconcile.interval = Duration::ZERO;
        }
        let startup = std::thread::Builder::new().name("startup".into()).spawn(move || {
            let started = Instant::now();
            // The holding each source was scanned under.
            let mut scanned = Vec::new();
            for (source, lease) in &sources {
                let Some(guard) = lease.guard() else {
                    scanned.push(None);
                    continue;
                };
                scan(source);
                scanned.push(Some(guard.generation));
            }
            while knowledge.lag() > 0 && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            ready.store(true, Ordering::SeqCst);
            info!(after = ?started.elapsed(), documents = knowledge.metrics().documents.get(), "ready: initial scan indexed");
            let mut watch_threads = Vec::new();
            for ((source, lease), scanned) in sources.iter().zip(scanned) {
                let (source, lease, stop) = (Arc::clone(source), Arc::clone(lease), Arc::clone(&stop));
                watch_threads.push(std::thread::spawn(move || serve_file_source(&source, &lease, &stop, scanned)));
            }
            // `None`: no reconcile scheduled (interval "0s" turns the schedule off).
            let after = |interval: Duration| (!interval.is_zero()).then(|| Instant::now() + interval);
            let mut next_reconcile = if reconcile.on_start { Some(Instant::now()) } else { after(reconcile.interval) };
            let mut next_retention = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if Instant::now() >= next_retention {
                    if let Err(e) = log.enforce_retention() {
                        warn!(error = %e, "log retention failed");
                    }
                    next_retention = Instant::now() + RETENTION_INTERVAL;
                }
                if next_reconcile.is_some_and(|at| Instant::now() >= at) {
                    for (source, lease) in &sources {
                        let Some(_held) = lease.guard() else { continue };
                        match knowledge.reconcile(source, Duration::from_secs(600)) {
                            Ok(report) => info!(source = source.source_name(), ?report, "reconcile done"),
                            Err(e) => warn!(source = source.source_name(), error = %e, "reconcile failed"),
                        }
                    }
                    next_reconcile = after(reconcile.interval);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            for t in watch_threads {
                let _ = t.join();
            }
        }).map_err(RuntimeError::setup("the start-up thread"))?;
        self.threads.push(startup);
        Ok(())
    }

    /// One thread per `[[sources.postgres]]`: snapshot, then stream changes into the
    /// profiles topic until shutdown. External failures (the database is down) are retried
    /// with a growing pause; a configuration mistake stops the source with its message.
    fn spawn_postgres_sources(&mut self) -> Result<()> {
        let Some(profiles) = self.profiles.clone() else {
            return Ok(());
        };
        for pg in self.config.sources.postgres.clone() {
            let state = self
                .config
                .data_dir
                .join("sources")
                .join(format!("postgres-{}.json", pg.slot));
            let source = PostgresSource::new(pg.clone(), state)
                .map_err(|source| RuntimeError::Postgres {
                    slot: pg.slot.clone(),
                    source: Box::new(source),
                })?
                .watched(&self.metrics.watchdog);
            let (profiles, metrics, stop, slot) = (
                Arc::clone(&profiles),
                Arc::clone(&self.metrics),
                Arc::clone(&self.stop),
                pg.slot.clone(),
            );
            let thread = std::thread::Builder::new().name(format!("postgres-{slot}")).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return warn!(slot, error = %e, "cannot start the PostgreSQL source's runtime"),
                };
                runtime.block_on(run_postgres(&source, &profiles, &metrics, &stop, &slot));
            }).map_err(RuntimeError::setup("a PostgreSQL source thread"))?;
            self.threads.push(thread);
        }
        Ok(())
    }

    /// One thread per `[[sources.kafka]]`, reading its topics into its pipeline until
    /// shutdown (validation made sure the pipeline runs).
    fn spawn_kafka_sources(&mut self) -> Result<()> {
        for config in self.config.sources.kafka.clone() {
            let destination = match config.into {
                KafkaInto::Knowledge => Destination::Knowledge(self.knowledge.writer()),
                KafkaInto::Profiles => match &self.profiles {
                    Some(profiles) => Destination::Profiles(Arc::clone(profiles)),
                    None => continue,
                },
            };
            let name = config.name().to_owned();
            let source =
                KafkaSource::new(config, Arc::clone(&self.log), destination, &self.metrics);
            let stop = Arc::clone(&self.stop);
            let thread = std::thread::Builder::new()
                .name(format!("kafka-{name}"))
                .spawn(move || source.run(&stop))
                .map_err(RuntimeError::setup("a Kafka source thread"))?;
            self.threads.push(thread);
        }
        Ok(())
    }

    /// Handler state for the HTTP API.
    pub fn api_state(&self) -> AppState {
        AppState {
            knowledge: Arc::clone(&self.knowledge),
            metrics: Arc::clone(&self.metrics),
            ready: Arc::clone(&self.ready),
            profiles: self.profiles.clone(),
            analytics: Arc::clone(&self.analytics),
            answering: Arc::clone(&self.answering),
        }
    }

    /// Waits until ready or the timeout passes.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ready.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops sources and workers and writes a final index snapshot.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        // Stopping the engine first also wakes a reconcile waiting for its repairs.
        self.knowledge.stop();
        if let Some(profiles) = &self.profiles {
            profiles.stop();
        }
        self.analytics.stop();
        if let Some(lake) = &self.lake {
            lake.stop();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // Nothing runs under the leases any more: hand them on.
        for lease in &self.leases {
            lease.release();
        }
        // Records where every partition ends, so the next start can tell whether records
        // went missing while Tidewater was stopped.
        if let Err(e) = self.log.close() {
            warn!(error = %e, "cannot record the log's end; the next start treats this stop as a crash");
        }
    }
}

/// Whether this member's index holds only its share of the documents: the built-in
/// index on Kafka.
fn partial_index(config: &Config) -> bool {
    config.log.backend == tidewater_log::LogBackend::Kafka
        && config.knowledge.index.backend == tidewater_knowledge::IndexBackend::Hnsw
}

/// The PostgreSQL the members share besides the log: pgvector's, when the log is Kafka.
/// It then holds the profiles and analytics state and the leases.
fn shared_database(config: &Config) -> Option<&tidewater_pgvector::PgVectorConfig> {
    if config.log.backend != tidewater_log::LogBackend::Kafka {
        return None;
    }
    config.knowledge.index.pgvector().ok().flatten()
}

/// The state of the pipeline `name` in the [`shared_database`]; `None` keeps it in the
/// data directory.
fn shared_state(config: &Config, name: &'static str) -> Result<Option<Arc<dyn SharedState>>> {
    let Some(pgvector) = shared_database(config) else {
        return Ok(None);
    };
    let state = PgState::open(pgvector, name).map_err(|source| RuntimeError::SharedState {
        name,
        source: Box::new(source),
    })?;
    Ok(Some(state))
}

/// Takes part in handing out the lease `name` among the members: through an advisory
/// lock of the [`shared_database`] when there is one (freed the moment its holder dies),
/// else through a consumer group. Keeps the lease in `joined` too.
fn lease(
    log: &Arc<dyn Log>,
    config: &Config,
    name: &str,
    joined: &mut Vec<Arc<Lease>>,
) -> Result<Arc<Lease>> {
    let lease = match shared_database(config) {
        Some(pgvector) => tidewater_pgvector::PgAdvisoryLock::new(pgvector, name)
            .map_err(|e| tidewater_engine::EngineError::shared_state(name, e))
            .and_then(|lock| Lease::locked(name, Box::new(PgLock(lock)))),
        None => Lease::join(Arc::clone(log), name),
    }
    .map_err(|source| RuntimeError::Lease {
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    joined.push(Arc::clone(&lease));
    Ok(lease)
}

/// Scans a file source's root, logging the outcome (the watcher retries a failed scan).
fn scan(source: &FileSource) {
    match source.scan() {
        Ok(report) => info!(
            source = source.source_name(),
            upserts = report.upserts,
            deletes = report.deletes,
            unchanged = report.unchanged,
            skipped = report.skipped.len(),
            dead_lettered = report.dead_lettered,
            "scan done"
        ),
        Err(e) => {
            warn!(source = source.source_name(), error = %e, "scan failed; the watcher retries")
        }
    }
}

/// Watches a file source while this member holds its lease, until `stop`. Each holding
/// starts with a scan (the folder changed while another member held it), except the one
/// the start-up scan was made under (`scanned`).
fn serve_file_source(
    source: &Arc<FileSource>,
    lease: &Lease,
    stop: &AtomicBool,
    scanned: Option<u64>,
) {
    while !stop.load(Ordering::SeqCst) {
        let generation = match lease.guard() {
            Some(guard) => guard.generation,
            None => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if scanned != Some(generation) {
            scan(source);
        }
        let stop_watching = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (source, stop_watching) = (Arc::clone(source), Arc::clone(&stop_watching));
            std::thread::spawn(move || source.run(stop_watching))
        };
        while !stop.load(Ordering::SeqCst) && lease.is_held() && !watcher.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop_watching.store(true, Ordering::SeqCst);
        if let Ok(Err(e)) = watcher.join() {
            // Not retried: the watchdog shows the source failed.
            return warn!(source = source.source_name(), error = %e, "file watcher stopped");
        }
    }
}

/// This member's id: random, made once and kept in `data_dir/member-id`, so a restarted
/// member rejoins its own consumer groups.
fn member_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("member-id");
    let io = |source| RuntimeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => {
            let id = format!("{:016x}", rand::random::<u64>());
            std::fs::write(&path, &id).map_err(io)?;
            Ok(id)
        }
    }
}

/// Runs one PostgreSQL source until `stop`, reporting its slot lag.
async fn run_postgres(
    source: &PostgresSource,
    profiles: &Profiles,
    metrics: &Metrics,
    stop: &AtomicBool,
    slot: &str,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lag = metrics.cdc_slot_lag_bytes.with(&[slot]);
    let watch_stop = async {
        let mut ticks = 0u32;
        while !stop.load(Ordering::SeqCst) {
            if ticks.is_multiple_of(20) {
                if let Ok(bytes) = source.slot_lag_bytes().await {
                    lag.set(bytes as i64);
                }
            }
            ticks += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_tx.send(true);
    };
    let run = async {
        let mut pause = Duration::from_secs(1);
        loop {
            match source.run(profiles, stop_rx.clone()).await {
                Ok(()) => return,
                Err(e) if e.retry_hint() == RetryHint::Retry => {
                    warn!(slot, error = %e, retry_in = ?pause, "PostgreSQL source failed; retrying");
                    if let Some(heartbeat) = source.heartbeat() {
                        heartbeat.fail(format!("retrying after: {e}"));
                    }
                    let mut waiting = stop_rx.clone();
                    if tokio::time::timeout(pause, waiting.wait_for(|stopped| *stopped))
                        .await
                        .is_ok()
                    {
                        return;
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    if let Some(heartbeat) = source.heartbeat() {
                        heartbeat.fail(format!("stopped: {e}"));
                    }
                    return tracing::error!(slot, error = %e, "PostgreSQL source stopped");
                }
            }
        }
    };
    tokio::join!(watch_stop, run);
}
