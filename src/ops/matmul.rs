//! Matrix products (`shaders/gemv.wgsl`, `shaders/matmul.wgsl`, `shaders/matmul_direct.wgsl`): [`linear`]
//! (`y = x·wᵀ + b` with the weight in F32, F16, BF16, Q8_0, Q4_0 or Q4_1, dequantized inside the kernels) and the
//! general f32 [`matmul`], with the CPU reference [`cpu_linear`] and the weight upload helpers the loader uses
//! ([`upload_weight`], [`upload_ggml`]).
//!
//! Kernel choice in [`linear`]: decode (M ≤ [`GEMV_MAX_M`] rows of x) is memory-bound, so it goes to a GEMV that
//! reads each weight byte once and dots it with all M rows; everything else goes to the 64×64-tiled GEMM on GPUs
//! and to the barrier-free direct GEMM on CPU adapters ([`Caps::cpu_adapter`]), where workgroup barriers and
//! per-lane loads are what costs.
//! On adapters with subgroups the GEMV gives each output row a subgroup (coalesced loads + `subgroupAdd`);
//! without, one invocation per row (no barriers: they are expensive on lavapipe and SwiftShader).

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Binding, Caps, DType, GpuContext, PipelineKey, Recorder, Tensor};
use crate::loader::{self, quant};

use super::elementwise::{self, Unary};
use super::norm;
use super::rope::{self, QkvDims, RopeLayout};
use super::{expect_dtype, params};

/// Largest number of x rows the GEMV handles in one weight pass (it keeps one vec4 accumulator: one lane per row).
pub const GEMV_MAX_M: usize = 4;

/// GEMM tile (output rows × columns per workgroup); must match `shaders/matmul.wgsl`.
const TILE: usize = 64;

/// Output rows per GEMV workgroup and its size (one invocation per row without subgroups).
const GEMV_WG: u32 = 64;
const GEMV_SG_ROWS: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemvParams {
    m: u32,
    n: u32,
    k: u32,
    scales_offset: u32,
    has_bias: u32,
    /// ROPE: the token's position and the table's positions
    pos: u32,
    max_pos: u32,
    /// NORM: the RMSNorm's epsilon
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    trans_b: u32,
    scales_offset: u32,
    has_bias: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    _pad: [u32; 3],
}

/// How [`linear`] computes a product; [`linear_with`] forces one (tests and the benchmark use it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// GEMV when M ≤ [`GEMV_MAX_M`] and the weight rows are vec4-aligned, GEMM otherwise.
    Auto,
    /// The GEMV in the variant [`use_subgroup_gemv`], [`use_word_lanes`] and [`gemv_shares_x`] pick for this
    /// adapter.
    Gemv,
    /// The subgroup GEMV even where it is not the default ([`Error::MissingFeature`] without subgroups), with a
    /// lane per quantized block (not [`Path::GemvWords`]).
    GemvSubgroups,
    /// The subgroup GEMV with its lanes over consecutive u32 words of the weight rows (`gemv.wgsl` WORDS; one row
    /// of x and quantized weights, else as [`Path::GemvSubgroups`]) even where it is not the default
    /// ([`Error::MissingFeature`] without subgroups).
    GemvWords,
    /// The GEMV of an invocation per 4 output rows sharing its x chunks by subgroup broadcasts (`gemv.wgsl`
    /// SG_X) even where it is not the default; one row of x and quantized weights, else the plain variant
    /// ([`Error::MissingFeature`] without one fixed subgroup size of 4 or 8).
    GemvSharedX,
    /// The tiled GEMM (workgroup memory, barriers): GPUs.
    Gemm,
    /// The barrier-free GEMM of `matmul_direct.wgsl` (8 rows × 4 columns per invocation): CPU adapters. In the
    /// variant [`direct_subgroup_size`] picks for this adapter.
    Direct,
    /// The direct GEMM sharing its x rows by subgroup broadcasts even where it is not the default
    /// ([`Error::MissingFeature`] without one fixed subgroup size of 4 or 8).
    DirectSubgroups,
}

/// An RMSNorm of x before a product, `x / sqrt(mean(x²) + eps) · w` over the last dim (a decoder's input and
/// post-attention norms, the final norm before the LM head).
#[derive(Clone, Copy, Debug)]
pub struct PreNorm<'a> {
    /// `[K]` f32
    pub w: &'a Tensor,
    pub eps: f32,
}

/// What a linear layer fuses around its product: `y = act(norm(x)·wᵀ + bias) + residual`.
/// - `pre_norm`: the GEMV of one row of x normalizes x as it reads it (`gemv.wgsl` NORM), where the adapter has
///   subgroups (each subgroup sums x² itself) and a storage binding to spare; otherwise, and for the GEMMs, the
///   norm is a kernel of its own before the product.
/// - `act`: in the GEMMs' stores (a ViT's GELU after fc1); a kernel after the GEMV.
/// - `residual` (`[.., N]` like the output): in every kernel's stores (a ViT's two residual adds per layer, a
///   decoder's after o_proj and down_proj), unless an activation comes first on the GEMV path.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fused<'a> {
    pub pre_norm: Option<PreNorm<'a>>,
    pub act: Option<Unary>,
    pub residual: Option<&'a Tensor>,
}

impl Fused<'_> {
    /// The shaders' ACT number (`activation4` of activation.wgsl).
    fn act_code(&self) -> u32 {
        match self.act {
            None => 0,
            Some(Unary::GeluTanh) => 1,
            Some(Unary::GeluErf) => 2,
            Some(Unary::Silu) => 3,
        }
    }
}

/// What the GEMMs do after the product: the activation (`Fused::act_code`) and the residual's binding.
#[derive(Default)]
struct Epilogue {
    act: u32,
    residual: Option<Binding>,
}

impl Epilogue {
    fn of(f: &Fused) -> Self {
        Epilogue { act: f.act_code(), residual: f.residual.map(Binding::from) }
    }
}

/// The parameter block of `matmul_direct.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DirectParams {
    m: u32,
    n: u32,
    k: u32,
    scales_offset: u32,
    has_bias: u32,
    alpha: f32,
    x: [u32; 3], // offset, row stride, batch stride (vec4 units)
    w: [u32; 3], // the same for f32 weights
    y: [u32; 3], // the same in elements
    _pad: u32,
}

impl GemvParams {
    /// The parameter block of `gemv.wgsl`.
    fn new(op: &'static str, m: usize, n: usize, k: usize, w: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        Ok(GemvParams {
            m: u32_dim(op, "M", m)?,
            n: u32_dim(op, "N", n)?,
            k: u32_dim(op, "K", k)?,
            scales_offset: w.scales_offset,
            has_bias: bias.is_some() as u32,
            pos: 0,
            max_pos: 0,
            eps: 0.0,
        })
    }
}

fn u32_dim(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Shape { op, detail: format!("{what} = {v} does not fit in u32") })
}

