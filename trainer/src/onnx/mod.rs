//! ONNX export of the whole pipeline: raw columns in, predictions out.

pub mod export;
pub mod proto;
