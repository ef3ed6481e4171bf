//! [`Analytics`]: the running analytics pipeline, the intake of conversation and
//! feedback events, and KPI queries.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use redb::Database;
use serde::Serialize;
use serde_json::Value;
use tidewater_core::{ConversationEvent, EventTimePolicy, FeedbackEvent};
use tidewater_engine::{open_state_db, EngineConfig, Lease, Ownership, SharedState};
use tidewater_log::{Log, NewRecord, Position, TopicConfig};
use tidewater_metrics::Metrics;

use crate::pipeline::config::AnalyticsConfig;
use crate::pipeline::runner::{set_kpi_gauges, Outputs, Runner};
use crate::pipeline::state;
use crate::{Error, LexiconScorer, WindowResult, WindowedKpis};

/// Most windows one KPI query returns (the latest ones).
pub const MAX_WINDOWS: usize = 1_000;

/// The analytics pipeline of one process.
pub struct Analytics {
    shared: Option<Shared>,
    log: Arc<dyn Log>,
    config: AnalyticsConfig,
    event_time: EventTimePolicy,
    metrics: Arc<Metrics>,
    /// The state reads go to, and the operator restored from it (`None` until a shared
    /// state is started).
    current: Arc<Mutex<Option<View>>>,
    running: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

/// State outside the process that one member at a time owns.
struct Shared {
    state: Arc<dyn SharedState>,
    ownership: Mutex<Option<Arc<Ownership>>>,
}

/// A state database and the operator as of its last commit.
#[derive(Clone)]
struct View {
    db: Arc<Database>,
    operator: Arc<Mutex<WindowedKpis>>,
}

/// One window of a KPI query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiWindow {
    /// The window and its KPIs.
    #[serde(flatten)]
    pub result: WindowResult,
    /// Whether the window is closed (its KPIs final) or still open (provisional).
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// The answer to a KPI query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiReport {
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Distance between window starts in milliseconds: `window_ms` for tumbling windows,
    /// less for hopping ones.
    pub slide_ms: u64,
    /// The current watermark (ms since the Unix epoch), once any event was seen.
    pub watermark_ms: Option<u64>,
    /// Events that arrived too late, so far.
    pub late_events: u64,
    /// Closed windows, then open ones, in window order.
    pub windows: Vec<KpiWindow>,
}

