//! Image preprocessing: bytes → RGB → resized / split / normalized `f32` pixel tensors.
//!
//! Two processors:
//! - [`Idefics3ImageProcessor`]: Idefics3 / SmolVLM. Port of transformers' `Idefics3ImageProcessorPil`
//!   (the original PIL/NumPy algorithm), `src/transformers/models/idefics3/image_processing_pil_idefics3.py`
//!   (transformers 5.x; the same logic as `image_processing_idefics3.py` of 4.x):
//!   `_resize_output_size_rescale_to_max_len` (#L70), `_resize_output_size_scale_below_upper_bound` (#L108),
//!   `get_resize_output_image_size` (#L164), `split_images` (#L231), `resize_for_vision_encoder` (#L266),
//!   `pad` (#L286), `_preprocess` (#L319).
//!   Resampling is Pillow's, bit-exact ([`super::resize`]); rescale is `f64` then cast to `f32`, normalize in
//!   `f32`, as `image_transforms.rescale` / `normalize` do. Against the fixture made by
//!   `scripts/make_processor_fixtures.py` the pixel values are identical (see `tests/processor.rs`).
//! - [`SimpleImageProcessor`]: CLIP / SigLIP / DINOv2 style towers (LLaVA): resize (shortest edge, or exact
//!   height × width) with the config's Pillow filter, center crop, rescale, normalize — the PIL backend's
//!   generic `_preprocess` (`image_processing_backends.py`, `PilBackend`). Same resampler, so it is PIL-exact too
//!   for lossless inputs.
//!
//! Decoding uses the `image` crate (PNG, JPEG, WebP). PNG/WebP-lossless pixels equal Pillow's; JPEG decoders
//! (zune-jpeg here, libjpeg-turbo in Pillow) may differ by a level or two after IDCT / chroma upsampling.
//! Images with alpha are composited onto white exactly as transformers' `convert_to_rgb` does.

use serde::Deserialize;

use super::resize::{resize_u8, Filter};
use crate::error::{Error, Result};

/// Largest width or height accepted when decoding (anything bigger is treated as a decompression bomb).
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Largest allocation the decoder may make, in bytes.
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// An 8-bit RGB image, row-major, interleaved: `data` is `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Wrap an interleaved `[height, width, 3]` buffer; checks the length.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Image(format!("image is {width}x{height}: both sides must be positive")));
        }
        if data.len() != width * height * 3 {
            return Err(Error::Image(format!(
                "RGB buffer has {} bytes, a {width}x{height} RGB image has {}",
                data.len(),
                width * height * 3
            )));
        }
        Ok(Self { width, height, data })
    }

    /// Resize to `width × height` with a Pillow filter (bit-exact with `PIL.Image.resize`).
    pub fn resize(&self, width: usize, height: usize, filter: Filter) -> Result<Self> {
        if width == self.width && height == self.height {
            return Ok(self.clone());
        }
        let data = resize_u8(&self.data, self.width, self.height, 3, width, height, filter)?;
        Ok(Self { width, height, data })
    }

    /// The `width × height` window at (`left`, `top`), clipped to the image (NumPy slicing semantics).
    fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Self {
        let right = (left + width).min(self.width);
        let bottom = (top + height).min(self.height);
        let (w, h) = (right.saturating_sub(left), bottom.saturating_sub(top));
        let mut data = Vec::with_capacity(w * h * 3);
        for y in top..bottom {
            data.extend_from_slice(&self.data[(y * self.width + left) * 3..(y * self.width + right) * 3]);
        }
        Self { width: w, height: h, data }
    }
}

