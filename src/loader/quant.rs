//! ggml block quantization on the CPU: Q8_0, Q4_0 and Q4_1, bit-exact with ggml (`ggml/src/ggml-common.h` for the
//! block structs, `ggml/src/ggml-quants.c` `quantize_row_*_ref` / `dequantize_row_*` for the arithmetic), plus
//! f16/bf16 conversion and the split layout the GPU kernels read.
//! Format reference: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> and ggml-common.h.
//!
//! # Block layouts (all little-endian, 32 elements per block, blocks back to back, no padding)
//! ```text
//! Q8_0  34 bytes: d: f16 | qs: [i8; 32]                   x[j] = qs[j] · d
//! Q4_0  18 bytes: d: f16 | qs: [u8; 16]                   x[j]      = ((qs[j] & 0xF) − 8) · d
//!                                                         x[j + 16] = ((qs[j] >> 4)  − 8) · d
//! Q4_1  20 bytes: d: f16 | m: f16 | qs: [u8; 16]          x[j]      = (qs[j] & 0xF) · d + m
//!                                                         x[j + 16] = (qs[j] >> 4)  · d + m
//! ```
//! A matrix [rows, cols] (row-major, `cols % 32 == 0`) is stored as `rows · cols/32` blocks, row by row:
//! global block `b = row · (cols/32) + k` covers elements `row, 32k .. 32k+32`.
//!
//! # GPU layout ([`split_gpu_layout`])
//! WGSL has no 8/16-bit storage types without extensions, so the kernels read two `array<u32>` buffers:
//! ```text
//! qs:     the quant bytes of each block, unchanged, packed little-endian into u32 words
//!         (byte 4w+i of the block's qs is bits 8i..8i+8 of word w).
//!         Q8_0: 8 words per block, at qs[8b .. 8b+8];  Q4_0 / Q4_1: 4 words per block, at qs[4b .. 4b+4].
//! scales: Q8_0 / Q4_0: the f16 bits of `d`, two blocks per word: block 2i in the low half of scales[i],
//!         block 2i+1 in the high half (high half 0 when the block count is odd). len = ceil(blocks / 2).
//!         Q4_1: one word per block: `d` in the low half, `m` in the high half. len = blocks.
//! ```
//! so that `unpack2x16float(scales[b / 2])[b % 2]` (Q8_0/Q4_0) or `unpack2x16float(scales[b])` = (d, m) (Q4_1).

use half::{bf16, f16};

use super::DType;
use crate::error::{Error, Result};

/// Elements per Q8_0 / Q4_0 / Q4_1 block (ggml's `QK8_0`, `QK4_0`, `QK4_1`).
pub const QK: usize = 32;

fn err(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}

fn check_blocks(op: &'static str, n: usize) -> Result<usize> {
    if n % QK != 0 {
        return Err(err(op, format!("{n} elements is not a multiple of the block size {QK}")));
    }
    Ok(n / QK)
}

#[inline]
fn read_f16(b: &[u8]) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

// ---- quantizers (ports of ggml-quants.c quantize_row_{q8_0,q4_0,q4_1}_ref) ---------------------------------------

