//! Reconcile: compare what a file source has on disk with what is indexed, repair the
//! difference through the log (so repairs follow the same path as every change), and
//! measure the drift again once the repairs are indexed.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tidewater_core::{DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_sources::FileSource;

use crate::{Knowledge, KnowledgeError};

/// What a reconcile pass found and left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Documents on disk.
    pub on_disk: usize,
    /// On disk, not indexed.
    pub missing: usize,
    /// Indexed from other content than what is on disk now.
    pub stale: usize,
    /// Indexed, no longer on disk.
    pub extra: usize,
    /// Vector-index keys out of step with the state (repaired on the spot).
    pub index_repaired: usize,
    /// Differences left after the repairs were indexed (0 unless files changed meanwhile
    /// or the repairs did not finish within the timeout).
    pub drift_after: usize,
}

fn drift(
    on_disk: &HashMap<String, String>,
    indexed: &HashMap<String, String>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for (doc, hash) in on_disk {
        match indexed.get(doc) {
            None => missing.push(doc.clone()),
            Some(h) if h != hash => stale.push(doc.clone()),
            Some(_) => {}
        }
    }
    let extra = indexed
        .keys()
        .filter(|d| !on_disk.contains_key(*d))
        .cloned()
        .collect();
    (missing, stale, extra)
}

impl Knowledge {
    /// Runs one reconcile pass over `source`, waiting up to `timeout` for the repairs to be
    /// indexed. Sets the `tidewater_drift_documents` gauge to the drift left.
    pub fn reconcile(
        &self,
        source: &FileSource,
        timeout: Duration,
    ) -> Result<ReconcileReport, KnowledgeError> {
        let name = source.source_name().to_owned();
        let listing = |s: &FileSource| -> Result<HashMap<String, String>, KnowledgeError> {
            Ok(s.listing()
                .map_err(|e| KnowledgeError::BadRequest(e.to_string()))?
                .into_iter()
                .collect())
        };
        let on_disk = listing(source)?;
        let indexed = self.indexed_hashes(&name)?;
        let (missing, stale, extra) = drift(&on_disk, &indexed);
        let mut report = ReconcileReport {
            on_disk: on_disk.len(),
            missing: missing.len(),
            stale: stale.len(),
            extra: extra.len(),
            index_repaired: self.verify_index()?,
            drift_after: 0,
        };
        let resend: Vec<String> = missing.into_iter().chain(stale).collect();
        if !resend.is_empty() {
            source
                .resend(&resend)
                .map_err(|e| KnowledgeError::BadRequest(e.to_string()))?;
        }
        if !extra.is_empty() {
            let now = tidewater_core::time::now_ms();
            let deletes: Vec<DocumentEvent> = extra
                .iter()
                .map(|doc_id| DocumentEvent {
                    op: DocumentOp::Delete,
                    doc_id: doc_id.clone(),
                    source: name.clone(),
                    format: DocumentFormat::Text,
                    metadata: Default::default(),
                    content_hash: None,
                    observed_at_ms: now,
                    body: Vec::new(),
                })
                .collect();
            self.writer().write(&deletes)?;
        }
        if report.missing + report.stale + report.extra > 0 {
            self.wait_caught_up(timeout)?;
            let (missing, stale, extra) = drift(&listing(source)?, &self.indexed_hashes(&name)?);
            report.drift_after = missing.len() + stale.len() + extra.len();
        }
        // Repairs above went through the pipeline; the index must match the state now.
        report.drift_after += self.verify_index()?;
        self.metrics()
            .drift_documents
            .set(report.drift_after as i64);
        self.metrics().reconcile_runs.inc();
        Ok(report)
    }
}
