//! Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed by the base64 part of `whsec_…`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// The key sizes the Standard Webhooks reference libraries generate and accept.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
const GENERATED_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret must have the form whsec_<base64>")]
    Form,
    #[error("a secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {0}")]
    Length(usize),
}

/// A signing key. Its `Debug` shows nothing of the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.strip_prefix(PREFIX).ok_or(SecretError::Form)?;
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Form)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret { key })
    }

    /// A fresh random secret in `whsec_` form.
    pub fn generate() -> String {
        let mut key = [0u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        format!("{PREFIX}{}", BASE64.encode(key))
    }

    fn sign(&self, content: &[&[u8]]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        for part in content {
            mac.update(part);
        }
        BASE64.encode(mac.finalize().into_bytes())
    }
}

/// The `webhook-signature` header value: one `v1,<base64>` per secret, space-separated
/// (several during a rotation). `None` without secrets.
pub fn signature_header(
    secrets: &[Secret],
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    if secrets.is_empty() {
        return None;
    }
    let timestamp = timestamp.to_string();
    let content: [&[u8]; 5] = [
        webhook_id.as_bytes(),
        b".",
        timestamp.as_bytes(),
        b".",
        body,
    ];
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| format!("v1,{}", s.sign(&content)))
        .collect();
    Some(signatures.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification's reference test vectors.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_example() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            signature_header(&[secret], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap(),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn several_secrets_give_several_signatures() {
        let old = Secret::parse(SPEC_SECRET).unwrap();
        let new = Secret::parse(&Secret::generate()).unwrap();
        let header = signature_header(&[old, new], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], SPEC_SIGNATURE);
        assert!(parts[1].starts_with("v1,"));
    }

    #[test]
    fn no_secret_no_signature() {
        assert_eq!(
            signature_header(&[], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            None
        );
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::Form)
        );
        assert_eq!(Secret::parse("whsec_not base64!"), Err(SecretError::Form));
        assert_eq!(Secret::parse("whsec_c2hvcnQ="), Err(SecretError::Length(5)));
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let (a, b) = (Secret::generate(), Secret::generate());
        assert_ne!(a, b);
        assert!(Secret::parse(&a).is_ok());
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert_eq!(
            format!("{:?}", Secret::parse(SPEC_SECRET).unwrap()),
            "Secret(…)"
        );
    }
}
