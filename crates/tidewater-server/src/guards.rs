//! What every request passes before a handler sees it, and the headers every response
//! carries: the Host allow-list (against DNS rebinding), the body media type (so that no
//! web page can send a body cross-origin without a CORS preflight, which the API never
//! grants), and the security headers.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::uri::Authority;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tidewater_config::ServerConfig;

use crate::error::ApiError;

/// The Host names the API answers to (`[server] allowed_hosts`).
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts {
    /// `"*"` was given: every host is answered.
    any: bool,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            any: config.allowed_hosts.iter().any(|h| h == "*"),
            names: config.allowed_hosts.iter().map(|h| normalise(h)).collect(),
        }
    }

    /// Whether a request for `host` (no port) is answered. IP addresses always are: a
    /// browser sends a name it resolved, never an address, when DNS rebinding is at work.
    fn allows(&self, host: &str) -> bool {
        if self.any || is_ip_literal(host) {
            return true;
        }
        let host = normalise(host);
        self.names.contains(&host)
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<IpAddr>().is_ok(),
    }
}

/// The host a request names: the authority of its URI (HTTP/2, absolute form) or its
/// `Host` header, without the port. `Ok(None)`: it names none (HTTP/1.0).
fn requested_host(request: &Request) -> Result<Option<String>, String> {
    if let Some(host) = request.uri().host() {
        return Ok(Some(host.to_owned()));
    }
    let Some(value) = request.headers().get(header::HOST) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Host header is not ASCII".to_owned())?;
    let authority: Authority = value
        .parse()
        .map_err(|_| format!("'{value}' is not a valid Host header"))?;
    Ok(Some(authority.host().to_owned()))
}

/// Refuses requests for a host that is not allowed, with 421.
pub(crate) async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let refusal = match requested_host(&request) {
        Ok(None) => None,
        Ok(Some(host)) if hosts.allows(&host) => None,
        Ok(Some(host)) => Some(format!(
            "this server does not answer for host '{host}'; add it to [server] allowed_hosts"
        )),
        Err(reason) => Some(reason),
    };
    match refusal {
        None => next.run(request).await,
        Some(message) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            message,
        )
        .into_response(),
    }
}

/// The media types a request body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    /// `application/json` or `application/*+json`.
    Json,
    /// `application/x-ndjson`.
    Ndjson,
}

/// The body type a `Content-Type` names, if it is one the API reads.
fn body_type(headers: &HeaderMap) -> Option<BodyType> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    let subtype = essence.strip_prefix("application/")?;
    if subtype == "json" || subtype.ends_with("+json") {
        Some(BodyType::Json)
    } else if subtype == "x-ndjson" {
        Some(BodyType::Ndjson)
    } else {
        None
    }
}

/// Refuses, with 415, a request to a route that reads a body (POST, PUT, PATCH) unless the
/// body is declared JSON, or NDJSON where the route reads it. Every other media type a
/// web page can send without a CORS preflight (`text/plain`, forms) is refused here, so
/// no page can write through the API from the operator's browser.
pub(crate) async fn check_body_type(request: Request, next: Next) -> Response {
    if !matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        return next.run(request).await;
    }
    let ndjson_too = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| path.as_str() == crate::events::PATH);
    match body_type(request.headers()) {
        Some(BodyType::Json) => next.run(request).await,
        Some(BodyType::Ndjson) if ndjson_too => next.run(request).await,
        _ => {
            let declared = request
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let expected = if ndjson_too {
                "application/json or application/x-ndjson"
            } else {
                "application/json"
            };
            let message = match declared {
                Some(declared) => {
                    format!("a body of type '{declared}' is not accepted; send {expected}")
                }
                None => format!("the request has no Content-Type; send {expected}"),
            };
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            )
            .into_response()
        }
    }
}

/// The Content-Security-Policy of responses that set none: nothing may be loaded or run,
/// and nothing may frame them.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Adds the security headers to every response: no MIME sniffing, no framing, no
/// referrer, and a Content-Security-Policy unless the handler chose one.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(DEFAULT_CSP));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> AllowedHosts {
        AllowedHosts::new(&ServerConfig {
            allowed_hosts: names.iter().map(|n| (*n).to_owned()).collect(),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn h06_only_allowed_names_and_ip_addresses_are_answered() {
        let default = hosts(&["localhost"]);
        for allowed in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "[::1]",
            "10.1.2.3",
        ] {
            assert!(default.allows(allowed), "{allowed}");
        }
        for refused in [
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!default.allows(refused), "{refused}");
        }
        let named = hosts(&["tidewater.internal"]);
        assert!(named.allows("Tidewater.Internal"));
        assert!(!named.allows("localhost"));
        assert!(hosts(&["*"]).allows("anything.example"));
    }

    #[test]
    fn h01_only_json_and_ndjson_are_body_types() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            body_type(&headers)
        };
        assert_eq!(of("application/json"), Some(BodyType::Json));
        assert_eq!(of("Application/JSON; charset=utf-8"), Some(BodyType::Json));
        assert_eq!(of("application/vnd.api+json"), Some(BodyType::Json));
        assert_eq!(of("application/x-ndjson"), Some(BodyType::Ndjson));
        for refused in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json",
            "application/jsonp",
        ] {
            assert_eq!(of(refused), None, "{refused}");
        }
        assert_eq!(body_type(&HeaderMap::new()), None);
    }
}