/// Whether [`linear`]'s GEMV gives each output row a subgroup. Only on adapters with subgroups that are not
/// CPU emulations: on lavapipe (llvmpipe) the one-invocation-per-row kernel measured faster (see
/// docs/benchmarks.md), and SwiftShader never reports subgroups through wgpu's WebGPU backend.
pub fn use_subgroup_gemv(caps: &Caps) -> bool {
    caps.subgroups && !cpu_adapter(caps)
}

/// The subgroup size with which the direct GEMM shares its x rows by subgroup broadcasts (`matmul_direct.wgsl`
/// SG_X), or None for the variant where every lane loads them: on CPU adapters with one subgroup size of 4
/// (SwiftShader) or 8 (lavapipe on AVX2/AVX-512 hosts). Both emulate a lane's load as a gather even when all
/// lanes read one address; sharing made the f32 GEMM 1.7 × faster on lavapipe and 1.25 × on SwiftShader
/// (docs/benchmarks.md).
pub fn direct_subgroup_size(caps: &Caps) -> Option<u32> {
    shared_rows_subgroup(caps).filter(|_| cpu_adapter(caps))
}

/// The subgroup size with which the GEMV of one x row shares its x chunks by subgroup broadcasts (`gemv.wgsl`
/// SG_X, an invocation per 4 output rows), or None: the same adapters as [`direct_subgroup_size`], for the same
/// reason (on SwiftShader the x loads outnumbered the weight loads of a quantized block 2 : 1).
pub fn gemv_shares_x(caps: &Caps) -> Option<u32> {
    direct_subgroup_size(caps)
}

/// The adapter's subgroup size if `matmul_direct.wgsl` and `gemv.wgsl` have a variant for it (SG4, SG8).
fn shared_rows_subgroup(caps: &Caps) -> Option<u32> {
    caps.subgroup_size.filter(|&s| s == 4 || s == 8)
}

/// A CPU emulation of a GPU ([`Caps::cpu_adapter`]).
pub fn cpu_adapter(caps: &Caps) -> bool {
    caps.cpu_adapter
}

/// Whether the GEMV can read weight rows of length `k` of `dtype` as whole vec4 words.
pub fn gemv_supports(dtype: DType, k: usize) -> bool {
    match dtype {
        DType::F32 => k % 4 == 0,
        DType::F16 | DType::BF16 => k % 8 == 0,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => k % DType::QK == 0,
        DType::U32 => false,
    }
}

/// `y = x·wᵀ + bias`, PyTorch `nn.Linear` semantics.
///
/// - `x`: `[.., K]` f32 (M = product of the leading dims)
/// - `w`: `[N, K]` in F32, F16, BF16, Q8_0, Q4_0 or Q4_1 (quantized: K % 32 == 0)
/// - `bias`: `[N]` f32
/// - returns `[.., N]` f32
pub fn linear(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_with(rec, x, w, bias, Path::Auto)
}

/// [`linear`] with the kernel chosen by the caller.
pub fn linear_with(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, path: Path) -> Result<Tensor> {
    product(rec, "linear", x, w, bias, path, false, Fused::default())
}

/// [`linear`] with an RMSNorm of x before it and/or an activation and a residual add after it ([`Fused`]), in
/// the product's kernel where it can take them.
pub fn linear_fused(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    fused: Fused,
    path: Path,
) -> Result<Tensor> {
    product(rec, "linear", x, w, bias, path, false, fused)
}

/// The SwiGLU MLP's first half: `silu(x·gateᵀ + b_g) ∘ (x·upᵀ + b_u)` for `w = [gate; up]` stacked (`[2F, K]`,
/// bias `[2F]`) → `[.., F]`. For M ≤ [`GEMV_MAX_M`] rows (decode) one GEMV pass computes both products and the
/// gate; otherwise the GEMM of [`linear`] over the stacked weight, then [`elementwise::swiglu_halves`].
///
/// [`elementwise::swiglu_halves`]: super::elementwise::swiglu_halves
pub fn linear_swiglu(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_swiglu_with(rec, x, w, bias, None, Path::Auto)
}

/// [`linear_swiglu`] of `pre_norm(x)` (where given) with the kernel chosen by the caller (GEMV paths fuse the
/// gate, and the norm as [`Fused`] says; GEMM paths neither).
pub fn linear_swiglu_with(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    pre_norm: Option<PreNorm>,
    path: Path,
) -> Result<Tensor> {
    product(rec, "linear_swiglu", x, w, bias, path, true, Fused { pre_norm, ..Fused::default() })
}

/// The rotary embedding and KV-cache write that [`linear_rope_qkv`] fuses into attention's q/k/v projection
/// (the arguments of [`rope::rope_qkv`]).
#[derive(Clone, Copy, Debug)]
pub struct RopeQkv<'a> {
    /// [`rope::cos_sin_table`]'s `[2, P, D/2]`
    pub table: &'a Tensor,
    /// the token's position: its row in the caches
    pub pos: usize,
    pub layout: RopeLayout,
    /// query heads (the caches give the kv heads and the head dim)
    pub heads: usize,
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
}

/// One token's `[q | k | v] = x·wᵀ + bias` (w: attention's stacked projections, `[(H + 2·Hkv)·D, K]`) with the
/// rotary embedding and the cache write in the GEMV's store (`gemv.wgsl` ROPE): returns q rotated (`[1, H, D]`);
/// k rotated and v go into the caches at row `rope.pos`. The same as [`linear`] then [`rope::rope_qkv`], one
/// dispatch and no qkv tensor instead of two. x is `[1, K]`; D % 4 == 0; `path` is [`Path::Auto`] or a GEMV path
/// (tests force each variant).
pub fn linear_rope_qkv(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    rope: &RopeQkv,
    pre_norm: Option<PreNorm>,
    path: Path,
) -> Result<Tensor> {
    const OP: &str = "linear_rope_qkv";
    expect_dtype(OP, x, DType::F32)?;
    let [n, k] = w.shape[..] else {
        return Err(Error::Shape { op: OP, detail: format!("weight must be [N, K], got {:?}", w.shape) });
    };
    if x.shape.len() != 2 || x.rows() != 1 || x.cols() != k {
        return Err(Error::Shape { op: OP, detail: format!("x must be one row [1, {k}], got {:?}", x.shape) });
    }
    let dims = rope::check_qkv(OP, 2, n, 1, rope.table, rope.pos, rope.heads, rope.k_cache, rope.v_cache)?;
    if dims.d % 4 != 0 {
        return Err(Error::Shape { op: OP, detail: format!("head dim {} is not a multiple of 4", dims.d) });
    }
    if !gemv_supports(w.dtype, k) {
        return Err(Error::Shape { op: OP, detail: format!("the GEMV needs vec4-aligned {} rows, K = {k}", w.dtype) });
    }
    check_bias(OP, bias, n)?;
    if matches!(path, Path::Gemm | Path::Direct | Path::DirectSubgroups) {
        return Err(Error::Shape { op: OP, detail: format!("{path:?} is not a GEMV path") });
    }
    let variant = gemv_variant(&rec.ctx().caps, path)?;
    let (x, norm) = pre_norm_for(rec, OP, x, pre_norm, true, GEMV_BUFFERS + 3)?;
    let q = rec.empty(&[1, rope.heads, dims.d], DType::F32)?;
    let kernel = Gemv { w, bias, n, k, variant, swiglu: false, rope: Some((rope, dims)), norm, residual: None };
    kernel.run(rec, &x, 0, 1, &q)?;
    Ok(q)
}