/// Quantizes to Q8_0 like ggml's `quantize_row_q8_0_ref`: d = max|x| / 127, q = round-half-away(x / d).
/// `x.len()` must be a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Result<Vec<u8>> {
    let nb = check_blocks("quantize_q8_0", x.len())?;
    let mut out = Vec::with_capacity(nb * 34);
    for block in x.chunks_exact(QK) {
        // ggml: amax = MAX(amax, fabsf(v)), i.e. `amax > v ? amax : v`.
        let amax = block.iter().fold(0.0f32, |a, &v| if a > v.abs() { a } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        // f32::round rounds half away from zero, like C's roundf.
        out.extend(block.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    Ok(out)
}

/// Quantizes to Q4_0 like ggml's `quantize_row_q4_0_ref`: `max` = the element of largest magnitude (first one on
/// ties), d = max / −8, q = min(15, trunc(x / d + 8.5)).
pub fn quantize_q4_0(x: &[f32]) -> Result<Vec<u8>> {
    let nb = check_blocks("quantize_q4_0", x.len())?;
    let mut out = Vec::with_capacity(nb * 18);
    for block in x.chunks_exact(QK) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in block {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        // `as i8` truncates toward zero like C's (int8_t) cast (and saturates instead of being UB).
        let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
        out.extend((0..QK / 2).map(|j| q(block[j]) | (q(block[j + QK / 2]) << 4)));
    }
    Ok(out)
}

/// Quantizes to Q4_1 like ggml's `quantize_row_q4_1_ref`: m = min, d = (max − min) / 15,
/// q = min(15, trunc((x − m) / d + 0.5)).
pub fn quantize_q4_1(x: &[f32]) -> Result<Vec<u8>> {
    let nb = check_blocks("quantize_q4_1", x.len())?;
    let mut out = Vec::with_capacity(nb * 20);
    for block in x.chunks_exact(QK) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in block {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_bits().to_le_bytes());
        let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
        out.extend((0..QK / 2).map(|j| q(block[j]) | (q(block[j + QK / 2]) << 4)));
    }
    Ok(out)
}

/// Encodes `x` as `dtype` (plain floats are converted with round-to-nearest-even; quantized types use the
/// ggml reference quantizers above). A finite value beyond f16's range (±65504) converted to F16 is an
/// [`Error::ValueRange`], not an infinity.
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => {
            if let Some(&value) = x.iter().find(|v| v.is_finite() && v.abs() > f16::MAX.to_f32()) {
                return Err(Error::ValueRange { what: "f16 conversion".into(), value, dtype: "f16" });
            }
            x.iter().flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes()).collect()
        }
        DType::BF16 => x.iter().flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes()).collect(),
        DType::Q8_0 => quantize_q8_0(x)?,
        DType::Q4_0 => quantize_q4_0(x)?,
        DType::Q4_1 => quantize_q4_1(x)?,
    })
}

// ---- dequantization (ports of ggml-quants.c dequantize_row_*) ----------------------------------------------------

/// Decodes `n` elements of `dtype` from `bytes` (which must be exactly `dtype.n_bytes(n)` long) to f32.
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let expected = dtype.n_bytes(n as u64).ok_or_else(|| {
        err("dequantize", format!("{n} elements is not a whole number of {dtype} blocks of {}", dtype.block_size()))
    })?;
    if bytes.len() as u64 != expected {
        return Err(err("dequantize", format!("{n} {dtype} elements take {expected} bytes, got {}", bytes.len())));
    }
    let mut out = Vec::with_capacity(n);
    match dtype {
        DType::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        DType::F16 => out.extend(bytes.chunks_exact(2).map(read_f16)),
        DType::BF16 => {
            out.extend(bytes.chunks_exact(2).map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
        }
        DType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = read_f16(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        DType::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let d = read_f16(&b[0..2]);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 0x0F) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        DType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m) = (read_f16(&b[0..2]), read_f16(&b[2..4]));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0x0F) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
    }
    Ok(out)
}

/// Little-endian f16 bytes → f32 (exact). Errors on an odd byte count.
pub fn f16_bytes_to_f32(bytes: &[u8]) -> Result<Vec<f32>> {
    dequantize(DType::F16, bytes, bytes.len() / 2)
        .map_err(|_| err("f16_bytes_to_f32", format!("odd byte count {}", bytes.len())))
}

/// Little-endian bf16 bytes → f32 (exact). Errors on an odd byte count.
pub fn bf16_bytes_to_f32(bytes: &[u8]) -> Result<Vec<f32>> {
    dequantize(DType::BF16, bytes, bytes.len() / 2)
        .map_err(|_| err("bf16_bytes_to_f32", format!("odd byte count {}", bytes.len())))
}

