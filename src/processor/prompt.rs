//! Idefics3 / SmolVLM image-token expansion: each `<image>` the chat template writes becomes the model's
//! tile pattern.
//!
//! Port of transformers' `processing_idefics3.py` (5.x): `Idefics3Processor.replace_image_token` (#L200-#L227;
//! in 4.x the same strings come from `_prompt_single_image` / `_prompt_split_image` /
//! `get_image_prompt_string`), and the `image_seq_len` formula of `Idefics3Processor.__init__` (#L50).
//!
//! - not split (rows = cols = 0): `<fake_token_around_image><global-img>` + `<image>`×L + `<fake_token_around_image>`
//! - split: for each row r, for each column c: `<fake_token_around_image><row_{r}_col_{c}>` + `<image>`×L, and `\n`
//!   after each row; then `\n<fake_token_around_image><global-img>` + `<image>`×L + `<fake_token_around_image>`.

use crate::error::{Error, Result};

/// The placeholder the chat template writes for an image, and the token the vision features replace.
pub const IMAGE_TOKEN: &str = "<image>";
/// Wraps each image's token run.
pub const FAKE_IMAGE_TOKEN: &str = "<fake_token_around_image>";
/// Precedes the global (downscaled whole) image.
pub const GLOBAL_IMAGE_TAG: &str = "<global-img>";

/// `image_seq_len = int((image_size // patch_size)^2 / scale_factor^2)`: the number of `<image>` tokens per frame
/// after the pixel shuffle (SmolVLM-256M: 512, 16, 4 → 64).
pub fn image_seq_len(image_size: usize, patch_size: usize, scale_factor: usize) -> usize {
    let side = image_size / patch_size.max(1);
    (side * side) / (scale_factor.max(1) * scale_factor.max(1))
}

/// The token string for one image split into `rows × cols` tiles (0 × 0: not split), each frame
/// `image_seq_len` tokens long (`replace_image_token`).
pub fn image_prompt_string(rows: usize, cols: usize, image_seq_len: usize) -> String {
    let run = IMAGE_TOKEN.repeat(image_seq_len);
    if rows == 0 && cols == 0 {
        return format!("{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TAG}{run}{FAKE_IMAGE_TOKEN}");
    }
    let mut s = String::with_capacity((rows * cols + 1) * (run.len() + 40));
    for r in 0..rows {
        for c in 0..cols {
            s.push_str(FAKE_IMAGE_TOKEN);
            s.push_str(&format!("<row_{}_col_{}>", r + 1, c + 1));
            s.push_str(&run);
        }
        s.push('\n');
    }
    s.push('\n');
    s.push_str(FAKE_IMAGE_TOKEN);
    s.push_str(GLOBAL_IMAGE_TAG);
    s.push_str(&run);
    s.push_str(FAKE_IMAGE_TOKEN);
    s
}

/// Replace the i-th `<image>` of `text` by [`image_prompt_string`]`(rows[i], cols[i], image_seq_len)`.
/// The number of `<image>` placeholders must equal the number of images.
pub fn expand_image_tokens(text: &str, rows: &[usize], cols: &[usize], image_seq_len: usize) -> Result<String> {
    if rows.len() != cols.len() {
        return Err(Error::Shape {
            op: "expand_image_tokens",
            detail: format!("{} rows vs {} cols", rows.len(), cols.len()),
        });
    }
    let parts: Vec<&str> = text.split(IMAGE_TOKEN).collect();
    let n_placeholders = parts.len() - 1;
    if n_placeholders != rows.len() {
        return Err(Error::Template(format!(
            "the prompt has {n_placeholders} {IMAGE_TOKEN} placeholders but {} images were given; \
             give one image per {IMAGE_TOKEN}",
            rows.len()
        )));
    }
    let mut out = String::with_capacity(text.len() + rows.len() * 1024);
    for (i, part) in parts.iter().enumerate() {
        out.push_str(part);
        if i < rows.len() {
            out.push_str(&image_prompt_string(rows[i], cols[i], image_seq_len));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_len_formula() {
        assert_eq!(image_seq_len(512, 16, 4), 64);
        assert_eq!(image_seq_len(364, 14, 3), 75); // Idefics3-8B: 26² / 9 = 75.1 → 75
    }

    #[test]
    fn single_and_split_patterns() {
        assert_eq!(
            image_prompt_string(0, 0, 2),
            "<fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
        let s = image_prompt_string(1, 2, 1);
        assert_eq!(
            s,
            "<fake_token_around_image><row_1_col_1><image><fake_token_around_image><row_1_col_2><image>\n\n\
             <fake_token_around_image><global-img><image><fake_token_around_image>"
        );
    }

    #[test]
    fn placeholder_count_must_match() {
        assert!(expand_image_tokens("a<image>b<image>", &[0], &[0], 1).is_err());
        let s = expand_image_tokens("a<image>b", &[0], &[0], 1).unwrap();
        assert!(s.starts_with("a<fake_token_around_image>") && s.ends_with("b"));
    }
}
