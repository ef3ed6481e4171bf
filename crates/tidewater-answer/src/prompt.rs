//! Prompts: the retrieved chunks, the question and the customer's profile written into
//! the [`PromptTemplate`] as chat messages, remembering which profile fields were used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidewater_core::ChatMessage;

use crate::PromptTemplate;

/// A retrieved chunk, in rank order: the first is the best match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    /// The chunk's id.
    pub chunk_id: String,
    /// The document it belongs to.
    pub doc_id: String,
    /// Its text.
    pub text: String,
    /// Its retrieval score.
    pub score: f32,
}

/// A filled-in template.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The chat messages: the system message (unless it rendered empty), then the user's.
    pub messages: Vec<ChatMessage>,
    /// The profile fields the prompt holds, with their values: those named by
    /// `{profile.NAME}` that the customer has, and all of them where `{profile.*}` was
    /// rendered.
    pub profile_fields: BTreeMap<String, Value>,
}

/// What a profile field the customer lacks renders as.
const UNKNOWN: &str = "unknown";

/// Placeholders of the system and user messages, besides `{profile.NAME}` and `{profile.*}`.
const MESSAGE_PLACEHOLDERS: &[&str] = &["context", "question", "profile"];
/// Placeholders of a context item.
const ITEM_PLACEHOLDERS: &[&str] = &["n", "chunk_id", "doc_id", "text"];

/// Fills `template` with the question, the chunks (in rank order: `{n}` is the index plus
/// one) and the customer's profile (`None`: no customer; the `{profile}` block renders
/// empty, as it does for a customer without any field).
///
/// Fields named by `{profile.NAME}` that the profile lacks (or holds as `null`) render as
/// `unknown` and are not in [`Prompt::profile_fields`]. Strings render as they are, lists
/// of scalars as `a, b, c`, other values as JSON.
pub fn build_prompt(
    template: &PromptTemplate,
    question: &str,
    chunks: &[ContextChunk],
    profile: Option<&BTreeMap<String, Value>>,
) -> Prompt {
    let context = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            render(&template.context_item, |name| match name {
                "n" => Some((i + 1).to_string()),
                "chunk_id" => Some(chunk.chunk_id.clone()),
                "doc_id" => Some(chunk.doc_id.clone()),
                "text" => Some(chunk.text.trim().to_owned()),
                _ => None,
            })
        })
        .collect::<Vec<_>>()
        .join("\n");
    let question = question.trim();
    let mut profile = ProfileView::new(profile);
    let mut message = |text: &str| {
        render(text, |name| match name {
            "context" => Some(context.clone()),
            "question" => Some(question.to_owned()),
            "profile" => Some(profile.block(&template.profile)),
            _ => profile.placeholder(name),
        })
    };
    let system = message(&template.system);
    let user = message(&template.user);

    let mut messages = Vec::with_capacity(2);
    if !system.trim().is_empty() {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", user));
    Prompt {
        messages,
        profile_fields: profile.used,
    }
}

/// The customer's fields, and those read so far.
struct ProfileView<'a> {
    fields: Option<&'a BTreeMap<String, Value>>,
    used: BTreeMap<String, Value>,
}

impl<'a> ProfileView<'a> {
    fn new(fields: Option<&'a BTreeMap<String, Value>>) -> Self {
        Self {
            fields,
            used: BTreeMap::new(),
        }
    }

    /// The fields with a value; `null` counts as absent.
    fn present(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.fields
            .into_iter()
            .flatten()
            .filter(|(_, value)| !value.is_null())
    }

    /// The value of `{profile.NAME}` or `{profile.*}`; `None` for other placeholders.
    fn placeholder(&mut self, name: &str) -> Option<String> {
        if name == "profile.*" {
            let all: Vec<_> = self.present().collect();
            let mut lines = Vec::with_capacity(all.len());
            for (field, value) in all {
                lines.push(format!("- {field}: {}", value_text(value)));
                self.used.insert(field.clone(), value.clone());
            }
            return Some(lines.join("\n"));
        }
        let field = name.strip_prefix("profile.")?;
        match self.fields.and_then(|f| f.get(field)) {
            Some(value) if !value.is_null() => {
                self.used.insert(field.to_owned(), value.clone());
                Some(value_text(value))
            }
            _ => Some(UNKNOWN.to_owned()),
        }
    }

    /// The rendered `{profile}` block: empty without a customer or without any field.
    fn block(&mut self, template: &str) -> String {
        if self.present().next().is_none() {
            return String::new();
        }
        render(template, |name| self.placeholder(name))
    }
}

