//! Several Tidewater processes as one cluster: Kafka as the log (a real broker, Tansu),
//! PostgreSQL/pgvector as the shared index, a 12-partition documents topic. The SQuAD
//! paragraphs, then edits and deletes, are written to whichever member answers, while
//! members are SIGKILLed and restarted, a fourth joins, one leaves and the broker restarts.
//! Afterwards the pgvector rows (chunk ids, texts, vector checksums) equal those of one
//! embedded process fed the same writes, and every member answers fixed queries alike.
#![cfg(feature = "kafka")]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::*;
use tidewater_pgvector::{PgVectorConfig, PgVectorStore};
use tidewater_testkit::{KafkaBroker, PgVectorServer};

/// Dimension of the test embedding endpoint's vectors.
const DIMENSION: usize = 64;

/// One write: a document's new text, or its deletion.
#[derive(Clone)]
enum Write {
    Put(String, String),
    Delete(String),
}

/// The SQuAD paragraphs as documents, then edits of some and deletions of others.
fn writes() -> Vec<Write> {
    let squad: Value = serde_json::from_str(
        &std::fs::read_to_string(shared_data().join("squad-v2-dev-subset.json")).unwrap(),
    )
    .unwrap();
    let mut paragraphs = Vec::new();
    for article in squad["data"].as_array().unwrap() {
        for paragraph in article["paragraphs"].as_array().unwrap() {
            paragraphs.push(paragraph["context"].as_str().unwrap().to_owned());
        }
    }
    let id = |i: usize| format!("squad-{i:03}");
    let mut writes: Vec<Write> = paragraphs
        .iter()
        .enumerate()
        .map(|(i, text)| Write::Put(id(i), text.clone()))
        .collect();
    for (i, text) in paragraphs.iter().enumerate().step_by(4) {
        writes.push(Write::Put(
            id(i),
            format!("{text} Revised: the tide turned at noon."),
        ));
    }
    for i in (1..paragraphs.len()).step_by(5) {
        writes.push(Write::Delete(id(i)));
    }
    writes
}

fn config(dir: &Path, log: &str, dsn: &str, prefix: &str, embeddings: &str) -> PathBuf {
    let path = dir.join(format!("{prefix}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"{log}
[knowledge.topic_config]
partitions = 12

[knowledge.index]
backend = "pgvector"

[knowledge.index.pgvector]
dsn = "{dsn}"
table_prefix = "{prefix}"

[embedding]
backend = "openai"
base_url = "{embeddings}"
model = "stub"
dimension = {DIMENSION}

[reconcile]
on_start = false
interval = "0s"

[lake]
enabled = false
"#
        ),
    )
    .unwrap();
    path
}

/// Sends one write; `None` when the member did not acknowledge it.
fn send(member: &Tidewater, write: &Write) -> Option<()> {
    let (method, id, body) = match write {
        Write::Put(id, text) => ("PUT", id, Some(json!({"text": text}).to_string())),
        Write::Delete(id) => ("DELETE", id, None),
    };
    let path = format!("/v1/documents/{id}");
    match member.try_request(method, &path, body.as_deref()) {
        Ok((202, _)) => Some(()),
        _ => None,
    }
}

fn digest(dsn: &str, prefix: &str) -> Vec<(String, String, String)> {
    let config = PgVectorConfig {
        dsn: dsn.to_owned(),
        table_prefix: prefix.to_owned(),
        ..PgVectorConfig::default()
    };
    PgVectorStore::open(&config, "stub", DIMENSION)
        .unwrap()
        .chunk_digest()
        .unwrap()
        .into_iter()
        .map(|c| (c.chunk_id, c.text, c.vector_checksum))
        .collect()
}

fn top5(member: &Tidewater, query: &str) -> Vec<(String, String)> {
    member
        .search(query, 5, None)
        .iter()
        .map(|hit| {
            (
                hit["chunk_id"].as_str().unwrap().to_owned(),
                format!("{:.5}", hit["score"].as_f64().unwrap()),
            )
        })
        .collect()
}

