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
    /// The values, borrowed.
    pub fn view(&self) -> TensorDataRef<'_> {
        match self {
            TensorData::F32(v) => TensorDataRef::F32(v),
            TensorData::I32(v) => TensorDataRef::I32(v),
            TensorData::I64(v) => TensorDataRef::I64(v),
            TensorData::U8(v) => TensorDataRef::U8(v),
        }
    }

    pub fn len(&self) -> usize {
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        self.view().dtype()
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
        TensorView::new(&shape, data.view())?;
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

    /// This tensor, borrowed.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { shape: &self.shape, data: self.data.view() }
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
        self.view().as_f32()
    }

    /// The values converted to f32 (a copy; exact for u8/i32 below 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.view().to_f32_vec()
    }

    /// Stack tensors along their first (batch) dimension. `None` when they differ in type or in
    /// any other dimension, or when there are none.
    pub fn concat_batch(parts: &[&Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        let rest = first.shape.get(1..)?;
        if parts.iter().any(|t| t.dtype() != first.dtype() || t.shape.get(1..) != Some(rest)) {
            return None;
        }
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.shape[0]).sum();
        fn join<T: Clone>(parts: &[&Tensor], get: impl Fn(&TensorData) -> Option<&Vec<T>>) -> Option<Vec<T>> {
            let mut out = Vec::new();
            for p in parts {
                out.extend_from_slice(get(&p.data)?);
            }
            Some(out)
        }
        let data = match first.data {
            TensorData::F32(_) => {
                TensorData::F32(join(parts, |d| if let TensorData::F32(v) = d { Some(v) } else { None })?)
            }
            TensorData::I32(_) => {
                TensorData::I32(join(parts, |d| if let TensorData::I32(v) = d { Some(v) } else { None })?)
            }
            TensorData::I64(_) => {
                TensorData::I64(join(parts, |d| if let TensorData::I64(v) = d { Some(v) } else { None })?)
            }
            TensorData::U8(_) => {
                TensorData::U8(join(parts, |d| if let TensorData::U8(v) = d { Some(v) } else { None })?)
            }
        };
        Tensor::new(shape, data).ok()
    }

    /// Cut along the first dimension into pieces of `counts` rows; `None` unless the counts add
    /// up to it.
    pub fn split_batch(&self, counts: &[usize]) -> Option<Vec<Tensor>> {
        let rows = *self.shape.first()?;
        if counts.iter().sum::<usize>() != rows {
            return None;
        }
        let row: usize = self.shape[1..].iter().product();
        fn cut<T: Clone>(v: &[T], counts: &[usize], row: usize) -> Vec<Vec<T>> {
            let mut start = 0;
            counts
                .iter()
                .map(|&n| {
                    let piece = v[start..start + n * row].to_vec();
                    start += n * row;
                    piece
                })
                .collect()
        }
        let pieces: Vec<TensorData> = match &self.data {
            TensorData::F32(v) => cut(v, counts, row).into_iter().map(TensorData::F32).collect(),
            TensorData::I32(v) => cut(v, counts, row).into_iter().map(TensorData::I32).collect(),
            TensorData::I64(v) => cut(v, counts, row).into_iter().map(TensorData::I64).collect(),
            TensorData::U8(v) => cut(v, counts, row).into_iter().map(TensorData::U8).collect(),
        };
        pieces
            .into_iter()
            .zip(counts)
            .map(|(data, &n)| {
                let mut shape = self.shape.clone();
                shape[0] = n;
                Tensor::new(shape, data).ok()
            })
            .collect()
    }
}

/// Values borrowed from wherever a tensor lives: a [`Tensor`], or an engine's own output
/// buffer read in place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TensorDataRef<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
}

impl TensorDataRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            TensorDataRef::F32(v) => v.len(),
            TensorDataRef::I32(v) => v.len(),
            TensorDataRef::I64(v) => v.len(),
            TensorDataRef::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorDataRef::F32(_) => DType::F32,
            TensorDataRef::I32(_) => DType::I32,
            TensorDataRef::I64(_) => DType::I64,
            TensorDataRef::U8(_) => DType::U8,
        }
    }
}

