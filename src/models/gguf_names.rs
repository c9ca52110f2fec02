//! llama.cpp's GGUF tensor names, in one place: Hugging Face name → GGUF name, for the Llama text model and the
//! `clip` vision projector (`mmproj`) of SmolVLM/Idefics3. Model code asks for Hugging Face names everywhere;
//! a [`GgufStore`](crate::nn::GgufStore) translates with these functions.
//! Reference: llama.cpp `gguf-py/gguf/tensor_mapping.py`, `tools/mtmd/clip-impl.h` (`TN_*` templates).

/// Strips the text-model prefixes the model files use (`model.`, `model.text_model.`, `language_model.model.`).
fn text_suffix(hf: &str) -> &str {
    for p in ["model.text_model.", "language_model.model.", "language_model.", "model."] {
        if let Some(s) = hf.strip_prefix(p) {
            return s;
        }
    }
    hf
}

/// `layers.N.rest` → (N, rest).
fn layer(s: &str, prefix: &str) -> Option<(usize, String)> {
    let s = s.strip_prefix(prefix)?;
    let (n, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, rest.to_string()))
}

/// Llama-family text model.
pub fn llama(hf: &str) -> Option<String> {
    if hf == "lm_head.weight" || hf == "language_model.lm_head.weight" {
        return Some("output.weight".into());
    }
    let s = text_suffix(hf);
    let fixed = match s {
        "embed_tokens.weight" => Some("token_embd.weight"),
        "norm.weight" => Some("output_norm.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let (n, rest) = layer(s, "layers.")?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}.{kind}"))
}

/// Idefics3 / SmolVLM vision tower + connector in an `mmproj` file.
pub fn idefics3_mmproj(hf: &str) -> Option<String> {
    if hf == "model.connector.modality_projection.proj.weight" {
        return Some("mm.model.fc.weight".into());
    }
    let s = hf.strip_prefix("model.vision_model.")?;
    let fixed = match s {
        "embeddings.patch_embedding.weight" => Some("v.patch_embd.weight"),
        "embeddings.patch_embedding.bias" => Some("v.patch_embd.bias"),
        "embeddings.position_embedding.weight" => Some("v.position_embd.weight"),
        "post_layernorm.weight" => Some("v.post_ln.weight"),
        "post_layernorm.bias" => Some("v.post_ln.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.into());
    }
    let (n, rest) = layer(s, "encoder.layers.")?;
    let (module, kind) = rest.rsplit_once('.')?;
    let g = match module {
        "layer_norm1" => "ln1",
        "layer_norm2" => "ln2",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.out_proj" => "attn_out",
        "mlp.fc1" => "ffn_up",
        "mlp.fc2" => "ffn_down",
        _ => return None,
    };
    Some(format!("v.blk.{n}.{g}.{kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(llama("model.layers.3.self_attn.o_proj.weight").as_deref(), Some("blk.3.attn_output.weight"));
        assert_eq!(llama("model.text_model.embed_tokens.weight").as_deref(), Some("token_embd.weight"));
        assert_eq!(llama("lm_head.weight").as_deref(), Some("output.weight"));
        assert_eq!(llama("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(
            idefics3_mmproj("model.vision_model.encoder.layers.1.mlp.fc1.bias").as_deref(),
            Some("v.blk.1.ffn_up.bias")
        );
    }
}
