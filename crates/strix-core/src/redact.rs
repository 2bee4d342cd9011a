//! Secrets out of text before it leaves the process: logs, errors, events, web pages.
//!
//! Camera, database, webhook and hub URLs carry credentials (`rtsp://admin:pw@cam/`,
//! `postgres://u@db/x?password=pw`), and tools that echo them (FFmpeg's stderr, sqlx's errors)
//! do so verbatim. Everything that prints such text runs it through [`redact`]; it works on
//! free text, so a URL inside a sentence or one no URL parser accepts is caught too.
//!
//! ```
//! use strix_core::redact;
//! assert_eq!(redact("rtsp://admin:hunter2@10.0.0.5/s: Connection refused"), "rtsp://admin:***@10.0.0.5/s: Connection refused");
//! assert_eq!(redact("host=db password=s3cret user=x"), "host=db password=*** user=x");
//! ```

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query or key=value parameters whose values are secrets (compared case-insensitively).
const SECRET_KEYS: [&str; 9] =
    ["password", "passwd", "pwd", "pass", "secret", "token", "api_key", "apikey", "sslpassword"];

/// `text` with the password of every `scheme://user:password@host` and the value of every
/// `password=...` (and the other [`SECRET_KEYS`]) replaced by [`MASK`].
pub fn redact(text: &str) -> String {
    redact_params(&redact_userinfo(text))
}

/// Characters that end a URL inside free text.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ',' | ';' | ')' | ']' | '}')
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let token_end = tail.find(ends_url).unwrap_or(tail.len());
        let token = &tail[..token_end];
        // The last '@' of the URL: passwords with an unescaped '@' or '/' are still masked whole
        // (at worst a path holding '@' after a port is masked too, which is the safe side).
        match token.rfind('@') {
            Some(at) if !token[..at].split(':').next().unwrap_or("").contains('/') => {
                let user = token[..at].split(':').next().unwrap_or("");
                out.push_str(user);
                out.push(':');
                out.push_str(MASK);
                rest = &tail[at..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn redact_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(eq) = lower[search..].find('=').map(|i| i + search) {
        search = eq + 1;
        let key_start =
            lower[..eq].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).map_or(0, |i| i + 1);
        if !SECRET_KEYS.contains(&&lower[key_start..eq]) {
            continue;
        }
        let value_end = text[eq + 1..].find(|c: char| ends_url(c) || c == '&').map_or(text.len(), |i| i + eq + 1);
        if value_end == eq + 1 || &text[eq + 1..value_end] == MASK {
            continue;
        }
        out.push_str(&text[copied..=eq]);
        out.push_str(MASK);
        copied = value_end;
        search = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(redact("rtsp://admin:hunter2@10.0.0.5:554/s"), "rtsp://admin:***@10.0.0.5:554/s");
        assert_eq!(redact("postgres://bob:secret@db:5432/reg"), "postgres://bob:***@db:5432/reg");
        // A user with no password keeps the user; the shape says a secret may have been there.
        assert_eq!(redact("rtsp://admin@cam/s"), "rtsp://admin:***@cam/s");
        // Unescaped '@' and '/' in a password: nothing of it survives.
        assert_eq!(redact("rtsp://admin:p@ss/w@rd@cam/s"), "rtsp://admin:***@cam/s");
    }

    #[test]
    fn urls_inside_ffmpeg_lines_are_masked() {
        let line = "[tcp @ 0x55] Connection to tcp://cam:554 failed; rtsp://u:pw@cam:554/live: Connection refused";
        let red = redact(line);
        assert!(!red.contains("pw@"), "{red}");
        assert!(red.ends_with("rtsp://u:***@cam:554/live: Connection refused"), "{red}");
        assert_eq!(redact("'http://u:pw@h/x' and \"mqtt://a:b@c\""), "'http://u:***@h/x' and \"mqtt://a:***@c\"");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for s in ["http://host/a@b", "sqlite:///tmp/r.db", "no url here", "a://", "://x", "x@y"] {
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn secret_parameters_are_masked() {
        assert_eq!(
            redact("postgres://db/x?user=u&password=pw&sslmode=off"),
            "postgres://db/x?user=u&password=***&sslmode=off"
        );
        assert_eq!(redact("host=db PASSWORD=pw port=5"), "host=db PASSWORD=*** port=5");
        assert_eq!(redact("https://hub/m.onnx?token=abc"), "https://hub/m.onnx?token=***");
        assert_eq!(redact("compass=north bypass=1"), "compass=north bypass=1");
        assert_eq!(redact("password="), "password=");
        // Idempotent: masking twice changes nothing.
        let once = redact("rtsp://a:b@c/?pwd=x");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(redact("café rtsp://ü:pä@h/ é password=é"), "café rtsp://ü:***@h/ é password=***");
    }
}