// ---- GPU layout ---------------------------------------------------------------------------------------------------

/// Splits the ggml blocks of a row-major [rows, cols] matrix (`cols % 32 == 0`) into `(qs, scales)` u32 buffers,
/// as documented in the module header. Only Q8_0, Q4_0 and Q4_1 have a split layout.
pub fn split_gpu_layout(dtype: DType, bytes: &[u8], rows: usize, cols: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    const OP: &str = "split_gpu_layout";
    let (block_bytes, qs_start) = match dtype {
        DType::Q8_0 => (34, 2),
        DType::Q4_0 => (18, 2),
        DType::Q4_1 => (20, 4),
        _ => return Err(Error::UnsupportedDtype { op: OP, dtype: dtype.name().to_string() }),
    };
    if cols % QK != 0 {
        return Err(err(OP, format!("cols = {cols} is not a multiple of {QK}")));
    }
    let n_blocks = rows.checked_mul(cols / QK).ok_or_else(|| err(OP, format!("[{rows}, {cols}] overflows")))?;
    if n_blocks.checked_mul(block_bytes) != Some(bytes.len()) {
        return Err(err(
            OP,
            format!(
                "[{rows}, {cols}] {dtype} takes {n_blocks} blocks of {block_bytes} bytes, got {} bytes",
                bytes.len()
            ),
        ));
    }
    let words_per_block = (block_bytes - qs_start) / 4;
    let n_scales = if dtype == DType::Q4_1 { n_blocks } else { n_blocks.div_ceil(2) };
    // room for the scales too: callers append them (`qs.extend_from_slice(&scales)`), and a reallocation there
    // would double the capacity — the wasm heap peak while loading is set by this function on the largest tensor
    let mut qs = Vec::with_capacity(n_blocks * words_per_block + n_scales);
    let mut scales = Vec::with_capacity(n_scales);
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for block in bytes.chunks_exact(block_bytes) {
        qs.extend(block[qs_start..].chunks_exact(4).map(word));
    }
    if dtype == DType::Q4_1 {
        // d (bytes 0..2) low half, m (bytes 2..4) high half: exactly the first 4 bytes read as a LE u32.
        scales.extend(bytes.chunks_exact(block_bytes).map(word));
    } else {
        let d = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) as u32;
        for pair in bytes.chunks(2 * block_bytes) {
            let lo = d(pair);
            let hi = if pair.len() > block_bytes { d(&pair[block_bytes..]) } else { 0 };
            scales.push(lo | (hi << 16));
        }
    }
    Ok((qs, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg_data(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    #[test]
    fn block_sizes() {
        let x = lcg_data(64, 1, 1.0);
        assert_eq!(quantize_q8_0(&x).unwrap().len(), 2 * 34);
        assert_eq!(quantize_q4_0(&x).unwrap().len(), 2 * 18);
        assert_eq!(quantize_q4_1(&x).unwrap().len(), 2 * 20);
        assert!(quantize_q8_0(&x[..31]).is_err());
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for scale in [1e-3f32, 1.0, 1e3] {
            let x = lcg_data(256, 7, scale);
            for (dt, steps) in [(DType::Q8_0, 127.0f32), (DType::Q4_0, 8.0), (DType::Q4_1, 15.0)] {
                let q = quantize(dt, &x).unwrap();
                let y = dequantize(dt, &q, x.len()).unwrap();
                for (blk, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                    // One quantization step (Q4_1's range is up to 2·amax), plus f16 rounding of d and m.
                    let step = if dt == DType::Q4_1 { 2.0 * amax / steps } else { amax / steps };
                    for (i, (a, b)) in xb.iter().zip(yb).enumerate() {
                        assert!(
                            (a - b).abs() <= step * 1.01 + amax * 2e-3,
                            "{dt} scale {scale} block {blk} elem {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zeros_quantize_to_zero() {
        let x = vec![0.0f32; 32];
        for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let y = dequantize(dt, &quantize(dt, &x).unwrap(), 32).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{dt}");
        }
    }

    #[test]
    fn q4_0_nibble_order() {
        // Element j in the low nibble of byte j, element j+16 in the high nibble.
        let mut b = vec![0u8; 18];
        b[0..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        b[2] = 0x9A; // low = 10 → +2, high = 9 → +1
        let y = dequantize(DType::Q4_0, &b, 32).unwrap();
        assert_eq!(y[0], 2.0);
        assert_eq!(y[16], 1.0);
        assert_eq!(y[1], -8.0);
    }

    #[test]
    fn dequantize_checks_lengths() {
        assert!(dequantize(DType::Q8_0, &[0u8; 33], 32).is_err());
        assert!(dequantize(DType::Q8_0, &[0u8; 34], 31).is_err());
        assert!(dequantize(DType::F16, &[0u8; 3], 2).is_err());
        assert!(f16_bytes_to_f32(&[0u8; 3]).is_err());
        assert_eq!(bf16_bytes_to_f32(&[0x80, 0x3F]).unwrap(), vec![1.0]);
        assert_eq!(f16_bytes_to_f32(&[0x00, 0x3C]).unwrap(), vec![1.0]);
    }

    #[test]
    fn f16_conversion_refuses_values_past_its_range() {
        let ok = quantize(DType::F16, &[65504.0, -65504.0, f32::INFINITY, 1.5]).unwrap();
        assert_eq!(f16_bytes_to_f32(&ok).unwrap(), vec![65504.0, -65504.0, f32::INFINITY, 1.5]);
        match quantize(DType::F16, &[1.0, -70000.0]) {
            Err(Error::ValueRange { value, dtype: "f16", .. }) => assert_eq!(value, -70000.0),
            other => panic!("expected ValueRange, got {other:?}"),
        }
    }

    #[test]
    fn gpu_layout() {
        let rows = 3;
        let cols = 96; // 3 blocks per row, 9 blocks: odd count
        let x = lcg_data(rows * cols, 3, 2.0);
        for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            let bytes = quantize(dt, &x).unwrap();
            let (qs, scales) = split_gpu_layout(dt, &bytes, rows, cols).unwrap();
            let bb = dt.block_bytes();
            let qs_start = if dt == DType::Q4_1 { 4 } else { 2 };
            let wpb = (bb - qs_start) / 4;
            assert_eq!(qs.len(), 9 * wpb);
            assert_eq!(scales.len(), if dt == DType::Q4_1 { 9 } else { 5 });
            for b in 0..9 {
                let blk = &bytes[b * bb..(b + 1) * bb];
                for i in 0..bb - qs_start {
                    assert_eq!(
                        (qs[b * wpb + i / 4] >> (8 * (i % 4))) as u8,
                        blk[qs_start + i],
                        "{dt} block {b} byte {i}"
                    );
                }
                let d_bits = u16::from_le_bytes([blk[0], blk[1]]) as u32;
                if dt == DType::Q4_1 {
                    assert_eq!(scales[b] & 0xFFFF, d_bits);
                    assert_eq!(scales[b] >> 16, u16::from_le_bytes([blk[2], blk[3]]) as u32);
                } else {
                    assert_eq!((scales[b / 2] >> (16 * (b % 2))) & 0xFFFF, d_bits, "{dt} block {b}");
                }
            }
            if dt != DType::Q4_1 {
                assert_eq!(scales[4] >> 16, 0, "odd block count pads with 0");
            }
        }
        assert!(split_gpu_layout(DType::Q8_0, &[0u8; 34], 1, 31).is_err());
        assert!(split_gpu_layout(DType::Q8_0, &[0u8; 33], 1, 32).is_err());
        assert!(split_gpu_layout(DType::F16, &[0u8; 64], 1, 32).is_err());
        assert!(split_gpu_layout(DType::Q8_0, &[], usize::MAX, 64).is_err());
    }
}
