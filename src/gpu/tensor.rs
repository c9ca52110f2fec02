//! [`Tensor`]: a GPU buffer with a shape and a dtype. Shapes are row-major, outermost first
//! (a weight matrix `[out, in]` as in PyTorch's `nn.Linear`).
//!
//! Storage layouts (all buffers are `array<u32>` or `array<f32>` in WGSL):
//! - `F32`: one f32 per element.
//! - `F16`: two halves per u32 word, element 2i in the low half; read with `unpack2x16float`, so f16 weights
//!   work with or without the shader-f16 feature.
//! - `BF16`: the same pairs of bfloat16 (an f32's high 16 bits; element 2i low), widened by a shift: what a bf16
//!   checkpoint stores, kept on adapters without shader-f16 (half the bytes of f32, exact).
//! - `U32`: token ids, indices.
//! - `Q8_0`, `Q4_0`, `Q4_1` (GGUF block formats, 32 elements per block, blocks along the last dim): the block's
//!   quant bytes exactly as ggml stores them, packed into u32 words (`qs` section: 8 words per Q8_0 block, 4 per
//!   Q4 block), followed at word `scales_offset` by the f16 scales (Q8_0/Q4_0: two `d` per word; Q4_1: one word
//!   per block, `d` low | `m` high). Dequantization in the kernels is then the ggml formula, bit for bit.

use std::sync::Arc;

use crate::error::{Error, Result};

use super::buffer::GpuBuffer;
use super::GpuContext;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    F32,
    F16,
    BF16,
    U32,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl DType {
    pub const QK: usize = 32;

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
    }

    /// u32 words of quant data per 32-element block.
    pub fn qs_words_per_block(self) -> usize {
        match self {
            DType::Q8_0 => 8,
            DType::Q4_0 | DType::Q4_1 => 4,
            _ => 0,
        }
    }

    /// u32 words of scale data for `blocks` blocks.
    pub fn scale_words(self, blocks: usize) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 => blocks.div_ceil(2),
            DType::Q4_1 => blocks,
            _ => 0,
        }
    }

    /// Bytes of GPU storage for `n` elements.
    pub fn storage_bytes(self, n: usize) -> u64 {
        let words = match self {
            DType::F32 | DType::U32 => n,
            DType::F16 | DType::BF16 => n.div_ceil(2),
            q => {
                let blocks = n / Self::QK;
                blocks * q.qs_words_per_block() + q.scale_words(blocks)
            }
        };
        words as u64 * 4
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            "u32" => DType::U32,
            "q8_0" | "q8" => DType::Q8_0,
            "q4_0" | "q4" => DType::Q4_0,
            "q4_1" => DType::Q4_1,
            other => {
                return Err(Error::Config(format!("unknown dtype `{other}` (use f32, f16, bf16, q8_0, q4_0 or q4_1)")))
            }
        })
    }
}

/// A GPU tensor. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    pub buf: Arc<GpuBuffer>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// For quantized tensors: the word offset of the scales section.
    pub scales_offset: u32,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype)
    }
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.shape[..] {
            [a, b] => Ok((a, b)),
            _ => Err(Error::Shape { op: "dims2", detail: format!("expected 2 dims, got {:?}", self.shape) }),
        }
    }

    /// Last dimension.
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    /// Product of all but the last dimension.
    pub fn rows(&self) -> usize {
        let n = self.numel();
        let c = self.cols();
        if c == 0 {
            0
        } else {
            n / c
        }
    }

    /// Same buffer, new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::Shape { op: "reshape", detail: format!("{:?} -> {:?}", self.shape, shape) });
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    pub fn bytes(&self) -> u64 {
        self.dtype.storage_bytes(self.numel())
    }
}

impl GpuContext {
    fn alloc(&self, what: &str, bytes: u64, pooled: bool) -> Result<GpuBuffer> {
        self.check_binding(what, bytes)?;
        Ok(self.pool.acquire(&self.device, bytes, pooled))
    }

