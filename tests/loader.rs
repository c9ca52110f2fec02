//! Loader tests against fixtures written by the reference implementations (scripts/make_quant_fixtures.py:
//! llama.cpp's gguf-py and Hugging Face safetensors): bit-exact quantization/dequantization, GGUF and safetensors
//! parsing, hostile inputs (every truncation, bad magic, absurd counts) and a deterministic mutation run that
//! stands in for fuzzing in CI (the cargo-fuzz targets live in fuzz/).

use std::path::PathBuf;

use rand::{rngs::SmallRng, Rng, SeedableRng};
use webvlm::error::Error;
use webvlm::loader::gguf::{GgmlType, Gguf, MetaValue, ValueType};
use webvlm::loader::quant::{self, dequantize, split_gpu_layout};
use webvlm::loader::safetensors::{SafeDType, Safetensors, ShardedSafetensors};
use webvlm::loader::{DType, FileSource, MemorySource, WeightSource};

const ROWS: usize = 6;
const COLS: usize = 96;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e} (run scripts/make_quant_fixtures.py)"))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn input() -> Vec<f32> {
    let x = f32s(&read("quant/input_f32.bin"));
    assert_eq!(x.len(), ROWS * COLS);
    x
}

fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i} (row {}, col {}): {g} vs {w}", i / COLS, i % COLS);
    }
}

const QUANTS: [(&str, DType); 3] = [("q8_0", DType::Q8_0), ("q4_0", DType::Q4_0), ("q4_1", DType::Q4_1)];

// ---- quantization: bit-exact with gguf-py (which follows ggml-quants.c's reference quantizers) ---------------------

#[test]
fn quantizers_match_gguf_py_bytes() {
    let x = input();
    for (name, dt) in QUANTS {
        let want = read(&format!("quant/{name}.bin"));
        let got = quant::quantize(dt, &x).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: length");
        let bb = dt.block_bytes();
        for (b, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(g, w, "{name}: block {b} (row {}, cols {}..)", b / (COLS / 32), 32 * (b % (COLS / 32)));
        }
    }
}

#[test]
fn dequantization_matches_gguf_py_exactly() {
    for (name, dt) in QUANTS {
        let bytes = read(&format!("quant/{name}.bin"));
        let want = f32s(&read(&format!("quant/{name}_deq.bin")));
        assert_bits_eq(name, &dequantize(dt, &bytes, ROWS * COLS).unwrap(), &want);
    }
}

#[test]
fn gpu_layout_of_fixture_blocks() {
    for (name, dt) in QUANTS {
        let bytes = read(&format!("quant/{name}.bin"));
        let (qs, scales) = split_gpu_layout(dt, &bytes, ROWS, COLS).unwrap();
        let n_blocks = ROWS * COLS / 32;
        assert_eq!(qs.len() * 4, n_blocks * if dt == DType::Q8_0 { 32 } else { 16 }, "{name}");
        // Rebuild the dequantized matrix from the split buffers, as a GPU kernel would.
        let deq = f32s(&read(&format!("quant/{name}_deq.bin")));
        let f16 = |bits: u32| half::f16::from_bits(bits as u16).to_f32();
        for b in 0..n_blocks {
            let (d, m) = match dt {
                DType::Q4_1 => (f16(scales[b] & 0xFFFF), f16(scales[b] >> 16)),
                _ => (f16((scales[b / 2] >> (16 * (b % 2))) & 0xFFFF), 0.0),
            };
            for j in 0..32 {
                let v = match dt {
                    DType::Q8_0 => ((qs[8 * b + j / 4] >> (8 * (j % 4))) as u8 as i8) as f32 * d,
                    _ => {
                        let byte = (qs[4 * b + (j % 16) / 4] >> (8 * (j % 4))) as u8;
                        let q = if j < 16 { byte & 0xF } else { byte >> 4 };
                        if dt == DType::Q4_0 {
                            (q as i32 - 8) as f32 * d
                        } else {
                            q as f32 * d + m
                        }
                    }
                };
                assert_eq!(v.to_bits(), deq[32 * b + j].to_bits(), "{name} block {b} elem {j}");
            }
        }
    }
}

