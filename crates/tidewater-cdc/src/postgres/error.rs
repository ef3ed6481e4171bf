//! Errors of the PostgreSQL source, each saying what to run when the fix is on the
//! database side.

use std::path::PathBuf;

use tidewater_core::redact::redact;
use tidewater_core::{ErrorDomain, RetryHint};

use tidewater_core::WriteError;

/// Why the PostgreSQL source stopped or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresError {
    /// The configuration is invalid.
    #[error("postgres source config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server does not write logical decoding information.
    #[error(
        "PostgreSQL runs with wal_level = {actual}, logical decoding needs `logical`: \
         set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) \
         and restart the server"
    )]
    WalLevel {
        /// The server's `wal_level`.
        actual: String,
    },
    /// The role may not use replication slots.
    #[error(
        "role {role:?} may not use logical replication: run ALTER ROLE \"{role}\" WITH REPLICATION \
         (as a superuser), or connect as a role that has it"
    )]
    Privilege {
        /// The connected role.
        role: String,
    },
    /// The `wal2json` output plugin is not installed on the server.
    #[error(
        "the wal2json output plugin is not installed on the PostgreSQL server: install it \
         (Debian/Ubuntu: apt-get install postgresql-<major>-wal2json, e.g. postgresql-15-wal2json) \
         and retry: {source}"
    )]
    PluginMissing {
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The slot exists but decodes with another plugin.
    #[error(
        "replication slot {slot:?} uses the output plugin {plugin:?}, this source needs wal2json: \
         pick another slot name or drop it with SELECT pg_drop_replication_slot('{slot}')"
    )]
    SlotPlugin {
        /// The slot.
        slot: String,
        /// The plugin it was created with.
        plugin: String,
    },
    /// The progress file says the snapshot completed, but the slot is gone: changes since
    /// then are lost, so resuming would silently skip them.
    #[error(
        "replication slot {slot:?} no longer exists although {state:?} records a completed \
         snapshot: changes made since it was dropped cannot be recovered; delete {state:?} to \
         take a new snapshot"
    )]
    SlotLost {
        /// The slot.
        slot: String,
        /// The progress file.
        state: PathBuf,
    },
    /// A configured table does not exist (or the role cannot see it).
    #[error("table {table} does not exist (or the role has no access to its schema)")]
    TableMissing {
        /// `schema.table`.
        table: String,
    },
    /// A configured table has no key that identifies its rows in updates and deletes.
    #[error(
        "table {table} has no usable replica identity ({why}): add a primary key, or run \
         ALTER TABLE {table} REPLICA IDENTITY FULL"
    )]
    NoReplicaIdentity {
        /// `schema.table`.
        table: String,
        /// What is missing.
        why: String,
    },
    /// The tables differ from those the snapshot covered.
    #[error(
        "the configured tables {configured:?} differ from those snapshotted {snapshotted:?} (in \
         {state:?}): a new table needs a snapshot; drop the slot and delete the progress file \
         to take a new one"
    )]
    TablesChanged {
        /// Tables now configured.
        configured: Vec<String>,
        /// Tables recorded in the progress file.
        snapshotted: Vec<String>,
        /// The progress file.
        state: PathBuf,
    },
    /// Connecting to the server failed. The driver's message is shown with any password
    /// in it masked (a malformed connection string can be echoed back).
    #[error("connecting to PostgreSQL: {}", redact(&.source.to_string()))]
    Connect {
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL: {what}: {source}")]
    Query {
        /// What the statement was for.
        what: &'static str,
        /// The driver's error, with the server's message.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A value returned by the server could not be understood (wal2json output, an LSN).
    #[error("PostgreSQL returned {what} that cannot be read: {reason}")]
    Decode {
        /// What was read.
        what: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// Reading or writing the progress file failed.
    #[error("progress file: {source}")]
    StateIo {
        /// The I/O error, naming the file.
        #[source]
        source: std::io::Error,
    },
    /// The progress file is not what this source writes.
    #[error("progress file {path:?} is corrupt: {source}")]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The sink did not take the events; the slot was not advanced.
    #[error("the sink did not store the events: {0}")]
    Sink(#[source] WriteError),
}

impl PostgresError {
    /// Who is at fault: the configuration (or the database's setup, which the operator
    /// must change) is [`ErrorDomain::User`]; a failing server or disk is
    /// [`ErrorDomain::External`]; output this source cannot read is [`ErrorDomain::Internal`].
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::Config { .. }
            | Self::WalLevel { .. }
            | Self::Privilege { .. }
            | Self::PluginMissing { .. }
            | Self::SlotPlugin { .. }
            | Self::SlotLost { .. }
            | Self::TableMissing { .. }
            | Self::NoReplicaIdentity { .. }
            | Self::TablesChanged { .. } => ErrorDomain::User,
            Self::Connect { .. } | Self::Query { .. } | Self::StateIo { .. } | Self::Sink(_) => {
                ErrorDomain::External
            }
            Self::Decode { .. } | Self::StateCorrupt { .. } => ErrorDomain::Internal,
        }
    }

    /// Whether running again (after a back-off) may succeed without anyone changing anything.
    pub fn retry_hint(&self) -> RetryHint {
        match self.domain() {
            ErrorDomain::External => RetryHint::Retry,
            _ => RetryHint::Fatal,
        }
    }

    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Query { what, source }
    }
}
