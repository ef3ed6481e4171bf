//! Crash consistency: a child process appends from several threads and reports every
//! acknowledged record on stdout; the parent kills it with SIGKILL at a random moment,
//! reopens the log and checks that every acknowledged record is back, intact and at the
//! position it was acknowledged at, that nothing half-written is visible, and that no
//! offset is ever handed out twice (offsets increase; after a crash the log resumes
//! after the offsets it had reserved, so they need not be dense). Repeated on one directory, so each run also recovers what the
//! previous kills left behind. Every third round a torn tail is also injected before
//! recovery (see [`inject_torn_tail`]).
//!
//! The child is this test binary re-invoked as `--exact child_writer` with
//! `TIDEWATER_LOG_CRASH_CHILD` naming the log directory.

#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rand::Rng;
use tidewater_log::{
    partition_for_key, EmbeddedLog, EmbeddedLogConfig, Log, NewRecord, Position, Record,
    TopicConfig,
};

/// Set in the child: the log directory to write to.
const CHILD_ENV: &str = "TIDEWATER_LOG_CRASH_CHILD";
/// Set in the child: the first sequence number it may use.
const START_ENV: &str = "TIDEWATER_LOG_CRASH_START";
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 3;
const CHILD_THREADS: usize = 4;
/// Kill rounds; every twelfth kills the child during start-up and recovery instead.
const ROUNDS: u64 = 100;
/// Sequence numbers available to one child.
const SEQ_PER_ROUND: u64 = 1_000_000;

fn log_config() -> EmbeddedLogConfig {
    // Small segments so that rolling happens while the child is being killed.
    EmbeddedLogConfig {
        segment_bytes: 256 * 1024,
        ..EmbeddedLogConfig::default()
    }
}

fn topic_config() -> TopicConfig {
    TopicConfig {
        partitions: PARTITIONS,
        ..TopicConfig::default()
    }
}

/// SplitMix64: a cheap deterministic stream for record contents.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The record with sequence number `seq`. Its value starts with `seq`, so a record read
/// back can be matched with what it must be; one in sixteen is larger than 64 KiB.
fn record_for(seq: u64) -> NewRecord {
    let mut state = seq;
    let len = if seq % 16 == 5 {
        64 * 1024 + (splitmix(&mut state) % (64 * 1024)) as usize
    } else {
        8 + (splitmix(&mut state) % 1500) as usize
    };
    let mut value = Vec::with_capacity(len + 8);
    value.extend_from_slice(&seq.to_le_bytes());
    while value.len() < len {
        value.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    value.truncate(len);
    // One in five records has no key and goes round-robin.
    let key = match seq % 5 {
        0 => None,
        _ => Some(format!("key-{}", seq % 11).into_bytes()),
    };
    NewRecord {
        key,
        value,
        timestamp_ms: seq as i64,
        headers: Vec::new(),
    }
}

fn seq_of(record: &Record) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&record.value[..8]);
    u64::from_le_bytes(raw)
}

/// The child: appends until killed, printing `ack <seq> <partition> <offset>` for every
/// record once its append returned.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let start: u64 = std::env::var(START_ENV)
        .expect("start env")
        .parse()
        .expect("start number");
    let log = EmbeddedLog::open(&dir, log_config()).expect("child opens the log");
    log.ensure_topic(TOPIC, &topic_config()).expect("topic");
    write_line("ready\n");
    let next = Arc::new(AtomicU64::new(start));
    // A safety net should the parent die without killing the child.
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|_| {
            let log = Arc::clone(&log);
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let first = next.load(Ordering::Relaxed);
                    let count = 1 + first % 3;
                    let first = next.fetch_add(count, Ordering::Relaxed);
                    let seqs: Vec<u64> = (first..first + count).collect();
                    let positions = log
                        .append(TOPIC, seqs.iter().map(|&seq| record_for(seq)).collect())
                        .expect("append");
                    let mut lines = String::new();
                    for (seq, position) in seqs.iter().zip(positions) {
                        lines.push_str(&format!(
                            "ack {seq} {} {}\n",
                            position.partition, position.offset
                        ));
                    }
                    write_line(&lines);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
}

fn write_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).expect("stdout");
    stdout.flush().expect("flush stdout");
}

/// What the parent learned from one child.
struct ChildRun {
    acked: Vec<(u64, Position)>,
    killed_while_writing: bool,
}

fn run_child(dir: &Path, round: u64, rng: &mut impl Rng) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(START_ENV, (round * SEQ_PER_ROUND).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Only complete lines count: the kill may cut the last one short.
        while stdout.read_line(&mut line).is_ok_and(|read| read > 0) && line.ends_with('\n') {
            if lines_tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });

    let early_kill = round % 12 == 11;
    let mut lines = Vec::new();
    if early_kill {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=30)));
    } else {
        loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child never became ready");
            // The test harness may have printed "test child_writer ... " on the same line.
            let ready = line.ends_with("ready\n");
            lines.push(line);
            if ready {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(5..=80)));
    }
    child.kill().expect("kill child");
    let status = child.wait().expect("wait for child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL, not on its own: {status}"
    );
    reader.join().expect("stdout reader");
    lines.extend(lines_rx.try_iter());

    let acked = lines
        .iter()
        .filter_map(|line| line.strip_prefix("ack "))
        .map(|fields| {
            let fields: Vec<u64> = fields
                .split_whitespace()
                .map(|field| field.parse().expect("number"))
                .collect();
            (
                fields[0],
                Position {
                    partition: fields[1] as u32,
                    offset: fields[2],
                },
            )
        })
        .collect();
    ChildRun {
        acked,
        killed_while_writing: !early_kill,
    }
}

