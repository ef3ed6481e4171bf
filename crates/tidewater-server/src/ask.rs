//! `POST /v1/ask`: retrieval, the customer's profile, a prompt, and an answer from the
//! language model (streamed as server-sent events when asked) or, with no model
//! configured, the best-matching sentences. Every answer — and every failure — is logged
//! to the conversations topic before the response completes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tidewater_answer::{build_prompt, extractive_answer, ContextChunk, LlmError};
use tidewater_core::{Citation, ConversationEvent, ConversationStatus, Latency};
use tidewater_knowledge::SearchRequest;
use tidewater_log::LogError;
use tidewater_profiles::Identifier;

use crate::error::{blocking, ApiError};
use crate::AppState;

/// Model name logged for extractive answers.
pub(crate) const EXTRACTIVE_MODEL: &str = "extractive";

/// Most chunks one question may retrieve.
const MAX_K: usize = 50;

/// The body of `POST /v1/ask`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AskRequest {
    question: String,
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    stream: bool,
}

/// What is known before the model answers.
struct Pending {
    started: Instant,
    conversation: ConversationEvent,
}

impl Pending {
    /// The conversation with its answer (or failure) and timings.
    fn finish(
        mut self,
        model: &str,
        model_ms: u64,
        outcome: Result<String, String>,
    ) -> ConversationEvent {
        let c = &mut self.conversation;
        c.model = model.to_owned();
        c.latency.model_ms = model_ms;
        c.latency.total_ms = self.started.elapsed().as_millis() as u64;
        match outcome {
            Ok(answer) => c.answer = answer,
            Err(error) => {
                c.status = ConversationStatus::Failed;
                c.error = Some(error);
            }
        }
        self.conversation
    }
}

/// The JSON answer (also the `done` event of a stream).
fn response_body(c: &ConversationEvent, extractive: bool) -> Value {
    let mut body = json!({
        "conversation_id": c.conversation_id,
        "answer": c.answer,
        "mode": if extractive { "extractive" } else { "model" },
        "model": c.model,
        "citations": c.citations,
        "customer": c.customer,
        "customer_id": c.customer_id,
        "profile_fields": c.profile_fields,
        "timings_ms": {
            "retrieval": c.latency.retrieval_ms,
            "model": c.latency.model_ms,
            "total": c.latency.total_ms,
        },
    });
    if extractive {
        body["note"] = json!(
            "no language model is configured ([answer.llm]); the answer is the best-matching sentences of the retrieved chunks"
        );
    }
    body
}

/// A 502 saying which model failed and how, but not where it is nor what it sent: the
/// whole error (with the endpoint, its secrets masked) goes to the server log only.
fn model_error(conversation_id: &str, e: &LlmError) -> ApiError {
    ApiError::with_detail(
        StatusCode::BAD_GATEWAY,
        "model_failed",
        format!(
            "{} (conversation {conversation_id} was logged with the failure)",
            e.summary()
        ),
        e,
    )
}

/// A fresh conversation id: 128 random bits, hex.
fn new_conversation_id() -> String {
    format!("c-{:032x}", rand::random::<u128>())
}

/// Retrieval and the profile lookup, off the async threads.
async fn retrieve(
    state: &AppState,
    request: &AskRequest,
    k: usize,
) -> Result<(Vec<ContextChunk>, Option<(String, BTreeMap<String, Value>)>), ApiError> {
    let customer = match &request.customer {
        Some(raw) => {
            let Some(profiles) = state.profiles.clone() else {
                return Err(ApiError::bad_request(
                    "'customer' needs profiles: no [profiles] section is configured",
                ));
            };
            let identifier = Identifier::parse(raw).map_err(|e| {
                ApiError::bad_request(format!(
                    "customer '{raw}' is not an identifier of the form namespace:value ({e})"
                ))
            })?;
            Some((profiles, identifier))
        }
        None => None,
    };
    let knowledge = state.knowledge.clone();
    let search = SearchRequest {
        query: request.question.clone(),
        k,
        filter: None,
    };
    blocking(move || {
        let hits = knowledge.search(&search)?;
        let chunks = hits
            .into_iter()
            .map(|h| ContextChunk {
                chunk_id: h.chunk_id,
                doc_id: h.doc_id,
                text: h.text,
                score: h.score,
            })
            .collect();
        let profile = match customer {
            Some((profiles, identifier)) => profiles
                .by_identifier(&identifier)
                .map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?
                .map(|p| {
                    let mut fields = p.attributes.clone();
                    fields.extend(p.aggregates.clone());
                    (p.customer_id.to_string(), fields)
                }),
            None => None,
        };
        Ok((chunks, profile))
    })
    .await
}

