//! Pillow-exact image resampling for 8-bit images (what `PIL.Image.resize` does on an `RGB`/`L` image).
//!
//! Port of Pillow's `src/libImaging/Resample.c` (`precompute_coeffs`, `normalize_coeffs_8bpc`,
//! `ImagingResampleHorizontal_8bpc`, `ImagingResampleVertical_8bpc`, `ImagingResampleInner`; Pillow 13.0.0
//! Resample.c#L841-L990) and, for `NEAREST`, `ImagingScaleAffine` (Geometry.c#L866):
//! <https://github.com/python-pillow/Pillow/blob/main/src/libImaging/Resample.c>
//!
//! The algorithm, as Pillow runs it for `uint8` images:
//! - separable, two passes, each only when that side changes; the intermediate image is `uint8` (each pass rounds
//!   and clamps to 0..=255). **Pass order**: Pillow ≤ 12 always runs the horizontal pass first; Pillow 13
//!   (`ImagingResampleInner`, "run the vertical pass first, to make the horizontal pass faster") runs the vertical
//!   pass first when `in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`. The order changes results by a
//!   level here and there, so it is selectable ([`PassOrder`]); the default follows Pillow 13, which made the
//!   transformers fixtures;
//! - per output pixel, the filter is centred at `(x + 0.5) * scale` in input coordinates and stretched by
//!   `max(scale, 1)` (antialiasing when downscaling), support = `filter.support * max(scale, 1)`, taps from
//!   `trunc(center - support + 0.5)` to `trunc(center + support + 0.5)` clipped to the image;
//! - the taps are evaluated in `f64`, divided by their sum, then converted to fixed point with 22 fractional
//!   bits (`PRECISION_BITS = 32 - 8 - 2`, rounding half away from zero);
//! - accumulation in `i32` starting at `1 << 21` (rounding), result `clamp(acc >> 22, 0, 255)`.
//!
//! Because the rounding between the passes is part of the result, a float resampler (even a "correct" Lanczos3)
//! differs from Pillow by a few levels on edges; this one reproduces Pillow bit for bit (up to `sin`'s last ulp
//! in the platform's libm, which has never changed a coefficient's 22-bit rounding in our fixtures).

use crate::error::{Error, Result};

/// Pillow's resampling filters. The numbers are Pillow's `Image.Resampling` values, which Hugging Face
/// `preprocessor_config.json` files store as `resample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `NEAREST = 0`
    Nearest,
    /// `LANCZOS = 1` (a.k.a. `ANTIALIAS`): windowed sinc, support 3.
    Lanczos,
    /// `BILINEAR = 2`: triangle, support 1.
    Bilinear,
    /// `BICUBIC = 3`: Keys cubic with a = -0.5, support 2.
    Bicubic,
    /// `BOX = 4`: support 0.5.
    Box,
    /// `HAMMING = 5`: Hamming-windowed sinc, support 1.
    Hamming,
}

impl Filter {
    /// From Pillow's integer code (`PIL.Image.Resampling`), as stored in `preprocessor_config.json`.
    pub fn from_pil(code: u32) -> Result<Self> {
        Ok(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            other => {
                return Err(Error::Image(format!(
                    "unknown resample filter {other}; Pillow's codes are 0 nearest, 1 lanczos, 2 bilinear, \
                     3 bicubic, 4 box, 5 hamming"
                )))
            }
        })
    }

    /// Half-width of the filter at scale 1 (Resample.c: `struct filter` table).
    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// The filter kernel (Resample.c: `box_filter`, `bilinear_filter`, ...), evaluated exactly as Pillow does.
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes `0.54f + 0.46f * cos(x)`: float constants promoted to double
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point taps of one pass: for output index `i`, input indices `start[i] .. start[i] + len[i]` with
/// weights `k[i * ksize ..][.. len[i]]`.
struct Taps {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    k: Vec<i32>,
}

/// Port of Resample.c `precompute_coeffs` (box = whole image) + `normalize_coeffs_8bpc`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero, as `as i64` does
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let v = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        for x in 0..n {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            k[xx * ksize + x] = if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 };
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Taps { ksize, start, len, k }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass (Resample.c `ImagingResampleHorizontal_8bpc`): `src` is `[h, w_in, c]`, result `[h, w_out, c]`.
fn horizontal(src: &[u8], w_in: usize, h: usize, c: usize, w_out: usize, filter: Filter) -> Vec<u8> {
    let t = precompute(w_in, w_out, filter);
    let mut out = vec![0u8; h * w_out * c];
    let mut acc = [0i32; 4];
    for y in 0..h {
        let row = &src[y * w_in * c..(y + 1) * w_in * c];
        let orow = &mut out[y * w_out * c..(y + 1) * w_out * c];
        for xx in 0..w_out {
            let k = &t.k[xx * t.ksize..xx * t.ksize + t.len[xx]];
            let s0 = t.start[xx];
            acc[..c].fill(1 << (PRECISION_BITS - 1));
            for (j, &kj) in k.iter().enumerate() {
                let px = &row[(s0 + j) * c..(s0 + j + 1) * c];
                for ch in 0..c {
                    acc[ch] += px[ch] as i32 * kj;
                }
            }
            for ch in 0..c {
                orow[xx * c + ch] = clip8(acc[ch]);
            }
        }
    }
    out
}

