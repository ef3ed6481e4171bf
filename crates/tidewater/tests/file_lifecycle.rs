//! A watched folder's create, edit, rename and delete are each reflected in search.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(20);

fn texts(tw: &Tidewater, query: &str, prefix: &str) -> Vec<String> {
    tw.search(query, 10, Some(prefix))
        .iter()
        .map(|h| h["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn create_edit_rename_delete_are_reflected_in_search() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("guides")).unwrap();
    std::fs::write(
        docs.join("guides/ferries.md"),
        "# Ferries\n\nThe night ferry to the island leaves at nine.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("tides.txt"),
        "High tide in the estuary comes twice a day.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("page.html"),
        "<html><body><p>The lighthouse is painted red and white.</p></body></html>",
    )
    .unwrap();
    std::fs::write(docs.join("notes.bin"), "not included by the globs").unwrap();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &[]);
    tw.wait_ready(Duration::from_secs(120));

    // Initial scan.
    assert!(
        texts(&tw, "when does the night ferry leave?", "guides/ferries.md")[0]
            .contains("leaves at nine")
    );
    assert!(texts(&tw, "lighthouse colours", "page.html")[0].contains("painted red and white"));
    assert_eq!(
        tw.request("GET", "/v1/documents/notes.bin", None).0,
        404,
        "excluded by the include globs"
    );
    let (status, doc) = tw.json("GET", "/v1/documents/guides/ferries.md", None);
    assert_eq!(status, 200);
    assert_eq!(doc["indexed"], true);
    assert_eq!(doc["source"], "files:docs");

    // Create.
    std::fs::write(
        docs.join("guides/harbour.md"),
        "The harbour master is called Ada.\n",
    )
    .unwrap();
    eventually(WAIT, "created file searchable", || {
        texts(&tw, "who is the harbour master?", "guides/harbour.md")
            .iter()
            .any(|t| t.contains("called Ada"))
    });

    // Edit: the new text is served, never the old.
    std::fs::write(
        docs.join("guides/ferries.md"),
        "# Ferries\n\nThe night ferry now leaves at ten.\n",
    )
    .unwrap();
    eventually(WAIT, "edit searchable", || {
        let t = texts(&tw, "when does the night ferry leave?", "guides/ferries.md");
        t.iter().any(|t| t.contains("leaves at ten"))
            && !t.iter().any(|t| t.contains("leaves at nine"))
    });

    // Rename: the old id disappears, the new one appears.
    std::fs::rename(docs.join("tides.txt"), docs.join("guides/tides.txt")).unwrap();
    eventually(WAIT, "rename reflected", || {
        tw.request("GET", "/v1/documents/tides.txt", None).0 == 404
            && tw.request("GET", "/v1/documents/guides/tides.txt", None).0 == 200
    });
    assert!(texts(&tw, "high tide", "tides.txt").is_empty());
    assert!(texts(&tw, "high tide", "guides/tides.txt")[0].contains("twice a day"));

    // Delete.
    std::fs::remove_file(docs.join("page.html")).unwrap();
    eventually(WAIT, "delete reflected", || {
        texts(&tw, "lighthouse colours", "page.html").is_empty()
    });
    assert_eq!(tw.request("GET", "/v1/documents/page.html", None).0, 404);
    let hits = tw.search("lighthouse painted red and white", 10, None);
    assert!(hits.iter().all(|h| h["doc_id"] != "page.html"), "{hits:?}");

    // A touch without a change embeds nothing.
    let embedded = tw.metric("tidewater_embedded_chunks_total");
    let content = std::fs::read(docs.join("guides/harbour.md")).unwrap();
    std::fs::write(docs.join("guides/harbour.md"), content).unwrap();
    std::fs::write(
        docs.join("guides/canary.md"),
        "A canary file written after the touch.\n",
    )
    .unwrap();
    eventually(WAIT, "canary indexed", || {
        tw.request("GET", "/v1/documents/guides/canary.md", None).0 == 200
    });
    assert_eq!(
        tw.metric("tidewater_embedded_chunks_total"),
        embedded + 1.0,
        "only the canary was embedded"
    );
    assert!(tw.metric("tidewater_freshness_seconds_count") > 0.0);
    tw.terminate();
}

#[test]
fn restart_resumes_and_reconcile_repairs_drift() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..5 {
        std::fs::write(
            docs.join(format!("n{i}.txt")),
            format!("Note number {i} mentions the granite quarry.\n"),
        )
        .unwrap();
    }
    let data = dir.path().join("data");
    let mut tw = Tidewater::start(&docs, &data, &[]);
    tw.wait_ready(Duration::from_secs(120));
    tw.terminate();

    // Changes while stopped are picked up on start.
    std::fs::remove_file(docs.join("n0.txt")).unwrap();
    std::fs::write(
        docs.join("n1.txt"),
        "Note one was rewritten while Tidewater was down.\n",
    )
    .unwrap();
    // Drift the source state cannot see: its own record says n2 was already sent.
    std::fs::remove_dir_all(data.join("knowledge")).unwrap();
    let mut tw = Tidewater::start(&docs, &data, &[]);
    tw.wait_ready(Duration::from_secs(120));
    eventually(WAIT, "reconcile ran", || {
        tw.metric("tidewater_reconcile_runs_total") >= 1.0
    });
    assert_eq!(tw.metric("tidewater_drift_documents"), 0.0);
    assert_eq!(tw.request("GET", "/v1/documents/n0.txt", None).0, 404);
    for i in 1..5 {
        assert_eq!(
            tw.request("GET", &format!("/v1/documents/n{i}.txt"), None)
                .0,
            200,
            "n{i}.txt"
        );
    }
    assert!(
        tw.search("rewritten while down", 1, Some("n1.txt"))[0]["text"]
            .as_str()
            .unwrap()
            .contains("rewritten")
    );
    tw.terminate();
}
