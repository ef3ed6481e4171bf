//! Identifiers — a namespace and a normalised value, written `email:ana@example.com` — and
//! the normalisers that turn raw column values into them.
//!
//! Two records belong to the same customer when they hold an equal identifier, so equal
//! people must produce equal strings: `" Ana@Example.COM"` and `"ana@example.com"` are
//! one email, `"(415) 555-0123"` with default region `US` and `"+1 415 555 0123"` are one
//! phone number. A normaliser decides this per identifier column.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A normalised identifier: a namespace (`email`, `phone`, `crm_id`, …) and a value.
///
/// Ordered by namespace, then value; the identity graph evaluates a record's new links in
/// this order. Displayed, parsed and (de)serialised as `namespace:value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier {
    namespace: String,
    value: String,
}

impl Identifier {
    /// Builds an identifier from a raw value, normalised by `normaliser`. The namespace is
    /// trimmed and lowercased and may hold only `a-z`, `0-9`, `_`, `-` and `.`.
    pub fn new(
        namespace: &str,
        raw: &str,
        normaliser: &Normaliser,
    ) -> Result<Self, IdentifierError> {
        let namespace = normalise_namespace(namespace)?;
        let value = normaliser.normalise(raw)?;
        Ok(Self { namespace, value })
    }

    /// Parses an identifier written as `namespace:value`, as it appears in configuration
    /// (the blocklist) and in API paths.
    ///
    /// The value is normalised by the namespace's built-in rule, so it must be written in
    /// its canonical form apart from cosmetics: `email` values are trimmed and lowercased
    /// and must contain one `@`; `phone` values must be E.164 (`+` and up to 15 digits;
    /// spaces, dashes, dots and parentheses are dropped; whether the number is assigned is
    /// not checked, so a placeholder such as `+10000000000` can be blocklisted); any other
    /// namespace's value is only trimmed. An identifier of a namespace configured with
    /// [`Normaliser::Lowercase`] must therefore be written in lowercase.
    pub fn parse(input: &str) -> Result<Self, IdentifierError> {
        let Some((namespace, raw)) = input.split_once(':') else {
            return Err(IdentifierError::MissingNamespace {
                input: input.to_owned(),
            });
        };
        let namespace = normalise_namespace(namespace)?;
        let value = match namespace.as_str() {
            "email" => Normaliser::Email.normalise(raw)?,
            "phone" => canonical_phone(raw)?,
            _ => Normaliser::Exact.normalise(raw)?,
        };
        Ok(Self { namespace, value })
    }

    /// The namespace, e.g. `email`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The normalised value, e.g. `ana@example.com`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.value)
    }
}

impl FromStr for Identifier {
    type Err = IdentifierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Identifier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn normalise_namespace(namespace: &str) -> Result<String, IdentifierError> {
    let namespace = namespace.trim().to_ascii_lowercase();
    let valid = !namespace.is_empty()
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
    if valid {
        Ok(namespace)
    } else {
        Err(IdentifierError::InvalidNamespace { namespace })
    }
}

/// The canonical-form check `Identifier::parse` applies to `phone` values.
fn canonical_phone(raw: &str) -> Result<String, NormaliseError> {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && !"-.()".contains(*c))
        .collect();
    if compact.is_empty() {
        return Err(NormaliseError::Empty);
    }
    let digits = compact.strip_prefix('+').unwrap_or("");
    let valid = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(compact)
    } else {
        Err(NormaliseError::InvalidPhone {
            value: raw.to_owned(),
            reason: "not in E.164 form (`+` followed by up to 15 digits)".to_owned(),
        })
    }
}

/// How a raw column value becomes an identifier value.
///
/// Configured per identifier column. The serde form is an externally tagged enum in
/// snake case, which reads naturally in TOML and JSON:
///
/// ```toml
/// normaliser = "email"                                  # or "exact", "lowercase"
/// normaliser = { phone = { default_region = "GB" } }
/// ```
///
/// A region that is not an ISO 3166 alpha-2 code known to the phone-number metadata is
/// rejected when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NormaliserRepr", into = "NormaliserRepr")]
pub enum Normaliser {
    /// Trimmed and lowercased; the value must hold exactly one `@` with text on both sides
    /// and no whitespace.
    Email,
    /// Parsed as a phone number and written in E.164 (`+14155550123`); numbers that are
    /// not valid for their region are rejected.
    Phone {
        /// The ISO 3166 alpha-2 region (`US`, `GB`, `DE`) of numbers written without an
        /// international prefix.
        default_region: String,
    },
    /// Trimmed only.
    Exact,
    /// Trimmed and lowercased.
    Lowercase,
}