/// Appends the conversation to its topic; the answer is not returned before it is durable.
///
/// A conversation too large for one record of the log (an answer over `max_record_bytes`)
/// is logged as failed instead, without the answer (and, if still too large, without the
/// prompt), and the model's answer is reported as the failure: a 502, not a retryable 503.
async fn log_conversation(
    state: &AppState,
    conversation: ConversationEvent,
) -> Result<(), ApiError> {
    let analytics = state.analytics.clone();
    let (logged, too_large) = blocking(move || {
        let mut conversation = conversation;
        let mut too_large = None;
        loop {
            match analytics.record_conversation(&conversation) {
                Ok(_) => return Ok((conversation, too_large)),
                Err(tidewater_analytics::Error::Log(LogError::RecordTooLarge { size, max })) => {
                    let answer_bytes = conversation.answer.len();
                    if !shrink_failed(&mut conversation, answer_bytes, size, max) {
                        return Err(LogError::RecordTooLarge { size, max }.into());
                    }
                    too_large.get_or_insert((answer_bytes, max));
                }
                Err(e) => return Err(e.into()),
            }
        }
    })
    .await?;
    let outcome = match logged.status {
        ConversationStatus::Ok => "ok",
        ConversationStatus::Failed => "failed",
    };
    state.metrics.answers.with(&[&logged.model, outcome]).inc();
    match too_large {
        None => Ok(()),
        Some((answer_bytes, max)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "model_failed",
            format!(
                "the language model '{}' gave an answer of {answer_bytes} bytes, too large for \
                 the log's records of at most {max} bytes (conversation {} was logged with the \
                 failure)",
                logged.model, logged.conversation_id
            ),
        )),
    }
}

/// Makes a conversation that is `size` bytes as a record smaller: marks it failed and drops
/// its answer, then its prompt. False when nothing is left to drop.
fn shrink_failed(
    conversation: &mut ConversationEvent,
    answer_bytes: usize,
    size: usize,
    max: usize,
) -> bool {
    let dropped = if !conversation.answer.is_empty() {
        conversation.answer = String::new();
        "answer"
    } else if !conversation.prompt.is_empty() {
        conversation.prompt = Vec::new();
        "prompt"
    } else {
        return false;
    };
    conversation.status = ConversationStatus::Failed;
    let reason = format!(
        "the conversation ({size} bytes, with an answer of {answer_bytes} bytes) exceeds the \
         log's max_record_bytes ({max}); its {dropped} was dropped"
    );
    conversation.error = Some(match conversation.error.take() {
        Some(error) => format!("{error}; {reason}"),
        None => reason,
    });
    true
}