/// Storage buffers `gemv.wgsl` binds in every variant (x, w, bias, y, and w again for the scales).
const GEMV_BUFFERS: u32 = 5;

/// Whether the GEMV of one x row can normalize it itself (`gemv.wgsl` NORM) next to `storage` other storage
/// buffers: it needs subgroups (each subgroup sums x² without a barrier) and one more storage binding.
pub fn gemv_fuses_norm(caps: &Caps, storage: u32) -> bool {
    caps.subgroups && storage < caps.max_storage_buffers_per_stage
}

/// x and the norm the kernel is to apply: `pre_norm` itself where a GEMV of one x row (`gemv_row`) with
/// `storage` other storage buffers can fuse it, else x normalized by a kernel of its own (and no norm).
fn pre_norm_for<'a>(
    rec: &mut Recorder,
    op: &'static str,
    x: &Tensor,
    pre_norm: Option<PreNorm<'a>>,
    gemv_row: bool,
    storage: u32,
) -> Result<(Tensor, Option<PreNorm<'a>>)> {
    let Some(nm) = pre_norm else { return Ok((x.clone(), None)) };
    expect_dtype(op, nm.w, DType::F32)?;
    if nm.w.numel() != x.cols() {
        return Err(Error::Shape { op, detail: format!("norm weight {:?} vs x {:?}", nm.w.shape, x.shape) });
    }
    if gemv_row && gemv_fuses_norm(&rec.ctx().caps, storage) {
        Ok((x.clone(), Some(nm)))
    } else {
        Ok((norm::rms_norm(rec, x, nm.w, nm.eps)?, None))
    }
}

/// A bias, if any: f32 with `n` elements.
fn check_bias(op: &'static str, bias: Option<&Tensor>, n: usize) -> Result<()> {
    if let Some(b) = bias {
        expect_dtype(op, b, DType::F32)?;
        if b.numel() != n {
            return Err(Error::Shape { op, detail: format!("bias {:?} does not match N = {n}", b.shape) });
        }
    }
    Ok(())
}

/// Which GEMV kernel a product takes (`gemv.wgsl`'s defines); what applies depends on the dtype and the rows of x.
#[derive(Clone, Copy, Debug)]
struct GemvVariant {
    /// SUBGROUPS: a subgroup per output row (per quad of rows with one x row)
    subgroups: bool,
    /// SG_X's subgroup size (without SUBGROUPS; one x row, quantized weights)
    shared_x: Option<u32>,
    /// WORDS (with SUBGROUPS; one x row, quantized weights): lanes over words, not blocks
    words: bool,
}

/// Whether the subgroup GEMV of one x row and quantized weights puts its lanes over consecutive u32 words of the
/// rows (`gemv.wgsl` WORDS) rather than a lane per block: wherever [`use_subgroup_gemv`] holds (GPUs; measured
/// on an H200 in docs/benchmarks.md).
pub fn use_word_lanes(caps: &Caps) -> bool {
    use_subgroup_gemv(caps)
}

/// The GEMV variant for `path` (Auto or a GEMV path); [`Error::MissingFeature`] where a forced variant lacks its
/// subgroups.
fn gemv_variant(caps: &Caps, path: Path) -> Result<GemvVariant> {
    let forced = |words| GemvVariant { subgroups: true, shared_x: None, words };
    match path {
        Path::GemvSubgroups | Path::GemvWords if !caps.subgroups => {
            Err(Error::MissingFeature { feature: "subgroups", what: "the subgroup GEMV".into() })
        }
        Path::GemvSubgroups => Ok(forced(false)),
        Path::GemvWords => Ok(forced(true)),
        Path::GemvSharedX => match shared_rows_subgroup(caps) {
            Some(sg) => Ok(GemvVariant { subgroups: false, shared_x: Some(sg), words: false }),
            None => Err(Error::MissingFeature {
                feature: "subgroups",
                what: format!("the GEMV's shared-x variant (subgroup size {:?}, needs 4 or 8)", caps.subgroup_size),
            }),
        },
        _ => {
            let subgroups = use_subgroup_gemv(caps);
            Ok(GemvVariant {
                subgroups,
                shared_x: gemv_shares_x(caps).filter(|_| !subgroups),
                words: subgroups && use_word_lanes(caps),
            })
        }
    }
}

