//! A model's outputs by name, as decoders read them.

use strix_core::{Tensor, TensorView};

use crate::VisionError;

/// The tensors one run produced, with the names the model gives them, borrowed: from owned
/// tensors, or read in place from the engine's buffers.
#[derive(Clone, Debug)]
pub struct Outputs<'a> {
    names: &'a [String],
    tensors: Vec<TensorView<'a>>,
}

impl<'a> Outputs<'a> {
    pub fn new(names: &'a [String], tensors: &'a [Tensor]) -> Self {
        Outputs { names, tensors: tensors.iter().map(Tensor::view).collect() }
    }

    /// Outputs an engine lends for the length of a call (a runtime session's `run_borrowed`).
    pub fn borrowed(names: &'a [String], tensors: &[TensorView<'a>]) -> Self {
        Outputs { names, tensors: tensors.to_vec() }
    }

    /// The output called `name`, or the first output when `name` is `None`, with the name to
    /// use for it in messages.
    pub fn get(&self, name: Option<&'a str>) -> Result<(&'a str, TensorView<'a>), VisionError> {
        match name {
            None => {
                let t = *self.tensors.first().ok_or_else(|| self.missing("(any)"))?;
                Ok((self.names.first().map_or("(first output)", String::as_str), t))
            }
            Some(name) => Ok((name, self.named(name)?)),
        }
    }

    pub fn named(&self, name: &str) -> Result<TensorView<'a>, VisionError> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.tensors.get(i).copied())
            .ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> VisionError {
        VisionError::MissingOutput { name: name.to_string(), available: self.names.join(", ") }
    }
}

/// Values of a float output, with a clear error for other types.
pub(crate) fn floats<'a>(t: impl Into<TensorView<'a>>, name: &str) -> Result<&'a [f32], VisionError> {
    let t = t.into();
    t.as_f32().map_err(|_| VisionError::OutputShape {
        name: name.to_string(),
        shape: t.shape().to_vec(),
        expected: format!("a float output, not {}", t.dtype()),
    })
}

/// Label of a class id, or `class N` when the spec gives no name for it.
pub(crate) fn label(labels: &[String], id: usize) -> String {
    labels.get(id).cloned().unwrap_or_else(|| format!("class {id}"))
}