/// A borrowed dense, row-major tensor: what decoders read, so an engine's outputs need not be
/// copied out first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorView<'a> {
    shape: &'a [usize],
    data: TensorDataRef<'a>,
}

impl<'a> TensorView<'a> {
    /// A view of `data` as `shape`; an error unless the shape's product is the number of values.
    pub fn new(shape: &'a [usize], data: TensorDataRef<'a>) -> Result<Self, CoreError> {
        let expected: usize = shape.iter().product();
        let actual = data.len();
        if expected != actual {
            return Err(CoreError::ShapeMismatch { shape: shape.to_vec(), expected, actual });
        }
        Ok(TensorView { shape, data })
    }

    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The values, still borrowed.
    pub fn data(&self) -> TensorDataRef<'a> {
        self.data
    }

    /// The values, if this is an f32 tensor.
    pub fn as_f32(&self) -> Result<&'a [f32], CoreError> {
        match self.data {
            TensorDataRef::F32(v) => Ok(v),
            _ => Err(CoreError::DTypeMismatch { expected: DType::F32, actual: self.dtype() }),
        }
    }

    /// The values converted to f32 (a copy; exact for u8/i32 below 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.data {
            TensorDataRef::F32(v) => v.to_vec(),
            TensorDataRef::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorDataRef::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorDataRef::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// An owned copy.
    pub fn to_tensor(&self) -> Tensor {
        let data = match self.data {
            TensorDataRef::F32(v) => TensorData::F32(v.to_vec()),
            TensorDataRef::I32(v) => TensorData::I32(v.to_vec()),
            TensorDataRef::I64(v) => TensorData::I64(v.to_vec()),
            TensorDataRef::U8(v) => TensorData::U8(v.to_vec()),
        };
        Tensor { shape: self.shape.to_vec(), data }
    }
}

impl<'a> From<&'a Tensor> for TensorView<'a> {
    fn from(t: &'a Tensor) -> Self {
        t.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stack_and_split_back() {
        let a = Tensor::from_f32(vec![1, 2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let ab = Tensor::concat_batch(&[&a, &b]).unwrap();
        assert_eq!(ab.shape(), &[3, 2]);
        assert_eq!(ab.split_batch(&[1, 2]).unwrap(), vec![a.clone(), b]);
        assert!(ab.split_batch(&[1, 1]).is_none());
        let c = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(Tensor::concat_batch(&[&a, &c]).is_none());
        let d = Tensor::new(vec![1, 2], TensorData::I64(vec![1, 2])).unwrap();
        assert!(Tensor::concat_batch(&[&a, &d]).is_none());
    }

    #[test]
    fn shape_must_match_data() {
        let err = Tensor::from_f32(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert_eq!(err, CoreError::ShapeMismatch { shape: vec![2, 3], expected: 6, actual: 5 });
    }

    #[test]
    fn views_read_like_the_tensor_and_check_their_shape() {
        let t = Tensor::new(vec![2, 2], TensorData::I32(vec![1, 2, 3, 4])).unwrap();
        let v = t.view();
        assert_eq!((v.shape(), v.dtype()), (&[2usize, 2][..], DType::I32));
        assert_eq!(v.to_f32_vec(), t.to_f32_vec());
        assert_eq!(v.to_tensor(), t);
        assert!(v.as_f32().is_err());
        let values = [1.0f32; 5];
        let err = TensorView::new(&[2, 3], TensorDataRef::F32(&values)).unwrap_err();
        assert_eq!(err, CoreError::ShapeMismatch { shape: vec![2, 3], expected: 6, actual: 5 });
        assert_eq!(TensorView::new(&[5], TensorDataRef::F32(&values)).unwrap().as_f32().unwrap(), &values);
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
