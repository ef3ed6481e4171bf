//! The JSON of `/v1/chat/completions`: the request, the non-streamed response, the pieces
//! of a streamed one, and the error bodies servers send.

use serde::{Deserialize, Serialize};
use tidewater_core::ChatMessage;

/// Request body. Unset sampling options are left out, so the server's defaults apply.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: &'a [ChatMessage],
    pub(crate) stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_tokens: Option<u32>,
}

/// The text of a non-streamed response: `choices[0].message.content`.
pub(crate) fn completion_text(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        content: Option<String>,
    }
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|e| format!("{e}; body: {}", excerpt(&String::from_utf8_lossy(body))))?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("no choices in the response")?;
    choice
        .message
        .content
        .ok_or_else(|| "the first choice has no text content".to_owned())
}

/// One event of a streamed response.
#[derive(Debug, PartialEq)]
pub(crate) enum StreamEvent {
    /// A piece of the answer (`choices[0].delta.content`), possibly empty: the first event
    /// often carries only the role, the last only the finish reason.
    Delta(String),
    /// `[DONE]`: the answer is complete.
    Done,
    /// The server reported an error in place of a piece.
    Error(String),
}

/// Parses the data of one server-sent event of a streamed response.
pub(crate) fn stream_event(data: &str) -> Result<StreamEvent, String> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
        error: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Delta>,
    }
    #[derive(Deserialize)]
    struct Delta {
        content: Option<String>,
    }
    if data.trim() == "[DONE]" {
        return Ok(StreamEvent::Done);
    }
    let chunk: Chunk =
        serde_json::from_str(data).map_err(|e| format!("{e}; event: {}", excerpt(data)))?;
    if chunk.error.is_some() {
        return Ok(StreamEvent::Error(error_message(data.as_bytes())));
    }
    let content = chunk
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.delta)
        .and_then(|delta| delta.content)
        .unwrap_or_default();
    Ok(StreamEvent::Delta(content))
}

pub(crate) use tidewater_core::http_error::error_message;
use tidewater_core::http_error::excerpt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_options_are_not_sent() {
        let messages = [ChatMessage::new("user", "hi")];
        let mut request = ChatRequest {
            model: "m",
            messages: &messages,
            stream: false,
            temperature: None,
            max_tokens: None,
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#
        );
        request.temperature = Some(0.2);
        request.max_tokens = Some(64);
        let json: serde_json::Value = serde_json::to_value(&request).unwrap();
        assert_eq!(json["max_tokens"], 64);
        assert_eq!(json["temperature"].as_f64().unwrap() as f32, 0.2);
    }

    #[test]
    fn the_first_choice_is_the_answer() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[
            {"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":3}}"#;
        assert_eq!(completion_text(body).unwrap(), "Paris.");
        assert!(completion_text(br#"{"choices":[]}"#)
            .unwrap_err()
            .contains("no choices"));
        let no_text = br#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#;
        assert!(completion_text(no_text).is_err());
        assert!(completion_text(b"<html>bad gateway</html>")
            .unwrap_err()
            .contains("bad gateway"));
    }

    #[test]
    fn stream_events_are_deltas_done_or_errors() {
        let delta = r#"{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" world"}}]}"#;
        assert_eq!(stream_event(delta), Ok(StreamEvent::Delta(" world".into())));
        let role = r#"{"choices":[{"delta":{"role":"assistant"}}]}"#;
        assert_eq!(stream_event(role), Ok(StreamEvent::Delta(String::new())));
        let usage = r#"{"choices":[],"usage":{"total_tokens":9}}"#;
        assert_eq!(stream_event(usage), Ok(StreamEvent::Delta(String::new())));
        assert_eq!(stream_event("[DONE]"), Ok(StreamEvent::Done));
        let error = r#"{"error":{"message":"model overloaded","code":503}}"#;
        assert_eq!(
            stream_event(error),
            Ok(StreamEvent::Error("model overloaded".into()))
        );
        assert!(stream_event("{not json").is_err());
    }
}
