//! Job ids: short, sortable by submission time, safe in NATS subjects and KV keys.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

/// A job's id: `j` + milliseconds since 1970 in base 36 + `-` + 6 hex digits of the process
/// and a counter, e.g. `jm3x9k2a1-4f2a01`. Only lowercase letters, digits and `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    pub fn new() -> JobId {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        // Process id and a counter: two submitters in one millisecond still differ.
        let salt = (std::process::id().wrapping_mul(2_654_435_761) ^ NEXT.fetch_add(1, Ordering::Relaxed)) & 0xff_ffff;
        JobId(format!("j{}-{salt:06x}", base36(ms)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

impl TryFrom<String> for JobId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl std::str::FromStr for JobId {
    type Err = String;

    /// A user's text as an id: refused (naming the rule) unless it could be one, so it never
    /// becomes a NATS wildcard or another key.
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = (2..=64).contains(&s.len())
            && s.starts_with('j')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok { Ok(JobId(s.to_string())) } else { Err(format!("{s:?} is not a job id (like jm3x9k2a1-4f2a01)")) }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sortable_and_refuse_wildcards() {
        let (a, b) = (JobId::new(), JobId::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<JobId>(), Ok(a.clone()));
        for bad in ["", "j", "x123", "j1.>", "j*", "J12", "j1 2", "j1/2"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
        assert_eq!(base36(0), "0");
        assert_eq!(base36(36 * 36 + 35), "10z");
        assert!(serde_json::from_str::<JobId>("\"j1.*\"").is_err());
    }
}