// ---- GGUF -----------------------------------------------------------------------------------------------------------

fn check_tiny_gguf(src: &dyn WeightSource) {
    let g = Gguf::parse(src).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.get_str("general.architecture").unwrap(), "tiny");
    assert_eq!(g.get("test.u8"), Some(&MetaValue::U8(200)));
    assert_eq!(g.get("test.i8"), Some(&MetaValue::I8(-100)));
    assert_eq!(g.get("test.u16"), Some(&MetaValue::U16(60000)));
    assert_eq!(g.get("test.i16"), Some(&MetaValue::I16(-30000)));
    assert_eq!(g.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_i32("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(g.get_f32("test.f32").unwrap(), 0.15625);
    assert_eq!(g.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(g.get_i64("test.i64").unwrap(), -(1i64 << 62));
    assert_eq!(g.get("test.f64"), Some(&MetaValue::F64(-1.5e300)));
    assert!(g.get_bool("test.bool").unwrap());
    assert_eq!(g.get_str("test.str").unwrap(), "héllo, wörld ✓");
    assert_eq!(g.get_str_array("test.str_arr").unwrap(), ["a", "", "<0x0A>", "ĠThe"]);
    assert_eq!(g.get_i64_array("test.i32_arr").unwrap(), [1, -2, 3]);
    assert_eq!(g.get_f32_array("test.f32_arr").unwrap(), [0.5, -0.25]);
    match g.get("test.nested") {
        Some(MetaValue::Array(ValueType::Array, items)) => assert_eq!(
            items,
            &[
                MetaValue::Array(ValueType::I32, vec![MetaValue::I32(1), MetaValue::I32(2)]),
                MetaValue::Array(ValueType::I32, vec![MetaValue::I32(3)])
            ]
        ),
        other => panic!("test.nested: {other:?}"),
    }
    // Typed accessors refuse the wrong type / a value that does not fit.
    assert!(matches!(g.get_str("test.u32"), Err(Error::Format { format: "GGUF", .. })));
    assert!(g.get_i32("test.u32").is_err());
    assert!(g.get_u32("no.such.key").is_err());

    let x = input();
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["f32.weight", "f16.weight", "bf16.weight", "q8_0.weight", "q4_0.weight", "q4_1.weight", "bias", "q4_k.weight"]
    );
    for t in g.tensors() {
        assert_eq!(t.offset % 32, 0, "{}", t.name);
    }
    let t = g.tensor("f32.weight").unwrap();
    assert_eq!((t.dims.as_slice(), t.shape()), (&[COLS as u64, ROWS as u64][..], vec![ROWS as u64, COLS as u64]));
    assert_bits_eq("f32.weight", &g.tensor_f32(src, "f32.weight").unwrap(), &x);
    let to_f16: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_bits_eq("f16.weight", &g.tensor_f32(src, "f16.weight").unwrap(), &to_f16);
    let to_bf16: Vec<f32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_bits_eq("bf16.weight", &g.tensor_f32(src, "bf16.weight").unwrap(), &to_bf16);
    for (name, dt) in QUANTS {
        let t = g.tensor(&format!("{name}.weight")).unwrap();
        assert_eq!(t.dtype().unwrap(), dt);
        assert_eq!(g.tensor_bytes(src, &t.name).unwrap(), read(&format!("quant/{name}.bin")), "{name}");
        assert_bits_eq(name, &g.tensor_f32(src, &t.name).unwrap(), &f32s(&read(&format!("quant/{name}_deq.bin"))));
    }
    assert_eq!(g.tensor_f32(src, "bias").unwrap(), [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]);
    let k = g.tensor("q4_k.weight").unwrap();
    assert_eq!((k.ggml_type, k.ggml_type.name(), k.n_bytes), (GgmlType::from_id(12).unwrap(), "Q4_K", 144));
    match g.tensor_f32(src, "q4_k.weight") {
        Err(Error::UnsupportedDtype { dtype, .. }) => assert!(dtype.contains("Q4_K"), "{dtype}"),
        other => panic!("q4_k: {other:?}"),
    }
    assert!(matches!(g.tensor_bytes(src, "missing"), Err(Error::MissingTensor { .. })));
}

#[test]
fn tiny_gguf_from_memory_and_file() {
    check_tiny_gguf(&MemorySource(read("tiny.gguf")));
    check_tiny_gguf(&FileSource::open(fixture("tiny.gguf")).unwrap());
}

fn expect_format(what: &str, r: webvlm::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::Format { detail, .. }) => detail,
        other => panic!("{what}: expected a format error, got {other:?}"),
    }
}

