//! Where model code gets its weights: a [`WeightStore`] (safetensors repo or GGUF file, addressed by Hugging Face
//! tensor names) and a [`VarBuilder`] that scopes names by prefix and uploads each tensor to the GPU in the
//! requested dtype, one tensor at a time (the file is never held in memory whole).

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
            matmul::upload_ggml(self.ctx, &self.store.bytes(&full)?, &shape, target)
        } else {
            let data = self.cpu_f32(name, stored)?;
            matmul::upload_weight(self.ctx, &data, &shape, target)
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