impl Analytics {
    /// Opens the state under `dir` (`analytics.redb`) and creates the topics. Events whose
    /// time `event_time` does not accept are dead-lettered.
    pub fn open(
        dir: &Path,
        config: AnalyticsConfig,
        event_time: EventTimePolicy,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, Error> {
        let db = Arc::new(open_state_db(&dir.join("analytics.redb"))?);
        let view = view_of(db, &config, &metrics)?;
        Self::with_state(None, Some(view), config, event_time, log, metrics)
    }

    /// Keeps the state in `state`, which one member at a time owns (the holder of the
    /// lease given to [`Self::start`]) and the others read; creates the topics.
    pub fn open_shared(
        state: Arc<dyn SharedState>,
        config: AnalyticsConfig,
        event_time: EventTimePolicy,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, Error> {
        let shared = Shared {
            state,
            ownership: Mutex::new(None),
        };
        Self::with_state(Some(shared), None, config, event_time, log, metrics)
    }

    fn with_state(
        shared: Option<Shared>,
        view: Option<View>,
        config: AnalyticsConfig,
        event_time: EventTimePolicy,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, Error> {
        log.ensure_topic(&config.conversations_topic, &config.topic_config)?;
        log.ensure_topic(&config.feedback_topic, &config.topic_config)?;
        let single = TopicConfig {
            partitions: 1,
            ..config.topic_config.clone()
        };
        log.ensure_topic(&config.kpis_topic, &single)?;
        log.ensure_topic(&config.late_topic, &single)?;
        log.ensure_topic(
            &tidewater_engine::DeadLetterRecord::topic_for(crate::pipeline::runner::PIPELINE),
            &single,
        )?;
        Ok(Arc::new(Self {
            shared,
            log,
            config,
            event_time,
            metrics,
            current: Arc::new(Mutex::new(view)),
            running: Mutex::new(None),
        }))
    }

    /// Starts consuming the conversations and feedback topics.
    ///
    /// With the state in this process and a `publisher` lease (on Kafka without shared
    /// state, every member computes the KPIs), the KPIs, late events and dead letters are
    /// published only while this member holds it. With shared state (`publisher` is then
    /// required), the holder of the lease owns the state and runs the pipeline; the others
    /// answer KPI queries from a snapshot of that state.
    pub fn start(&self, engine: EngineConfig, publisher: Option<Arc<Lease>>) -> Result<(), Error> {
        let launcher = Launcher {
            log: Arc::clone(&self.log),
            config: self.config.clone(),
            event_time: self.event_time.clone(),
            engine,
            metrics: Arc::clone(&self.metrics),
        };
        let Some(shared) = &self.shared else {
            let view = self
                .current
                .lock()
                .clone()
                .ok_or_else(|| shared_error("no state"))?;
            let outputs = Arc::new(Outputs::new(
                &self.config,
                &self.metrics.watchdog,
                publisher.as_ref(),
            ));
            if let Some(lease) = &publisher {
                // What the previous holder left unpublished goes out now.
                let (outputs, db) = (Arc::downgrade(&outputs), Arc::downgrade(&view.db));
                let (log, metrics) = (Arc::clone(&self.log), Arc::clone(&self.metrics));
                lease.on_acquire(move || {
                    let (Some(outputs), Some(db)) = (outputs.upgrade(), db.upgrade()) else {
                        return;
                    };
                    if let Err(e) = outputs.publish(&db, log.as_ref(), &metrics) {
                        tracing::warn!(error = %e, "cannot publish the KPIs after acquiring the publisher lease");
                    }
                });
            }
            *self.running.lock() = Some(launcher.launch(view, outputs)?);
            return Ok(());
        };
        let lease =
            publisher.ok_or_else(|| shared_error("the shared state needs a lease to own it by"))?;
        let current = Arc::clone(&self.current);
        let publisher = Arc::clone(&lease);
        let ownership = Ownership::start(Arc::clone(&shared.state), lease, move |db| {
            let start = || -> Result<_, Error> {
                let view = view_of(db, &launcher.config, &launcher.metrics)?;
                *current.lock() = Some(view.clone());
                let outputs = Arc::new(Outputs::new(
                    &launcher.config,
                    &launcher.metrics.watchdog,
                    Some(&publisher),
                ));
                // What the previous owner committed but did not publish.
                if let Err(e) = outputs.publish(&view.db, launcher.log.as_ref(), &launcher.metrics)
                {
                    tracing::warn!(error = %e, "cannot publish the KPIs after taking the state over yet");
                }
                launcher.launch(view, outputs)
            };
            let (stop, thread) = start().map_err(shared_error)?;
            Ok(Box::new(move || {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
            }))
        })?;
        *shared.ownership.lock() = Some(ownership);
        Ok(())
    }

    /// Stops the pipeline after its current batch.
    pub fn stop(&self) {
        if let Some((stop, thread)) = self.running.lock().take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        if let Some(shared) = &self.shared {
            if let Some(ownership) = shared.ownership.lock().take() {
                ownership.stop();
            }
        }
    }

    /// The state reads go to: this process's, or the owner's as of the last snapshot
    /// (its operator restored once per snapshot).
    fn view(&self) -> Result<View, Error> {
        let db = match &self.shared {
            None => None,
            Some(shared) => Some(
                shared
                    .ownership
                    .lock()
                    .as_ref()
                    .ok_or_else(|| shared_error("the analytics pipeline is not started"))?
                    .db(),
            ),
        };
        let mut current = self.current.lock();
        match (db, current.as_ref()) {
            (None, Some(view)) => Ok(view.clone()),
            (Some(db), Some(view)) if Arc::ptr_eq(&db, &view.db) => Ok(view.clone()),
            (Some(db), _) => {
                let view = view_of(db, &self.config, &self.metrics)?;
                *current = Some(view.clone());
                Ok(view)
            }
            (None, None) => Err(shared_error("no state").into()),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.config
    }

    /// Whether `topic` is the conversations or the feedback topic.
    pub fn accepts(&self, topic: &str) -> bool {
        topic == self.config.conversations_topic || topic == self.config.feedback_topic
    }

    /// Checks every event against its topic's form and its time against the event-time
    /// policy, then appends them all (keyed by conversation id). One invalid event rejects
    /// the whole call; nothing is appended. The policy is applied with the log time the
    /// records get, so an event refused here is one the pipeline would dead-letter.
    pub fn ingest(&self, topic: &str, events: Vec<Value>) -> Result<Vec<Position>, Error> {
        let log_time_ms = tidewater_core::time::now_ms();
        let mut records = Vec::with_capacity(events.len());
        for (n, event) in events.into_iter().enumerate() {
            let invalid = |reason: String| Error::InvalidEvent {
                topic: topic.to_owned(),
                reason: format!("event {n}: {reason}"),
            };
            let (id, event_time_ms) = if topic == self.config.conversations_topic {
                let c = serde_json::from_value::<ConversationEvent>(event.clone())
                    .map_err(|e| invalid(e.to_string()))?;
                (c.conversation_id, c.event_time_ms)
            } else if topic == self.config.feedback_topic {
                let f = serde_json::from_value::<FeedbackEvent>(event.clone())
                    .map_err(|e| invalid(e.to_string()))?;
                (f.conversation_id, f.event_time_ms)
            } else {
                return Err(Error::UnknownTopic(topic.to_owned()));
            };
            if let Some(event_time_ms) = event_time_ms {
                self.event_time
                    .check(event_time_ms, log_time_ms)
                    .map_err(|e| invalid(e.to_string()))?;
            }
            records.push(NewRecord {
                key: Some(id.into_bytes()),
                value: event.to_string().into_bytes(),
                timestamp_ms: log_time_ms,
                headers: Vec::new(),
            });
        }
        self.append(topic, records)
    }

    /// Appends a conversation event (durable when this returns).
    pub fn record_conversation(&self, event: &ConversationEvent) -> Result<Position, Error> {
        self.append_one(
            &self.config.conversations_topic,
            &event.conversation_id,
            serde_json::to_vec(event),
        )
    }

    /// Appends a feedback event (durable when this returns).
    pub fn record_feedback(&self, event: &FeedbackEvent) -> Result<Position, Error> {
        self.append_one(
            &self.config.feedback_topic,
            &event.conversation_id,
            serde_json::to_vec(event),
        )
    }

    fn append_one(
        &self,
        topic: &str,
        key: &str,
        value: serde_json::Result<Vec<u8>>,
    ) -> Result<Position, Error> {
        let record = NewRecord {
            key: Some(key.as_bytes().to_vec()),
            value: value.map_err(|e| Error::Corrupt(e.to_string()))?,
            timestamp_ms: tidewater_core::time::now_ms(),
            headers: Vec::new(),
        };
        let positions = self.append(topic, vec![record])?;
        positions
            .into_iter()
            .next()
            .ok_or_else(|| Error::Corrupt("the log acknowledged no record".into()))
    }

    fn append(&self, topic: &str, records: Vec<NewRecord>) -> Result<Vec<Position>, Error> {
        let n = records.len() as u64;
        let positions = self.log.append(topic, records)?;
        self.metrics.log_appended_records.with(&[topic]).add(n);
        Ok(positions)
    }

    /// KPIs of the windows starting in `[from, to)` (ms since the Unix epoch; open-ended
    /// when absent): the closed windows, then the open ones with their provisional values.
    pub fn kpis(&self, from: Option<u64>, to: Option<u64>) -> Result<KpiReport, Error> {
        let (from, to) = (from.unwrap_or(0), to.unwrap_or(u64::MAX));
        let view = self.view()?;
        let operator = view.operator.lock();
        let open: Vec<WindowResult> = operator
            .open_windows()
            .into_iter()
            .filter(|w| (from..to).contains(&w.window_start_ms))
            .collect();
        let (window_ms, slide_ms, watermark_ms, late_events) = (
            operator.size_ms(),
            operator.slide_ms(),
            operator.watermark(),
            operator.late_events(),
        );
        // Read under the operator's lock: the runner commits closed windows while holding
        // it, so a window is seen either open or closed, never both or neither.
        let closed = state::closed_windows(&view.db, from, to, MAX_WINDOWS)?;
        drop(operator);
        let mut windows: Vec<KpiWindow> = closed
            .into_iter()
            .map(|result| KpiWindow {
                result,
                is_final: true,
            })
            .chain(open.into_iter().map(|result| KpiWindow {
                result,
                is_final: false,
            }))
            .collect();
        windows.sort_by_key(|w| w.result.window_start_ms);
        let excess = windows.len().saturating_sub(MAX_WINDOWS);
        windows.drain(..excess);
        Ok(KpiReport {
            window_ms,
            slide_ms,
            watermark_ms,
            late_events,
            windows,
        })
    }
}

/// Opens the analytics tables in `db` and restores the operator from them.
fn view_of(db: Arc<Database>, config: &AnalyticsConfig, metrics: &Metrics) -> Result<View, Error> {
    state::create_tables(&db, &config.window)?;
    let operator =
        WindowedKpis::restore(&config.window, LexiconScorer, state::load_operator(&db)?)?;
    if let Some(last) = state::closed_windows(&db, 0, u64::MAX, 1)?.last() {
        set_kpi_gauges(metrics, last);
    }
    Ok(View {
        db,
        operator: Arc::new(Mutex::new(operator)),
    })
}

fn shared_error(reason: impl std::fmt::Display) -> tidewater_engine::EngineError {
    tidewater_engine::EngineError::shared_state("analytics", reason)
}

/// What starts a run of the pipeline.
struct Launcher {
    log: Arc<dyn Log>,
    config: AnalyticsConfig,
    event_time: EventTimePolicy,
    engine: EngineConfig,
    metrics: Arc<Metrics>,
}

impl Launcher {
    /// Runs the pipeline on `view` on a thread of its own until the flag is set.
    fn launch(
        &self,
        view: View,
        outputs: Arc<Outputs>,
    ) -> Result<(Arc<AtomicBool>, JoinHandle<()>), Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let runner = Runner {
            db: view.db,
            log: Arc::clone(&self.log),
            config: self.config.clone(),
            event_time: self.event_time.clone(),
            engine: self.engine.clone(),
            metrics: Arc::clone(&self.metrics),
            operator: view.operator,
            outputs,
            heartbeat: self.metrics.watchdog.register("pipeline analytics"),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("analytics".into())
            .spawn(move || runner.run())
            .map_err(Error::Spawn)?;
        Ok((stop, thread))
    }
}
