//! The analytics pipeline: consumes the conversations and feedback topics in log order,
//! runs the [`crate::WindowedKpis`] operator, and commits its state, the closed windows'
//! KPIs and every consumed offset in one redb transaction. Closed windows go to the
//! `kpis` topic, late events to the `late` topic and unreadable events to
//! `analytics.dead-letters`, each through an exactly-once [`tidewater_engine::Outbox`].

pub(crate) mod config;
pub(crate) mod runner;
pub(crate) mod state;
