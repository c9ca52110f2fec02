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
    /// Dtype for the matrices of linear layers and embeddings. `None` keeps the file's dtype; BF16 becomes F16 on
    /// adapters with shader-f16 (exact for every bf16 value of magnitude 2^-17 ..= 65504, within 2^-25 below;
    /// a matrix holding a larger value stays BF16) and stays BF16 on the others (SwiftShader, whose emulated f16
    /// unpacking made the image path 26 % slower: docs/benchmarks.md); rows of a length that is not a multiple
    /// of 8 (which the 16-bit GEMV and direct GEMM do not read) become F32.
    /// A float weight is quantized at load (ggml's reference quantizer); an already quantized weight is kept as is.
    pub dtype: Option<DType>,
    /// Keep linear layers that read the same input (q/k/v, gate/up) as separate weights, one kernel each, instead
    /// of stacking them ([`crate::nn::Linear::load_stacked`]); for A/B tests and benchmarks.
    pub separate_projections: bool,
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

    pub fn options(&self) -> LoadOptions {
        self.opts
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

    /// Vectors `names` (`[lens[i]]` each, e.g. the biases of stacked linear layers) as one f32 tensor.
    pub fn f32_stacked(&self, names: &[&str], lens: &[usize]) -> Result<Tensor> {
        let mut data = Vec::with_capacity(lens.iter().sum());
        for (name, &len) in names.iter().zip(lens) {
            data.extend(self.cpu_f32(name, &[len])?);
        }
        let t = self.ctx.upload_words(bytemuck::cast_slice(&data), &[data.len()], DType::F32, 0, false)?;
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
        let target = self.target_dtype(&meta, shape[1]);
        let t = match self.upload_matrix(&full, &meta, shape, target) {
            // a bf16 matrix with values beyond f16's range: bf16 after all
            Err(Error::ValueRange { .. }) if self.bf16_default(meta.dtype) => {
                self.upload_matrix(&full, &meta, shape, DType::BF16)
            }
            r => r,
        }
        .map_err(|e| weight_error(e, &full))?;
        self.report(&t);
        Ok(t)
    }

    fn upload_matrix(&self, full: &str, meta: &TensorMeta, shape: [usize; 2], target: DType) -> Result<Tensor> {
        match Part::new(full, meta, shape[1], target) {
            Some(part) => {
                let chunk = part.chunk_bytes();
                matmul::upload_ggml_chunked(self.ctx, &shape, target, chunk, &mut |off, len| {
                    let row = part.dst_row;
                    part.read(self.store, off / row, len / row).map(Cow::Owned)
                })
            }
            None => {
                // rows that are not whole blocks of the stored dtype cannot be split: the whole tensor at once
                let data = quant::dequantize(meta.dtype, &self.store.bytes(full)?, shape[0] * shape[1])?;
                matmul::upload_weight(self.ctx, &data, &shape, target)
            }
        }
    }

    /// Whether a stored matrix's dtype comes from the BF16 default of [`LoadOptions::dtype`] (so a conversion to
    /// F16 that failed, which only that default asks for unbidden, may fall back to BF16).
    fn bf16_default(&self, stored: FileDType) -> bool {
        self.opts.dtype.is_none() && stored == FileDType::BF16
    }

    /// Matrices `names` (each `[outs[i], in_dim]`) stacked into one `[Σ outs, in_dim]` weight, for layers that
    /// read the same input (the attention's q, k, v; the MLP's gate and up): one kernel then reads x once for all.
    /// `None` when they do not end up in one GPU dtype (a GGUF that quantized them differently), a stored dtype
    /// cannot be read in rows, or the stack would exceed the adapter's binding limit: the caller loads them apart.
    pub fn matrix_stack(&self, names: &[&str], in_dim: usize, outs: &[usize]) -> Result<Option<Tensor>> {
        assert_eq!(names.len(), outs.len(), "matrix_stack: one output size per name");
        let mut parts = Vec::with_capacity(names.len());
        for (name, &out) in names.iter().zip(outs) {
            let full = self.path(name);
            let meta = self.meta(&full)?;
            check_shape(&full, &meta.shape, &[out, in_dim])?;
            let target = self.target_dtype(&meta, in_dim);
            let Some(part) = Part::new(&full, &meta, in_dim, target) else { return Ok(None) };
            if parts.first().is_some_and(|p: &(Part, usize)| p.0.target != target) {
                return Ok(None);
            }
            parts.push((part, out));
        }
        let Some(first) = parts.first() else { return Ok(None) };
        // the smallest step of the parts: a converting part's memory bound holds for the whole stack
        let chunk = parts.iter().map(|p| p.0.chunk_bytes()).min().unwrap_or(matmul::UPLOAD_CHUNK_BYTES);
        let (target, row) = (first.0.target, first.0.dst_row);
        let shape = [outs.iter().sum(), in_dim];
        // a stack past the adapter's binding limit loads apart (each part may still fit)
        if self.ctx.check_binding("weight", target.storage_bytes(shape[0] * shape[1])).is_err() {
            return Ok(None);
        }
        let stacked = matmul::upload_ggml_chunked(self.ctx, &shape, target, chunk, &mut |off, len| {
            // rows r0 .. r0 + n of the stack, gathered from the parts they fall in
            let (mut r0, mut n) = (off / row, len / row);
            let mut bytes = Vec::with_capacity(len as usize);
            let mut base = 0u64;
            for (part, rows) in &parts {
                let rows = *rows as u64;
                if n > 0 && r0 < base + rows {
                    let take = n.min(base + rows - r0);
                    bytes.extend_from_slice(&part.read(self.store, r0 - base, take)?);
                    r0 += take;
                    n -= take;
                }
                base += rows;
            }
            Ok(Cow::Owned(bytes))
        });
        let t = match stacked {
            // a bf16 part's values beyond f16's range: the caller loads the parts apart, that one as bf16
            Err(Error::ValueRange { .. }) if parts.iter().any(|p| self.bf16_default(p.0.src)) => return Ok(None),
            r => r,
        }
        .map_err(|e| weight_error(e, &names.iter().map(|n| self.path(n)).collect::<Vec<_>>().join(" + ")))?;
        self.report(&t);
        Ok(Some(t))
    }

    /// The GPU dtype a stored matrix with rows of `cols` gets under [`LoadOptions`].
    fn target_dtype(&self, meta: &TensorMeta, cols: usize) -> DType {
        let file_gpu = match meta.dtype {
            FileDType::F32 => DType::F32,
            // rows the 16-bit kernels read as whole words (else they would leave the GEMV and direct GEMM for the
            // tiled one)
            FileDType::BF16 if !matmul::gemv_supports(DType::BF16, cols) => DType::F32,
            FileDType::BF16 if self.ctx.caps.shader_f16 => DType::F16,
            FileDType::BF16 => DType::BF16,
            FileDType::F16 => DType::F16,
            FileDType::Q8_0 => DType::Q8_0,
            FileDType::Q4_0 => DType::Q4_0,
            FileDType::Q4_1 => DType::Q4_1,
        };
        let target = match self.opts.dtype {
            Some(d) if !file_gpu.is_quantized() => d,
            _ => file_gpu,
        };
        if target.is_quantized() && cols % DType::QK != 0 {
            DType::F32 // rows that are not whole blocks stay float
        } else {
            target
        }
    }
}