pub(crate) async fn ask(
    State(state): State<AppState>,
    body: Result<Json<AskRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    if request.question.trim().is_empty() {
        return Err(ApiError::bad_request("'question' must not be empty"));
    }
    let config = &state.answering.config;
    let k = request.k.unwrap_or(config.k);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!(
            "'k' must be between 1 and {MAX_K}"
        )));
    }
    let started = Instant::now();
    let (chunks, profile) = retrieve(&state, &request, k).await?;
    let retrieval_ms = started.elapsed().as_millis() as u64;
    let prompt = build_prompt(
        &config.template,
        &request.question,
        &chunks,
        profile.as_ref().map(|(_, fields)| fields),
    );
    let pending = Pending {
        started,
        conversation: ConversationEvent {
            conversation_id: new_conversation_id(),
            event_time_ms: u64::try_from(tidewater_core::time::now_ms()).ok(),
            question: request.question.clone(),
            answer: String::new(),
            customer: request.customer.clone(),
            customer_id: profile.map(|(id, _)| id),
            citations: chunks
                .iter()
                .map(|c| Citation {
                    chunk_id: c.chunk_id.clone(),
                    doc_id: c.doc_id.clone(),
                    score: c.score,
                })
                .collect(),
            profile_fields: prompt.profile_fields,
            model: String::new(),
            latency: Latency {
                retrieval_ms,
                ..Latency::default()
            },
            status: ConversationStatus::Ok,
            error: None,
            prompt: Vec::new(),
        },
    };
    let Some(client) = state.answering.client.clone() else {
        let extractive = extractive_answer(&request.question, &chunks, config.extractive_sentences);
        let conversation = pending.finish(EXTRACTIVE_MODEL, 0, Ok(extractive.answer));
        let body = response_body(&conversation, true);
        log_conversation(&state, conversation).await?;
        return Ok(if request.stream {
            let events = vec![
                Event::default()
                    .event("token")
                    .data(json!({"delta": body["answer"]}).to_string()),
                Event::default().event("done").data(body.to_string()),
            ];
            Sse::new(futures_util::stream::iter(
                events.into_iter().map(Ok::<_, Infallible>),
            ))
            .into_response()
        } else {
            Json(body).into_response()
        });
    };
    let mut pending = pending;
    pending.conversation.prompt = prompt.messages.clone();
    let model = client.model().to_owned();
    let model_started = Instant::now();
    if !request.stream {
        let outcome = client.complete(&prompt.messages).await;
        let model_ms = model_started.elapsed().as_millis() as u64;
        let id = pending.conversation.conversation_id.clone();
        let failure = outcome.as_ref().err().map(|e| model_error(&id, e));
        let conversation = pending.finish(&model, model_ms, outcome.map_err(|e| e.to_string()));
        let body = response_body(&conversation, false);
        log_conversation(&state, conversation).await?;
        return match failure {
            Some(error) => Err(error),
            None => Ok(Json(body).into_response()),
        };
    }
    let mut tokens = match client.stream(&prompt.messages).await {
        Ok(tokens) => tokens,
        Err(e) => {
            let id = pending.conversation.conversation_id.clone();
            let model_ms = model_started.elapsed().as_millis() as u64;
            let conversation = pending.finish(&model, model_ms, Err(e.to_string()));
            log_conversation(&state, conversation).await?;
            return Err(model_error(&id, &e));
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let meta = json!({
        "conversation_id": pending.conversation.conversation_id,
        "model": model,
        "citations": pending.conversation.citations,
        "profile_fields": pending.conversation.profile_fields,
    });
    tokio::spawn(async move {
        let _ = tx
            .send(Event::default().event("meta").data(meta.to_string()))
            .await;
        let mut answer = String::new();
        let mut failure = None;
        while let Some(item) = tokens.next().await {
            match item {
                Ok(delta) => {
                    answer.push_str(&delta);
                    // A client that went away still gets its conversation logged.
                    let _ = tx
                        .send(
                            Event::default()
                                .event("token")
                                .data(json!({"delta": delta}).to_string()),
                        )
                        .await;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let model_ms = model_started.elapsed().as_millis() as u64;
        let id = pending.conversation.conversation_id.clone();
        let (outcome, error) = match failure {
            None => (Ok(answer), None),
            Some(e) => {
                // The response has begun: this error is an event, not a logged response.
                tracing::error!(
                    conversation = %id,
                    error = %e,
                    "the language model failed mid-stream"
                );
                (Err(e.to_string()), Some(model_error(&id, &e)))
            }
        };
        let conversation = pending.finish(&model, model_ms, outcome);
        let body = response_body(&conversation, false);
        let last = match (log_conversation(&state, conversation).await, error) {
            (Err(e), _) | (Ok(()), Some(e)) => {
                Event::default().event("error").data(e.json().to_string())
            }
            (Ok(()), None) => Event::default().event("done").data(body.to_string()),
        };
        let _ = tx.send(last).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
