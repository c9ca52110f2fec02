//! Where model code gets its weights: a [`WeightStore`] (safetensors repo or GGUF file, addressed by Hugging Face
//! tensor names) and a [`VarBuilder`] that scopes names by prefix and uploads each tensor to the GPU in the
//! requested dtype, one tensor at a time (the file is never held in memory whole).

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Tensor};
use crate::loader::gguf::Gguf;
use crate::loader::safetensors::ShardedSafetensors;
use crate::loader::{quant, DType as FileDType, WeightSource};
use crate::ops::matmul;

/// Shape and file dtype of one stored tensor.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub shape: Vec<usize>,
    pub dtype: FileDType,
}

/// Tensors by Hugging Face name.
pub trait WeightStore {
    fn meta(&self, name: &str) -> Option<TensorMeta>;
    /// The tensor's bytes exactly as stored.
    fn bytes(&self, name: &str) -> Result<Vec<u8>>;
    /// `len` of those bytes from `offset` (relative to the tensor's start), for uploads in row chunks.
    fn bytes_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Short description for errors ("model.safetensors", "model.gguf").
    fn describe(&self) -> String;
}

impl WeightStore for ShardedSafetensors {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let t = self.tensor(name)?;
        Some(TensorMeta { shape: t.shape.iter().map(|&d| d as usize).collect(), dtype: t.weight_dtype().ok()? })
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.tensor_bytes(name)
    }
    fn bytes_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.tensor_bytes_range(name, offset, len)
    }
    fn describe(&self) -> String {
        "safetensors".into()
    }
}

/// A GGUF file whose tensors are looked up by Hugging Face name through `map` (the one table per format that
/// knows llama.cpp's names, in [`crate::models::gguf_names`]).
pub struct GgufStore {
    pub gguf: Gguf,
    pub src: Box<dyn WeightSource>,
    pub map: fn(&str) -> Option<String>,
    pub name: String,
}

impl GgufStore {
    fn gguf_name(&self, name: &str) -> Option<String> {
        (self.map)(name)
    }
}

impl WeightStore for GgufStore {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let t = self.gguf.tensor(&self.gguf_name(name)?)?;
        Some(TensorMeta { shape: t.shape().iter().map(|&d| d as usize).collect(), dtype: t.dtype().ok()? })
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>> {
        let g = self.gguf_name(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        self.gguf.tensor_bytes(self.src.as_ref(), &g)
    }
    fn bytes_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let g = self.gguf_name(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        self.gguf.tensor_bytes_range(self.src.as_ref(), &g, offset, len)
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// How weights are stored on the GPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Dtype for the matrices of linear layers and embeddings. `None` keeps the file's dtype (BF16 becomes F32).
    /// A float weight is quantized at load (ggml's reference quantizer); an already quantized weight is kept as is.
    pub dtype: Option<DType>,
}

/// Scoped access to a [`WeightStore`] (`vb.pp("model").pp("layers").pp(3).linear("self_attn.q_proj", false)`).
#[derive(Clone)]
pub struct VarBuilder<'a> {
    store: &'a dyn WeightStore,
    ctx: &'a GpuContext,
    opts: LoadOptions,
    prefix: String,
    /// Called after each uploaded tensor with its byte count (progress reporting).
    progress: Option<&'a dyn Fn(u64)>,
}

impl<'a> VarBuilder<'a> {
    pub fn new(store: &'a dyn WeightStore, ctx: &'a GpuContext, opts: LoadOptions) -> Self {
        Self { store, ctx, opts, prefix: String::new(), progress: None }
    }

    pub fn with_progress(mut self, f: &'a dyn Fn(u64)) -> Self {
        self.progress = Some(f);
        self
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// A sub-scope: `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { prefix, ..self.clone() }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.meta(&self.path(name)).is_some()
    }

    fn meta(&self, full: &str) -> Result<TensorMeta> {
        self.store
            .meta(full)
            .ok_or_else(|| Error::MissingTensor { name: format!("{full} (in {})", self.store.describe()) })
    }

    fn report(&self, t: &Tensor) {
        if let Some(p) = self.progress {
            p(t.bytes());
        }
    }

    /// The tensor as f32 values on the CPU, checked against `shape`.
    pub fn cpu_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.path(name);
        let meta = self.meta(&full)?;
        check_shape(&full, &meta.shape, shape)?;
        let bytes = self.store.bytes(&full)?;
        let n: usize = meta.shape.iter().product();
        match meta.dtype {
            FileDType::F32 => Ok(bytemuck::pod_collect_to_vec(&bytes)),
            FileDType::F16 => quant::f16_bytes_to_f32(&bytes),
            FileDType::BF16 => quant::bf16_bytes_to_f32(&bytes),
            q => quant::dequantize(q, &bytes, n),
        }
    }