#[test]
fn gguf_every_truncation_is_a_format_error() {
    let full = read("tiny.gguf");
    let g = Gguf::parse(&full).unwrap();
    // GGUFWriter pads the file after the last tensor: cutting that padding off is harmless.
    let data_end = g.tensors().iter().map(|t| t.offset + t.n_bytes).max().unwrap() as usize;
    assert!(g.data_offset as usize > 100 && data_end <= full.len());
    for len in 0..data_end {
        expect_format(&format!("truncated to {len}"), Gguf::parse(&full[..len].to_vec()));
    }
}

#[test]
fn gguf_hostile_patches() {
    let full = read("tiny.gguf");
    let patch = |at: usize, bytes: &[u8]| {
        let mut v = full.clone();
        v[at..at + bytes.len()].copy_from_slice(bytes);
        v
    };
    assert!(expect_format("magic", Gguf::parse(&patch(0, b"GGUG"))).contains("magic"));
    assert!(expect_format("version", Gguf::parse(&patch(4, &7u32.to_le_bytes()))).contains("version"));
    for bad in [u64::MAX, 1 << 40, 1000] {
        expect_format("tensor count", Gguf::parse(&patch(8, &bad.to_le_bytes())));
        expect_format("kv count", Gguf::parse(&patch(16, &bad.to_le_bytes())));
    }
    // First key's length (bytes 24..32): 2^60 must be refused before any allocation.
    assert!(expect_format("key length", Gguf::parse(&patch(24, &(1u64 << 60).to_le_bytes()))).contains("claims"));
    // The first tensor's offset field is the last 8 bytes of its info: find it by the name.
    let name_at = full.windows(10).position(|w| w == b"f32.weight").unwrap();
    let offset_at = name_at + 10 + 4 + 16 + 4; // name, n_dims, 2 dims, type
    for bad in [u64::MAX, u64::MAX - 31, 1 << 40, 32] {
        // 32 overlaps the next tensor or leaves the data section.
        let msg = expect_format("tensor offset", Gguf::parse(&patch(offset_at, &bad.to_le_bytes())));
        assert!(["past the end", "overlap", "alignment"].iter().any(|s| msg.contains(s)), "{bad}: {msg}");
    }
    let dims_at = name_at + 10 + 4;
    expect_format("zero dim", Gguf::parse(&patch(dims_at, &0u64.to_le_bytes())));
    expect_format("huge dim", Gguf::parse(&patch(dims_at, &u64::MAX.to_le_bytes())));
    expect_format("type", Gguf::parse(&patch(dims_at + 16, &77u32.to_le_bytes())));
}

// ---- safetensors ----------------------------------------------------------------------------------------------------

