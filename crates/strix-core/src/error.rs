use thiserror::Error;

/// Errors from building or reading core values.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    #[error("tensor shape {shape:?} holds {expected} elements but {actual} values were given")]
    ShapeMismatch { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("expected a {expected} tensor, got {actual}")]
    DTypeMismatch { expected: crate::DType, actual: crate::DType },
}
