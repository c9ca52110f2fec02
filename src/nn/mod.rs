//! Layers shared by the model files: dtype-dispatching [`Linear`], norms, embedding, the MLPs, and the
//! [`KvCache`]. Each layer is built from a [`VarBuilder`] scope and records its forward pass into a
//! [`Recorder`](crate::gpu::Recorder).

mod weights;

pub use weights::{GgufStore, LoadOptions, TensorMeta, VarBuilder, WeightStore};

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Recorder, Tensor};
use crate::ops::matmul::{Path, Rows};
use crate::ops::{elementwise, matmul, norm};

/// `y = x·Wᵀ + b`; the kernel is chosen by the weight's dtype (f32, f16, Q8_0, Q4_0, Q4_1).
pub struct Linear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl Linear {
    /// `name.weight` `[out, in]` and, when `bias`, `name.bias` `[out]`.
    pub fn load(vb: &VarBuilder, name: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let vb = vb.pp(name);
        let w = vb.matrix("weight", [out_dim, in_dim])?;
        let b = if bias { Some(vb.f32("bias", &[out_dim])?) } else { None };
        Ok(Self { w, b })
    }

    /// Linear layers over the same input (`names` under `vb`, `[outs[i], in]` each) as one, their weights and
    /// biases stacked: one kernel reads x once for all (the attention's q, k, v; the MLP's gate and up). `None`
    /// when the weights do not share a GPU dtype (see [`VarBuilder::matrix_stack`]).
    pub fn load_stacked(
        vb: &VarBuilder,
        names: &[&str],
        in_dim: usize,
        outs: &[usize],
        bias: bool,
    ) -> Result<Option<Self>> {
        let field = |f: &str| names.iter().map(|n| format!("{n}.{f}")).collect::<Vec<_>>();
        let (weights, biases) = (field("weight"), field("bias"));
        let Some(w) = vb.matrix_stack(&strs(&weights), in_dim, outs)? else { return Ok(None) };
        let b = if bias { Some(vb.f32_stacked(&strs(&biases), outs)?) } else { None };
        Ok(Some(Self { w, b }))
    }

    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        matmul::linear(rec, x, &self.w, self.b.as_ref())
    }

    /// `act(norm(x)·Wᵀ + b) + residual`, each part where given and in the product's kernel where it can take it
    /// ([`matmul::Fused`]).
    pub fn forward_fused(&self, rec: &mut Recorder, x: &Tensor, fused: matmul::Fused) -> Result<Tensor> {
        matmul::linear_fused(rec, x, &self.w, self.b.as_ref(), fused, matmul::Path::Auto)
    }

    pub fn out_dim(&self) -> usize {
        self.w.shape[0]
    }

    /// Bytes of the weight and bias on the GPU.
    pub fn bytes(&self) -> u64 {
        self.w.bytes() + self.b.as_ref().map_or(0, |b| b.bytes())
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A ViT layer's bidirectional self-attention over all `n` rows of `h` (`[n, heads · head_dim]`, the normalized
/// residual stream): q/k/v projections and attention, the heads concatenated `[n, d]`, before the output
/// projection. `h`, q, k and v are dropped as soon as their readers are recorded, so the recording reuses them.
pub fn vit_self_attention(
    rec: &mut Recorder,
    h: Tensor,
    [q, k, v]: [&Linear; 3],
    heads: usize,
    p: &crate::ops::attention::AttnParams,
) -> Result<Tensor> {
    let (n, d) = (h.rows(), h.cols());
    let shape = [n, heads, d / heads];
    let (q, k, v) = (
        q.forward(rec, &h)?.reshape(&shape)?,
        k.forward(rec, &h)?.reshape(&shape)?,
        v.forward(rec, &h)?.reshape(&shape)?,
    );
    drop(h);
    crate::ops::attention::attention(rec, &q, &k, &v, p)?.reshape(&[n, d])
}

pub struct RmsNorm {
    pub w: Tensor,
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self { w: vb.pp(name).f32("weight", &[dim])?, eps })
    }
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        norm::rms_norm(rec, x, &self.w, self.eps)
    }
    /// This norm as the prologue of the product that follows it ([`matmul::Fused::pre_norm`]).
    pub fn pre(&self) -> matmul::PreNorm<'_> {
        matmul::PreNorm { w: &self.w, eps: self.eps }
    }
}

pub struct LayerNorm {
    pub w: Tensor,
    pub b: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f32) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self { w: vb.f32("weight", &[dim])?, b: vb.f32("bias", &[dim])?, eps })
    }
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        norm::layer_norm(rec, x, &self.w, &self.b, self.eps)
    }
}