#[test]
fn tiny_safetensors() {
    let bytes = read("tiny.safetensors");
    for src in
        [&MemorySource(bytes.clone()) as &dyn WeightSource, &FileSource::open(fixture("tiny.safetensors")).unwrap()]
    {
        let st = Safetensors::parse(src).unwrap();
        assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
        assert_eq!(st.metadata().get("note").map(String::as_str), Some("webvlm fixture"));
        let x = input();
        let t = st.tensor("model.f32").unwrap();
        assert_eq!((t.dtype, t.shape.as_slice()), (SafeDType::F32, &[ROWS as u64, COLS as u64][..]));
        assert_bits_eq("model.f32", &st.tensor_f32(src, "model.f32").unwrap(), &x);
        let to_f16: Vec<f32> = x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_bits_eq("model.f16", &st.tensor_f32(src, "model.f16").unwrap(), &to_f16);
        let to_bf16: Vec<f32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
        assert_bits_eq("model.bf16", &st.tensor_f32(src, "model.bf16").unwrap(), &to_bf16);
        assert_eq!(st.tensor_i64(src, "model.position_ids").unwrap(), [0, 1, 2, 3, 4]);
        assert_eq!(st.tensor("model.position_ids").unwrap().shape, [1, 5]);
        assert_eq!(st.tensor_i64(src, "model.i32").unwrap(), [-1, 0, 7]);
        assert!(st.tensor("model.scalar").unwrap().shape.is_empty());
        assert_eq!(st.tensor_f32(src, "model.scalar").unwrap(), [2.5]);
        assert!(matches!(st.tensor_f32(src, "model.position_ids"), Err(Error::UnsupportedDtype { .. })));
    }
}

#[test]
fn safetensors_every_truncation_is_a_format_error() {
    let full = read("tiny.safetensors");
    for len in 0..full.len() {
        expect_format(&format!("truncated to {len}"), Safetensors::parse(&full[..len].to_vec()));
    }
    let mut huge = full.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(expect_format("header length", Safetensors::parse(&huge)).contains("header length"));
}

/// A file with `header` (JSON) and `data_len` zero bytes of data.
fn safetensors_with(header: &str, data_len: usize) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.resize(f.len() + data_len, 0);
    f
}

