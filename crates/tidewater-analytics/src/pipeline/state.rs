//! The analytics pipeline's tables in its state database.

use std::collections::BTreeMap;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Deserialize;

use crate::operator::{OperatorProgress, PaneEvent};
use crate::{AnalyticsEvent, Error, OperatorState, WindowConfig, WindowResult, WindowedKpis};

/// The operator's progress (JSON of [`OperatorProgress`]) under the key `progress`.
pub(crate) const OPERATOR: TableDefinition<&str, &[u8]> =
    TableDefinition::new("analytics_operator");
/// The events held for open windows by (pane start, arrival number): JSON of [`PaneEvent`].
/// Written as events arrive and removed pane by pane, so a batch stores what it changed,
/// not the whole state.
pub(crate) const PANES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("analytics_panes");
/// Closed windows' KPIs by window start (JSON of [`WindowResult`]).
pub(crate) const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("analytics_results");
/// Conversations remembered for joining later feedback: id → (event time, model, question).
const CONVERSATIONS: TableDefinition<&str, (u64, &str, &str)> =
    TableDefinition::new("analytics_conversations");
/// The same conversations by (event time, id), so they are forgotten oldest first without
/// reading the others.
const CONVERSATION_TIMES: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("analytics_conversation_times");

/// The remembered conversations, inside one write transaction.
pub(crate) struct Conversations<'t> {
    by_id: Table<'t, &'static str, (u64, &'static str, &'static str)>,
    by_time: Table<'t, (u64, &'static str), ()>,
}

impl<'t> Conversations<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, Error> {
        Ok(Self {
            by_id: txn.open_table(CONVERSATIONS)?,
            by_time: txn.open_table(CONVERSATION_TIMES)?,
        })
    }

    /// The (model, question) of a remembered conversation.
    pub(crate) fn get(&self, id: &str) -> Result<Option<(String, String)>, Error> {
        Ok(self.by_id.get(id)?.map(|v| {
            let (_, model, question) = v.value();
            (model.to_owned(), question.to_owned())
        }))
    }

    /// Remembers a conversation unless one with its id is remembered already.
    pub(crate) fn remember(
        &mut self,
        id: &str,
        event_time_ms: u64,
        model: &str,
        question: &str,
    ) -> Result<(), Error> {
        if self.by_id.get(id)?.is_none() {
            self.by_id.insert(id, (event_time_ms, model, question))?;
            self.by_time.insert((event_time_ms, id), ())?;
        }
        Ok(())
    }

    /// Forgets the conversations with an event time before `horizon`.
    pub(crate) fn forget_before(&mut self, horizon: u64) -> Result<(), Error> {
        let mut old = Vec::new();
        for entry in self.by_time.range(..(horizon, ""))? {
            let (key, _) = entry?;
            let (time, id) = key.value();
            old.push((time, id.to_owned()));
        }
        for (time, id) in &old {
            self.by_time.remove((*time, id.as_str()))?;
            self.by_id.remove(id.as_str())?;
        }
        Ok(())
    }

    /// Indexes by time the conversations remembered before the index existed.
    fn index_by_time(&mut self) -> Result<(), Error> {
        if self.by_time.first()?.is_some() {
            return Ok(());
        }
        let mut all = Vec::new();
        for entry in self.by_id.iter()? {
            let (id, value) = entry?;
            all.push((value.value().0, id.value().to_owned()));
        }
        for (time, id) in &all {
            self.by_time.insert((*time, id.as_str()), ())?;
        }
        Ok(())
    }
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> Error + '_ {
    move |e| Error::Corrupt(format!("{what}: {e}"))
}

/// Creates the tables, so queries work before the first event, and converts a state
/// stored whole (one JSON value of windows and their events) into panes.
pub(crate) fn create_tables(db: &Database, window: &WindowConfig) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(RESULTS)?;
    Conversations::open(&txn)?.index_by_time()?;
    txn.open_table(PANES)?;
    let legacy = txn
        .open_table(OPERATOR)?
        .remove(LEGACY_KEY)?
        .map(|json| json.value().to_vec());
    if let Some(json) = legacy {
        let legacy: LegacyState =
            serde_json::from_slice(&json).map_err(corrupt("operator state"))?;
        let state = legacy.into_panes(window.pane_ms());
        let mut operator = WindowedKpis::restore(window, crate::LexiconScorer, state)?;
        operator.mark_all_added();
        save_operator(&txn, &mut operator)?;
    }
    txn.commit()?;
    Ok(())
}

/// The committed operator state (empty before the first batch).
pub(crate) fn load_operator(db: &Database) -> Result<OperatorState, Error> {
    let txn = db.begin_read()?;
    let progress = match txn.open_table(OPERATOR)?.get(PROGRESS_KEY)? {
        Some(json) => serde_json::from_slice(json.value()).map_err(corrupt("operator progress"))?,
        None => OperatorProgress::default(),
    };
    let mut panes: BTreeMap<u64, Vec<PaneEvent>> = BTreeMap::new();
    for entry in txn.open_table(PANES)?.iter()? {
        let (key, json) = entry?;
        let held = serde_json::from_slice(json.value()).map_err(corrupt("held event"))?;
        panes.entry(key.value().0).or_default().push(held);
    }
    Ok(OperatorState { progress, panes })
}

