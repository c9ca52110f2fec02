//! The tokenizer: a thin wrapper over Hugging Face's `tokenizers` crate (pure-Rust regex backend, so the same
//! code runs natively and in wasm32), loaded from `tokenizer.json` bytes or built from GGUF metadata.
//!
//! GGUF (`tokenizer.ggml.model = "gpt2"`, byte-level BPE) is turned into the `tokenizer.json` that Hugging Face
//! ships for the same model: BPE over `tokenizer.ggml.tokens` / `tokenizer.ggml.merges`, CONTROL tokens
//! (`token_type` 3) as special added tokens, USER_DEFINED (4) as added tokens, and the pre-tokenizer named by
//! `tokenizer.ggml.pre` (llama.cpp `llama-vocab.cpp`, `LLAMA_VOCAB_PRE_TYPE_*`; HF's regexes from each model's
//! tokenizer.json):
//! - `smollm` (SmolLM/SmolLM2): `Digits(individual_digits)` then `ByteLevel(use_regex)` — SmolLM2's tokenizer.json;
//! - `gpt2` / `default`: `ByteLevel(use_regex)` (GPT-2's regex);
//! - `llama-bpe` (Llama 3) and `qwen2`: `Split(regex, Isolated)` then `ByteLevel(use_regex = false)`.
//!
//! transformers' own GGUF conversion (`integrations/ggml.py` `GGUFGPTConverter`) always uses plain ByteLevel; for
//! SmolLM2 the digit split changes nothing (its vocabulary has no multi-digit tokens, "Ġ" + digits stays split),
//! which `tests/processor.rs` checks against the reference ids.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::loader::gguf::Gguf;

/// A tokenizer plus the special ids generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

fn tok_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3's pre-tokenizer regex (tokenizer.json of Meta-Llama-3; llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (tokenizer.json of Qwen2; llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Load a Hugging Face `tokenizer.json`. `bos_id` / `eos_id` are looked up among the usual token strings;
    /// set them from `tokenizer_config.json` / `generation_config.json` with [`Tokenizer::with_special_ids`].
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| tok_err("could not load tokenizer.json", e))?;
        Ok(Self::from_inner(inner))
    }

    fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        let find = |cands: &[&str]| cands.iter().find_map(|t| inner.token_to_id(t));
        let bos_id = find(&["<|begin_of_text|>", "<s>", "<|im_start|>", "<|endoftext|>"]);
        let eos_id = find(&["<|end_of_text|>", "</s>", "<end_of_utterance>", "<|im_end|>", "<|endoftext|>"]);
        Self { inner, bos_id, eos_id }
    }

    /// Override the special ids (from the checkpoint's config files).
    pub fn with_special_ids(mut self, bos_id: Option<u32>, eos_id: Option<u32>) -> Self {
        self.bos_id = bos_id;
        self.eos_id = eos_id;
        self
    }

    /// Build the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata (BPE `gpt2` models).
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let inner = tokenizer_from_gguf_parts(gguf_tokenizer_parts(gguf)?)?;
        let t = Self::from_inner(inner);
        let bos = gguf.get_u32("tokenizer.ggml.bos_token_id").ok();
        let eos = gguf.get_u32("tokenizer.ggml.eos_token_id").ok();
        Ok(t.with_special_ids(bos, eos))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`, `<image>`) are recognized;
    /// nothing is added around the text (no BOS) — chat templates write their own.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    /// Like [`Tokenizer::encode`], with the tokenizer's post-processor (BOS/EOS) when `add_special_tokens`.
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special_tokens).map_err(|e| tok_err("encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are written out unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vocab_size()) {
            return Err(Error::Tokenizer(format!("token id {bad} is outside the vocabulary of {}", self.vocab_size())));
        }
        self.inner.decode(ids, skip_special_tokens).map_err(|e| tok_err("decode", e))
    }

    /// The id of a token string (special or not), e.g. `"<|im_end|>"`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id (byte-level form, e.g. `"Ġthe"`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Ids of the special (added, `special: true`) tokens.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> =
            self.inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        v.sort_unstable();
        v
    }

    /// The underlying `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// An incremental decoder for streaming generation.
    pub fn stream_decoder(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder { tok: self, ids: Vec::new(), prefix_offset: 0, read_offset: 0, skip_special_tokens }
    }
}

