//! Shared secrets (API keys, page tokens) checked without leaking them through timing.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret kept as its SHA-256 and compared on digests in constant time, so neither its
/// content nor its length shows in how long a wrong guess takes.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn new(secret: &str) -> Secret {
        Secret(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `given` is one of `secrets`; every one is compared, whichever matches.
    pub fn any_matches(secrets: &[Secret], given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut ok = subtle::Choice::from(0);
        for s in secrets {
            ok |= s.0.ct_eq(&digest);
        }
        bool::from(ok)
    }

    pub fn matches(&self, given: &str) -> bool {
        Secret::any_matches(std::slice::from_ref(self), given)
    }
}

/// The credential of `Authorization: Bearer CREDENTIAL`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        let s = Secret::new("s3cret");
        assert!(s.matches("s3cret"));
        assert!(!s.matches("s3creT") && !s.matches("s3cre") && !s.matches("s3crets") && !s.matches(""));
        let keys = [Secret::new("k-one"), Secret::new("a-much-longer-second-key")];
        assert!(Secret::any_matches(&keys, "a-much-longer-second-key") && !Secret::any_matches(&keys, "k-on"));
        assert!(!Secret::any_matches(&[], "anything"));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn bearer_credentials() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
        assert_eq!(bearer(&h), Some("t0ken"));
        h.insert(header::AUTHORIZATION, "Basic dTpw".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
