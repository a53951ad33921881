//! Caller-supplied HTTP headers: what is accepted, and what can never be overridden.

use serde_json::Value;

/// Headers the dispatcher sets itself. The protocol depends on them, so neither a message
/// nor an endpoint may set them; hop-by-hop headers belong to the connection.
const RESERVED: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "idempotency-key",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];
const MAX_HEADERS: usize = 64;
const MAX_VALUE_BYTES: usize = 8192;
/// The most one headers document can hold: names are bounded by the value limit too.
pub const MAX_BYTES: usize = MAX_HEADERS * 2 * MAX_VALUE_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("must be a JSON object of header names to string values")]
    NotAnObject,
    #[error("header {0:?} must have a string value")]
    NotAString(String),
    #[error("{0:?} is not a valid header name")]
    BadName(String),
    #[error(
        "header {0:?} has a value that is not valid in HTTP (control characters, or over {MAX_VALUE_BYTES} bytes)"
    )]
    BadValue(String),
    #[error("header {0:?} is set by the dispatcher and cannot be overridden")]
    Reserved(String),
    #[error("has {0} headers; at most {MAX_HEADERS} are allowed")]
    TooMany(usize),
}

/// Checks a `headers` document; returns the pairs with lower-case names.
pub fn parse(doc: &Value) -> Result<Vec<(String, String)>, HeaderError> {
    let object = doc.as_object().ok_or(HeaderError::NotAnObject)?;
    if object.len() > MAX_HEADERS {
        return Err(HeaderError::TooMany(object.len()));
    }
    object
        .iter()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .ok_or_else(|| HeaderError::NotAString(name.clone()))?;
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(HeaderError::BadName(name.clone()));
            }
            if RESERVED.contains(&lower.as_str()) {
                return Err(HeaderError::Reserved(lower));
            }
            if name.len() > MAX_VALUE_BYTES {
                return Err(HeaderError::BadName(name.chars().take(64).collect()));
            }
            if value.len() > MAX_VALUE_BYTES
                || value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
            {
                return Err(HeaderError::BadValue(name.clone()));
            }
            Ok((lower, value.to_string()))
        })
        .collect()
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_an_object_of_strings_and_lowercases_names() {
        let parsed = parse(&json!({"X-Tenant": "acme", "authorization": "Bearer t"})).unwrap();
        assert!(parsed.contains(&("x-tenant".into(), "acme".into())));
        assert!(parsed.contains(&("authorization".into(), "Bearer t".into())));
    }

    #[test]
    fn protocol_headers_cannot_be_overridden_in_any_case() {
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "IDEMPOTENCY-KEY",
            "content-type",
            "Host",
        ] {
            assert!(
                matches!(parse(&json!({ name: "x" })), Err(HeaderError::Reserved(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(parse(&json!(["a"])), Err(HeaderError::NotAnObject));
        assert_eq!(
            parse(&json!({"x": 1})),
            Err(HeaderError::NotAString("x".into()))
        );
        assert_eq!(
            parse(&json!({"bad name": "x"})),
            Err(HeaderError::BadName("bad name".into()))
        );
        assert_eq!(
            parse(&json!({"x": "a\r\nInjected: 1"})),
            Err(HeaderError::BadValue("x".into()))
        );
        let many: serde_json::Map<String, Value> =
            (0..65).map(|i| (format!("h{i}"), json!("v"))).collect();
        assert_eq!(parse(&Value::Object(many)), Err(HeaderError::TooMany(65)));
    }
}