/// Decode PNG / JPEG / WebP bytes to RGB, refusing images wider or taller than [`MAX_IMAGE_SIDE`] and decodes
/// needing more than [`MAX_DECODE_ALLOC`] bytes. Alpha is composited onto white (transformers' `convert_to_rgb`:
/// `Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")`, Pillow's integer arithmetic).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    use image::{DynamicImage, ImageReader};
    if bytes.is_empty() {
        return Err(Error::Image("no image bytes (empty input)".into()));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Image(format!("could not read the image header: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::Image(
            "unrecognized image format (supported: PNG, JPEG, WebP); is this an image file?".into(),
        ));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let format = reader.format().map(|f| format!("{f:?}")).unwrap_or_default();
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => Error::Image(format!(
            "image refused: {l} (at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and {} MiB to decode); \
             downscale it first",
            MAX_DECODE_ALLOC >> 20
        )),
        image::ImageError::Unsupported(u) => Error::Image(format!("unsupported image: {u}")),
        other => Error::Image(format!("could not decode the {format} image: {other}")),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::Image(format!("image is {w}x{h}: nothing to process")));
    }
    let data = if img.color().has_alpha() {
        let rgba = match img {
            DynamicImage::ImageRgba8(b) => b,
            other => other.to_rgba8(),
        };
        composite_on_white(rgba.as_raw())
    } else {
        match img {
            DynamicImage::ImageRgb8(b) => b.into_raw(),
            other => other.to_rgb8().into_raw(),
        }
    };
    RgbImage::new(w, h, data)
}

/// Pillow's `ImagingAlphaComposite` (AlphaComposite.c, 7 extra precision bits) with an opaque white background.
fn composite_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = px[3] as u32;
        if a == 0 {
            out.extend_from_slice(&[255, 255, 255]);
            continue;
        }
        // dst alpha 255: coef1 = a·128, coef2 = (255 - a)·128
        for &c in &px[..3] {
            let t = 128 * (c as u32 * a + 255 * (255 - a)) + (0x80 << 7);
            out.push(((((t >> 8) + t) >> 8) >> 7) as u8);
        }
    }
    out
}

/// The result of preprocessing: every frame the vision tower sees, padded to one size.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// `[n_images, 3, height, width]`, rescaled and normalized; padding is 0.
    pub pixel_values: Vec<f32>,
    /// Number of frames (for Idefics3 with splitting: `rows·cols` tiles + 1 global image per input image).
    pub n_images: usize,
    /// Frame height after padding.
    pub height: usize,
    /// Frame width after padding.
    pub width: usize,
    /// Tile rows, one entry per input image (0 when the image was not split).
    pub rows: Vec<usize>,
    /// Tile columns, one entry per input image (0 when the image was not split).
    pub cols: Vec<usize>,
    /// `[n_images, height, width]`: 1 on real pixels, 0 on padding.
    pub pixel_attention_mask: Vec<u8>,
}

impl ProcessedImage {
    /// The tile layout `(rows, cols)` of the (first) input image; `(0, 0)` when it was not split.
    pub fn frame(&self) -> (usize, usize) {
        (self.rows.first().copied().unwrap_or(0), self.cols.first().copied().unwrap_or(0))
    }

    /// Rescale, normalize and pad `frames` into one tensor (port of the tail of `_preprocess`, #L389-#L413).
    fn from_frames(frames: &[RgbImage], rows: Vec<usize>, cols: Vec<usize>, norm: &Normalize) -> Result<Self> {
        if frames.is_empty() {
            return Err(Error::Image("no images to process".into()));
        }
        let height = frames.iter().map(|f| f.height).max().unwrap_or(0);
        let width = frames.iter().map(|f| f.width).max().unwrap_or(0);
        let plane = height * width;
        let mut pixel_values = vec![0f32; frames.len() * 3 * plane];
        let mut pixel_attention_mask = vec![0u8; frames.len() * plane];
        let lut = norm.lut();
        for (i, f) in frames.iter().enumerate() {
            let img = &mut pixel_values[i * 3 * plane..(i + 1) * 3 * plane];
            let mask = &mut pixel_attention_mask[i * plane..(i + 1) * plane];
            for y in 0..f.height {
                mask[y * width..y * width + f.width].fill(1);
                for x in 0..f.width {
                    let s = (y * f.width + x) * 3;
                    for c in 0..3 {
                        img[c * plane + y * width + x] = lut[c][f.data[s + c] as usize];
                    }
                }
            }
        }
        Ok(Self { pixel_values, n_images: frames.len(), height, width, rows, cols, pixel_attention_mask })
    }
}

/// Rescale + normalize settings; evaluated once per channel into a 256-entry lookup table.
struct Normalize {
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    mean: [f32; 3],
    std: [f32; 3],
}