    /// An uninitialized (pooled) activation tensor. Contents are unspecified until written.
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if dtype.is_quantized() {
            return Err(Error::UnsupportedDtype { op: "empty", dtype: dtype.to_string() });
        }
        let n: usize = shape.iter().product();
        let buf = self.alloc("activation", dtype.storage_bytes(n), true)?;
        Ok(Tensor { buf: Arc::new(buf), shape: shape.to_vec(), dtype, scales_offset: 0 })
    }

    /// A zero-filled (pooled) tensor.
    pub fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.empty(shape, dtype)?;
        let words = vec![0u32; (t.bytes() / 4) as usize];
        self.queue.write_buffer(t.buf.raw(), 0, bytemuck::cast_slice(&words));
        Ok(t)
    }

    /// Uploads f32 data (a weight when `pooled` is false; an activation otherwise).
    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload_words(bytemuck::cast_slice(data), shape, DType::F32, 0, true)
    }

    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.upload_words(data, shape, DType::U32, 0, true)
    }

    /// Uploads f32 data as f16 (round to nearest even), two halves per word.
    pub fn upload_f16(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let mut words = vec![0u32; data.len().div_ceil(2)];
        for (i, v) in data.iter().enumerate() {
            let h = half::f16::from_f32(*v).to_bits() as u32;
            words[i / 2] |= h << ((i % 2) * 16);
        }
        self.upload_words(&words, shape, DType::F16, 0, false)
    }

    /// A weight tensor (not pooled) whose contents are written afterwards with [`write_words`](Self::write_words),
    /// e.g. in chunks while loading. `scales_offset` as in [`upload_words`](Self::upload_words).
    pub fn weight_uninit(&self, shape: &[usize], dtype: DType, scales_offset: u32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let buf = self.alloc("weight", dtype.storage_bytes(n), false)?;
        Ok(Tensor { buf: Arc::new(buf), shape: shape.to_vec(), dtype, scales_offset })
    }

    /// Writes `words` into `t`'s buffer from word `word_offset` (queued; ordered before later submissions).
    pub fn write_words(&self, t: &Tensor, word_offset: u64, words: &[u32]) -> Result<()> {
        let end = word_offset.checked_add(words.len() as u64).and_then(|e| e.checked_mul(4));
        if end.is_none_or(|e| e > t.bytes()) {
            return Err(Error::Shape {
                op: "write_words",
                detail: format!("{} words at word {word_offset} overflow a tensor of {} bytes", words.len(), t.bytes()),
            });
        }
        self.queue.write_buffer(t.buf.raw(), word_offset * 4, bytemuck::cast_slice(words));
        Ok(())
    }

    /// Uploads raw words in the layout of `dtype` (see the module docs). `scales_offset` is the word offset of
    /// the scales section for quantized dtypes. Weights are not pooled.
    pub fn upload_words(
        &self,
        words: &[u32],
        shape: &[usize],
        dtype: DType,
        scales_offset: u32,
        pooled: bool,
    ) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if dtype.is_quantized() && (shape.last().copied().unwrap_or(0) % DType::QK != 0) {
            return Err(Error::Shape {
                op: "upload",
                detail: format!("{dtype} needs the last dim to be a multiple of 32, got {shape:?}"),
            });
        }
        let need = dtype.storage_bytes(n);
        if words.len() as u64 * 4 != need {
            return Err(Error::Shape {
                op: "upload",
                detail: format!("{dtype} {shape:?} needs {need} bytes, got {}", words.len() * 4),
            });
        }
        let buf = self.alloc(if pooled { "activation" } else { "weight" }, need, pooled)?;
        self.queue.write_buffer(buf.raw(), 0, bytemuck::cast_slice(words));
        Ok(Tensor { buf: Arc::new(buf), shape: shape.to_vec(), dtype, scales_offset })
    }
}

/// The file dtype with the same block bytes as a GPU dtype (quant formats and f32/f16/bf16 map one to one).
impl TryFrom<DType> for crate::loader::DType {
    type Error = Error;
    fn try_from(d: DType) -> Result<Self> {
        use crate::loader::DType as F;
        use DType as G;
        Ok(match d {
            G::F32 => F::F32,
            G::F16 => F::F16,
            G::BF16 => F::BF16,
            G::Q8_0 => F::Q8_0,
            G::Q4_0 => F::Q4_0,
            G::Q4_1 => F::Q4_1,
            G::U32 => return Err(Error::UnsupportedDtype { op: "file dtype", dtype: "u32".into() }),
        })
    }
}
