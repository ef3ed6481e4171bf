//! KPIs of one window, computed from its events.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::AnalyticsEvent;
use crate::sentiment::SentimentScorer;

/// How many down-voted questions a [`Kpis`] lists.
pub const TOP_DOWNVOTED: usize = 5;

/// Model name used for feedback whose conversation is not in the same window.
pub const UNKNOWN_MODEL: &str = "unknown";

/// A question and how often answers to it were down-voted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownvotedQuestion {
    /// The question text.
    pub question: String,
    /// Number of down-votes (Down, or two stars or fewer).
    pub downvotes: u64,
}

/// KPIs of a set of conversations and feedback events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Number of conversations.
    pub conversations: u64,
    /// Number of feedback events.
    pub feedback: u64,
    /// Answer latency, 50th percentile (nearest rank), ms.
    pub latency_p50_ms: Option<u64>,
    /// Answer latency, 95th percentile (nearest rank), ms.
    pub latency_p95_ms: Option<u64>,
    /// Answer latency, 99th percentile (nearest rank), ms.
    pub latency_p99_ms: Option<u64>,
    /// Share of feedback that is positive (Up, or four stars or more).
    pub positive_share: Option<f64>,
    /// Mean rating (Up = 5, Down = 1, Stars = n).
    pub mean_rating: Option<f64>,
    /// Share of conversations answered with no retrieved chunk.
    pub no_context_share: Option<f64>,
    /// Mean sentiment of the feedback comments (feedback without a comment is skipped).
    pub mean_sentiment: Option<f64>,
    /// The most down-voted questions, most down-votes first, then by question text.
    pub top_downvoted: Vec<DownvotedQuestion>,
}

/// The final KPIs of one closed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Window start (inclusive), ms since the Unix epoch.
    pub window_start_ms: u64,
    /// Window end (exclusive), ms since the Unix epoch.
    pub window_end_ms: u64,
    /// KPIs over all events of the window.
    pub overall: Kpis,
    /// KPIs per model; feedback takes the model of its conversation, or `"unknown"`.
    pub per_model: BTreeMap<String, Kpis>,
}

/// Nearest-rank percentile `p` (0–100) of `sorted` (ascending); `None` when empty.
pub fn percentile_nearest_rank(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
    Some(sorted[(rank - 1) as usize])
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Computes a window's KPIs from its events (in arrival order). Feedback is joined to the
/// first conversation with its id among `events`; failing that, it keeps the model and
/// question it carries (joined upstream from an earlier window), or counts as `unknown`.
pub fn compute_window(
    window_start_ms: u64,
    window_end_ms: u64,
    events: &[&AnalyticsEvent],
    scorer: &dyn SentimentScorer,
) -> WindowResult {
    let mut conversations: HashMap<&str, (&str, &str)> = HashMap::new();
    for &e in events {
        if let AnalyticsEvent::Conversation {
            conversation_id,
            model,
            question,
            ..
        } = e
        {
            conversations
                .entry(conversation_id.as_str())
                .or_insert((model.as_str(), question.as_str()));
        }
    }
    let mut by_model: BTreeMap<String, Vec<&AnalyticsEvent>> = BTreeMap::new();
    for &e in events {
        let model = match e {
            AnalyticsEvent::Conversation { model, .. } => model.as_str(),
            AnalyticsEvent::Feedback {
                conversation_id,
                model,
                ..
            } => conversations
                .get(conversation_id.as_str())
                .map(|(m, _)| *m)
                .or(model.as_deref())
                .unwrap_or(UNKNOWN_MODEL),
        };
        by_model.entry(model.to_owned()).or_default().push(e);
    }
    WindowResult {
        window_start_ms,
        window_end_ms,
        overall: compute_kpis(events, &conversations, scorer),
        per_model: by_model
            .into_iter()
            .map(|(m, evs)| (m, compute_kpis(&evs, &conversations, scorer)))
            .collect(),
    }
}

/// KPIs of `events`; `conversations` maps the window's conversation ids to (model, question).
pub fn compute_kpis(
    events: &[&AnalyticsEvent],
    conversations: &HashMap<&str, (&str, &str)>,
    scorer: &dyn SentimentScorer,
) -> Kpis {
    let mut k = Kpis::default();
    let mut latencies = Vec::new();
    let (mut no_context, mut positive, mut rating_sum) = (0u64, 0u64, 0u64);
    let (mut sentiment_sum, mut comments) = (0.0f64, 0u64);
    let mut downvotes: BTreeMap<&str, u64> = BTreeMap::new();
    for e in events {
        match e {
            AnalyticsEvent::Conversation {
                latency_ms,
                retrieved_chunks,
                ..
            } => {
                k.conversations += 1;
                latencies.push(*latency_ms);
                no_context += u64::from(*retrieved_chunks == 0);
            }
            AnalyticsEvent::Feedback {
                conversation_id,
                rating,
                comment,
                question,
                ..
            } => {
                k.feedback += 1;
                positive += u64::from(rating.is_positive());
                rating_sum += u64::from(rating.value());
                if let Some(c) = comment {
                    sentiment_sum += scorer.score(c);
                    comments += 1;
                }
                let asked = conversations
                    .get(conversation_id.as_str())
                    .map(|(_, q)| *q)
                    .or(question.as_deref());
                if let (true, Some(q)) = (rating.is_downvote(), asked) {
                    *downvotes.entry(q).or_default() += 1;
                }
            }
        }
    }
    latencies.sort_unstable();
    k.latency_p50_ms = percentile_nearest_rank(&latencies, 50);
    k.latency_p95_ms = percentile_nearest_rank(&latencies, 95);
    k.latency_p99_ms = percentile_nearest_rank(&latencies, 99);
    k.positive_share = ratio(positive, k.feedback);
    k.mean_rating = ratio(rating_sum, k.feedback);
    k.no_context_share = ratio(no_context, k.conversations);
    k.mean_sentiment = (comments > 0).then(|| sentiment_sum / comments as f64);
    let mut top: Vec<DownvotedQuestion> = downvotes
        .into_iter()
        .map(|(q, n)| DownvotedQuestion {
            question: q.to_owned(),
            downvotes: n,
        })
        .collect();
    // Stable sort: ties keep the question order of the BTreeMap.
    top.sort_by_key(|q| std::cmp::Reverse(q.downvotes));
    top.truncate(TOP_DOWNVOTED);
    k.top_downvoted = top;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_edge_cases() {
        assert_eq!(percentile_nearest_rank(&[], 50), None);
        assert_eq!(percentile_nearest_rank(&[7], 50), Some(7));
        assert_eq!(percentile_nearest_rank(&[7], 99), Some(7));
        assert_eq!(percentile_nearest_rank(&[7], 0), Some(7));
        assert_eq!(percentile_nearest_rank(&[1, 2], 50), Some(1));
        assert_eq!(percentile_nearest_rank(&[1, 2], 51), Some(2));
        assert_eq!(percentile_nearest_rank(&[1, 2], 100), Some(2));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_nearest_rank(&v, 50), Some(50));
        assert_eq!(percentile_nearest_rank(&v, 95), Some(95));
        assert_eq!(percentile_nearest_rank(&v, 99), Some(99));
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile_nearest_rank(&v, 95), Some(10));
        assert_eq!(percentile_nearest_rank(&v, 50), Some(5));
    }
}