/// Vertical pass (Resample.c `ImagingResampleVertical_8bpc`): `src` is `[h_in, w, c]`, result `[h_out, w, c]`.
fn vertical(src: &[u8], w: usize, h_in: usize, c: usize, h_out: usize, filter: Filter) -> Vec<u8> {
    let t = precompute(h_in, h_out, filter);
    let stride = w * c;
    let mut out = vec![0u8; h_out * stride];
    let mut acc = vec![0i32; stride];
    for yy in 0..h_out {
        let k = &t.k[yy * t.ksize..yy * t.ksize + t.len[yy]];
        let s0 = t.start[yy];
        acc.fill(1 << (PRECISION_BITS - 1));
        for (j, &kj) in k.iter().enumerate() {
            let row = &src[(s0 + j) * stride..(s0 + j + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * kj;
            }
        }
        for (o, &a) in out[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Nearest neighbour as Pillow does it (`_resize` → `ImagingTransform` affine → `ImagingScaleAffine`): the source
/// coordinate starts at `scale / 2` and is accumulated in `f64` (`xo += a[0]`), index = `(int)xo`.
fn nearest(src: &[u8], w_in: usize, h_in: usize, c: usize, w_out: usize, h_out: usize) -> Vec<u8> {
    let a0 = w_in as f64 / w_out as f64;
    let a4 = h_in as f64 / h_out as f64;
    let mut xin = Vec::with_capacity(w_out);
    let mut xo = a0 * 0.5;
    for _ in 0..w_out {
        xin.push((xo as usize).min(w_in - 1));
        xo += a0;
    }
    let mut out = vec![0u8; w_out * h_out * c];
    let mut yo = a4 * 0.5;
    for y in 0..h_out {
        let yi = (yo as usize).min(h_in - 1);
        yo += a4;
        for (x, &xi) in xin.iter().enumerate() {
            let s = (yi * w_in + xi) * c;
            let d = (y * w_out + x) * c;
            out[d..d + c].copy_from_slice(&src[s..s + c]);
        }
    }
    out
}

/// Which separable pass runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassOrder {
    /// Pillow ≥ 13: vertical first when the height shrinks by more than twice as many pixels as the width.
    #[default]
    Pillow13,
    /// Pillow ≤ 12: always horizontal, then vertical.
    HorizontalFirst,
}

/// Resize an interleaved 8-bit image `[height, width, channels]` (channels 1..=4) to `new_width × new_height`
/// exactly as Pillow 13's `Image.resize((new_width, new_height), filter)` does (no `box`, no `reducing_gap`).
pub fn resize_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
) -> Result<Vec<u8>> {
    resize_u8_with(src, width, height, channels, new_width, new_height, filter, PassOrder::default())
}

/// [`resize_u8`] with an explicit pass order (to match an older Pillow).
#[allow(clippy::too_many_arguments)]
pub fn resize_u8_with(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
    order: PassOrder,
) -> Result<Vec<u8>> {
    if !(1..=4).contains(&channels) {
        return Err(Error::Image(format!("resize: {channels} channels, expected 1 to 4")));
    }
    if width == 0 || height == 0 || new_width == 0 || new_height == 0 {
        return Err(Error::Image(format!(
            "resize: cannot resize {width}x{height} to {new_width}x{new_height}: sizes must be positive"
        )));
    }
    if src.len() != width * height * channels {
        return Err(Error::Image(format!(
            "resize: buffer has {} bytes, a {width}x{height}x{channels} image has {}",
            src.len(),
            width * height * channels
        )));
    }
    if width == new_width && height == new_height {
        return Ok(src.to_vec());
    }
    if filter == Filter::Nearest {
        return Ok(nearest(src, width, height, channels, new_width, new_height));
    }
    let (need_h, need_v) = (new_width != width, new_height != height);
    // Pillow 13 Resample.c ImagingResampleInner: `horizontal_first = !((in_h - out_h) > 0 &&
    // (in_h - out_h) > (in_w - out_w) * 2)`
    let dh = height as i64 - new_height as i64;
    let dw = width as i64 - new_width as i64;
    let horizontal_first = match order {
        PassOrder::HorizontalFirst => true,
        PassOrder::Pillow13 => !(dh > 0 && dh > dw * 2),
    };
    Ok(if horizontal_first {
        let tmp = if need_h { horizontal(src, width, height, channels, new_width, filter) } else { src.to_vec() };
        if need_v {
            vertical(&tmp, new_width, height, channels, new_height, filter)
        } else {
            tmp
        }
    } else {
        let tmp = if need_v { vertical(src, width, height, channels, new_height, filter) } else { src.to_vec() };
        if need_h {
            horizontal(&tmp, width, new_height, channels, new_width, filter)
        } else {
            tmp
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_u8(&src, 4, 3, 3, 4, 3, Filter::Lanczos).unwrap(), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        // the taps are normalized, so a flat image must come back flat for every filter and scale
        for f in [Filter::Lanczos, Filter::Bicubic, Filter::Bilinear, Filter::Box, Filter::Hamming, Filter::Nearest] {
            let src = vec![137u8; 17 * 11 * 3];
            for (w, h) in [(5, 4), (40, 23), (17, 30)] {
                let out = resize_u8(&src, 17, 11, 3, w, h, f).unwrap();
                assert!(out.iter().all(|&v| v == 137), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn lanczos_taps_match_pillow() {
        // 4 -> 2 (scale 2): support 6, taps normalized; first output centred at 1.0
        let t = precompute(4, 2, Filter::Lanczos);
        assert_eq!(t.ksize, 13);
        assert_eq!((t.start[0], t.len[0]), (0, 4));
        let sum: i64 = t.k[..t.len[0]].iter().map(|&v| v as i64).sum();
        assert!((sum - (1 << 22)).abs() <= 2, "{sum}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(resize_u8(&[0; 12], 2, 2, 3, 0, 1, Filter::Bilinear).is_err());
        assert!(resize_u8(&[0; 11], 2, 2, 3, 1, 1, Filter::Bilinear).is_err());
        assert!(resize_u8(&[0; 10], 2, 1, 5, 1, 1, Filter::Bilinear).is_err());
        assert!(Filter::from_pil(9).is_err());
    }
}