/// Streams text as ids arrive, emitting only at UTF-8-safe points: a byte-level token can carry part of a
/// multi-byte character, which decodes to U+FFFD until the rest arrives.
///
/// Keeps a window `ids[prefix_offset..]`: decodes the window and the window minus the unread ids, and emits the
/// difference once it is non-empty and does not end in U+FFFD (the algorithm of text-generation-inference and
/// `tokenizers`' `DecodeStream`; the window keeps decoders that strip a leading space from working).
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl StreamDecoder<'_> {
    /// Add one id; returns the new text, if any is complete.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.step(false)
    }

    /// Emit whatever is pending, even an incomplete character (as U+FFFD), e.g. at the end of generation.
    pub fn flush(&mut self) -> Result<Option<String>> {
        self.step(true)
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn step(&mut self, force: bool) -> Result<Option<String>> {
        if self.read_offset >= self.ids.len() {
            return Ok(None);
        }
        let prefix = self.tok.decode(&self.ids[self.prefix_offset..self.read_offset], self.skip_special_tokens)?;
        let full = self.tok.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        if full.ends_with('\u{FFFD}') && !force {
            return Ok(None);
        }
        let new = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            // a decoder that rewrote the prefix: emit the part after the common prefix
            None => {
                let common = prefix.char_indices().zip(full.chars()).take_while(|((_, a), b)| a == b).count();
                full.chars().skip(common).collect()
            }
        };
        if new.is_empty() && !force {
            return Ok(None);
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(if new.is_empty() { None } else { Some(new) })
    }
}

/// A GGUF file's tokenizer metadata, checked: the vocabulary (borrowed), which tokens are added (and special),
/// the merges, and the small JSON pieces (pre-tokenizer, post-processor) that `tokenizer.json` would hold.
struct GgufTokenizerParts<'a> {
    tokens: Vec<&'a str>,
    /// (id, special) of the control and user-defined tokens.
    added: Vec<(usize, bool)>,
    merges: Vec<(&'a str, &'a str)>,
    pre_tokenizer: Value,
    post_processor: Value,
}

fn gguf_tokenizer_parts(gguf: &Gguf) -> Result<GgufTokenizerParts<'_>> {
    let meta_err = |e: Error| Error::Tokenizer(format!("GGUF tokenizer metadata: {e}"));
    let model = gguf.get_str("tokenizer.ggml.model").map_err(meta_err)?;
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); \
             load the checkpoint's tokenizer.json instead"
        )));
    }
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens").map_err(meta_err)?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges").map_err(meta_err)?;
    let types = match gguf.get("tokenizer.ggml.token_type") {
        Some(_) => gguf.get_i64_array("tokenizer.ggml.token_type").map_err(meta_err)?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(Error::Tokenizer(format!("GGUF has {} tokens but {} token types", tokens.len(), types.len())));
    }
    let pre = gguf.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    let pre_tokenizer = match pre {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF pre-tokenizer `{other}` is not supported (smollm, gpt2, default, llama-bpe, qwen2); \
                 load the checkpoint's tokenizer.json instead"
            )))
        }
    };

    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if let Some(prev) = seen.insert(t, id) {
            return Err(Error::Tokenizer(format!("GGUF vocabulary has `{t}` twice (ids {prev} and {id})")));
        }
        if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
            added.push((id, ty == TOKEN_TYPE_CONTROL));
        }
    }
    drop(seen);
    let merges: Vec<(&str, &str)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .ok_or_else(|| Error::Tokenizer(format!("GGUF merge `{m}` is not two tokens separated by a space")))
        })
        .collect::<Result<_>>()?;
    let add_bos = matches!(gguf.get("tokenizer.ggml.add_bos_token"), Some(crate::loader::gguf::MetaValue::Bool(true)));
    let post_processor = match (add_bos, gguf.get_u32("tokenizer.ggml.bos_token_id").ok()) {
        (true, Some(bos)) => {
            let bos_str = tokens.get(bos as usize).copied().unwrap_or_default();
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_str, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_str, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos_str, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_str: {"id": bos_str, "ids": [bos], "tokens": [bos_str]}}})
        }
        _ => Value::Null,
    };

    Ok(GgufTokenizerParts { tokens, added, merges, pre_tokenizer, post_processor })
}