/// Stores, inside `txn`, what changed in the operator's state since it was last stored.
pub(crate) fn save_operator(
    txn: &WriteTransaction,
    operator: &mut WindowedKpis,
) -> Result<(), Error> {
    let changes = operator.take_changes();
    let state = operator.state();
    let mut panes = txn.open_table(PANES)?;
    for (pane, seq) in changes.added {
        // Absent when its pane was dropped in the same round.
        if let Some(held) = state.held(pane, seq) {
            let json = serde_json::to_vec(held).map_err(corrupt("held event"))?;
            panes.insert((pane, seq), json.as_slice())?;
        }
    }
    for pane in changes.dropped {
        panes.retain_in((pane, 0)..=(pane, u64::MAX), |_, _| false)?;
    }
    let json = serde_json::to_vec(&state.progress).map_err(corrupt("operator progress"))?;
    txn.open_table(OPERATOR)?
        .insert(PROGRESS_KEY, json.as_slice())?;
    Ok(())
}

const PROGRESS_KEY: &str = "progress";
/// Where states stored whole were kept.
const LEGACY_KEY: &str = "operator";

/// A state stored whole: tumbling windows by start, each with its events in arrival order.
#[derive(Deserialize)]
struct LegacyState {
    watermarks: crate::Watermarks,
    windows: BTreeMap<u64, Vec<AnalyticsEvent>>,
    late_events: u64,
}

impl LegacyState {
    fn into_panes(self, pane_ms: u64) -> OperatorState {
        let mut state = OperatorState::default();
        let progress = &mut state.progress;
        progress.watermarks = self.watermarks;
        progress.late_events = self.late_events;
        for (start, events) in self.windows {
            progress.open_windows.insert(start);
            for event in events {
                let time = event.event_time_ms();
                state
                    .panes
                    .entry(time - time % pane_ms)
                    .or_default()
                    .push(PaneEvent {
                        seq: progress.next_seq,
                        first_window_ms: start,
                        event,
                    });
                progress.next_seq += 1;
            }
        }
        state
    }
}

/// Closed windows whose start lies in `[from, to)`, in window order, at most `limit` (the
/// latest ones when there are more).
pub(crate) fn closed_windows(
    db: &Database,
    from: u64,
    to: u64,
    limit: usize,
) -> Result<Vec<WindowResult>, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RESULTS)?;
    let mut out = Vec::new();
    for entry in table.range(from..to)?.rev().take(limit) {
        let (_, json) = entry?;
        out.push(
            serde_json::from_slice(json.value())
                .map_err(|e| Error::Corrupt(format!("window result: {e}")))?,
        );
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn conversation(id: &str, t: u64) -> AnalyticsEvent {
        AnalyticsEvent::Conversation {
            conversation_id: id.into(),
            event_time_ms: t,
            model: "m".into(),
            latency_ms: t / 10,
            retrieved_chunks: 1,
            question: format!("q-{id}"),
        }
    }

    #[test]
    fn a_state_stored_whole_is_converted_to_panes_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = tidewater_engine::open_state_db(&dir.path().join("a.redb")).unwrap();
        let window = WindowConfig {
            size: Duration::from_secs(1),
            ..WindowConfig::default()
        };
        let events = [
            conversation("a", 100),
            conversation("b", 900),
            conversation("c", 1_200),
        ];
        let legacy = json!({
            "watermarks": crate::Watermarks::default(),
            "windows": {"0": [events[0], events[1]], "1000": [events[2]]},
            "late_events": 2,
        });
        {
            let txn = db.begin_write().unwrap();
            txn.open_table(OPERATOR)
                .unwrap()
                .insert(LEGACY_KEY, legacy.to_string().as_bytes())
                .unwrap();
            txn.commit().unwrap();
        }
        create_tables(&db, &window).unwrap();
        create_tables(&db, &window).unwrap();
        let state = load_operator(&db).unwrap();
        assert_eq!(state.progress.late_events, 2);
        assert_eq!(state.panes.keys().copied().collect::<Vec<_>>(), [0, 1_000]);
        let mut converted = WindowedKpis::restore(&window, crate::LexiconScorer, state).unwrap();

        let mut fresh = WindowedKpis::new(&window).unwrap();
        for event in events {
            fresh.observe(0, event, 0);
        }
        assert_eq!(converted.finish(), fresh.finish());
        let txn = db.begin_read().unwrap();
        assert!(txn
            .open_table(OPERATOR)
            .unwrap()
            .get(LEGACY_KEY)
            .unwrap()
            .is_none());
    }

    #[test]
    fn conversations_are_forgotten_oldest_first_including_ones_stored_before_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = tidewater_engine::open_state_db(&dir.path().join("a.redb")).unwrap();
        // Remembered before the time index existed.
        let txn = db.begin_write().unwrap();
        txn.open_table(CONVERSATIONS)
            .unwrap()
            .insert("old", (50, "m", "q-old"))
            .unwrap();
        txn.commit().unwrap();
        create_tables(&db, &WindowConfig::default()).unwrap();

        let txn = db.begin_write().unwrap();
        let mut conversations = Conversations::open(&txn).unwrap();
        conversations.remember("a", 100, "m1", "q-a").unwrap();
        conversations
            .remember("a", 400, "m2", "later copy")
            .unwrap();
        conversations.remember("b", 200, "m1", "q-b").unwrap();
        conversations.remember("c", 300, "m1", "q-c").unwrap();
        assert_eq!(
            conversations.get("a").unwrap(),
            Some(("m1".into(), "q-a".into())),
            "the first conversation with an id is kept"
        );
        conversations.forget_before(200).unwrap();
        let known = |c: &Conversations, id| c.get(id).unwrap().is_some();
        assert!(!known(&conversations, "old"));
        assert!(!known(&conversations, "a"));
        assert!(known(&conversations, "b"), "the horizon itself is kept");
        assert!(known(&conversations, "c"));
        conversations.forget_before(u64::MAX).unwrap();
        assert!(conversations.by_time.first().unwrap().is_none());
        assert!(conversations.by_id.first().unwrap().is_none());
    }
}
