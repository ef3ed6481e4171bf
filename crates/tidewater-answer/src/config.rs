//! The `[answer]` section of Tidewater's configuration: how many chunks to retrieve, the
//! prompt template, and the language model to call (none: extractive answers).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidewater_core::redact::redact;

/// How `/v1/ask` answers.
///
/// ```toml
/// [answer]
/// k = 5
///
/// [answer.llm]
/// base_url = "http://127.0.0.1:8000/v1"
/// model = "qwen2.5-7b-instruct"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerConfig {
    /// Chunks retrieved for a question and given to the model as context.
    pub k: usize,
    /// How the question, the chunks and the customer's profile become chat messages.
    pub template: PromptTemplate,
    /// The OpenAI-compatible chat-completions endpoint. Unset: answers are extractive, made
    /// of the retrieved sentences that best match the question.
    pub llm: Option<LlmConfig>,
    /// Sentences at most in an extractive answer.
    pub extractive_sentences: usize,
}

impl Default for AnswerConfig {
    fn default() -> Self {
        Self {
            k: 5,
            template: PromptTemplate::default(),
            llm: None,
            extractive_sentences: 3,
        }
    }
}

impl AnswerConfig {
    /// Checks what serde cannot: limits of at least 1, templates that name only known
    /// placeholders, and a usable `llm` section. The error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 {
            return Err("answer.k must be at least 1".into());
        }
        if self.extractive_sentences == 0 {
            return Err("answer.extractive_sentences must be at least 1".into());
        }
        crate::prompt::check_template(&self.template)
            .map_err(|reason| format!("answer.template.{reason}"))?;
        match &self.llm {
            Some(llm) => llm
                .validate()
                .map_err(|reason| format!("answer.llm.{reason}")),
            None => Ok(()),
        }
    }
}

/// The prompt template. Placeholders are written `{name}`; a value is inserted verbatim,
/// never expanded again, so a chunk's text cannot inject placeholders.
///
/// Where each placeholder may appear:
/// - `system` and `user`: `{context}` (the rendered context items joined by newlines),
///   `{question}`, `{profile}` (the rendered `profile` block, empty without a customer),
///   `{profile.NAME}` and `{profile.*}`;
/// - `context_item`: `{n}` (the chunk's 1-based rank, the number answers cite),
///   `{chunk_id}`, `{doc_id}`, `{text}`;
/// - `profile`: `{profile.NAME}` (that field's value, `unknown` when the customer lacks
///   it) and `{profile.*}` (every field, one `- name: value` line each).
///
/// A placeholder alone on its line that renders empty takes its line with it, and the
/// blank lines around it collapse to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptTemplate {
    /// The system message; omitted when it renders empty. The default tells the model to
    /// answer only from the context, cite passages as `[n]`, and say when the context does
    /// not hold the answer.
    pub system: String,
    /// How each retrieved chunk is written into `{context}`.
    pub context_item: String,
    /// The block `{profile}` renders to when the question comes with a customer.
    pub profile: String,
    /// The user message.
    pub user: String,
}

/// The default system message.
const DEFAULT_SYSTEM: &str = "You answer questions using only the numbered context passages \
you are given. Cite every passage you rely on by its number in square brackets, like [1] or \
[2][3]. If the context does not contain the answer, say that the available documents do not \
answer the question; do not guess and do not use outside knowledge.";

impl Default for PromptTemplate {
    fn default() -> Self {
        Self {
            system: DEFAULT_SYSTEM.to_owned(),
            context_item: "[{n}] {text}".to_owned(),
            profile: "About the customer:\n{profile.*}".to_owned(),
            user: "Context:\n{context}\n\n{profile}\n\nQuestion: {question}".to_owned(),
        }
    }
}