/// Activation functions by their Hugging Face `hidden_act` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    GeluTanh,
    GeluErf,
    Silu,
}

impl Activation {
    pub fn from_hf(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "quick_gelu_tanh" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "silu" | "swish" => Activation::Silu,
            other => return Err(crate::Error::Config(format!("unsupported activation `{other}`"))),
        })
    }
    pub fn forward(self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        elementwise::unary(rec, self.op(), x)
    }

    /// The elementwise op of this activation.
    pub fn op(self) -> elementwise::Unary {
        match self {
            Activation::GeluTanh => elementwise::Unary::GeluTanh,
            Activation::GeluErf => elementwise::Unary::GeluErf,
            Activation::Silu => elementwise::Unary::Silu,
        }
    }
}

/// Two linear layers with an activation between (ViT MLP, LLaVA projector): `fc2(act(fc1(x)))`.
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
        self.forward_residual(rec, x.clone(), None)
    }

    /// `fc2(act(fc1(x))) + residual`: the activation fused into fc1's GEMM, the add into fc2's. `x` is taken so
    /// that, where the caller holds no other handle, its buffer is free for fc2's output (one activation fewer
    /// at the layer's peak).
    ///
    /// Where the hidden activation of all rows would exceed [`ops::BLOCK_BYTES`](crate::ops::BLOCK_BYTES), the
    /// rows go in chunks ([`matmul::linear_rows`]), each chunk's hidden freed before the next: the ViT's MLP at
    /// 1024 patches holds a 3 MiB hidden block instead of 12 MiB.
    pub fn forward_residual(&self, rec: &mut Recorder, x: Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let (m, inter) = (x.rows(), self.fc1.w.shape[0]);
        let chunk = mlp_chunk_rows(m, inter);
        if chunk >= m || x.shape.len() != 2 {
            let act = matmul::Fused { act: Some(self.act.op()), ..Default::default() };
            let h = self.fc1.forward_fused(rec, &x, act)?;
            drop(x);
            return self.fc2.forward_fused(rec, &h, matmul::Fused { residual, ..Default::default() });
        }
        let y = rec.empty(&[m, self.fc2.w.shape[0]], DType::F32)?;
        for row0 in (0..m).step_by(chunk) {
            let rows = chunk.min(m - row0);
            let h = rec.empty(&[rows, inter], DType::F32)?;
            let (xr, hr, yr) = (Rows { t: &x, row0, rows }, Rows::all(&h), Rows { t: &y, row0, rows });
            let (fc1, fc2, act) = (&self.fc1, &self.fc2, Some(self.act.op()));
            matmul::linear_rows(rec, xr, &fc1.w, fc1.b.as_ref(), hr, act, None, Path::Auto)?;
            matmul::linear_rows(rec, hr, &fc2.w, fc2.b.as_ref(), yr, None, residual, Path::Auto)?;
        }
        Ok(y)
    }
}

/// Rows per chunk of an MLP over `m` rows with `inter` hidden features: all of them where the hidden activation
/// fits [`ops::BLOCK_BYTES`](crate::ops::BLOCK_BYTES), else the fewest equal chunks (multiples of
/// [`matmul::ROWS_ALIGN`] rows) whose hidden does.
pub(crate) fn mlp_chunk_rows(m: usize, inter: usize) -> usize {
    let row_bytes = inter.max(1) * 4;
    if m * row_bytes <= crate::ops::BLOCK_BYTES {
        return m;
    }
    let mut chunks = (m * row_bytes).div_ceil(crate::ops::BLOCK_BYTES);
    loop {
        let rows = m.div_ceil(chunks).next_multiple_of(matmul::ROWS_ALIGN);
        if rows * row_bytes <= crate::ops::BLOCK_BYTES || rows == matmul::ROWS_ALIGN {
            return rows;
        }
        chunks += 1;
    }
}

/// Per-layer key and value caches `[max_len, n_kv_heads, head_dim]`, allocated once per context length.
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Rows filled so far.
    pub len: usize,
    pub max_len: usize,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, layers: usize, max_len: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        let shape = [max_len, kv_heads, head_dim];
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(ctx.empty(&shape, DType::F32)?);
            v.push(ctx.empty(&shape, DType::F32)?);
        }
        Ok(Self { k, v, len: 0, max_len })
    }

    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|t| t.bytes()).sum()
    }
}
