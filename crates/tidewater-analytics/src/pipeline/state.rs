//! The analytics pipeline's tables in its state database.

use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use crate::{Error, OperatorState, WindowResult};

/// The operator's state (JSON of [`OperatorState`]) under the key `operator`.
pub(crate) const OPERATOR: TableDefinition<&str, &[u8]> =
    TableDefinition::new("analytics_operator");
/// Closed windows' KPIs by window start (JSON of [`WindowResult`]).
pub(crate) const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("analytics_results");
/// Conversations remembered for joining later feedback: id → (event time, model, question).
pub(crate) const CONVERSATIONS: TableDefinition<&str, (u64, &str, &str)> =
    TableDefinition::new("analytics_conversations");

/// Creates the tables, so queries work before the first event.
pub(crate) fn create_tables(db: &Database) -> Result<(), Error> {
    let txn = db.begin_write()?;
    txn.open_table(OPERATOR)?;
    txn.open_table(RESULTS)?;
    txn.open_table(CONVERSATIONS)?;
    txn.commit()?;
    Ok(())
}

/// The committed operator state (empty before the first batch).
pub(crate) fn load_operator(db: &Database) -> Result<OperatorState, Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OPERATOR)?;
    match table.get("operator")? {
        Some(json) => serde_json::from_slice(json.value())
            .map_err(|e| Error::Corrupt(format!("operator state: {e}"))),
        None => Ok(OperatorState::default()),
    }
}

/// Stores the operator state inside `txn`.
pub(crate) fn save_operator(txn: &WriteTransaction, state: &OperatorState) -> Result<(), Error> {
    let json = serde_json::to_vec(state).map_err(|e| Error::Corrupt(e.to_string()))?;
    txn.open_table(OPERATOR)?
        .insert("operator", json.as_slice())?;
    Ok(())
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
