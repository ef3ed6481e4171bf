//! The answer loop end to end, on the real binary: `/v1/ask` retrieves the right chunks,
//! puts the customer's profile fields into the prompt, calls a real OpenAI-compatible HTTP
//! server (which records the prompt) and streams its answer; the conversation is logged
//! and feedback on it moves the KPIs of its window. Without a model the answer is
//! extractive; a failing model is a 502 and the conversation is still logged.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const REPLY: &str = "A checked bag may weigh up to 23 kg [1].";
const QUESTION: &str = "How heavy may my checked bag be?";

fn write_docs(docs: &Path) {
    std::fs::create_dir_all(docs).unwrap();
    std::fs::write(
        docs.join("baggage.md"),
        "Baggage rules. Each passenger may check one bag. A checked bag may weigh up to 23 kg \
         and measure up to 158 cm in total. Heavier bags are refused at the counter.",
    )
    .unwrap();
    std::fs::write(
        docs.join("refunds.md"),
        "Refunds. Refunds are paid within 14 days to the card used for the booking. \
         Vouchers never expire.",
    )
    .unwrap();
    std::fs::write(
        docs.join("pets.md"),
        "Pets. Small cats and dogs travel in the cabin in a soft carrier under the seat.",
    )
    .unwrap();
}

fn config(llm: Option<(&str, u32)>) -> String {
    let mut text = String::from(
        r#"
[profiles]
topic = "changes"

[[profiles.tables]]
table = "crm.public.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "tier", "city"]

[answer.template]
profile = "Customer: {profile.name} ({profile.tier} member)"

[lake]
flush_interval = "100ms"
"#,
    );
    if let Some((base_url, retries)) = llm {
        text.push_str(&format!(
            "\n[answer.llm]\nbase_url = \"{base_url}\"\nmodel = \"test-model\"\nmax_retries = {retries}\ntimeout = \"5s\"\n"
        ));
    }
    text
}

fn start(dir: &Path, config_text: &str) -> Tidewater {
    start_with_config(dir, config_text, write_docs)
}

fn add_customer(tw: &Tidewater) {
    let change = json!({
        "key": {"id": 1},
        "value": {"op": "c", "ts_ms": 1, "before": null,
                  "after": {"id": 1, "name": "Ana Lima", "email": "ana@example.com", "tier": "gold", "city": "Lisbon"},
                  "source": {"connector": "postgresql", "name": "crm", "db": "crm", "schema": "public",
                             "table": "customers", "lsn": 1, "txId": 1, "ts_ms": 1}}
    });
    let (status, body) = tw.json("POST", "/v1/events/changes", Some(&change.to_string()));
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(20), "the profile", || {
        tw.request("GET", "/v1/profiles/email:ana@example.com", None)
            .0
            == 200
    });
}

fn kpis(tw: &Tidewater) -> Vec<Value> {
    let (status, body) = tw.json("GET", "/v1/kpis", None);
    assert_eq!(status, 200, "{body}");
    body["windows"].as_array().cloned().unwrap_or_default()
}

fn total(windows: &[Value], kpi: &str) -> u64 {
    windows
        .iter()
        .map(|w| w["overall"][kpi].as_u64().unwrap_or(0))
        .sum()
}

/// The window holding `time_ms`.
fn window_at(windows: &[Value], time_ms: u64) -> Option<Value> {
    windows
        .iter()
        .find(|w| {
            w["window_start_ms"].as_u64().unwrap() <= time_ms
                && time_ms < w["window_end_ms"].as_u64().unwrap()
        })
        .cloned()
}