impl Normalize {
    fn new(do_rescale: bool, rescale_factor: f64, do_normalize: bool, mean: &[f64], std: &[f64]) -> Result<Self> {
        let three = |v: &[f64], what: &str| -> Result<[f32; 3]> {
            match v {
                [a] => Ok([*a as f32; 3]),
                [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
                _ => Err(Error::Config(format!("{what} must have 1 or 3 values, got {}", v.len()))),
            }
        };
        let std3 = three(std, "image_std")?;
        if do_normalize && std3.contains(&0.0) {
            return Err(Error::Config("image_std has a zero entry".into()));
        }
        Ok(Self { do_rescale, rescale_factor, do_normalize, mean: three(mean, "image_mean")?, std: std3 })
    }

    /// `lut[c][v]`: `rescale` (`image.astype(float64) * scale`, then cast to float32) and `normalize`
    /// (`(x - mean) / std` in float32), image_transforms.py `rescale` / `normalize`.
    fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, row) in lut.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                let mut x = if self.do_rescale { (v as f64 * self.rescale_factor) as f32 } else { v as f32 };
                if self.do_normalize {
                    x = (x - self.mean[c]) / self.std[c];
                }
                *out = x;
            }
        }
        lut
    }
}

// ---- Idefics3 / SmolVLM -------------------------------------------------------------------------------------

/// `{"longest_edge": N}` as in Idefics3 configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LongestEdge {
    pub longest_edge: usize,
}

/// Idefics3 / SmolVLM image settings, deserialized from a Hugging Face `preprocessor_config.json`
/// (unknown keys ignored). Defaults are SmolVLM-256M-Instruct's published config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Idefics3ImageConfig {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    /// First resize: the longest edge becomes this (aspect kept, shorter edge made even).
    pub size: LongestEdge,
    /// Tile size (and the size of the global image).
    pub max_image_size: LongestEdge,
    pub do_image_splitting: bool,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: Vec<f64>,
    pub image_std: Vec<f64>,
    /// Frames are always padded to one size (the output is one tensor); kept for completeness.
    pub do_pad: bool,
    /// Pillow filter code (1 = LANCZOS).
    pub resample: u32,
}

impl Default for Idefics3ImageConfig {
    fn default() -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            size: LongestEdge { longest_edge: 2048 },
            max_image_size: LongestEdge { longest_edge: 512 },
            do_image_splitting: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: vec![0.5; 3],
            image_std: vec![0.5; 3],
            do_pad: true,
            resample: 1,
        }
    }
}

impl Idefics3ImageConfig {
    /// Parse a `preprocessor_config.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Config(format!("preprocessor_config.json: {e}")))
    }
}

/// Absolute cap on the resized image (image_processing_pil_idefics3.py#L49 `MAX_IMAGE_SIZE`).
const IDEFICS3_MAX_IMAGE_SIZE: usize = 4096;

/// Port of `_resize_output_size_rescale_to_max_len` (#L70): longest edge → `max_len`, the other edge
/// `int(max_len / aspect)` rounded up to even. Returns `(height, width)`.
fn rescale_to_max_len(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (h, w) = if width >= height {
        let h = (max_len as f64 / aspect) as usize;
        (h + h % 2, max_len)
    } else {
        let w = (max_len as f64 * aspect) as usize;
        (max_len, w + w % 2)
    };
    (h.max(1), w.max(1))
}