/// `linear` and `linear_swiglu`: checks, then the kernel for `path`.
#[allow(clippy::too_many_arguments)]
fn product(
    rec: &mut Recorder,
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    path: Path,
    swiglu: bool,
    fused: Fused,
) -> Result<Tensor> {
    expect_dtype(op, x, DType::F32)?;
    let (n, k) = match w.shape[..] {
        [n, k] => (n, k),
        _ => return Err(Error::Shape { op, detail: format!("weight must be [N, K], got {:?}", w.shape) }),
    };
    if x.shape.is_empty() || x.cols() != k {
        return Err(Error::Shape {
            op,
            detail: format!("x {:?} has K = {} but the weight {:?} has K = {k}", x.shape, x.cols(), w.shape),
        });
    }
    if swiglu && n % 2 != 0 {
        return Err(Error::Shape { op, detail: format!("the weight must be [gate; up] (even N), got {:?}", w.shape) });
    }
    if w.dtype == DType::U32 {
        return Err(Error::UnsupportedDtype { op, dtype: w.dtype.to_string() });
    }
    if w.dtype.is_quantized() && k % DType::QK != 0 {
        return Err(Error::Shape { op, detail: format!("{} weights need K % 32 == 0, got K = {k}", w.dtype) });
    }
    check_bias(op, bias, n)?;
    let m = x.rows();
    let use_gemv = match path {
        Path::Auto => m <= GEMV_MAX_M && gemv_supports(w.dtype, k),
        Path::Gemv | Path::GemvSubgroups | Path::GemvWords | Path::GemvSharedX => {
            gemv_variant(&rec.ctx().caps, path)?;
            if !gemv_supports(w.dtype, k) {
                return Err(Error::Shape {
                    op,
                    detail: format!("the GEMV needs vec4-aligned {} rows, K = {k}", w.dtype),
                });
            }
            true
        }
        Path::Gemm | Path::Direct | Path::DirectSubgroups => false,
    };
    if swiglu && !use_gemv {
        let full = product(rec, op, x, w, bias, path, false, Fused { pre_norm: fused.pre_norm, ..Fused::default() })?;
        return super::elementwise::swiglu_halves(rec, &full);
    }
    // outputs per row of x: the SwiGLU GEMV writes one per gate/up pair
    let n_out = if swiglu { n / 2 } else { n };
    let mut out_shape = x.shape.clone();
    *out_shape.last_mut().unwrap() = n_out;
    if let Some(r) = fused.residual {
        expect_dtype(op, r, DType::F32)?;
        if swiglu || r.shape != out_shape {
            return Err(Error::Shape {
                op,
                detail: format!("residual {:?} does not match the output {out_shape:?} (or SwiGLU)", r.shape),
            });
        }
    }
    if swiglu && fused.act.is_some() {
        return Err(Error::Shape { op, detail: "SwiGLU takes no further activation".into() });
    }
    // the GEMV adds the residual in its stores unless an activation comes first
    let gemv_residual = fused.residual.filter(|_| use_gemv && fused.act.is_none());
    let storage = GEMV_BUFFERS + gemv_residual.is_some() as u32;
    let (x, norm) = pre_norm_for(rec, op, x, fused.pre_norm, use_gemv && m == 1, storage)?;
    let out = rec.empty(&out_shape, DType::F32)?;
    if m == 0 || n == 0 {
        return Ok(out);
    }
    let caps = &rec.ctx().caps;
    let (direct, sg) = gemm_choice(op, caps, path, w.dtype, k)?;
    if use_gemv {
        // The GEMV handles up to GEMV_MAX_M rows of x per weight pass; more rows take more passes.
        let variant = gemv_variant(caps, path)?;
        let kernel = Gemv { w, bias, n: n_out, k, variant, swiglu, rope: None, norm, residual: gemv_residual };
        for m0 in (0..m).step_by(GEMV_MAX_M) {
            kernel.run(rec, &x, m0, (m - m0).min(GEMV_MAX_M), &out)?;
        }
        // an activation, then the residual add: kernels of their own after the GEMV
        let Some(act) = fused.act else { return Ok(out) };
        let y = elementwise::unary(rec, act, &out)?;
        return match fused.residual {
            Some(r) => elementwise::add(rec, &y, r),
            None => Ok(y),
        };
    } else if direct {
        gemm_direct(rec, (&x).into(), w, bias, (&out).into(), [m, n, k], sg, Epilogue::of(&fused))?;
    } else {
        gemm(rec, (&x).into(), w, bias, (&out).into(), m, n, k, 1, [0, 0, 0], true, Epilogue::of(&fused))?;
    }
    Ok(out)
}

/// The GEMM `path` takes for a weight of `dtype` with rows of `k`: the direct one (`true`, with the subgroup size
/// its x rows are shared over) or the tiled one; GEMV paths answer the tiled one (the caller has taken the GEMV).
fn gemm_choice(op: &'static str, caps: &Caps, path: Path, dtype: DType, k: usize) -> Result<(bool, Option<u32>)> {
    let direct = match path {
        Path::Auto => cpu_adapter(caps) && gemv_supports(dtype, k),
        Path::Direct | Path::DirectSubgroups if !gemv_supports(dtype, k) => {
            return Err(Error::Shape {
                op,
                detail: format!("the direct GEMM needs vec4-aligned {dtype} rows, K = {k}"),
            })
        }
        p => p == Path::Direct || p == Path::DirectSubgroups,
    };
    let sg = match path {
        Path::DirectSubgroups => Some(shared_rows_subgroup(caps).ok_or_else(|| Error::MissingFeature {
            feature: "subgroups",
            what: format!("the direct GEMM's subgroup variant (subgroup size {:?}, needs 4 or 8)", caps.subgroup_size),
        })?),
        _ => direct_subgroup_size(caps),
    };
    Ok((direct, sg))
}

/// Rows `row0 .. row0 + rows` of a 2-D f32 tensor, bound in place (a storage binding at a byte offset): what
/// [`linear_rows`] reads and writes, for a layer run in row chunks.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub t: &'a Tensor,
    pub row0: usize,
    pub rows: usize,
}

impl<'a> Rows<'a> {
    /// All of `t`'s rows.
    pub fn all(t: &'a Tensor) -> Self {
        Rows { t, row0: 0, rows: t.rows() }
    }

    fn binding(&self, op: &'static str, caps: &Caps) -> Result<Binding> {
        expect_dtype(op, self.t, DType::F32)?;
        let row_bytes = self.t.cols() as u64 * 4;
        let (offset, size) = (self.row0 as u64 * row_bytes, self.rows as u64 * row_bytes);
        if self.t.shape.len() != 2
            || self.row0 + self.rows > self.t.rows()
            || offset % caps.min_storage_align as u64 != 0
        {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "rows {}..{} of {:?}: not a 2-D tensor's rows, or a byte offset not a multiple of {}",
                    self.row0,
                    self.row0 + self.rows,
                    self.t.shape,
                    caps.min_storage_align
                ),
            });
        }
        Ok(Binding { buf: self.t.buf.clone(), offset, size: Some(size.max(4)) })
    }
}

/// Rows of x for which [`linear_rows`]' views stay aligned whatever the row length: a row offset that is a
/// multiple of this many f32 rows is a multiple of 256 bytes, WebGPU's largest storage offset alignment.
pub const ROWS_ALIGN: usize = 64;

/// `y = act(x·wᵀ + b) + residual` over a range of rows: `x`'s rows in, as many of `y`'s rows out (the residual's
/// rows are `y`'s, of a tensor shaped like `y.t`). The GEMM that [`linear`] takes for `x.rows` rows, on views of
/// the buffers: a layer run in row chunks (the ViT's MLP) needs its hidden activation for one chunk only. Row
/// offsets must be multiples of [`ROWS_ALIGN`] rows (or of the adapter's storage offset alignment), and `y`'s
/// tensor another than `x`'s and the residual's (a binding written and read in one dispatch is invalid).
/// `path`: [`Path::Auto`] (the GEMM [`linear`] takes on this adapter), [`Path::Gemm`], [`Path::Direct`] or
/// [`Path::DirectSubgroups`].
#[allow(clippy::too_many_arguments)]
pub fn linear_rows(
    rec: &mut Recorder,
    x: Rows,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: Rows,
    act: Option<Unary>,
    residual: Option<&Tensor>,
    path: Path,
) -> Result<()> {
    const OP: &str = "linear_rows";
    let aliased = |t: &Tensor| Arc::ptr_eq(&t.buf, &y.t.buf);
    if aliased(x.t) || residual.is_some_and(aliased) {
        return Err(Error::Shape { op: OP, detail: "y shares its buffer with x or the residual".into() });
    }
    let (n, k) = match w.shape[..] {
        [n, k] => (n, k),
        _ => return Err(Error::Shape { op: OP, detail: format!("weight must be [N, K], got {:?}", w.shape) }),
    };
    if x.t.cols() != k || y.t.cols() != n || x.rows != y.rows || residual.is_some_and(|r| r.shape != y.t.shape) {
        return Err(Error::Shape {
            op: OP,
            detail: format!(
                "x {:?} (rows {}), w {:?}, y {:?} (rows {}), residual {:?}",
                x.t.shape,
                x.rows,
                w.shape,
                y.t.shape,
                y.rows,
                residual.map(|r| &r.shape)
            ),
        });
    }
    if w.dtype == DType::U32 || (w.dtype.is_quantized() && k % DType::QK != 0) {
        return Err(Error::UnsupportedDtype { op: OP, dtype: format!("{} with K = {k}", w.dtype) });
    }
    check_bias(OP, bias, n)?;
    let caps = &rec.ctx().caps;
    let (xb, yb) = (x.binding(OP, caps)?, y.binding(OP, caps)?);
    let epi = Epilogue {
        act: Fused { act, ..Default::default() }.act_code(),
        residual: residual.map(|r| Rows { t: r, ..y }.binding(OP, caps)).transpose()?,
    };
    if !matches!(path, Path::Auto | Path::Gemm | Path::Direct | Path::DirectSubgroups) {
        return Err(Error::Shape { op: OP, detail: format!("{path:?}: takes Auto, Gemm, Direct or DirectSubgroups") });
    }
    let (direct, sg) = gemm_choice(OP, caps, path, w.dtype, k)?;
    let m = x.rows;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if direct {
        gemm_direct(rec, xb, w, bias, yb, [m, n, k], sg, epi)
    } else {
        gemm(rec, xb, w, bias, yb, m, n, k, 1, [0, 0, 0], true, epi)
    }
}

