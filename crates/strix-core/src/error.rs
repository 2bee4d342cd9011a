use thiserror::Error;

/// Errors from building or reading core values.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    #[error("tensor shape {shape:?} holds {expected} elements but {actual} values were given")]
    ShapeMismatch { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("expected a {expected} tensor, got {actual}")]
    DTypeMismatch { expected: crate::DType, actual: crate::DType },
}

/// An error and its causes in one line (`outer: inner: ...`), each cause named once: what a
/// client or a log needs, now that errors keep their causes as `source()` and not in their text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // A wrapper that repeats its cause in its message adds nothing.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Error)]
    enum Outer {
        #[error("cannot read x.onnx")]
        Plain(#[source] std::io::Error),
        #[error("cannot read x.onnx: {0}")]
        Quoting(#[source] std::io::Error),
    }

    #[test]
    fn a_chain_names_every_cause_once() {
        let e = Outer::Plain(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "cannot read x.onnx: disk on fire");
        let e = Outer::Quoting(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "cannot read x.onnx: disk on fire");
    }
}
