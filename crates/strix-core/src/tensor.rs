use std::fmt;

use serde::Serialize;

use crate::CoreError;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
    /// A type Strix does not feed or read (strings, maps...); kept so `inspect` can show it.
    Other,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::Other => "other",
        };
        f.write_str(s)
    }
}

/// One dimension of a model input or output: a number, or a name the model leaves open
/// (`N` for the batch, `?` when the model gives no name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Symbolic(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Name, element type and shape of a model input or output, as the model declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorInfo {
    /// `name: f32[N,3,224,224]`
    pub fn describe(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("{}: {}[{}]", self.name, self.dtype, dims.join(","))
    }

    /// Whether a concrete shape fits this description (same rank, equal fixed dims).
    pub fn accepts(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len() && self.shape.iter().zip(shape).all(|(d, &n)| d.fixed().is_none_or(|f| f == n))
    }
}

/// The values of a dense, row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
        }
    }
}

/// A dense, row-major tensor: the unit that crosses the `Runtime` boundary.
///
/// # Shapes
/// `shape` lists dimensions outermost first; `data` holds their product of elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, CoreError> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(CoreError::ShapeMismatch { shape, expected, actual: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, CoreError> {
        Self::new(shape, TensorData::F32(data))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values, if this is an f32 tensor.
    pub fn as_f32(&self) -> Result<&[f32], CoreError> {
        match &self.data {
            TensorData::F32(v) => Ok(v),
            other => Err(CoreError::DTypeMismatch { expected: DType::F32, actual: other.dtype() }),
        }
    }

    /// The values converted to f32 (a copy; exact for u8/i32 below 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_data() {
        let err = Tensor::from_f32(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err, CoreError::ShapeMismatch { shape: vec![2, 3], expected: 6, actual: 5 });
    }

    #[test]
    fn info_accepts_symbolic_batch() {
        let info =
            TensorInfo { name: "x".into(), dtype: DType::F32, shape: vec![Dim::Symbolic("N".into()), Dim::Fixed(3)] };
        assert!(info.accepts(&[8, 3]));
        assert!(!info.accepts(&[8, 4]));
        assert!(!info.accepts(&[8, 3, 1]));
        assert_eq!(info.describe(), "x: f32[N,3]");
    }

    #[test]
    fn dim_serialises_as_number_or_name() {
        let j = serde_json::to_string(&vec![Dim::Symbolic("N".into()), Dim::Fixed(3)]).unwrap();
        assert_eq!(j, r#"["N",3]"#);
    }
}