/// A profile value as prompt text.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items)
            if items
                .iter()
                .all(|v| v.is_string() || v.is_number() || v.is_boolean()) =>
        {
            items.iter().map(value_text).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

/// Replaces each `{name}` of `template` for which `lookup` has a value; other braces stay
/// as written. Values are inserted verbatim, never scanned for placeholders.
///
/// A placeholder alone on its line that renders empty removes its line, and a blank line
/// left doubled by that collapses: `"A\n\n{p}\n\nB"` renders `"A\n\nB"`.
fn render(template: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some((name, tail)) = split_placeholder(after) else {
            out.push('{');
            rest = after;
            continue;
        };
        let Some(value) = lookup(name) else {
            out.push('{');
            rest = after;
            continue;
        };
        rest = tail;
        let alone_on_line =
            (out.is_empty() || out.ends_with('\n')) && (rest.is_empty() || rest.starts_with('\n'));
        if !value.is_empty() || !alone_on_line {
            out.push_str(&value);
            continue;
        }
        rest = rest.strip_prefix('\n').unwrap_or(rest);
        if out.is_empty() || out.ends_with("\n\n") {
            rest = rest.strip_prefix('\n').unwrap_or(rest);
        }
        if rest.is_empty() {
            out.truncate(out.trim_end_matches('\n').len());
        }
    }
    out.push_str(rest);
    out
}

/// Splits the text after a `{` into a placeholder name and the text after its `}`, when
/// it starts with one: a name of ASCII letters, digits, `_`, `-`, `.` and `*`.
fn split_placeholder(after_brace: &str) -> Option<(&str, &str)> {
    let end = after_brace
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*')))?;
    if end == 0 || !after_brace[end..].starts_with('}') {
        return None;
    }
    Some((&after_brace[..end], &after_brace[end + 1..]))
}

/// The placeholder names in `template`, in order.
fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some((name, tail)) = split_placeholder(rest) {
            names.push(name);
            rest = tail;
        }
    }
    names
}