/// One stored matrix read in rows and converted to its GPU dtype's ggml bytes (bf16 → f16 or f32, f32/f16 → f16 or
/// quantized at load, as ggml does), a few rows at a time: the memory this needs does not grow with the tensor.
struct Part {
    name: String,
    src: FileDType,
    target: DType,
    cols: usize,
    src_row: u64,
    dst_row: u64,
}

impl Part {
    /// `None` when rows of `cols` are not whole blocks of the stored or the target dtype.
    fn new(name: &str, meta: &TensorMeta, cols: usize, target: DType) -> Option<Self> {
        let to = FileDType::try_from(target).ok()?;
        let (src_row, dst_row) = (meta.dtype.n_bytes(cols as u64)?, to.n_bytes(cols as u64)?);
        Some(Self { name: name.to_string(), src: meta.dtype, target, cols, src_row, dst_row })
    }

    /// Whether the stored bytes already are the target's.
    fn verbatim(&self) -> bool {
        FileDType::try_from(self.target).is_ok_and(|t| t == self.src)
    }

    /// Bytes of the file read per upload step: a fixed budget, or (when converting) a fixed budget of f32 values.
    fn chunk_bytes(&self) -> usize {
        if self.verbatim() {
            matmul::UPLOAD_CHUNK_BYTES
        } else {
            let f32_rows = (matmul::UPLOAD_CHUNK_BYTES as u64 / (4 * self.cols.max(1) as u64)).max(1);
            (f32_rows * self.dst_row) as usize
        }
    }

    /// Rows `r0 .. r0 + n` in the target's bytes.
    fn read(&self, store: &dyn WeightStore, r0: u64, n: u64) -> Result<Vec<u8>> {
        let bytes = store.bytes_range(&self.name, r0 * self.src_row, n * self.src_row)?;
        if self.verbatim() {
            return Ok(bytes);
        }
        let values = quant::dequantize(self.src, &bytes, n as usize * self.cols)?;
        drop(bytes);
        quant::quantize(FileDType::try_from(self.target)?, &values)
    }
}

/// `e` naming the weight it is about.
fn weight_error(e: Error, name: &str) -> Error {
    match e {
        Error::LimitExceeded { limit, needed, offered, .. } => {
            Error::LimitExceeded { what: format!("weight `{name}`"), limit, needed, offered }
        }
        Error::ValueRange { value, dtype, .. } => Error::ValueRange { what: format!("weight `{name}`"), value, dtype },
        e => e,
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
