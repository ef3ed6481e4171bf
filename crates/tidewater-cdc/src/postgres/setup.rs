//! Connecting, checking that the server and tables can be captured, and managing the
//! replication slot. Each check fails with the statement that fixes it.

use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::config::TableName;
use super::error::PostgresError;
use super::state::Lsn;

/// What the source knows about one captured table.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub name: TableName,
    /// Columns in table order with their type OIDs.
    pub columns: Vec<(String, u32)>,
    /// The columns that identify a row: the primary key, else the replica-identity
    /// index, else (with `REPLICA IDENTITY FULL` and no key) every column.
    pub key_columns: Vec<String>,
}

impl TableInfo {
    /// The key of a row, `None` when a key column is missing.
    pub fn key_of(&self, row: &Map<String, Value>) -> Option<Map<String, Value>> {
        self.key_columns
            .iter()
            .map(|c| row.get(c).map(|v| (c.clone(), v.clone())))
            .collect()
    }
}

/// Connects and sets the session so that values print the same way in the snapshot and in
/// wal2json's output (both use the session's output functions).
pub(crate) async fn connect(dsn: &str) -> Result<Client, PostgresError> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .map_err(|source| PostgresError::Connect { source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed with an error");
        }
    });
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'",
        )
        .await
        .map_err(PostgresError::query(
            "setting the session's time zone and date style",
        ))?;
    Ok(client)
}

/// Checks `wal_level` and the role's right to use replication slots; returns the
/// database name.
pub(crate) async fn preflight(client: &Client) -> Result<String, PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_user::text, current_database()::text, \
                    r.rolsuper OR r.rolreplication \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(PostgresError::query(
            "reading wal_level and the role's attributes",
        ))?;
    let wal_level: String = row.get(0);
    if wal_level != "logical" {
        return Err(PostgresError::WalLevel { actual: wal_level });
    }
    let role: String = row.get(1);
    let database: String = row.get(2);
    let allowed: bool = row.get(3);
    if !allowed {
        return Err(PostgresError::Privilege { role });
    }
    Ok(database)
}

/// Looks the table up and works out its key; fails when updates and deletes of it could
/// not be attributed to a row.
pub(crate) async fn table_info(
    client: &Client,
    name: &TableName,
) -> Result<TableInfo, PostgresError> {
    let rel = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, c.relkind::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&name.schema, &name.table],
        )
        .await
        .map_err(PostgresError::query("looking up a configured table"))?
        .ok_or_else(|| PostgresError::TableMissing {
            table: name.to_string(),
        })?;
    let oid: u32 = rel.get(0);
    let replident: String = rel.get(1);
    let relkind: String = rel.get(2);
    if relkind != "r" {
        return Err(PostgresError::Config {
            reason: format!(
                "{name} is not an ordinary table (relkind {relkind:?}); capture its partitions \
                 or the table itself"
            ),
        });
    }
    let columns = client
        .query(
            "SELECT attname::text, atttypid FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(PostgresError::query("reading a table's columns"))?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, u32>(1)))
        .collect::<Vec<_>>();
    let index_columns = |primary: bool| async move {
        let flag = if primary {
            "indisprimary"
        } else {
            "indisreplident"
        };
        let sql = format!(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.{flag} ORDER BY k.ord"
        );
        client
            .query(&sql, &[&oid])
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
            .map_err(PostgresError::query("reading a table's key columns"))
    };
    let missing = |why: &str| PostgresError::NoReplicaIdentity {
        table: name.to_string(),
        why: why.to_owned(),
    };
    let pk = index_columns(true).await?;
    let key_columns = match replident.as_str() {
        "n" => return Err(missing("REPLICA IDENTITY NOTHING")),
        "d" if pk.is_empty() => return Err(missing("no primary key")),
        "d" => pk,
        "i" => {
            let idx = index_columns(false).await?;
            if idx.is_empty() {
                return Err(missing("the replica identity index is gone"));
            }
            idx
        }
        // FULL: the old row is logged whole, so with no primary key the whole row is
        // the key.
        _ if !pk.is_empty() => pk,
        _ => columns.iter().map(|(c, _)| c.clone()).collect(),
    };
    Ok(TableInfo {
        name: name.clone(),
        columns,
        key_columns,
    })
}

/// The slot's output plugin and confirmed position, `None` if it does not exist.
pub(crate) async fn slot_info(
    client: &Client,
    slot: &str,
) -> Result<Option<(String, Lsn)>, PostgresError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, confirmed_flush_lsn::text FROM pg_replication_slots \
             WHERE slot_name = $1 AND slot_type = 'logical'",
            &[&slot],
        )
        .await
        .map_err(PostgresError::query("looking up the replication slot"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let plugin: Option<String> = row.get(0);
    let confirmed: Option<String> = row.get(1);
    let confirmed = match confirmed {
        Some(l) => parse_lsn(&l)?,
        None => Lsn(0),
    };
    Ok(Some((plugin.unwrap_or_default(), confirmed)))
}

/// Creates the slot; returns its consistent point. Waits for transactions running now to
/// finish, which is PostgreSQL's way of finding a point from which every later commit is
/// decoded whole.
pub(crate) async fn create_slot(client: &Client, slot: &str) -> Result<Lsn, PostgresError> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json')",
            &[&slot],
        )
        .await
        .map_err(|source| {
            if source.code() == Some(&SqlState::UNDEFINED_FILE) {
                PostgresError::PluginMissing { source }
            } else {
                PostgresError::Query {
                    what: "creating the replication slot",
                    source,
                }
            }
        })?;
    parse_lsn(&row.get::<_, String>(0))
}

/// Drops the slot.
pub(crate) async fn drop_slot(client: &Client, slot: &str) -> Result<(), PostgresError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(PostgresError::query("dropping the replication slot"))?;
    Ok(())
}

pub(crate) fn parse_lsn(s: &str) -> Result<Lsn, PostgresError> {
    s.parse().map_err(|reason| PostgresError::Decode {
        what: "an LSN".to_owned(),
        reason,
    })
}