/// A SIGKILL rarely interrupts a single `write` call, so torn tails are also injected:
/// bytes a write cut short by a crash or a power loss could leave after the last record
/// of a partition (random bytes, or zeros from a file extended without its data).
fn inject_torn_tail(dir: &Path, rng: &mut impl Rng) {
    let partition_dir = dir
        .join("topics")
        .join(TOPIC)
        .join(rng.random_range(0..PARTITIONS).to_string());
    let Ok(entries) = fs_err::read_dir(&partition_dir) else {
        return;
    };
    let last = entries
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .max()
        .expect("a segment");
    // A kill between creating a segment file and writing its 24-byte header leaves a file
    // shorter than the header, which recovery repairs on its own. Nothing is ever written
    // after a header that was not written completely, so a torn record cannot follow it.
    if fs_err::metadata(&last).expect("segment metadata").len() < 24 {
        return;
    }
    let garbage: Vec<u8> = if rng.random_bool(0.5) {
        (0..rng.random_range(1..=300))
            .map(|_| rng.random())
            .collect()
    } else {
        vec![0; rng.random_range(1..=8192)]
    };
    let mut file = fs_err::OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("open last segment");
    file.write_all(&garbage).expect("inject torn tail");
}

/// Reopens the log and checks it against everything acknowledged so far and everything
/// found after the previous kill. Returns what it found now.
fn verify(
    dir: &Path,
    round: u64,
    acked: &HashMap<u64, Position>,
    previous: &HashMap<u64, Position>,
) -> HashMap<u64, Position> {
    let log = EmbeddedLog::open(dir, log_config()).expect("log reopens after a kill");
    let mut found = HashMap::new();
    if log.topics().expect("topics").is_empty() {
        assert!(acked.is_empty(), "the topic vanished");
        return found;
    }
    for partition in 0..PARTITIONS {
        let range = log.range(TOPIC, partition).expect("range");
        assert_eq!(range.start, 0);
        let mut next = 0;
        loop {
            let page = log
                .read(TOPIC, partition, next, 256)
                .expect("read after recovery");
            if page.is_empty() {
                break;
            }
            for record in page {
                assert!(record.offset >= next, "offsets increase");
                next = record.offset;
                let seq = seq_of(&record);
                let position = Position {
                    partition,
                    offset: next,
                };
                assert!(
                    seq / SEQ_PER_ROUND <= round,
                    "record {seq} was never written"
                );
                // Records already checked byte by byte after an earlier kill are protected
                // by their checksum; only new ones are compared in full.
                if previous.get(&seq) != Some(&position) {
                    let expected = record_for(seq);
                    assert_eq!(record.key, expected.key, "key of record {seq}");
                    assert!(
                        record.value == expected.value,
                        "value of record {seq} is damaged"
                    );
                    assert_eq!(record.timestamp_ms, expected.timestamp_ms);
                    if let Some(key) = &expected.key {
                        assert_eq!(
                            partition,
                            partition_for_key(key, PARTITIONS),
                            "record {seq} routed by key"
                        );
                    }
                }
                assert!(
                    found.insert(seq, position).is_none(),
                    "record {seq} appears twice"
                );
                next += 1;
            }
        }
        assert_eq!(next, range.end, "partition {partition} reads up to its end");
    }
    for (seq, position) in acked {
        assert_eq!(
            found.get(seq),
            Some(position),
            "acknowledged record {seq} lost or moved"
        );
    }
    for (seq, position) in previous {
        assert_eq!(
            found.get(seq),
            Some(position),
            "recovered record {seq} lost by a later recovery"
        );
    }
    found
}

#[test]
fn crash_consistency_kill9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, Position> = HashMap::new();
    let mut acked_at: HashMap<Position, u64> = HashMap::new();
    let mut found = HashMap::new();
    let mut kills_while_writing = 0;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let run = run_child(dir.path(), round, &mut rng);
        kills_while_writing += usize::from(run.killed_while_writing);
        for (seq, position) in run.acked {
            assert!(
                acked.insert(seq, position).is_none(),
                "sequence {seq} acknowledged twice"
            );
            if let Some(earlier) = acked_at.insert(position, seq) {
                panic!("{position:?} was handed out twice: to record {earlier}, then to {seq}");
            }
        }
        if round % 3 == 1 {
            inject_torn_tail(dir.path(), &mut rng);
        }
        found = verify(dir.path(), round, &acked, &found);
    }
    let unacknowledged = found.len() - acked.len();
    eprintln!(
        "crash test: {ROUNDS} kills ({kills_while_writing} while writing) in {:.1?}, \
         {} acknowledged records recovered, {unacknowledged} more complete but unacknowledged",
        started.elapsed(),
        acked.len(),
    );
    assert!(kills_while_writing >= 50);
    assert!(
        acked.len() > 100,
        "the children acknowledged too little to test anything"
    );
}