/// The pipeline of `matmul_direct.wgsl`: vec4 stores where whole output rows allow them (`y4`), x rows shared by
/// subgroup broadcasts with subgroups of `sg` (4 or 8) lanes.
fn direct_key(y4: bool, sg: Option<u32>, wg: u32, fmt: u32) -> PipelineKey {
    PipelineKey::new("matmul_direct", "main")
        .define_if(y4, "Y4")
        .define_if(sg.is_some(), "SG_X")
        .define_if(sg == Some(4), "SG4")
        .define_if(sg == Some(8), "SG8")
        .constant("WG", wg)
        .constant("FMT", fmt)
}

/// `matmul_direct.wgsl`: one dispatch, 8 rows of x × 4 weight rows per invocation.
#[allow(clippy::too_many_arguments)]
fn gemm_direct(
    rec: &mut Recorder,
    x: Binding,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: Binding,
    [m, n, k]: [usize; 3],
    sg: Option<u32>,
    epi: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul_direct";
    const WG: u32 = 64;
    let fmt = match w.dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q8_0 => 2,
        DType::Q4_0 => 3,
        DType::Q4_1 => 4,
        DType::BF16 => 5,
        DType::U32 => return Err(Error::UnsupportedDtype { op: OP, dtype: w.dtype.to_string() }),
    };
    // whole rows of vec4 outputs: aligned vec4 stores (scattered scalar stores cost CPU adapters more than the
    // products of a short K)
    let key =
        direct_key(n % 4 == 0, sg, WG, fmt).define_if(epi.residual.is_some(), "RESIDUAL").constant("ACT", epi.act);
    let g = GemvParams::new(OP, m, n, k, w, bias)?;
    let k4 = g.k / 4;
    let p = DirectParams {
        m: g.m,
        n: g.n,
        k: g.k,
        scales_offset: g.scales_offset,
        has_bias: g.has_bias,
        alpha: 1.0,
        x: [0, k4, 0],
        w: [0, k4, 0],
        y: [0, g.n, 0],
        _pad: 0,
    };
    // without a bias the kernel reads none: the weight stands in for the binding
    let b: Binding = bias.unwrap_or(w).into();
    let grid = [(n as u32).div_ceil(4 * WG), (m as u32).div_ceil(8), 1];
    let mut bindings: Vec<Binding> = vec![x, w.into(), b, out, w.into()];
    bindings.extend(epi.residual);
    rec.dispatch(&key, &params(&p), &bindings, grid)
}

/// A matrix inside an f32 tensor: element `off`, rows `stride` elements apart, batch `b` at `off + b · batch`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub stride: usize,
    pub batch: usize,
}

/// `y_b = alpha · x_b · w_bᵀ` for `batches` f32 matrix pairs read in place (x_b `[M, K]`, w_b `[N, K]`, y_b
/// `[M, N]`, each [`Strided`]) with the barrier-free GEMM of CPU adapters: attention's `q·kᵀ` and `p·v` per head
/// without copying heads out of `[T, H, D]` tensors. Offsets and strides of x and w must be multiples of 4 (vec4
/// loads), K too; every matrix must lie inside its tensor.
pub fn matmul_strided(
    rec: &mut Recorder,
    x: Strided,
    w: Strided,
    y: Strided,
    (m, n, k): (usize, usize, usize),
    batches: usize,
    alpha: f32,
) -> Result<()> {
    const OP: &str = "matmul_strided";
    let err = |detail: String| Error::Shape { op: OP, detail };
    if m == 0 || n == 0 || batches == 0 {
        return Ok(());
    }
    if k == 0 {
        return Err(err(format!("K = 0 (M = {m}, N = {n})")));
    }
    if Arc::ptr_eq(&y.t.buf, &x.t.buf) || Arc::ptr_eq(&y.t.buf, &w.t.buf) {
        return Err(err("y must not share its buffer with x or w".into()));
    }
    for (what, s, rows, cols) in [("x", &x, m, k), ("w", &w, n, k), ("y", &y, m, n)] {
        expect_dtype(OP, s.t, DType::F32)?;
        if what != "y" && (s.off % 4 != 0 || s.stride % 4 != 0 || s.batch % 4 != 0 || k % 4 != 0) {
            return Err(err(format!("{what}: offset, strides and K must be multiples of 4: {s:?}, K = {k}")));
        }
        // one past the last element read or written, in checked arithmetic (usize is 32 bits on wasm)
        let last = (batches - 1)
            .checked_mul(s.batch)
            .and_then(|b| (rows - 1).checked_mul(s.stride).and_then(|r| r.checked_add(b)))
            .and_then(|v| v.checked_add(s.off))
            .and_then(|v| v.checked_add(cols));
        if last.is_none_or(|l| l > s.t.numel()) || (rows > 1 && s.stride < cols) {
            return Err(err(format!("{what}: {batches} × [{rows}, {cols}] at {s:?} does not fit {:?}", s.t.shape)));
        }
    }
    // the batches of y must not overlap (each output element has one writer): one after another, or side by side
    // within each row (heads of a [T, H, D] tensor)
    let stacked = y.batch >= (m - 1) * y.stride + n;
    let side_by_side = y.batch >= n && (batches - 1) * y.batch + n <= y.stride;
    if batches > 1 && !stacked && !side_by_side {
        return Err(err(format!("y: batches {:?} overlap ([{m}, {n}] each)", y)));
    }
    let max = rec.ctx().caps.max_workgroups_per_dim as usize;
    if m.div_ceil(8) > max || batches > max {
        return Err(err(format!("{batches} batches of {m} rows exceed {max} workgroups per dimension")));
    }
    let u = |v: usize| u32_dim(OP, "offset/stride", v);
    let p = DirectParams {
        m: u(m)?,
        n: u(n)?,
        k: u(k)?,
        scales_offset: 0,
        has_bias: 0,
        alpha,
        x: [u(x.off / 4)?, u(x.stride / 4)?, u(x.batch / 4)?],
        w: [u(w.off / 4)?, u(w.stride / 4)?, u(w.batch / 4)?],
        y: [u(y.off)?, u(y.stride)?, u(y.batch)?],
        _pad: 0,
    };
    // a narrow N (attention's p·v: N = head dim) gets a small workgroup: lanes past N would idle
    let wg: u32 = if n <= 64 { 16 } else { 64 };
    let y4 = [y.off, y.stride, y.batch, n].iter().all(|v| v % 4 == 0);
    let key = direct_key(y4, direct_subgroup_size(&rec.ctx().caps), wg, 0);
    let grid = [(n as u32).div_ceil(4 * wg), (m as u32).div_ceil(8), u(batches)?];
    rec.dispatch(&key, &params(&p), &[x.t.into(), w.t.into(), x.t.into(), y.t.into(), w.t.into()], grid)
}