/// The `tokenizer.json` (as a JSON value) equivalent to a GGUF file's tokenizer metadata.
pub fn gguf_tokenizer_json(gguf: &Gguf) -> Result<Value> {
    let p = gguf_tokenizer_parts(gguf)?;
    let vocab: serde_json::Map<String, Value> =
        p.tokens.iter().enumerate().map(|(id, t)| (t.to_string(), json!(id))).collect();
    let added: Vec<Value> = p
        .added
        .iter()
        .map(|&(id, special)| {
            json!({"id": id, "content": p.tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": special})
        })
        .collect();
    let merges: Vec<Value> = p.merges.iter().map(|(a, b)| json!([a, b])).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": p.pre_tokenizer,
        "post_processor": p.post_processor,
        "decoder": BYTE_LEVEL_DECODER.clone(),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    }))
}

/// The byte-level decoder of GPT-2-style tokenizers.
static BYTE_LEVEL_DECODER: std::sync::LazyLock<Value> = std::sync::LazyLock::new(
    || json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
);

/// Builds the tokenizer from the GGUF arrays directly: the BPE model from the vocabulary and merges (no
/// `tokenizer.json` in between: in wasm, memory once grown is never returned), the small pieces through serde.
fn tokenizer_from_gguf_parts(p: GgufTokenizerParts<'_>) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{Vocab, BPE};
    use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper};
    let bad = |what: &str, e: serde_json::Error| Error::Tokenizer(format!("GGUF tokenizer {what}: {e}"));
    let pre: PreTokenizerWrapper = serde_json::from_value(p.pre_tokenizer).map_err(|e| bad("pre-tokenizer", e))?;
    let post: Option<PostProcessorWrapper> = match p.post_processor {
        Value::Null => None,
        v => Some(serde_json::from_value(v).map_err(|e| bad("post-processor", e))?),
    };
    let decoder: DecoderWrapper = serde_json::from_value(BYTE_LEVEL_DECODER.clone()).map_err(|e| bad("decoder", e))?;
    let vocab: Vocab = p.tokens.iter().enumerate().map(|(id, t)| (t.to_string(), id as u32)).collect();
    let merges: Vec<(String, String)> = p.merges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| tok_err("GGUF BPE model", e))?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(pre));
    t.with_post_processor(post);
    t.with_decoder(Some(decoder));
    let token = |&(id, special): &(usize, bool)| AddedToken {
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        ..AddedToken::from(p.tokens[id], special)
    };
    let special: Vec<AddedToken> = p.added.iter().filter(|a| a.1).map(token).collect();
    let user: Vec<AddedToken> = p.added.iter().filter(|a| !a.1).map(token).collect();
    t.add_special_tokens(&special);
    t.add_tokens(&user);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level BPE tokenizer.json: bytes "a", "b", "Ġ", merges "a b", "Ġ ab"; special `<s>`.
    fn tiny() -> Tokenizer {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<s>", "a", "b", "Ġ", "ab", "Ġab", "Ã", "©"].iter().enumerate() {
            vocab.insert(t.to_string(), json!(i));
        }
        let j = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": [["a", "b"], ["Ġ", "ab"]]}
        });
        Tokenizer::from_json_bytes(&serde_json::to_vec(&j).unwrap()).unwrap()
    }

    #[test]
    fn encode_decode_roundtrip() {
        let t = tiny();
        assert_eq!(t.encode("<s>ab ab").unwrap(), vec![0, 4, 5]);
        assert_eq!(t.decode(&[0, 4, 5], false).unwrap(), "<s>ab ab");
        assert_eq!(t.decode(&[0, 4, 5], true).unwrap(), "ab ab");
        assert_eq!(t.token_id("<s>"), Some(0));
        assert_eq!(t.special_ids(), vec![0]);
        assert!(t.decode(&[99], false).is_err());
    }

    #[test]
    fn stream_waits_for_complete_characters() {
        // "é" is bytes C3 A9 = byte-level tokens "Ã" (6) and "©" (7)
        let t = tiny();
        let mut s = t.stream_decoder(false);
        assert_eq!(s.push(4).unwrap().as_deref(), Some("ab"));
        assert_eq!(s.push(6).unwrap(), None, "half a character must not be emitted");
        assert_eq!(s.push(7).unwrap().as_deref(), Some("é"));
        assert_eq!(s.push(5).unwrap().as_deref(), Some(" ab"));
        assert_eq!(s.push(6).unwrap(), None);
        assert_eq!(s.flush().unwrap().as_deref(), Some("\u{FFFD}"));
        assert_eq!(s.flush().unwrap(), None);
    }
}
