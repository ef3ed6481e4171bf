//! `kpis`: each record is one closed analytics window; it becomes one row for `overall`
//! (model `all`) and one per model, in model order, all dated by the window's start.
//!
//! The window's JSON is parsed with the lake's own structs (the lake does not depend on
//! the analytics crate); fields added there later are ignored here.

use std::collections::BTreeMap;

use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field};
use serde::Deserialize;
use serde_json::Value;
use tidewater_log::Record;

use crate::schema::{f64s, ms, nullable, timestamp, timestamps, u64s, utf8, Table};

/// The model name of the row holding a window's overall KPIs.
pub(crate) const OVERALL_MODEL: &str = "all";

/// A closed window as analytics publishes it.
#[derive(Debug, Deserialize)]
struct Window {
    window_start_ms: u64,
    window_end_ms: u64,
    overall: Kpis,
    #[serde(default)]
    per_model: BTreeMap<String, Kpis>,
}

/// One set of KPIs.
#[derive(Debug, Deserialize)]
struct Kpis {
    conversations: u64,
    feedback: u64,
    #[serde(default)]
    latency_p50_ms: Option<u64>,
    #[serde(default)]
    latency_p95_ms: Option<u64>,
    #[serde(default)]
    latency_p99_ms: Option<u64>,
    #[serde(default)]
    positive_share: Option<f64>,
    #[serde(default)]
    mean_rating: Option<f64>,
    #[serde(default)]
    no_context_share: Option<f64>,
    #[serde(default)]
    mean_sentiment: Option<f64>,
    #[serde(default)]
    top_downvoted: Option<Value>,
}

/// The typed part of a KPI row; all `None` when the record is not a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KpiRow {
    pub window_start_ms: Option<i64>,
    pub window_end_ms: Option<i64>,
    /// `all` for the window's overall KPIs, else the model.
    pub model: Option<String>,
    pub conversations: Option<u64>,
    pub feedback: Option<u64>,
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub latency_p99_ms: Option<u64>,
    pub positive_share: Option<f64>,
    pub mean_rating: Option<f64>,
    pub no_context_share: Option<f64>,
    pub mean_sentiment: Option<f64>,
    /// JSON array of `{question, downvotes}`.
    pub top_downvoted: Option<String>,
}

impl KpiRow {
    fn new(window_start_ms: i64, window_end_ms: i64, model: String, kpis: Kpis) -> Self {
        Self {
            window_start_ms: Some(window_start_ms),
            window_end_ms: Some(window_end_ms),
            model: Some(model),
            conversations: Some(kpis.conversations),
            feedback: Some(kpis.feedback),
            latency_p50_ms: kpis.latency_p50_ms,
            latency_p95_ms: kpis.latency_p95_ms,
            latency_p99_ms: kpis.latency_p99_ms,
            positive_share: kpis.positive_share,
            mean_rating: kpis.mean_rating,
            no_context_share: kpis.no_context_share,
            mean_sentiment: kpis.mean_sentiment,
            top_downvoted: kpis.top_downvoted.map(|v| v.to_string()),
        }
    }
}

impl Table for KpiRow {
    fn fields() -> Vec<Field> {
        vec![
            nullable("window_start", timestamp()),
            nullable("window_end", timestamp()),
            nullable("model", DataType::Utf8),
            nullable("conversations", DataType::UInt64),
            nullable("feedback", DataType::UInt64),
            nullable("latency_p50_ms", DataType::UInt64),
            nullable("latency_p95_ms", DataType::UInt64),
            nullable("latency_p99_ms", DataType::UInt64),
            nullable("positive_share", DataType::Float64),
            nullable("mean_rating", DataType::Float64),
            nullable("no_context_share", DataType::Float64),
            nullable("mean_sentiment", DataType::Float64),
            nullable("top_downvoted", DataType::Utf8),
        ]
    }

    fn parse(record: &Record) -> Vec<(i64, Self)> {
        let Ok(window) = serde_json::from_slice::<Window>(&record.value) else {
            return vec![(record.timestamp_ms, Self::default())];
        };
        let Window {
            window_start_ms,
            window_end_ms,
            overall,
            per_model,
        } = window;
        let (start, end) = (ms(window_start_ms), ms(window_end_ms));
        std::iter::once((OVERALL_MODEL.to_owned(), overall))
            .chain(per_model)
            .map(|(model, kpis)| (start, Self::new(start, end, model, kpis)))
            .collect()
    }

    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            timestamps(rows.iter().map(|r| r.window_start_ms)),
            timestamps(rows.iter().map(|r| r.window_end_ms)),
            utf8(rows.iter().map(|r| r.model.as_deref())),
            u64s(rows.iter().map(|r| r.conversations)),
            u64s(rows.iter().map(|r| r.feedback)),
            u64s(rows.iter().map(|r| r.latency_p50_ms)),
            u64s(rows.iter().map(|r| r.latency_p95_ms)),
            u64s(rows.iter().map(|r| r.latency_p99_ms)),
            f64s(rows.iter().map(|r| r.positive_share)),
            f64s(rows.iter().map(|r| r.mean_rating)),
            f64s(rows.iter().map(|r| r.no_context_share)),
            f64s(rows.iter().map(|r| r.mean_sentiment)),
            utf8(rows.iter().map(|r| r.top_downvoted.as_deref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_gives_overall_then_each_model_in_order() {
        let value = r#"{"window_start_ms":86400000,"window_end_ms":86460000,
            "overall":{"conversations":3,"feedback":1,"latency_p50_ms":12,"positive_share":1.0,
                       "top_downvoted":[{"question":"q","downvotes":2}]},
            "per_model":{"zeta":{"conversations":1,"feedback":0},
                         "alpha":{"conversations":2,"feedback":1}}}"#;
        let record = Record {
            partition: 1,
            offset: 9,
            timestamp_ms: 5,
            key: None,
            value: value.as_bytes().to_vec(),
            headers: Vec::new(),
        };
        let rows = KpiRow::parse(&record);
        let models: Vec<_> = rows.iter().map(|(_, r)| r.model.as_deref()).collect();
        assert_eq!(models, [Some("all"), Some("alpha"), Some("zeta")]);
        assert!(rows.iter().all(|(date_ms, _)| *date_ms == 86_400_000));
        let overall = &rows[0].1;
        assert_eq!(overall.window_end_ms, Some(86_460_000));
        assert_eq!(overall.conversations, Some(3));
        assert_eq!(overall.latency_p50_ms, Some(12));
        assert_eq!(overall.latency_p95_ms, None);
        assert_eq!(overall.positive_share, Some(1.0));
        let top: Value =
            serde_json::from_str(overall.top_downvoted.as_deref().expect("top_downvoted set"))
                .expect("top_downvoted is JSON");
        assert_eq!(top, serde_json::json!([{"question": "q", "downvotes": 2}]));
        assert_eq!(rows[1].1.conversations, Some(2));
    }

    #[test]
    fn a_record_that_is_not_a_window_gives_one_null_row_at_its_log_time() {
        let record = Record {
            partition: 0,
            offset: 0,
            timestamp_ms: 5,
            key: None,
            value: br#"{"window_start_ms":1}"#.to_vec(),
            headers: Vec::new(),
        };
        assert_eq!(KpiRow::parse(&record), vec![(5, KpiRow::default())]);
    }
}