/// A storage binding of rows `m0 .. m0 + rows` of a row-major f32 matrix with `cols` columns, or the whole
/// buffer when `m0 == 0` (binding offsets must be multiples of the adapter's storage offset alignment, which
/// arbitrary row offsets are not, so a later chunk of rows is first copied to a small buffer).
fn row_chunk(rec: &mut Recorder, t: &Tensor, m0: usize, rows: usize, cols: usize) -> Result<Tensor> {
    if m0 == 0 {
        return Ok(t.clone());
    }
    let chunk = rec.empty(&[rows, cols], DType::F32)?;
    rec.copy(t, (m0 * cols * 4) as u64, &chunk, 0, (rows * cols * 4) as u64)?;
    Ok(chunk)
}

/// One GEMV over weight `w` (`n` outputs per row of x; with `swiglu`, `w` holds 2n rows [gate; up]).
struct Gemv<'a> {
    w: &'a Tensor,
    bias: Option<&'a Tensor>,
    n: usize,
    k: usize,
    variant: GemvVariant,
    swiglu: bool,
    /// the fused RoPE + KV-cache write (one row of x; `out` is q)
    rope: Option<(&'a RopeQkv<'a>, QkvDims)>,
    /// the RMSNorm of x as the prologue (one row of x; [`gemv_fuses_norm`])
    norm: Option<PreNorm<'a>>,
    /// added in the stores, laid out like the output
    residual: Option<&'a Tensor>,
}

impl Gemv<'_> {
    /// Rows `m0 .. m0 + mr` (mr ≤ [`GEMV_MAX_M`]) of x into the same rows of `out`.
    fn run(&self, rec: &mut Recorder, x: &Tensor, m0: usize, mr: usize, out: &Tensor) -> Result<()> {
        const OP: &str = "gemv";
        let (w, n, k) = (self.w, self.n, self.k);
        let ctx = rec.ctx();
        let subgroups = self.variant.subgroups;
        let entry = match w.dtype {
            DType::F32 => "gemv_f32",
            DType::F16 => "gemv_f16",
            DType::BF16 => "gemv_bf16",
            DType::Q8_0 => "gemv_q8_0",
            DType::Q4_0 => "gemv_q4_0",
            DType::Q4_1 => "gemv_q4_1",
            DType::U32 => return Err(Error::UnsupportedDtype { op: OP, dtype: w.dtype.to_string() }),
        };
        // Rows per invocation (per subgroup with SUBGROUPS): 4 for a single x row, each x load serving 4 weight
        // rows (and, with subgroups, one reduction serving 4 rows).
        let rpt = if mr == 1 { 4 } else { 1 };
        let sg_x = self.variant.shared_x.filter(|_| !subgroups && rpt == 4 && w.dtype.is_quantized());
        let words = self.variant.words && subgroups && rpt == 4 && w.dtype.is_quantized();
        let rows_per_wg = match (subgroups, ctx.caps.subgroup_size) {
            // one quad per subgroup where the subgroup count is known: the small matrices of a small model
            // (SmolLM2: 1536 x 576) left a GPU's subgroups walking 8 rows each in turn (H100: 14 µs per GEMV)
            (true, Some(sg)) if rpt == 4 => 4 * (GEMV_WG / sg.clamp(1, GEMV_WG)),
            (true, _) => GEMV_SG_ROWS,
            (false, _) => GEMV_WG * rpt,
        };
        if self.norm.is_some() && (mr != 1 || !ctx.caps.subgroups) {
            return Err(Error::Shape { op: OP, detail: "the fused norm needs one row of x and subgroups".into() });
        }
        let key = PipelineKey::new("gemv", entry)
            .define_if(subgroups || sg_x.is_some() || self.norm.is_some(), "SUBGROUP_OPS")
            .define_if(subgroups, "SUBGROUPS")
            .define_if(sg_x.is_some(), "SG_X")
            .define_if(sg_x == Some(4), "SG4")
            .define_if(sg_x == Some(8), "SG8")
            .define_if(words, "WORDS")
            .define_if(self.swiglu, "SWIGLU")
            .constant("WG", GEMV_WG)
            .constant("ROWS", rows_per_wg)
            .constant("MR", mr as u32)
            .constant("RPT", rpt);
        let mut p = GemvParams::new(OP, mr, n, k, w, self.bias)?;
        let key = match self.rope {
            Some((r, dims)) => {
                p.pos = r.pos as u32;
                p.max_pos = dims.max_pos as u32;
                key.define("ROPE")
                    .define_if(r.layout == RopeLayout::Interleaved, "INTERLEAVED")
                    .constant("HEADS", r.heads as u32)
                    .constant("KV_HEADS", dims.kv_heads as u32)
                    .constant("HEAD_DIM", dims.d as u32)
            }
            None => key,
        };
        let xs = row_chunk(rec, x, m0, mr, k)?;
        let res = self.residual.map(|r| row_chunk(rec, r, m0, mr, n)).transpose()?;
        // Output rows m0.. are a separate chunk when m0 > 0: write them to a small buffer and copy back.
        let ys = if m0 == 0 { out.clone() } else { rec.empty(&[mr, n], DType::F32)? };
        // Without a bias, x is bound in its place (read-only aliasing is allowed) and never read.
        let b: Binding = self.bias.unwrap_or(&xs).into();
        let grid = grid_1d((n as u32).div_ceil(rows_per_wg), ctx.caps.max_workgroups_per_dim);
        let mut bindings: Vec<Binding> = vec![(&xs).into(), w.into(), b, (&ys).into(), w.into()];
        if let Some((r, _)) = self.rope {
            bindings.extend([r.table.into(), r.k_cache.into(), r.v_cache.into()]);
        }
        // the optional bindings' numbers follow the ones bound before them (binding i + 1 is bindings[i])
        let mut key = key;
        if let Some(nm) = self.norm {
            p.eps = nm.eps;
            key = key.define("NORM").define_value("NORM_AT", bindings.len() + 1);
            bindings.push(nm.w.into());
        }
        if let Some(r) = &res {
            key = key.define("RESIDUAL").define_value("RES_AT", bindings.len() + 1);
            bindings.push(r.into());
        }
        rec.dispatch(&key, &params(&p), &bindings, grid)?;
        if m0 > 0 {
            rec.copy(&ys, 0, out, (m0 * n * 4) as u64, (mr * n * 4) as u64)?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    rec: &mut Recorder,
    a: Binding,
    w: &Tensor,
    bias: Option<&Tensor>,
    out: Binding,
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    strides: [usize; 3],
    trans_b: bool,
    epi: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul";
    let ctx = rec.ctx();
    let key = match w.dtype {
        DType::F32 => PipelineKey::new("matmul", "matmul"),
        DType::F16 => {
            PipelineKey::new("matmul", "matmul").define("F16_WEIGHTS").define_if(ctx.caps.shader_f16, "SHADER_F16")
        }
        // bf16's range is f32's: its tile stays f32 (an f16 tile could overflow)
        DType::BF16 => PipelineKey::new("matmul", "matmul").define("F16_WEIGHTS").define("BF16"),
        DType::Q8_0 => PipelineKey::new("matmul", "matmul").define("QUANT").define("Q8_0"),
        DType::Q4_0 => PipelineKey::new("matmul", "matmul").define("QUANT").define("Q4_0"),
        DType::Q4_1 => PipelineKey::new("matmul", "matmul").define("QUANT").define("Q4_1"),
        DType::U32 => return Err(Error::UnsupportedDtype { op: OP, dtype: w.dtype.to_string() }),
    };
    let key = key.define_if(epi.residual.is_some(), "RESIDUAL").constant("ACT", epi.act);
    if w.dtype != DType::F32 && !trans_b {
        return Err(Error::UnsupportedDtype { op: OP, dtype: format!("{} as an untransposed B", w.dtype) });
    }
    let p = GemmParams {
        m: u32_dim(OP, "M", m)?,
        n: u32_dim(OP, "N", n)?,
        k: u32_dim(OP, "K", k)?,
        trans_b: trans_b as u32,
        scales_offset: w.scales_offset,
        has_bias: bias.is_some() as u32,
        a_batch: u32_dim(OP, "batch stride", strides[0])?,
        b_batch: u32_dim(OP, "batch stride", strides[1])?,
        c_batch: u32_dim(OP, "batch stride", strides[2])?,
        _pad: [0; 3],
    };
    let grid = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, batch as u32];
    // without a bias the kernel reads none: the weight stands in for the binding
    let b: Binding = bias.unwrap_or(w).into();
    let mut bindings: Vec<Binding> = vec![a, w.into(), b, out];
    bindings.extend(epi.residual);
    rec.dispatch(&key, &params(&p), &bindings, grid)
}