/// An OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp, Ollama, OpenAI).
///
/// Its `Debug` masks secrets in the base URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL of the API, e.g. `http://127.0.0.1:8000/v1`; requests go to
    /// `{base_url}/chat/completions`.
    pub base_url: String,
    /// Model name sent with each request.
    pub model: String,
    /// Environment variable holding the API key, sent as a bearer token. Unset or empty:
    /// no `Authorization` header.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// Time limit of one attempt: the whole response when not streaming, the first token
    /// when streaming.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest silence allowed in a streamed answer after its first token: between two
    /// reads of data from the server (keep-alive comments count).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Retries after a failure that may pass (connection error, timeout, HTTP 408, 429,
    /// 5xx), with jittered exponential back-off or the server's `Retry-After`. A stream is
    /// never retried once its first token has arrived.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Sampling temperature. Unset: not sent, the server's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Limit of generated tokens. Unset: not sent, the server's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Most bytes read from the endpoint for one answer: the whole body of an answer that
    /// is not streamed; for a streamed one, each event and the text of the whole answer.
    /// A larger response fails the request (`/v1/ask` answers 502), so a broken or hostile
    /// endpoint cannot make the server buffer without bound.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: a password in the base URL must not reach logs.
        f.debug_struct("LlmConfig")
            .field("base_url", &redact(&self.base_url))
            .field("model", &self.model)
            .field("api_key_env", &self.api_key_env)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_retries", &self.max_retries)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl LlmConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: default_api_key_env(),
            timeout: default_timeout(),
            idle_timeout: default_idle_timeout(),
            max_retries: default_max_retries(),
            temperature: None,
            max_tokens: None,
            max_response_bytes: default_max_response_bytes(),
        }
    }

    /// Checks the settings; the error starts with the offending key.
    pub fn validate(&self) -> Result<(), String> {
        self.completions_url()?;
        if self.model.trim().is_empty() {
            return Err("model must not be empty".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        if self.idle_timeout.is_zero() {
            return Err("idle_timeout must be positive".into());
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(format!("temperature must be between 0 and 2, not {t}"));
            }
        }
        if self.max_tokens == Some(0) {
            return Err("max_tokens must be at least 1".into());
        }
        if self.max_response_bytes == 0 {
            return Err("max_response_bytes must be at least 1".into());
        }
        Ok(())
    }

    /// `{base_url}/chat/completions`, checked to be an http or https URL. The error shows
    /// the base URL with its secrets masked.
    pub(crate) fn completions_url(&self) -> Result<reqwest::Url, String> {
        let base = self.base_url.trim_end_matches('/');
        let shown = redact(&self.base_url);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!(
                "base_url {shown:?} must start with http:// or https://"
            ));
        }
        reqwest::Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| format!("base_url {shown:?} is not a URL: {e}"))
    }
}

fn default_api_key_env() -> String {
    "OPENAI_API_KEY".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retries() -> u32 {
    2
}
fn default_max_response_bytes() -> usize {
    4 * 1024 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_takes_the_defaults() {
        let cfg: AnswerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, AnswerConfig::default());
        assert_eq!((cfg.k, cfg.extractive_sentences), (5, 3));
        assert!(cfg.llm.is_none());
        assert_eq!(cfg.template.context_item, "[{n}] {text}");
        cfg.validate().unwrap();
    }

    #[test]
    fn llm_defaults_and_durations() {
        let cfg: AnswerConfig = serde_json::from_str(
            r#"{"k": 8, "llm": {"base_url": "http://127.0.0.1:8000/v1", "model": "m",
                "timeout": "1s 500ms", "temperature": 0.2}}"#,
        )
        .unwrap();
        let mut want = LlmConfig::new("http://127.0.0.1:8000/v1", "m");
        want.timeout = Duration::from_millis(1500);
        want.temperature = Some(0.2);
        assert_eq!(cfg.llm, Some(want));
        assert_eq!(cfg.k, 8);
        let llm = cfg.llm.unwrap();
        assert_eq!(llm.api_key_env, "OPENAI_API_KEY");
        assert_eq!(llm.idle_timeout, Duration::from_secs(30));
        assert_eq!(llm.max_retries, 2);
        assert_eq!(
            llm.completions_url().unwrap().as_str(),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
    }

    #[test]
    fn unknown_keys_and_a_missing_model_are_rejected() {
        assert!(serde_json::from_str::<AnswerConfig>(r#"{"kk": 5}"#).is_err());
        assert!(serde_json::from_str::<AnswerConfig>(r#"{"template": {"sys": ""}}"#).is_err());
        assert!(
            serde_json::from_str::<AnswerConfig>(r#"{"llm": {"base_url": "http://h"}}"#).is_err()
        );
    }

    #[test]
    fn validation_names_the_offending_key() {
        let mut cfg = AnswerConfig {
            k: 0,
            ..AnswerConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("answer.k"));
        cfg.k = 5;

        cfg.llm = Some(LlmConfig::new("127.0.0.1:8000/v1", "m"));
        let err = cfg.validate().unwrap_err();
        assert!(err.starts_with("answer.llm.base_url"), "{err}");

        cfg.llm = Some(LlmConfig::new("https://api.openai.com/v1/", "gpt"));
        cfg.validate().unwrap();
        let url = cfg.llm.as_ref().unwrap().completions_url().unwrap();
        assert_eq!(url.as_str(), "https://api.openai.com/v1/chat/completions");

        cfg.llm.as_mut().unwrap().timeout = Duration::ZERO;
        assert!(cfg.validate().unwrap_err().contains("answer.llm.timeout"));

        cfg.llm = None;
        cfg.template.user = "{questoin}".into();
        let err = cfg.validate().unwrap_err();
        assert!(err.starts_with("answer.template.user"), "{err}");
    }
}