/// Port of `_resize_output_size_scale_below_upper_bound` (#L108).
fn scale_below_upper_bound(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if width >= height && width > max_len {
        w = max_len;
        h = (w as f64 / aspect) as usize;
    } else if height > width && height > max_len {
        h = max_len;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

/// Port of `get_resize_output_image_size` (#L164): `(height, width)` after the first resize.
pub fn idefics3_resize_size(height: usize, width: usize, longest_edge: usize) -> (usize, usize) {
    let (h, w) = rescale_to_max_len(height, width, longest_edge);
    scale_below_upper_bound(h, w, IDEFICS3_MAX_IMAGE_SIZE)
}

/// Port of `resize_for_vision_encoder` (#L266): sides rounded up to multiples of the tile size `m`
/// (the short side from `int(long / aspect)`, so the aspect is only approximately kept). `(height, width)`.
pub fn idefics3_vision_encoder_size(height: usize, width: usize, m: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let ceil_to = |v: usize| v.div_ceil(m) * m;
    if width >= height {
        let w = ceil_to(width);
        let h = (w as f64 / aspect) as usize;
        (ceil_to(h), w)
    } else {
        let h = ceil_to(height);
        let w = (h as f64 * aspect) as usize;
        (h, ceil_to(w))
    }
}

/// The Idefics3 / SmolVLM image processor.
#[derive(Debug, Clone)]
pub struct Idefics3ImageProcessor {
    pub config: Idefics3ImageConfig,
    filter: Filter,
    norm_mean: Vec<f64>,
    norm_std: Vec<f64>,
}

impl Idefics3ImageProcessor {
    pub fn new(config: Idefics3ImageConfig) -> Result<Self> {
        let filter = Filter::from_pil(config.resample)?;
        if config.size.longest_edge == 0 || config.max_image_size.longest_edge == 0 {
            return Err(Error::Config("size.longest_edge and max_image_size.longest_edge must be positive".into()));
        }
        // validate mean/std now so that `process` cannot fail on them
        Normalize::new(
            config.do_rescale,
            config.rescale_factor,
            config.do_normalize,
            &config.image_mean,
            &config.image_std,
        )?;
        Ok(Self { norm_mean: config.image_mean.clone(), norm_std: config.image_std.clone(), config, filter })
    }

    /// From `preprocessor_config.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        Self::new(Idefics3ImageConfig::from_json(json)?)
    }

    /// The frames of one image, `(frames, rows, cols)` (`_preprocess` #L338-#L387 for one image).
    pub fn frames(&self, image: &RgbImage) -> Result<(Vec<RgbImage>, usize, usize)> {
        let cfg = &self.config;
        let m = cfg.max_image_size.longest_edge;
        let mut img = if cfg.do_resize {
            let (h, w) = idefics3_resize_size(image.height, image.width, cfg.size.longest_edge);
            image.resize(w, h, self.filter)?
        } else {
            image.clone()
        };
        if !cfg.do_image_splitting {
            return Ok((vec![img.resize(m, m, self.filter)?], 0, 0));
        }
        let (h, w) = idefics3_vision_encoder_size(img.height, img.width, m);
        img = img.resize(w, h, self.filter)?;
        // split_images (#L231)
        if img.height > m || img.width > m {
            let rows = (img.height - m) / m + 1;
            let cols = (img.width - m) / m + 1;
            let mut frames = Vec::with_capacity(rows * cols + 1);
            for r in 0..rows {
                for c in 0..cols {
                    frames.push(img.crop(c * m, r * m, m, m));
                }
            }
            frames.push(img.resize(m, m, self.filter)?);
            Ok((frames, rows, cols))
        } else {
            Ok((vec![img], 0, 0))
        }
    }

    /// Process the images of one prompt, in order: all their frames, padded to one size.
    pub fn process(&self, images: &[RgbImage]) -> Result<ProcessedImage> {
        let cfg = &self.config;
        let norm =
            Normalize::new(cfg.do_rescale, cfg.rescale_factor, cfg.do_normalize, &self.norm_mean, &self.norm_std)?;
        let mut all = Vec::new();
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for img in images {
            let (frames, r, c) = self.frames(img)?;
            all.extend(frames);
            rows.push(r);
            cols.push(c);
        }
        ProcessedImage::from_frames(&all, rows, cols, &norm)
    }

    /// Decode encoded image bytes (PNG/JPEG/WebP) and process them.
    pub fn process_bytes(&self, bytes: &[u8]) -> Result<ProcessedImage> {
        self.process(&[decode_image(bytes)?])
    }
}

// ---- CLIP / SigLIP / DINOv2 style ---------------------------------------------------------------------------

/// A `size` / `crop_size` entry as Hugging Face configs write it: a number, or a dict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// A bare number (old configs): shortest edge for `size`, a square for `crop_size`.
    Int(usize),
    Dict {
        #[serde(default)]
        shortest_edge: Option<usize>,
        #[serde(default)]
        height: Option<usize>,
        #[serde(default)]
        width: Option<usize>,
    },
}