/// General f32 matrix product: `a [M, K] × b [K, N]` (or `× b[N, K]ᵀ` with `transpose_b`) → `[M, N]`.
/// Batched: `a [B, M, K]` with `b` either `[B, K, N]` / `[B, N, K]` or 2-D (shared by every batch) → `[B, M, N]`.
pub fn matmul(rec: &mut Recorder, a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    const OP: &str = "matmul";
    expect_dtype(OP, a, DType::F32)?;
    expect_dtype(OP, b, DType::F32)?;
    let (batch, m, k) = match a.shape[..] {
        [m, k] => (1, m, k),
        [bt, m, k] => (bt, m, k),
        _ => return Err(Error::Shape { op: OP, detail: format!("a must be [M, K] or [B, M, K], got {:?}", a.shape) }),
    };
    let (b_batch, kb, n) = match (&b.shape[..], transpose_b) {
        ([x, y], false) => (None, *x, *y),
        ([y, x], true) => (None, *x, *y),
        ([bt, x, y], false) => (Some(*bt), *x, *y),
        ([bt, y, x], true) => (Some(*bt), *x, *y),
        _ => return Err(Error::Shape { op: OP, detail: format!("b must be 2-D or 3-D, got {:?}", b.shape) }),
    };
    if kb != k {
        return Err(Error::Shape {
            op: OP,
            detail: format!("a {:?} has K = {k}, b {:?} (transpose_b = {transpose_b}) has K = {kb}", a.shape, b.shape),
        });
    }
    if let Some(bt) = b_batch {
        if bt != batch || a.shape.len() != 3 {
            return Err(Error::Shape {
                op: OP,
                detail: format!("batch of a {:?} and b {:?} differ", a.shape, b.shape),
            });
        }
    }
    let out_shape = if a.shape.len() == 3 { vec![batch, m, n] } else { vec![m, n] };
    let out = rec.empty(&out_shape, DType::F32)?;
    if batch == 0 || m == 0 || n == 0 {
        return Ok(out);
    }
    if batch > rec.ctx().caps.max_workgroups_per_dim as usize {
        return Err(Error::LimitExceeded {
            what: "matmul batch".into(),
            limit: "maxComputeWorkgroupsPerDimension",
            needed: batch as u64,
            offered: rec.ctx().caps.max_workgroups_per_dim as u64,
        });
    }
    let strides = [m * k, if b_batch.is_some() { k * n } else { 0 }, m * n];
    gemm(rec, a.into(), b, None, (&out).into(), m, n, k, batch, strides, transpose_b, Epilogue::default())?;
    Ok(out)
}

// ---- weights -------------------------------------------------------------------------------------------------

fn loader_dtype(dtype: DType) -> Result<loader::DType> {
    Ok(match dtype {
        DType::F32 => loader::DType::F32,
        DType::F16 => loader::DType::F16,
        DType::BF16 => loader::DType::BF16,
        DType::Q8_0 => loader::DType::Q8_0,
        DType::Q4_0 => loader::DType::Q4_0,
        DType::Q4_1 => loader::DType::Q4_1,
        DType::U32 => return Err(Error::UnsupportedDtype { op: "upload_weight", dtype: dtype.to_string() }),
    })
}

fn rows_cols(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&cols, rest)) => Ok((rest.iter().product(), cols)),
        None => Err(Error::Shape { op, detail: "a weight needs at least one dimension".into() }),
    }
}

/// Quantizes (or converts) f32 values to `dtype` exactly as ggml does and uploads them as a weight tensor
/// (unpooled) in the GPU layout of [`crate::gpu::Tensor`]. This is "quantize at load".
/// Weights larger than the adapter's `maxStorageBufferBindingSize` are an [`Error::LimitExceeded`].
pub fn upload_weight(ctx: &GpuContext, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let ld = loader_dtype(dtype)?;
    // shape-only limit check first: a too-large weight is refused before anything is converted
    ctx.check_binding("weight", dtype.storage_bytes(n))?;
    if data.len() != n {
        return Err(Error::Shape { op: "upload_weight", detail: format!("{} values for shape {shape:?}", data.len()) });
    }
    if ld.is_quantized() {
        let (_, cols) = rows_cols("upload_weight", shape)?;
        if cols % DType::QK != 0 {
            return Err(Error::Shape {
                op: "upload_weight",
                detail: format!("{dtype} needs the last dim to be a multiple of 32, got {shape:?}"),
            });
        }
    }
    let bytes = quant::quantize(ld, data)?;
    upload_ggml(ctx, &bytes, shape, dtype)
}