#[test]
fn ask_with_a_customer_streams_the_model_answer_and_feedback_moves_its_kpis() {
    let dir = tempfile::tempdir().unwrap();
    let llm = OpenAiTestServer::start(&dir.path().join("prompts.jsonl"), &["--reply", REPLY]);
    let tw = start(dir.path(), &config(Some((&llm.base_url, 0))));
    add_customer(&tw);

    let ask = json!({"question": QUESTION, "customer": "email:ana@example.com", "stream": true});
    let (status, body) = tw.request("POST", "/v1/ask", Some(&ask.to_string()));
    assert_eq!(status, 200, "{body}");
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"meta"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    let tokens: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert!(tokens.len() > 3, "the answer arrives in pieces: {tokens:?}");
    assert_eq!(tokens.concat(), REPLY);
    let done = &events.last().unwrap().1;
    assert_eq!(done["answer"], REPLY);
    assert_eq!(done["model"], "test-model");
    assert_eq!(done["citations"][0]["doc_id"], "baggage.md");
    assert_eq!(
        done["profile_fields"],
        json!({"name": "Ana Lima", "tier": "gold"})
    );
    assert!(done["customer_id"].is_string());
    let conversation_id = done["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(events[0].1["conversation_id"], conversation_id.as_str());

    // The prompt the model received: the baggage chunk and the named profile fields.
    let requests = llm.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["model"], "test-model");
    assert_eq!(requests[0]["stream"], true);
    let prompt = requests[0]["messages"].to_string();
    assert!(prompt.contains("up to 23 kg"), "{prompt}");
    assert!(
        prompt.contains("Customer: Ana Lima (gold member)"),
        "{prompt}"
    );
    assert!(prompt.contains(QUESTION), "{prompt}");
    assert!(
        !prompt.contains("Lisbon"),
        "only the fields the template names: {prompt}"
    );

    // The conversation is logged and counted.
    eventually(
        Duration::from_secs(20),
        "the conversation in the KPIs",
        || total(&kpis(&tw), "conversations") == 1,
    );
    let windows = kpis(&tw);
    let open = windows
        .iter()
        .find(|w| w["overall"]["conversations"] == 1)
        .unwrap();
    assert_eq!(open["final"], false);
    assert_eq!(open["per_model"]["test-model"]["conversations"], 1);
    assert_eq!(open["overall"]["no_context_share"], 0.0);

    // Feedback on it moves the KPIs of its window.
    let feedback = json!({"conversation_id": conversation_id, "rating": "down", "comment": "wrong, useless answer"});
    let (status, ack) = tw.json("POST", "/v1/feedback", Some(&feedback.to_string()));
    assert_eq!(status, 202, "{ack}");
    let at = ack["event_time_ms"].as_u64().unwrap();
    eventually(Duration::from_secs(20), "the feedback in the KPIs", || {
        window_at(&kpis(&tw), at).is_some_and(|w| w["overall"]["feedback"] == 1)
    });
    let window = window_at(&kpis(&tw), at).unwrap();
    assert_eq!(window["overall"]["positive_share"], 0.0);
    assert_eq!(window["overall"]["mean_rating"], 1.0);
    assert!(
        window["overall"]["mean_sentiment"].as_f64().unwrap() < 0.0,
        "{window}"
    );
    assert_eq!(window["overall"]["top_downvoted"][0]["question"], QUESTION);
    assert_eq!(window["per_model"]["test-model"]["feedback"], 1);

    // Bad requests are 4xx with a JSON error.
    let (status, body) = tw.json(
        "POST",
        "/v1/feedback",
        Some(&json!({"conversation_id": "x", "rating": 7}).to_string()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rating"),
        "{body}"
    );
    let (status, body) = tw.json(
        "POST",
        "/v1/ask",
        Some(&json!({"question": " "}).to_string()),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = tw.json("GET", "/v1/kpis?window=5m", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        tw.metric("tidewater_answers_total{model=\"test-model\",outcome=\"ok\"}"),
        1.0
    );

    // The conversation event as logged, and the feedback event.
    tw.kill();
    let data = dir.path().join("data");
    let logged = &latest_per_key(&data, "conversations")[&conversation_id];
    assert_eq!(logged["question"], QUESTION);
    assert_eq!(logged["answer"], REPLY);
    assert_eq!(logged["customer"], "email:ana@example.com");
    assert_eq!(logged["customer_id"], done["customer_id"]);
    assert_eq!(logged["model"], "test-model");
    assert_eq!(logged["status"], "ok");
    let ids = |citations: &Value| -> Vec<(Value, Value)> {
        citations
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["chunk_id"].clone(), c["doc_id"].clone()))
            .collect()
    };
    assert_eq!(ids(&logged["citations"]), ids(&done["citations"]));
    assert_eq!(
        logged["profile_fields"],
        json!({"name": "Ana Lima", "tier": "gold"})
    );
    assert_eq!(logged["prompt"], requests[0]["messages"]);
    let latency = &logged["latency"];
    assert!(latency["total_ms"].as_u64().unwrap() >= latency["model_ms"].as_u64().unwrap());
    assert!(latency["retrieval_ms"].as_u64().is_some(), "{latency}");
    assert!(logged["event_time_ms"].as_u64().unwrap() <= at);
    let rated = &latest_per_key(&data, "feedback")[&conversation_id];
    assert_eq!(rated["rating"], "down");
    assert_eq!(rated["comment"], "wrong, useless answer");
}

#[test]
fn a_failing_model_is_a_502_and_the_conversation_is_still_logged() {
    let dir = tempfile::tempdir().unwrap();
    let llm = OpenAiTestServer::start(
        &dir.path().join("prompts.jsonl"),
        &["--fail", "100", "--status", "503"],
    );
    let tw = start(dir.path(), &config(Some((&llm.base_url, 1))));
    let (status, body) = tw.json(
        "POST",
        "/v1/ask",
        Some(&json!({"question": QUESTION}).to_string()),
    );
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "model_failed");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("503"),
        "{body}"
    );
    assert_eq!(llm.requests().len(), 2, "one retry");
    eventually(
        Duration::from_secs(20),
        "the failed conversation in the KPIs",
        || total(&kpis(&tw), "conversations") == 1,
    );
    assert_eq!(
        tw.metric("tidewater_answers_total{model=\"test-model\",outcome=\"failed\"}"),
        1.0
    );
}

#[test]
fn without_a_model_the_answer_is_extractive_logged_and_exported_when_well_rated() {
    let dir = tempfile::tempdir().unwrap();
    let tw = start(dir.path(), &config(None));
    let (status, body) = tw.json(
        "POST",
        "/v1/ask",
        Some(&json!({"question": QUESTION, "k": 2}).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "extractive");
    assert!(
        body["note"].as_str().unwrap().contains("no language model"),
        "{body}"
    );
    assert!(body["answer"].as_str().unwrap().contains("23 kg"), "{body}");
    assert_eq!(body["citations"].as_array().unwrap().len(), 2);
    assert_eq!(body["citations"][0]["doc_id"], "baggage.md");
    // The application's own conversations are accepted too.
    let outside =
        json!({"conversation_id": "app-1", "question": "q", "answer": "a", "model": "app-model"});
    let (status, ack) = tw.json(
        "POST",
        "/v1/events/conversations",
        Some(&outside.to_string()),
    );
    assert_eq!(status, 202, "{ack}");
    let (status, ack) = tw.json(
        "POST",
        "/v1/events/conversations",
        Some(r#"{"question": "no id"}"#),
    );
    assert_eq!(status, 400, "{ack}");
    eventually(
        Duration::from_secs(20),
        "both conversations in the KPIs",
        || {
            let windows = kpis(&tw);
            total(&windows, "conversations") == 2
                && windows
                    .iter()
                    .any(|w| w["per_model"]["extractive"]["conversations"] == 1)
        },
    );
}