/// Settings of a CLIP/SigLIP/DINOv2-style `preprocessor_config.json` (unknown keys ignored). Keys that are
/// absent default to: resize shortest edge 224, bicubic, no center crop (CLIP and DINOv2 configs spell out
/// `do_center_crop`/`crop_size`; SigLIP's have none), rescale 1/255, OpenAI CLIP mean/std.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct SimpleImageConfig {
    pub do_convert_rgb: bool,
    pub do_resize: bool,
    pub size: SizeSpec,
    /// Pillow filter code (2 bilinear, 3 bicubic, ...).
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: Option<SizeSpec>,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: Vec<f64>,
    pub image_std: Vec<f64>,
}

impl Default for SimpleImageConfig {
    fn default() -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            size: SizeSpec::Dict { shortest_edge: Some(224), height: None, width: None },
            resample: 3,
            do_center_crop: false,
            crop_size: None,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: vec![0.48145466, 0.4578275, 0.40821073],
            image_std: vec![0.26862954, 0.26130258, 0.27577711],
        }
    }
}

impl SimpleImageConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Config(format!("preprocessor_config.json: {e}")))
    }
}

/// Resize + center crop + normalize, for single-frame towers (LLaVA's CLIP/SigLIP, DINOv2).
#[derive(Debug, Clone)]
pub struct SimpleImageProcessor {
    pub config: SimpleImageConfig,
    filter: Filter,
}

impl SimpleImageProcessor {
    pub fn new(config: SimpleImageConfig) -> Result<Self> {
        let filter = Filter::from_pil(config.resample)?;
        Normalize::new(
            config.do_rescale,
            config.rescale_factor,
            config.do_normalize,
            &config.image_mean,
            &config.image_std,
        )?;
        Ok(Self { config, filter })
    }

    pub fn from_json(json: &str) -> Result<Self> {
        Self::new(SimpleImageConfig::from_json(json)?)
    }

    /// `(height, width)` after the resize step (`PilBackend.resize` + `get_resize_output_image_size` with
    /// `default_to_square=False` for `shortest_edge`: the long side is `int(short_target · long / short)`).
    pub fn resize_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        match self.config.size {
            SizeSpec::Int(s) | SizeSpec::Dict { shortest_edge: Some(s), .. } => {
                let (short, long) = if width <= height { (width, height) } else { (height, width) };
                let new_long = (s as f64 * long as f64 / short as f64) as usize;
                Ok(if width <= height { (new_long, s) } else { (s, new_long) })
            }
            SizeSpec::Dict { height: Some(h), width: Some(w), .. } => Ok((h, w)),
            other => Err(Error::Config(format!(
                "preprocessor size {other:?}: expected a number, {{\"shortest_edge\"}} or {{\"height\", \"width\"}}"
            ))),
        }
    }

    fn crop_hw(&self) -> Result<(usize, usize)> {
        let Some(crop) = self.config.crop_size else {
            return Err(Error::Config("do_center_crop is set but crop_size is missing".into()));
        };
        match crop {
            SizeSpec::Int(s) => Ok((s, s)),
            SizeSpec::Dict { height: Some(h), width: Some(w), .. } => Ok((h, w)),
            SizeSpec::Dict { shortest_edge: Some(s), .. } => Ok((s, s)),
            other => Err(Error::Config(format!("preprocessor crop_size {other:?}: expected height and width"))),
        }
    }

    /// Process images (one frame each; all must end up the same size, which they do when cropping or resizing
    /// to an exact size).
    pub fn process(&self, images: &[RgbImage]) -> Result<ProcessedImage> {
        let cfg = &self.config;
        let norm =
            Normalize::new(cfg.do_rescale, cfg.rescale_factor, cfg.do_normalize, &cfg.image_mean, &cfg.image_std)?;
        let mut frames = Vec::with_capacity(images.len());
        for img in images {
            let mut f = img.clone();
            if cfg.do_resize {
                let (h, w) = self.resize_size(f.height, f.width)?;
                // a long thin image resized by its short side would grow its long side without bound (16384 × 1
                // to shortest edge 224: 3.7 M × 224 pixels, 2.5 GB) before any crop: refused like a decode
                if h.max(w) > MAX_IMAGE_SIDE as usize {
                    return Err(Error::Image(format!(
                        "image refused: resizing {}x{} to the model's size gives {w}x{h}, over {MAX_IMAGE_SIDE} \
                         pixels on a side (aspect ratio too extreme)",
                        f.width, f.height
                    )));
                }
                f = f.resize(w.max(1), h.max(1), self.filter)?;
            }
            if cfg.do_center_crop {
                let (ch, cw) = self.crop_hw()?;
                f = center_crop(&f, ch, cw);
            }
            frames.push(f);
        }
        if frames.windows(2).any(|p| (p[0].width, p[0].height) != (p[1].width, p[1].height)) {
            return Err(Error::Image(
                "images of different sizes after resize/crop; enable do_center_crop or an exact size".into(),
            ));
        }
        ProcessedImage::from_frames(&frames, vec![0; images.len()], vec![0; images.len()], &norm)
    }

    pub fn process_bytes(&self, bytes: &[u8]) -> Result<ProcessedImage> {
        self.process(&[decode_image(bytes)?])
    }
}