/// Uploads a tensor's bytes exactly as GGUF stores them (F32, F16, BF16 or ggml Q8_0/Q4_0/Q4_1 blocks, row by row),
/// splitting quantized blocks into the GPU layout with the loader's [`quant::split_gpu_layout`].
pub fn upload_ggml(ctx: &GpuContext, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
    let ld = loader_dtype(dtype)?;
    let n: usize = shape.iter().product();
    let need = ld.n_bytes(n as u64);
    if need != Some(bytes.len() as u64) {
        return Err(Error::Shape {
            op: "upload_ggml",
            detail: format!("{dtype} {shape:?} needs {need:?} bytes, got {}", bytes.len()),
        });
    }
    // one "chunk" borrowed from `bytes`: no copy of the tensor before its conversion
    upload_ggml_chunked(ctx, shape, dtype, usize::MAX, &mut |off, len| {
        Ok(Cow::Borrowed(&bytes[off as usize..(off + len) as usize]))
    })
}

/// Bytes of the file read per step by [`upload_ggml_chunked`] when loading models: the memory a weight costs
/// while loading (plus its converted copy), whatever the tensor's size.
pub const UPLOAD_CHUNK_BYTES: usize = 4 << 20;

/// [`upload_ggml`] in row chunks of about `chunk_bytes` of the stored bytes: `read(offset, len)` returns that
/// range of the tensor's bytes as stored (borrowed when the caller holds them, owned when read from a file). Each chunk is converted and written into the GPU buffer at its place,
/// so the memory this needs is about two chunks, not the tensor (the wasm heap while loading is set by this).
pub fn upload_ggml_chunked<'a>(
    ctx: &GpuContext,
    shape: &[usize],
    dtype: DType,
    chunk_bytes: usize,
    read: &mut dyn FnMut(u64, u64) -> Result<Cow<'a, [u8]>>,
) -> Result<Tensor> {
    const OP: &str = "upload_ggml";
    let ld = loader_dtype(dtype)?;
    let (rows, cols) = rows_cols(OP, shape)?;
    let n = rows.checked_mul(cols).ok_or_else(|| Error::Shape { op: OP, detail: format!("{shape:?} overflows") })?;
    let row_bytes = ld
        .n_bytes(cols as u64)
        .ok_or_else(|| Error::Shape { op: OP, detail: format!("{dtype} rows of {cols} are not whole blocks") })?;
    ctx.check_binding("weight", dtype.storage_bytes(n))?;
    // rows per chunk; even where a chunk boundary could otherwise split a word: f16 with odd rows, or the scale
    // words of Q8_0/Q4_0 that pack two blocks each when a row has an odd number of blocks
    let blocks_per_row = cols / DType::QK;
    let pairs = match dtype {
        DType::F16 | DType::BF16 => cols % 2 == 1,
        DType::Q8_0 | DType::Q4_0 => blocks_per_row % 2 == 1,
        _ => false,
    };
    let mut per_chunk = (chunk_bytes as u64 / row_bytes.max(1)).clamp(1, rows.max(1) as u64) as usize;
    if pairs && per_chunk < rows {
        per_chunk = (per_chunk & !1).max(2);
    }
    let (qs_words_per_block, scales_offset) = match dtype {
        DType::F32 | DType::F16 | DType::BF16 => (0, 0),
        DType::Q4_1 => (4, u32_dim(OP, "scales offset", rows * blocks_per_row * 4)?),
        DType::Q8_0 => (8, u32_dim(OP, "scales offset", rows * blocks_per_row * 8)?),
        DType::Q4_0 => (4, u32_dim(OP, "scales offset", rows * blocks_per_row * 4)?),
        _ => return Err(Error::UnsupportedDtype { op: OP, dtype: dtype.to_string() }),
    };
    let t = ctx.weight_uninit(shape, dtype, scales_offset)?;
    let mut r0 = 0;
    while r0 < rows {
        let r = per_chunk.min(rows - r0);
        let bytes = read(r0 as u64 * row_bytes, r as u64 * row_bytes)?;
        if bytes.len() as u64 != r as u64 * row_bytes {
            return Err(Error::Shape {
                op: OP,
                detail: format!("read {} bytes for {r} rows of {row_bytes}", bytes.len()),
            });
        }
        match dtype {
            DType::F32 => ctx.write_words(&t, (r0 * cols) as u64, &bytemuck::pod_collect_to_vec::<u8, u32>(&bytes))?,
            DType::F16 | DType::BF16 => {
                // two little-endian halves per word, element 2i low: the bytes read as u32 (the last chunk padded)
                let mut padded = bytes.into_owned();
                padded.resize(padded.len().div_ceil(4) * 4, 0);
                ctx.write_words(&t, (r0 * cols / 2) as u64, &bytemuck::pod_collect_to_vec::<u8, u32>(&padded))?
            }
            _ => {
                let (qs, scales) = quant::split_gpu_layout(ld, &bytes, r, cols)?;
                drop(bytes);
                let block0 = r0 * blocks_per_row;
                ctx.write_words(&t, (block0 * qs_words_per_block) as u64, &qs)?;
                let scale0 = if dtype == DType::Q4_1 { block0 } else { block0 / 2 };
                ctx.write_words(&t, scales_offset as u64 + scale0 as u64, &scales)?;
            }
        }
        r0 += r;
    }
    Ok(t)
}

// ---- CPU reference -------------------------------------------------------------------------------------------

/// `y[m, n] = Σ_k x[m, k] · w[n, k] + bias[n]` in f64, rounded to f32 once. `w_dequantized` is `[n, k]`.
pub fn cpu_linear(x: &[f32], m: usize, k: usize, w_dequantized: &[f32], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "cpu_linear: x");
    assert_eq!(w_dequantized.len(), n * k, "cpu_linear: w");
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w_dequantized[j * k..(j + 1) * k];
            let mut s: f64 = bias.map_or(0.0, |b| b[j] as f64);
            for (a, b) in xr.iter().zip(wr) {
                s += *a as f64 * *b as f64;
            }
            y[i * n + j] = s as f32;
        }
    }
    y
}

/// The values the kernels see for `data` stored as `dtype` (ggml quantize → dequantize, or f16 / bf16 rounding).
pub fn cpu_roundtrip(data: &[f32], dtype: DType) -> Result<Vec<f32>> {
    let ld = loader_dtype(dtype)?;
    quant::dequantize(ld, &quant::quantize(ld, data)?, data.len())
}
