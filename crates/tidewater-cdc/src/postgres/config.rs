//! Configuration of the PostgreSQL source.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_core::redact::redact;

use super::error::PostgresError;

/// Where to read changes from and how.
///
/// Its `Debug` masks the password of the connection string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The connection string, in libpq's `key=value` or URL form, e.g.
    /// `host=127.0.0.1 port=5432 user=tidewater dbname=app`. The role needs the
    /// `REPLICATION` attribute (or superuser) and `SELECT` on the tables.
    pub dsn: String,
    /// The logical replication slot this source owns. One slot per source: two sources
    /// sharing a slot would each advance it past the other's undelivered changes.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// The tables to capture, as `schema.table` with the names as the catalog spells them
    /// (unquoted, case-sensitive), e.g. `public.customers`.
    pub tables: Vec<String>,
    /// The most changes read from the slot, and events handed to the sink, in one round.
    /// A transaction is never split, so a round may hold more.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long to wait before the next round when the last one found nothing.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_slot() -> String {
    "tidewater".to_owned()
}

fn default_batch_size() -> usize {
    1000
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(200)
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the connection string's password must not reach logs.
        f.debug_struct("PostgresConfig")
            .field("dsn", &redact(&self.dsn))
            .field("slot", &self.slot)
            .field("tables", &self.tables)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration with the defaults for everything but the connection and tables.
    pub fn new(dsn: impl Into<String>, tables: Vec<String>) -> Self {
        Self {
            dsn: dsn.into(),
            slot: default_slot(),
            tables,
            batch_size: default_batch_size(),
            poll_interval: default_poll_interval(),
        }
    }

    /// Checks what can be checked without a database (the source does when it starts;
    /// `tidewater check-config` too).
    pub fn validate(&self) -> Result<(), PostgresError> {
        self.table_names().map(|_| ())
    }

    /// Checks what can be checked without a database and splits the table names.
    pub(crate) fn table_names(&self) -> Result<Vec<TableName>, PostgresError> {
        let bad = |reason: String| PostgresError::Config { reason };
        // Slot names are restricted by PostgreSQL to these characters; checking here
        // gives the reason before a connection is made.
        if self.slot.is_empty()
            || self.slot.len() > 63
            || !self
                .slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad(format!(
                "slot {:?}: a slot name is 1 to 63 lower-case letters, digits and underscores",
                self.slot
            )));
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size must be at least 1".to_owned()));
        }
        if self.tables.is_empty() {
            return Err(bad("tables: name at least one `schema.table`".to_owned()));
        }
        let mut names = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            let name = TableName::parse(t).ok_or_else(|| {
                bad(format!(
                    "table {t:?}: expected `schema.table`, e.g. `public.customers`"
                ))
            })?;
            if names.contains(&name) {
                return Err(bad(format!("table {t:?} is listed twice")));
            }
            names.push(name);
        }
        Ok(names)
    }
}

/// A schema-qualified table name as the catalog spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    fn parse(s: &str) -> Option<Self> {
        let (schema, table) = s.split_once('.')?;
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return None;
        }
        Some(Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
        })
    }

    /// The name quoted for SQL: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The name as wal2json's `add-tables` option reads it: `.`, `,`, `*` and `\` are
    /// escaped with a backslash so that they are taken literally.
    pub fn wal2json_filter(&self) -> String {
        fn escape(s: &str) -> String {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if matches!(c, '.' | ',' | '*' | '\\' | ' ') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        format!("{}.{}", escape(&self.schema), escape(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Quotes an identifier for SQL, doubling embedded quotes.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let c: PostgresConfig =
            serde_json::from_str(r#"{"dsn":"host=x","tables":["public.a"]}"#).unwrap();
        assert_eq!(c.slot, "tidewater");
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.poll_interval, Duration::from_millis(200));
        let c: PostgresConfig = serde_json::from_str(
            r#"{"dsn":"host=x","tables":["public.a"],"poll_interval":"1s","batch_size":5}"#,
        )
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(1));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<PostgresConfig, _> =
            serde_json::from_str(r#"{"dsn":"x","tables":[],"slots":"y"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = PostgresConfig::new("x", vec!["customers".into()]);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("schema.table"));
        c.tables = vec!["public.a".into()];
        c.slot = "Bad-Slot".into();
        assert!(c.validate().unwrap_err().to_string().contains("slot"));
        c.slot = "ok_1".into();
        c.validate().unwrap();
        assert_eq!(c.table_names().unwrap()[0].quoted(), "\"public\".\"a\"");
    }

    #[test]
    fn n5_debug_masks_the_password() {
        for dsn in [
            "postgres://tw:s3cr3tpw@127.0.0.1:1/x",
            "host=h user=tw password=s3cr3tpw dbname=x",
            "host=h password='s3cr3tpw' dbname=x",
        ] {
            let shown = format!("{:?}", PostgresConfig::new(dsn, vec!["public.t".into()]));
            assert!(
                !shown.contains("s3cr3tpw") && shown.contains("***"),
                "{shown}"
            );
        }
    }

    #[test]
    fn wal2json_filter_escapes() {
        let t = TableName {
            schema: "s".into(),
            table: "a,b".into(),
        };
        assert_eq!(t.wal2json_filter(), "s.a\\,b");
    }
}
