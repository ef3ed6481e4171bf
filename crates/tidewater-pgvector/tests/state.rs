//! Pipeline state in PostgreSQL (`PgStateStore`): a redb database on it commits, is
//! taken over whole by the next owner, refuses its previous owner's writes, and is read
//! by others through snapshots. Against a real PostgreSQL started by
//! `scripts/pgvector.sh`; each test uses a table prefix of its own.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tidewater_engine::{empty_state_image, open_state_db_on, state_db_from_image};
use tidewater_pgvector::{PgAdvisoryLock, PgStateStore, PgVectorConfig, PgVectorError};
use tidewater_testkit::PgVectorServer;

const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");

fn store(prefix: &str, name: &str) -> PgStateStore {
    let config = PgVectorConfig {
        table_prefix: prefix.to_owned(),
        ..PgVectorConfig::new(PgVectorServer::shared().dsn())
    };
    PgStateStore::open(&config, name).expect("opening the state store")
}

fn acquire(store: &PgStateStore) -> redb::Database {
    let image = empty_state_image().expect("empty image");
    let backend = store.acquire(&image).expect("acquiring");
    open_state_db_on(backend, "test state").expect("opening the state")
}

/// Writes rows `from..to`, each 3 kB (so that commits touch many blocks), in one commit.
fn put(db: &redb::Database, from: u64, to: u64) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(ROWS)?;
        for i in from..to {
            table.insert(i, vec![(i % 251) as u8; 3000].as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn rows(db: &redb::Database) -> Vec<(u64, usize, u8)> {
    let txn = db.begin_read().unwrap();
    let Ok(table) = txn.open_table(ROWS) else {
        return Vec::new();
    };
    table
        .iter()
        .unwrap()
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (k.value(), v.value().len(), v.value()[0])
        })
        .collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<(u64, usize, u8)> {
    range.map(|i| (i, 3000, (i % 251) as u8)).collect()
}

#[test]
fn the_next_owner_takes_over_every_commit_and_the_previous_one_is_refused() {
    let (first, second) = (
        store("st_takeover", "profiles"),
        store("st_takeover", "profiles"),
    );
    let old = acquire(&first);
    put(&old, 0, 200).unwrap();
    put(&old, 200, 400).unwrap();

    // Another process takes the store over: it sees both commits.
    let new = acquire(&second);
    assert_eq!(rows(&new), expected(0..400));

    // The previous owner's next commit is refused, and changes nothing.
    let refused = put(&old, 400, 500).expect_err("the previous owner is fenced");
    let taken = std::error::Error::source(&refused)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<PgVectorError>());
    assert!(
        matches!(taken, Some(PgVectorError::StateTaken { store }) if store == "profiles")
            || refused.to_string().contains("taken over"),
        "refused with {refused}"
    );
    drop(old);
    put(&new, 400, 450).unwrap();
    drop(new);

    // A third owner sees exactly the second owner's commits.
    let third = acquire(&store("st_takeover", "profiles"));
    assert_eq!(rows(&third), expected(0..450));
}

#[test]
fn a_store_never_written_starts_as_an_empty_database_and_names_are_separate() {
    let (profiles, analytics) = (
        store("st_names", "profiles"),
        store("st_names", "analytics"),
    );
    assert!(
        profiles.snapshot(None).unwrap().is_none(),
        "nothing stored yet"
    );
    let db = acquire(&profiles);
    assert!(rows(&db).is_empty());
    put(&db, 0, 3).unwrap();
    let other = acquire(&analytics);
    assert!(rows(&other).is_empty(), "another name is another image");
    drop(db);
    assert_eq!(rows(&acquire(&profiles)), expected(0..3));
}

#[test]
fn snapshots_follow_the_owner_fetching_what_changed() {
    let (owner_store, reader) = (store("st_snapshot", "kpis"), store("st_snapshot", "kpis"));
    let owner = acquire(&owner_store);
    put(&owner, 0, 100).unwrap();

    let snapshot = reader.snapshot(None).unwrap().expect("stored");
    let first_version = snapshot.version;
    assert_eq!(
        rows(&state_db_from_image(snapshot.bytes.clone(), "snapshot").unwrap()),
        expected(0..100)
    );

    // Unchanged: the same snapshot back.
    let same = reader.snapshot(Some(snapshot)).unwrap().unwrap();
    assert_eq!(same.version, first_version);

    // The owner commits twice more, deleting some rows: the patched copy equals a whole
    // load, and both read as the owner does.
    put(&owner, 100, 300).unwrap();
    {
        let txn = owner.begin_write().unwrap();
        {
            let mut table = txn.open_table(ROWS).unwrap();
            for i in 0..150 {
                table.remove(i).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let patched = reader.snapshot(Some(same)).unwrap().unwrap();
    let whole = reader.snapshot(None).unwrap().unwrap();
    assert!(patched.version > first_version);
    assert_eq!(patched.version, whole.version);
    assert!(
        patched.bytes == whole.bytes,
        "the patched copy equals a whole load"
    );
    assert_eq!(
        rows(&state_db_from_image(patched.bytes, "snapshot").unwrap()),
        expected(150..300)
    );
    assert_eq!(rows(&owner), expected(150..300));
}

#[test]
fn a_lease_lock_has_one_holder_and_is_freed_when_its_session_ends() {
    let config = PgVectorConfig {
        table_prefix: "st_lock".to_owned(),
        ..PgVectorConfig::new(PgVectorServer::shared().dsn())
    };
    let lock = |name: &str| PgAdvisoryLock::new(&config, name).expect("lock");
    let (mut first, mut second) = (lock("profiles"), lock("profiles"));
    assert!(first.try_lock().unwrap());
    assert!(!second.try_lock().unwrap(), "one holder at a time");
    assert!(
        lock("analytics").try_lock().unwrap(),
        "another name, another lock"
    );
    assert!(first.check().unwrap());
    first.unlock();
    assert!(second.try_lock().unwrap(), "freed by unlock");

    // The holder's session is ended behind its back (what its process dying does): the
    // lock is free at once, and the holder finds out at its next check.
    let mut admin = postgres::Client::connect(PgVectorServer::shared().dsn(), postgres::NoTls)
        .expect("connecting");
    let ended = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
               AND classid::bigint = $1 AND objid = hashtext('st_lock.profiles')::oid",
            &[&(0x5457_4C53_i64)],
        )
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(ended, 1);
    let mut third = lock("profiles");
    assert!(third.try_lock().unwrap(), "free once the session ended");
    assert!(
        second.check().is_err(),
        "the previous holder learns it lost the lock"
    );
    assert!(!second.try_lock().unwrap());
}