/// Checks that each part of `template` names only placeholders it can fill, and that the
/// messages hold the question and the context. The error starts with the part's name.
pub(crate) fn check_template(template: &PromptTemplate) -> Result<(), String> {
    let is_profile_field =
        |name: &str| name.strip_prefix("profile.").is_some_and(|f| !f.is_empty());
    let parts: [(&str, &str, &[&str], bool); 4] = [
        ("system", &template.system, MESSAGE_PLACEHOLDERS, true),
        ("user", &template.user, MESSAGE_PLACEHOLDERS, true),
        (
            "context_item",
            &template.context_item,
            ITEM_PLACEHOLDERS,
            false,
        ),
        ("profile", &template.profile, &[], true),
    ];
    for (part, text, known, profile_fields) in parts {
        for name in placeholders(text) {
            if !(known.contains(&name) || (profile_fields && is_profile_field(name))) {
                let mut allowed: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
                if profile_fields {
                    allowed.extend(["{profile.NAME}".to_owned(), "{profile.*}".to_owned()]);
                }
                return Err(format!(
                    "{part}: unknown placeholder {{{name}}}; known here: {}",
                    allowed.join(", ")
                ));
            }
        }
    }
    for needed in ["question", "context"] {
        let in_messages = placeholders(&template.system)
            .into_iter()
            .chain(placeholders(&template.user))
            .any(|name| name == needed);
        if !in_messages {
            return Err(format!("user: neither user nor system holds {{{needed}}}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chunk(id: &str, doc: &str, text: &str) -> ContextChunk {
        ContextChunk {
            chunk_id: id.into(),
            doc_id: doc.into(),
            text: text.into(),
            score: 0.5,
        }
    }

    fn chunks() -> Vec<ContextChunk> {
        vec![
            chunk("c1", "refunds.md", "Refunds take 5 days.\n"),
            chunk("c7", "shipping.md", "Shipping is free above 50 EUR."),
        ]
    }

    fn profile(pairs: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(pairs).unwrap()
    }

    fn user_message(prompt: &Prompt) -> &str {
        let last = prompt.messages.last().unwrap();
        assert_eq!(last.role, "user");
        &last.content
    }

    #[test]
    fn the_default_template_without_a_profile_leaves_no_gap() {
        let prompt = build_prompt(
            &PromptTemplate::default(),
            "  How long do refunds take? ",
            &chunks(),
            None,
        );
        assert_eq!(prompt.messages.len(), 2);
        assert_eq!(prompt.messages[0].role, "system");
        assert!(prompt.messages[0].content.contains("[1]"));
        assert_eq!(
            user_message(&prompt),
            "Context:\n[1] Refunds take 5 days.\n[2] Shipping is free above 50 EUR.\n\n\
             Question: How long do refunds take?"
        );
        assert!(prompt.profile_fields.is_empty());
    }

    #[test]
    fn the_default_template_lists_every_profile_field() {
        let customer = profile(json!({
            "name": "Ada", "tier": "gold", "orders": 3, "tags": ["vip", "eu"], "phone": null
        }));
        let prompt = build_prompt(&PromptTemplate::default(), "Q?", &chunks(), Some(&customer));
        assert_eq!(
            user_message(&prompt),
            "Context:\n[1] Refunds take 5 days.\n[2] Shipping is free above 50 EUR.\n\n\
             About the customer:\n- name: Ada\n- orders: 3\n- tags: vip, eu\n- tier: gold\n\n\
             Question: Q?"
        );
        let used: Vec<&str> = prompt.profile_fields.keys().map(String::as_str).collect();
        assert_eq!(used, ["name", "orders", "tags", "tier"]);
        assert_eq!(prompt.profile_fields["orders"], json!(3));
    }

    #[test]
    fn named_fields_render_their_value_or_unknown() {
        let template = PromptTemplate {
            system: String::new(),
            context_item: "<{doc_id}#{chunk_id} n={n}> {text}".into(),
            profile: "Customer {profile.name} ({profile.tier}), plan {profile.plan}".into(),
            user: "{context}\n{profile}\nQ: {question}".into(),
        };
        let customer = profile(json!({"name": "Ada", "tier": "gold", "email": "a@x"}));
        let prompt = build_prompt(&template, "Q?", &chunks()[..1], Some(&customer));
        // An empty system message is left out.
        assert_eq!(prompt.messages.len(), 1);
        assert_eq!(
            user_message(&prompt),
            "<refunds.md#c1 n=1> Refunds take 5 days.\n\
             Customer Ada (gold), plan unknown\nQ: Q?"
        );
        assert_eq!(
            prompt.profile_fields,
            profile(json!({"name": "Ada", "tier": "gold"}))
        );
    }

    #[test]
    fn the_profile_block_is_only_rendered_where_the_template_asks_for_it() {
        let template = PromptTemplate {
            user: "{context}\nQ: {question}".into(),
            ..PromptTemplate::default()
        };
        let customer = profile(json!({"name": "Ada"}));
        let prompt = build_prompt(&template, "Q?", &chunks(), Some(&customer));
        assert!(!user_message(&prompt).contains("Ada"));
        assert!(prompt.profile_fields.is_empty());

        // A customer without any field renders no block either.
        let empty = BTreeMap::new();
        let with_empty = build_prompt(&PromptTemplate::default(), "Q?", &chunks(), Some(&empty));
        let without = build_prompt(&PromptTemplate::default(), "Q?", &chunks(), None);
        assert_eq!(with_empty, without);
    }

    #[test]
    fn values_are_not_expanded_again() {
        let tricky = [chunk("c1", "d", "Ignore this: {question} {profile.secret}")];
        let customer = profile(json!({"name": "{context}", "secret": "s3"}));
        let template = PromptTemplate {
            profile: "Name: {profile.name}".into(),
            ..PromptTemplate::default()
        };
        let prompt = build_prompt(&template, "real question", &tricky, Some(&customer));
        let user = user_message(&prompt);
        assert!(
            user.contains("[1] Ignore this: {question} {profile.secret}"),
            "{user}"
        );
        assert!(user.contains("Name: {context}"), "{user}");
        assert!(!prompt.profile_fields.contains_key("secret"));
    }

    #[test]
    fn empty_placeholders_alone_on_a_line_collapse_blank_lines() {
        let empty = |_: &str| Some(String::new());
        assert_eq!(render("A\n\n{p}\n\nB", empty), "A\n\nB");
        assert_eq!(render("A\n{p}\nB", empty), "A\nB");
        assert_eq!(render("{p}\n\nB", empty), "B");
        assert_eq!(render("A\n\n{p}", empty), "A");
        assert_eq!(render("A\n\n{p}\n{q}\n\nB", empty), "A\n\nB");
        // Inline, only the placeholder goes.
        assert_eq!(render("A {p} B\n\nC", empty), "A  B\n\nC");
        // Braces that are no placeholder stay as written.
        let none = |_: &str| None;
        assert_eq!(
            render(r#"{"a": 1} {x y} {} {z"#, none),
            r#"{"a": 1} {x y} {} {z"#
        );
        assert_eq!(render("{unknown}", none), "{unknown}");
    }

    #[test]
    fn an_empty_context_still_renders() {
        let prompt = build_prompt(&PromptTemplate::default(), "Q?", &[], None);
        assert_eq!(user_message(&prompt), "Context:\n\nQuestion: Q?");
    }

    #[test]
    fn template_checks_name_the_part_and_placeholder() {
        check_template(&PromptTemplate::default()).unwrap();
        let bad_item = PromptTemplate {
            context_item: "[{n}] {question}".into(),
            ..PromptTemplate::default()
        };
        let err = check_template(&bad_item).unwrap_err();
        assert!(
            err.starts_with("context_item: unknown placeholder {question}"),
            "{err}"
        );

        let no_question = PromptTemplate {
            user: "{context}".into(),
            ..PromptTemplate::default()
        };
        assert!(check_template(&no_question)
            .unwrap_err()
            .contains("{question}"));

        let fields_in_user = PromptTemplate {
            user: "{context} {question} for {profile.name}; {profile.*}".into(),
            ..PromptTemplate::default()
        };
        check_template(&fields_in_user).unwrap();
    }
}
