//! How the commands print what they did not make themselves: sizes, and names from shared
//! databases and datasets.

/// `s` with control characters escaped (`\x1b` -> `\u{1b}`): registry fields come from a
/// shared database and `label` prints names from datasets, and a terminal must not run escape
/// sequences someone stored there. Every command printing such names uses this one.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_fields_are_printed_without_control_characters() {
        let shown = super::printable("me\u{1b}[2J\u{7}@host\nx");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "me\\u{1b}[2J\\u{7}@host\\nx");
        assert_eq!(super::printable("plain ü"), "plain ü");
    }
}
