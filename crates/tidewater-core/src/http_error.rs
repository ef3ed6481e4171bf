//! Reading the error bodies of OpenAI-compatible servers (embeddings and chat clients
//! both need it).

use serde::Deserialize;

/// The human-readable message of an error body: OpenAI's `{"error": {"message"}}`, the
/// `{"error": "..."}` of TEI, TGI and others, `{"message"}`, or else the start of the body.
/// At most 300 characters.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object { message: String },
        Text(String),
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<ErrorField>,
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error: Some(ErrorField::Object { message } | ErrorField::Text(message)),
            ..
        })
        | Ok(ErrorBody {
            message: Some(message),
            ..
        }) => excerpt(&message),
        _ if body.iter().all(u8::is_ascii_whitespace) => "(empty body)".to_owned(),
        _ => excerpt(String::from_utf8_lossy(body).trim()),
    }
}

/// The start of a text, for error messages: enough to recognise it, not a whole page.
pub fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 300;
    let mut out: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_found_in_common_shapes() {
        let openai = br#"{"error":{"message":"context too long","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "context too long");
        assert_eq!(error_message(br#"{"error":"bad input"}"#), "bad input");
        assert_eq!(error_message(br#"{"message":"nope"}"#), "nope");
        assert_eq!(error_message(b" plain text\n"), "plain text");
        assert_eq!(error_message(b""), "(empty body)");
        let long = "x".repeat(400);
        assert_eq!(error_message(long.as_bytes()).chars().count(), 301);
    }
}