/// The knowledge pipeline's lag over every partition, from `/metrics`.
fn lag_total(member: &Tidewater) -> f64 {
    let (_, text) = member.request("GET", "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with("tidewater_pipeline_lag_records{pipeline=\"knowledge\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Cluster {
    dir: PathBuf,
    config: PathBuf,
    members: Vec<Option<Tidewater>>,
}

impl Cluster {
    fn start_member(&mut self, index: usize) {
        let docs = self.dir.join("docs");
        let data = self.dir.join(format!("member-{index}"));
        let config = self.config.to_str().unwrap().to_owned();
        let member = Tidewater::start(&docs, &data, &["--config", &config]);
        if index == self.members.len() {
            self.members.push(Some(member));
        } else {
            self.members[index] = Some(member);
        }
    }

    fn live(&self) -> Vec<&Tidewater> {
        self.members.iter().flatten().collect()
    }

    /// Sends a write to a random live member until one acknowledges it.
    fn write(&self, rng: &mut rand::rngs::StdRng, write: &Write) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let live = self.live();
            if let Some(member) = live.get(rng.random_range(0..live.len().max(1))) {
                if send(member, write).is_some() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no member acknowledged a write for 2 minutes"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn members_share_partitions_and_pgvector_equals_one_embedded_run_through_kills_and_rebalances() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let broker = KafkaBroker::start();
    let pg = PgVectorServer::start();
    let embeddings = OpenAiTestServer::start(&dir.path().join("llm.jsonl"), &[]);
    let base_url = embeddings.base_url.trim_end_matches("/v1").to_owned();
    let writes = writes();

    // The reference: one embedded process, every write in order.
    let reference_config = config(dir.path(), "", pg.dsn(), "reference", &base_url);
    let mut reference = Tidewater::start(
        &docs,
        &dir.path().join("reference"),
        &["--config", reference_config.to_str().unwrap()],
    );
    reference.wait_ready(Duration::from_secs(120));
    for write in &writes {
        assert!(
            send(&reference, write).is_some(),
            "the reference refused a write"
        );
    }

    // The cluster: three members on Kafka, the same writes spread over them.
    let kafka = format!(
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"{}\"\ngroup = \"cluster\"\n\
         properties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"1000\" }}\n",
        broker.bootstrap()
    );
    let mut cluster = Cluster {
        dir: dir.path().to_owned(),
        config: config(dir.path(), &kafka, pg.dsn(), "cluster", &base_url),
        members: Vec::new(),
    };
    for index in 0..3 {
        cluster.start_member(index);
    }
    for member in cluster.members.iter_mut().flatten() {
        member.wait_ready(Duration::from_secs(120));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
    let mut kills = 0;
    for (n, write) in writes.iter().enumerate() {
        cluster.write(&mut rng, write);
        if n % 15 == 14 {
            // SIGKILL a random member (never the one that left) and start it again.
            let candidates: Vec<usize> = (0..cluster.members.len())
                .filter(|&i| cluster.members[i].is_some())
                .collect();
            let victim = candidates[rng.random_range(0..candidates.len())];
            cluster.members[victim].take().unwrap().kill();
            cluster.start_member(victim);
            kills += 1;
        }
        if n == 60 {
            // A fourth member joins.
            cluster.start_member(3);
        }
        if n == 100 {
            broker.restart();
        }
        if n == 140 {
            // One member leaves for good.
            cluster.members[1].take().unwrap().terminate();
        }
    }
    assert!(kills >= 10, "only {kills} kills");

    // Everything acknowledged reaches pgvector exactly once.
    let want = {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let have = digest(pg.dsn(), "reference");
            if lag_total(&reference) == 0.0
                && !have.is_empty()
                && digest(pg.dsn(), "reference") == have
            {
                break have;
            }
            assert!(Instant::now() < deadline, "the reference did not finish");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut got = digest(pg.dsn(), "cluster");
    while got != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = digest(pg.dsn(), "cluster");
    }
    if got != want {
        // Say why: what the members logged as errors and warnings, and which partitions
        // each was given and lost.
        for index in 0..cluster.members.len() {
            let log =
                std::fs::read_to_string(dir.path().join(format!("member-{index}.stderr.log")))
                    .unwrap_or_default();
            for line in log.lines().filter(|l| {
                let said = ["ERROR", "WARN", "partitions assigned", "partitions revoked"];
                said.iter().any(|s| l.contains(s)) && !l.contains("CONFWARN")
            }) {
                eprintln!("member {index}: {line}");
            }
        }
        // A partition that no member consumes shows as lag that does not shrink.
        for (index, member) in cluster.members.iter().enumerate() {
            let Some(member) = member else { continue };
            let (_, metrics) = member.request("GET", "/metrics", None);
            for line in metrics
                .lines()
                .filter(|l| l.starts_with("tidewater_pipeline_lag_records{pipeline=\"knowledge\""))
            {
                eprintln!("member {index} now: {line}");
            }
        }
    }
    let missing: Vec<_> = want.iter().filter(|c| !got.contains(c)).take(5).collect();
    let extra: Vec<_> = got.iter().filter(|c| !want.contains(c)).take(5).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "chunks differ: missing {missing:?}, extra {extra:?}"
    );
    assert_eq!(got, want, "missing {missing:?}, extra {extra:?}");
    let documents: std::collections::BTreeSet<&str> = want
        .iter()
        .map(|c| c.0.split('#').next().unwrap())
        .collect();
    let deleted = writes
        .iter()
        .filter(|w| matches!(w, Write::Delete(_)))
        .count();
    assert_eq!(
        documents.len(),
        126 - deleted,
        "every live document is indexed"
    );
    // The partitions really were shared: several members owned some of them.
    let owners = (0..cluster.members.len())
        .filter(|index| {
            let log =
                std::fs::read_to_string(dir.path().join(format!("member-{index}.stderr.log")))
                    .unwrap_or_default();
            log.lines()
                .any(|l| l.contains("partitions assigned") && l.contains("cluster.knowledge"))
        })
        .count();
    assert!(
        owners >= 2,
        "only {owners} member(s) ever owned a documents partition"
    );
    // Every member serves the same answers from the shared index.
    for query in [
        "Who ruled the duchy of Normandy?",
        "when did the tide turn",
        "Norse raiders",
    ] {
        let answers: Vec<_> = cluster.live().iter().map(|m| top5(m, query)).collect();
        assert_eq!(answers[0].len(), 5, "{query}");
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{query}: {answers:?}"
        );
    }
    for member in cluster.members.into_iter().flatten() {
        member.terminate();
    }
    reference.terminate();
}