#[test]
fn safetensors_hostile_headers_are_format_errors() {
    let ok = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let st = Safetensors::parse(&safetensors_with(ok, 16)).unwrap();
    assert_eq!(st.tensor("w").unwrap().shape, [2, 2]);
    // a shape past 16 dimensions is refused while it is read: a header of millions of dims (which parsed into
    // JSON values took 16 × its size in memory) stops at the 17th
    let many =
        format!(r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,4]}}}}"#, vec!["1"; 5_000_000].join(","));
    assert!(expect_format("5M dims", Safetensors::parse(&safetensors_with(&many, 4))).contains("more than 16"));
    let cases = [
        ("17 dims", format!(r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,4]}}}}"#, vec!["1"; 17].join(","))),
        ("metadata not strings", r#"{"__metadata__":{"a":[1,2]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.into()),
        ("negative dim", r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into()),
        ("fractional offset", r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}"#.into()),
        ("three offsets", r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#.into()),
        ("no dtype", r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#.into()),
        ("tensor not an object", r#"{"w":[1]}"#.into()),
        ("unknown dtype", r#"{"w":{"dtype":"F8","shape":[1],"data_offsets":[0,4]}}"#.into()),
        ("duplicate tensor", r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#.into()),
        ("duplicate metadata", r#"{"__metadata__":{},"__metadata__":{},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.into()),
        ("size overflow", r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#.into()),
    ];
    for (what, header) in cases {
        let msg = expect_format(what, Safetensors::parse(&safetensors_with(&header, 8)));
        eprintln!("{what}: {msg}");
    }
}

#[test]
fn sharded_safetensors_from_files() {
    let dir = fixture("tiny_sharded");
    let index = std::fs::read(dir.join("model.safetensors.index.json")).unwrap();
    let s = ShardedSafetensors::open(&index, |f| Ok(Box::new(FileSource::open(dir.join(f))?) as Box<dyn WeightSource>))
        .unwrap();
    assert_eq!(s.names().collect::<Vec<_>>(), ["a.bias", "a.weight", "b.weight"]);
    assert_eq!(s.shard_names().count(), 2);
    let x = input();
    assert_bits_eq("a.weight", &s.tensor_f32("a.weight").unwrap(), &x[..3 * COLS]);
    let to_f16: Vec<f32> = x[3 * COLS..].iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    assert_bits_eq("b.weight", &s.tensor_f32("b.weight").unwrap(), &to_f16);
    assert_eq!(s.tensor_f32("a.bias").unwrap(), vec![1.0; COLS]);
    assert!(matches!(s.tensor_f32("c"), Err(Error::MissingTensor { .. })));

    let single = ShardedSafetensors::single(
        "tiny.safetensors",
        Box::new(FileSource::open(fixture("tiny.safetensors")).unwrap()),
    )
    .unwrap();
    assert_eq!(single.len(), 6);
}

// ---- deterministic mutation run (the in-CI stand-in for fuzz/) ------------------------------------------------------

/// Applies 1–4 random mutations: byte flips, random bytes, a little-endian field set to an extreme value,
/// truncation, insertion or deletion of a run of bytes.
fn mutate(rng: &mut SmallRng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if v.is_empty() {
            break;
        }
        let at = rng.random_range(0..v.len());
        match rng.random_range(0..6) {
            0 => v[at] ^= 1 << rng.random_range(0..8),
            1 => v[at] = rng.random(),
            2 => {
                let extremes = [0u64, 1, u32::MAX as u64, u64::MAX, 1 << 60, 1 << 32, i64::MAX as u64, rng.random()];
                let val = extremes[rng.random_range(0..extremes.len())].to_le_bytes();
                let n = if rng.random() { 8 } else { 4 };
                for (i, b) in val[..n].iter().enumerate() {
                    if let Some(slot) = v.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => v.truncate(at),
            4 => {
                let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
                v.splice(at..at, junk);
            }
            _ => {
                let end = (at + rng.random_range(1..64)).min(v.len());
                v.drain(at..end);
            }
        }
    }
    v
}

/// Parses `bytes` and, when that succeeds, reads every tensor: nothing may panic.
fn exercise_gguf(bytes: &[u8]) -> bool {
    let Ok(g) = Gguf::parse(&bytes) else {
        return false;
    };
    for t in g.tensors() {
        let _ = g.tensor_f32(&bytes, &t.name);
    }
    for (k, _) in g.metadata() {
        let _ = (g.get_u32(k), g.get_str(k), g.get_str_array(k), g.get_f32_array(k));
    }
    true
}

fn exercise_safetensors(bytes: &[u8]) -> bool {
    let Ok(st) = Safetensors::parse(&bytes) else {
        return false;
    };
    for t in st.tensors() {
        let _ = (st.tensor_f32(&bytes, &t.name), st.tensor_i64(&bytes, &t.name));
    }
    true
}

#[test]
fn mutated_fixtures_never_panic() {
    let n: usize = std::env::var("WEBVLM_MUTATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let mut rng = SmallRng::seed_from_u64(0x5eed_10ad);
    let gguf = read("tiny.gguf");
    let st = read("tiny.safetensors");
    let (mut ok_g, mut ok_s) = (0, 0);
    for _ in 0..n {
        ok_g += exercise_gguf(&mutate(&mut rng, &gguf)) as usize;
        ok_s += exercise_safetensors(&mutate(&mut rng, &st)) as usize;
    }
    // Some mutations land in tensor data and still parse: the run reached past the header checks.
    assert!(ok_g > 0 && ok_s > 0, "gguf ok {ok_g}, safetensors ok {ok_s}");
    eprintln!("{n} mutations each: {ok_g} GGUF and {ok_s} safetensors mutants still parsed");
}