    /// A small f32 tensor (norm weights, biases, position embeddings): always f32 on the GPU.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let data = self.cpu_f32(name, shape)?;
        let t = self.ctx.upload_words(bytemuck::cast_slice(&data), shape, DType::F32, 0, false)?;
        self.report(&t);
        Ok(t)
    }

    /// A matrix for `linear` or an embedding table, in the dtype of [`LoadOptions`]: `[rows, cols]`.
    pub fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Tensor> {
        self.matrix_as(name, &shape, shape)
    }

    /// A tensor stored as `stored` (e.g. a Conv2d weight `[D, C, p, p]`) used as the matrix `shape` (`[D, C·p·p]`,
    /// the same bytes).
    pub fn matrix_as(&self, name: &str, stored: &[usize], shape: [usize; 2]) -> Result<Tensor> {
        let full = self.path(name);
        let meta = self.meta(&full)?;
        check_shape(&full, &meta.shape, stored)?;
        if stored.iter().product::<usize>() != shape[0] * shape[1] {
            return Err(Error::BadTensor { name: full, detail: format!("{stored:?} cannot be viewed as {shape:?}") });
        }
        let file_gpu = match meta.dtype {
            FileDType::F32 | FileDType::BF16 => DType::F32,
            FileDType::F16 => DType::F16,
            FileDType::Q8_0 => DType::Q8_0,
            FileDType::Q4_0 => DType::Q4_0,
            FileDType::Q4_1 => DType::Q4_1,
        };
        let mut target = match self.opts.dtype {
            Some(d) if !file_gpu.is_quantized() => d,
            _ => file_gpu,
        };
        if target.is_quantized() && shape[1] % DType::QK != 0 {
            target = DType::F32; // rows that are not whole blocks stay float
        }
        let t = if target == file_gpu && meta.dtype != FileDType::BF16 {
            // in row chunks: memory while loading is bounded by the chunk, not the tensor
            matmul::upload_ggml_chunked(self.ctx, &shape, target, matmul::UPLOAD_CHUNK_BYTES, &mut |off, len| {
                self.store.bytes_range(&full, off, len).map(Cow::Owned)
            })
        } else {
            self.convert_chunked(&full, &meta, shape, target)
        }
        .map_err(|e| match e {
            Error::LimitExceeded { limit, needed, offered, .. } => {
                Error::LimitExceeded { what: format!("weight `{full}`"), limit, needed, offered }
            }
            e => e,
        })?;
        self.report(&t);
        Ok(t)
    }
}

impl VarBuilder<'_> {
    /// Uploads a tensor converted to `target` (bf16 → f32, f32/f16 → f16 or quantized at load), a few rows at a
    /// time: each chunk is read, decoded to f32 (at most [`matmul::UPLOAD_CHUNK_BYTES`] of them) and converted as
    /// ggml does, so the memory this needs does not grow with the tensor.
    fn convert_chunked(&self, full: &str, meta: &TensorMeta, shape: [usize; 2], target: DType) -> Result<Tensor> {
        let [rows, cols] = shape;
        let to = FileDType::try_from(target)?;
        let (Some(src_row), Some(dst_row)) = (meta.dtype.n_bytes(cols as u64), to.n_bytes(cols as u64)) else {
            // rows that are not whole blocks of the stored dtype cannot be split: the whole tensor at once
            let data = quant::dequantize(meta.dtype, &self.store.bytes(full)?, rows * cols)?;
            return matmul::upload_weight(self.ctx, &data, &shape, target);
        };
        if target.is_quantized() && cols % DType::QK != 0 {
            return Err(Error::Shape {
                op: "upload_weight",
                detail: format!("{target} needs the last dim to be a multiple of 32, got {shape:?}"),
            });
        }
        let f32_rows = (matmul::UPLOAD_CHUNK_BYTES as u64 / (4 * cols.max(1) as u64)).max(1);
        let chunk = (f32_rows * dst_row) as usize;
        matmul::upload_ggml_chunked(self.ctx, &shape, target, chunk, &mut |off, len| {
            let (r0, r) = (off / dst_row, len / dst_row);
            let bytes = self.store.bytes_range(full, r0 * src_row, r * src_row)?;
            let values = quant::dequantize(meta.dtype, &bytes, r as usize * cols)?;
            drop(bytes);
            quant::quantize(to, &values).map(Cow::Owned)
        })
    }
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    // a [n] vector stored as [1, n] (or the other way) is the same data
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if got == want || squeeze(got) == squeeze(want) {
        Ok(())
    } else {
        Err(Error::BadTensor {
            name: name.to_string(),
            detail: format!("shape {got:?} does not match the config's {want:?}"),
        })
    }
}
