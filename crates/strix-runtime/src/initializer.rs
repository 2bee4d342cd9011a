//! Float initialisers of an ONNX graph read as plain numbers: the one reader for Strix's
//! crates that take weights out of a model (training from an inference export, the int8
//! rewrite), so both refuse what they cannot read in the same words.

use tract_onnx::pb::TensorProto;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};

/// Why an initialiser could not be read as float32 values.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum InitializerError {
    /// The values live in a file beside the model (ONNX external data), which Strix does not
    /// follow: a model is one file.
    #[error("initializer '{name}' is stored outside the ONNX file (external data); save the model as one file")]
    External { name: String },
    #[error("initializer '{name}' has data type {data_type} where float32 (1) was expected")]
    NotFloat { name: String, data_type: i32 },
    #[error("initializer '{name}' has dimension {dim}")]
    BadDim { name: String, dim: i64 },
    #[error("initializer '{name}' holds {values} values ({bytes} raw bytes) for shape {shape:?}")]
    Length { name: String, values: usize, bytes: usize, shape: Vec<usize> },
}

/// A float32 initialiser: its shape and values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The shape and values of float32 initialiser `t`, from its raw little-endian bytes or its
/// `float_data` field. Refuses external data, other types, and values that do not fill the shape.
pub fn float_tensor(t: &TensorProto) -> Result<FloatTensor, InitializerError> {
    let name = || t.name.clone();
    if t.data_location == Some(DataLocation::External as i32) {
        return Err(InitializerError::External { name: name() });
    }
    if t.data_type != DataType::Float as i32 {
        return Err(InitializerError::NotFloat { name: name(), data_type: t.data_type });
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&dim| usize::try_from(dim).map_err(|_| InitializerError::BadDim { name: name(), dim }))
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let (data, bytes) = if t.raw_data.is_empty() {
        (t.float_data.clone(), 0)
    } else {
        let data = t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (data, t.raw_data.len())
    };
    let whole = bytes == 0 || bytes == 4 * n;
    if data.len() != n || !whole {
        return Err(InitializerError::Length { name: name(), values: data.len(), bytes, shape });
    }
    Ok(FloatTensor { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: Vec<i64>) -> TensorProto {
        TensorProto { name: "w".into(), dims, data_type: DataType::Float as i32, ..Default::default() }
    }

    #[test]
    fn reads_raw_bytes_and_float_data_alike() {
        let values = [1.0f32, -2.5, 3.25, 0.0, 7.0, -1.0];
        let raw = TensorProto { raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(), ..tensor(vec![2, 3]) };
        let listed = TensorProto { float_data: values.to_vec(), ..tensor(vec![2, 3]) };
        let expected = FloatTensor { shape: vec![2, 3], data: values.to_vec() };
        assert_eq!(float_tensor(&raw), Ok(expected.clone()));
        assert_eq!(float_tensor(&listed), Ok(expected));
        // A scalar has no dimensions and one value.
        assert_eq!(float_tensor(&TensorProto { float_data: vec![0.5], ..tensor(vec![]) }).unwrap().data, [0.5]);
    }

    #[test]
    fn refuses_external_data_other_types_and_short_or_ragged_values() {
        let external = TensorProto { data_location: Some(DataLocation::External as i32), ..tensor(vec![4]) };
        assert_eq!(float_tensor(&external), Err(InitializerError::External { name: "w".into() }));
        let ints = TensorProto { data_type: DataType::Int64 as i32, int64_data: vec![1], ..tensor(vec![1]) };
        assert!(matches!(float_tensor(&ints), Err(InitializerError::NotFloat { data_type: 7, .. })));
        assert!(matches!(float_tensor(&tensor(vec![-1])), Err(InitializerError::BadDim { dim: -1, .. })));
        let short = TensorProto { float_data: vec![1.0; 3], ..tensor(vec![2, 2]) };
        assert!(matches!(float_tensor(&short), Err(InitializerError::Length { values: 3, .. })));
        let ragged = TensorProto { raw_data: vec![0; 9], ..tensor(vec![2]) };
        assert!(matches!(float_tensor(&ragged), Err(InitializerError::Length { bytes: 9, .. })), "{ragged:?}");
    }
}