/// Port of `image_transforms.center_crop`: top = (H - h) // 2, left = (W - w) // 2; a crop larger than the
/// image pads with zeros, the image placed at ceil((h - H) / 2).
fn center_crop(img: &RgbImage, ch: usize, cw: usize) -> RgbImage {
    if ch <= img.height && cw <= img.width {
        return img.crop((img.width - cw) / 2, (img.height - ch) / 2, cw, ch);
    }
    let (nh, nw) = (ch.max(img.height), cw.max(img.width));
    let (tp, lp) = ((nh - img.height).div_ceil(2), (nw - img.width).div_ceil(2));
    let mut padded = vec![0u8; nh * nw * 3];
    for y in 0..img.height {
        let d = ((y + tp) * nw + lp) * 3;
        padded[d..d + img.width * 3].copy_from_slice(&img.data[y * img.width * 3..(y + 1) * img.width * 3]);
    }
    // the crop window, in the padded image's coordinates (top/left may be negative before padding)
    let top = (img.height as isize - ch as isize).div_euclid(2) + tp as isize;
    let left = (img.width as isize - cw as isize).div_euclid(2) + lp as isize;
    let big = RgbImage { width: nw, height: nh, data: padded };
    big.crop(left.max(0) as usize, top.max(0) as usize, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_rule_matches_reference_numbers() {
        // chelsea 300x451 (h, w): fixture sizes after_resize [1362, 2048] and [86, 128]
        assert_eq!(idefics3_resize_size(300, 451, 2048), (1362, 2048));
        assert_eq!(idefics3_resize_size(300, 451, 128), (86, 128));
        assert_eq!(idefics3_vision_encoder_size(1362, 2048, 512), (1536, 2048));
        assert_eq!(idefics3_vision_encoder_size(86, 128, 64), (128, 128));
        // tall image, odd width rounded up to even
        assert_eq!(idefics3_resize_size(451, 300, 2048), (2048, 1362));
        // bigger than 4096 after the first rule: capped
        assert_eq!(idefics3_resize_size(100, 200, 8192), (2048, 4096));
    }

    #[test]
    fn alpha_composite_on_white() {
        assert_eq!(composite_on_white(&[10, 20, 30, 0]), vec![255, 255, 255]);
        assert_eq!(composite_on_white(&[10, 20, 30, 255]), vec![10, 20, 30]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"not an image", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\xff\xd8\xff\xe0garbage"] {
            match decode_image(bytes) {
                Err(Error::Image(msg)) => assert!(!msg.is_empty()),
                other => panic!("expected Error::Image, got {other:?}"),
            }
        }
    }

    #[test]
    fn center_crop_pads_small_images() {
        let img = RgbImage::new(2, 2, vec![9; 12]).unwrap();
        let c = center_crop(&img, 4, 4);
        assert_eq!((c.width, c.height), (4, 4));
        assert_eq!(c.data.iter().filter(|&&v| v == 9).count(), 12);
        let c = center_crop(&RgbImage::new(5, 3, (0..45).collect()).unwrap(), 1, 3);
        assert_eq!(c.data, (18..27).collect::<Vec<u8>>());
    }
}