impl Normaliser {
    /// Normalises a raw value. An empty value (after trimming) is an error for every
    /// normaliser, so callers can tell "no identifier" from a bad one.
    pub fn normalise(&self, raw: &str) -> Result<String, NormaliseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(NormaliseError::Empty);
        }
        match self {
            Self::Email => normalise_email(trimmed),
            Self::Phone { default_region } => {
                normalise_phone(trimmed, parse_region(default_region)?)
            }
            Self::Exact => Ok(trimmed.to_owned()),
            Self::Lowercase => Ok(trimmed.to_lowercase()),
        }
    }

    /// Checks the settings (the phone region); deserialisation already does this.
    pub fn validate(&self) -> Result<(), NormaliseError> {
        match self {
            Self::Phone { default_region } => parse_region(default_region).map(drop),
            Self::Email | Self::Exact | Self::Lowercase => Ok(()),
        }
    }
}

fn normalise_email(trimmed: &str) -> Result<String, NormaliseError> {
    let invalid = |reason: &str| NormaliseError::InvalidEmail {
        value: trimmed.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((local, domain)) = trimmed.split_once('@') else {
        return Err(invalid("no `@`"));
    };
    if domain.contains('@') {
        return Err(invalid("more than one `@`"));
    }
    if local.is_empty() || domain.is_empty() {
        return Err(invalid("empty part before or after `@`"));
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err(invalid("contains whitespace"));
    }
    Ok(trimmed.to_lowercase())
}

fn parse_region(region: &str) -> Result<phonenumber::country::Id, NormaliseError> {
    let code = region.trim().to_ascii_uppercase();
    if code.len() != 2 {
        return Err(NormaliseError::UnknownRegion {
            region: region.to_owned(),
        });
    }
    code.parse().map_err(|_| NormaliseError::UnknownRegion {
        region: region.to_owned(),
    })
}

fn normalise_phone(
    trimmed: &str,
    region: phonenumber::country::Id,
) -> Result<String, NormaliseError> {
    let number =
        phonenumber::parse(Some(region), trimmed).map_err(|e| NormaliseError::InvalidPhone {
            value: trimmed.to_owned(),
            reason: e.to_string(),
        })?;
    if !number.is_valid() {
        return Err(NormaliseError::InvalidPhone {
            value: trimmed.to_owned(),
            reason: "not a valid number for its region".to_owned(),
        });
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// The serde shape of [`Normaliser`]; separate so that reading a configuration validates
/// the phone region.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum NormaliserRepr {
    Email,
    Phone { default_region: String },
    Exact,
    Lowercase,
}

impl TryFrom<NormaliserRepr> for Normaliser {
    type Error = NormaliseError;

    fn try_from(repr: NormaliserRepr) -> Result<Self, Self::Error> {
        let normaliser = match repr {
            NormaliserRepr::Email => Self::Email,
            NormaliserRepr::Phone { default_region } => Self::Phone { default_region },
            NormaliserRepr::Exact => Self::Exact,
            NormaliserRepr::Lowercase => Self::Lowercase,
        };
        normaliser.validate()?;
        Ok(normaliser)
    }
}

impl From<Normaliser> for NormaliserRepr {
    fn from(normaliser: Normaliser) -> Self {
        match normaliser {
            Normaliser::Email => Self::Email,
            Normaliser::Phone { default_region } => Self::Phone { default_region },
            Normaliser::Exact => Self::Exact,
            Normaliser::Lowercase => Self::Lowercase,
        }
    }
}

/// A raw value that cannot be normalised. User input: the value (or the setting) is wrong,
/// and retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NormaliseError {
    /// The value is empty or only whitespace.
    #[error("empty identifier value")]
    Empty,
    /// Not an email address.
    #[error("invalid email {value:?}: {reason}")]
    InvalidEmail {
        /// The trimmed input.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a valid phone number.
    #[error("invalid phone number {value:?}: {reason}")]
    InvalidPhone {
        /// The trimmed input.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configured default region is not an ISO 3166 alpha-2 code with phone metadata.
    #[error("unknown phone region {region:?} (expected an ISO 3166 alpha-2 code such as \"US\")")]
    UnknownRegion {
        /// The configured region.
        region: String,
    },
}

/// An identifier that cannot be built or parsed. User input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifierError {
    /// The text has no `namespace:` prefix.
    #[error("identifier {input:?} has no namespace (expected `namespace:value`)")]
    MissingNamespace {
        /// The input.
        input: String,
    },
    /// The namespace is empty or holds characters other than `a-z 0-9 _ - .`.
    #[error("invalid identifier namespace {namespace:?} (allowed: a-z, 0-9, _, -, .)")]
    InvalidNamespace {
        /// The namespace, trimmed and lowercased.
        namespace: String,
    },
    /// The value cannot be normalised.
    #[error(transparent)]
    Value(#[from] NormaliseError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(region: &str) -> Normaliser {
        Normaliser::Phone {
            default_region: region.to_owned(),
        }
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            Normaliser::Email.normalise("  Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "ana",
            "@example.com",
            "ana@",
            "a@b@c",
            "an a@example.com",
            "  ",
        ] {
            assert!(Normaliser::Email.normalise(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Normaliser::Email.normalise(" "), Err(NormaliseError::Empty));
    }

    #[test]
    fn phones_become_e164() {
        let us = phone("US");
        assert_eq!(us.normalise("(415) 555-0123").unwrap(), "+14155550123");
        assert_eq!(us.normalise("+1 415 555 0123").unwrap(), "+14155550123");
        assert_eq!(
            phone("GB").normalise("020 7946 0018").unwrap(),
            "+442079460018"
        );
        assert_eq!(
            phone("gb").normalise("+44 20 7946 0018").unwrap(),
            "+442079460018"
        );
        assert_eq!(phone("DE").normalise("030 901820").unwrap(), "+4930901820");
    }

    #[test]
    fn invalid_phones_are_rejected() {
        let us = phone("US");
        for bad in ["12", "not a number", "+1 000 000 0000", "+10000000000"] {
            assert!(
                matches!(us.normalise(bad), Err(NormaliseError::InvalidPhone { .. })),
                "{bad:?}: {:?}",
                us.normalise(bad)
            );
        }
        assert!(matches!(
            phone("XX").normalise("4155550123"),
            Err(NormaliseError::UnknownRegion { .. })
        ));
        assert!(phone("USA").validate().is_err());
    }

    #[test]
    fn exact_and_lowercase() {
        assert_eq!(Normaliser::Exact.normalise(" AbC ").unwrap(), "AbC");
        assert_eq!(Normaliser::Lowercase.normalise(" AbC ").unwrap(), "abc");
    }

    #[test]
    fn identifiers_parse_and_display() {
        let id = Identifier::parse("Email:Ana@Example.com ").unwrap();
        assert_eq!(id.namespace(), "email");
        assert_eq!(id.value(), "ana@example.com");
        assert_eq!(id.to_string(), "email:ana@example.com");
        assert_eq!(id, "email:ana@example.com".parse().unwrap());

        let blocked = Identifier::parse("phone:+1 000-000-0000").unwrap();
        assert_eq!(blocked.to_string(), "phone:+10000000000");
        assert!(Identifier::parse("phone:4155550123").is_err());

        assert_eq!(Identifier::parse("crm_id: C-17 ").unwrap().value(), "C-17");
        assert!(matches!(
            Identifier::parse("no-namespace"),
            Err(IdentifierError::MissingNamespace { .. })
        ));
        assert!(matches!(
            Identifier::parse("bad ns:x"),
            Err(IdentifierError::InvalidNamespace { .. })
        ));
        assert!(matches!(
            Identifier::parse("crm_id:  "),
            Err(IdentifierError::Value(NormaliseError::Empty))
        ));
    }

    #[test]
    fn identifier_new_normalises_both_parts() {
        let id = Identifier::new(" Phone ", "(415) 555-0123", &phone("US")).unwrap();
        assert_eq!(id.to_string(), "phone:+14155550123");
    }

    #[test]
    fn identifier_serde_is_a_string() {
        let id = Identifier::parse("email:ana@example.com").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"email:ana@example.com\"");
        assert_eq!(serde_json::from_str::<Identifier>(&json).unwrap(), id);
        assert!(serde_json::from_str::<Identifier>("\"email:nope\"").is_err());
    }

    #[test]
    fn normaliser_serde_shape() {
        let email: Normaliser = serde_json::from_str("\"email\"").unwrap();
        assert_eq!(email, Normaliser::Email);
        let uk: Normaliser =
            serde_json::from_str(r#"{ "phone": { "default_region": "GB" } }"#).unwrap();
        assert_eq!(uk, phone("GB"));
        assert_eq!(
            serde_json::to_string(&uk).unwrap(),
            r#"{"phone":{"default_region":"GB"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Normaliser::Lowercase).unwrap(),
            "\"lowercase\""
        );
        assert!(
            serde_json::from_str::<Normaliser>(r#"{ "phone": { "default_region": "XX" } }"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Normaliser>(
            r#"{ "phone": { "default_region": "GB", "typo": 1 } }"#
        )
        .is_err());
        assert!(serde_json::from_str::<Normaliser>("\"soundex\"").is_err());
    }
}
