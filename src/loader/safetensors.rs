//! safetensors parser (Hugging Face's weight format), single file or sharded with `model.safetensors.index.json`.
//! Spec: <https://github.com/huggingface/safetensors#format>.
//!
//! ```text
//! N: u64 (little-endian) | header: N bytes of UTF-8 JSON (may be padded with spaces) | data buffer
//! header = { "__metadata__": { string: string, … },            (optional)
//!            "<tensor name>": { "dtype": "F16", "shape": [rows, cols], "data_offsets": [begin, end] }, … }
//! ```
//! `data_offsets` are relative to the data buffer (byte 8 + N); shapes are row-major (outermost first); data is
//! little-endian and C-contiguous. Weights may be F32, F16 or BF16 ([`SafeTensorInfo::dtype`]); I64/I32 tensors
//! (e.g. `position_ids`) can be read with [`Safetensors::tensor_i64`]; the other standard dtypes are parsed and
//! validated but not decoded.
//!
//! Hardened like the GGUF parser: the header length is capped (100 MB, as in the reference implementation) and
//! checked against the source before allocating; every tensor's byte size must equal `shape` × dtype size
//! (overflow-checked) and lie inside the data buffer; tensors must not overlap; duplicate names are rejected.
//! Unlike the reference implementation, gaps between tensors are tolerated.

use std::collections::{BTreeMap, HashMap};

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use super::{quant, DType, WeightSource};
use crate::error::{Error, Result};

/// Largest header accepted, in bytes (the reference implementation's `MAX_HEADER_SIZE`).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Most dimensions accepted in a shape.
const MAX_DIMS: usize = 16;

fn format_err(detail: impl Into<String>) -> Error {
    Error::Format { format: "safetensors", detail: detail.into() }
}

/// The dtypes of the safetensors spec that have a whole-byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SafeDType {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl SafeDType {
    fn parse(s: &str) -> Option<Self> {
        use SafeDType::*;
        Some(match s {
            "BOOL" => Bool,
            "U8" => U8,
            "I8" => I8,
            "F8_E5M2" => F8E5M2,
            "F8_E4M3" => F8E4M3,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "F64" => F64,
            "I64" => I64,
            "U64" => U64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        use SafeDType::*;
        match self {
            Bool | U8 | I8 | F8E5M2 | F8E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            F64 | I64 | U64 => 8,
        }
    }

    /// The name as written in the header.
    pub fn name(self) -> &'static str {
        use SafeDType::*;
        match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8E5M2 => "F8_E5M2",
            F8E4M3 => "F8_E4M3",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
        }
    }
}

/// One tensor's description, validated against the file.
#[derive(Debug, Clone, PartialEq)]
pub struct SafeTensorInfo {
    pub name: String,
    pub dtype: SafeDType,
    /// Row-major shape (outermost first). Empty for a scalar.
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the source.
    pub offset: u64,
    pub n_bytes: u64,
}

impl SafeTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product() // validated not to overflow
    }

    /// The runtime weight dtype (F32, F16, BF16), or [`Error::UnsupportedDtype`].
    pub fn weight_dtype(&self) -> Result<DType> {
        match self.dtype {
            SafeDType::F32 => Ok(DType::F32),
            SafeDType::F16 => Ok(DType::F16),
            SafeDType::BF16 => Ok(DType::BF16),
            d => Err(Error::UnsupportedDtype {
                op: "safetensors weights (supported: F32, F16, BF16)",
                dtype: format!("{} (tensor `{}`)", d.name(), self.name),
            }),
        }
    }
}

/// One header entry: the `__metadata__` map, or a tensor's description.
enum Entry {
    Metadata(BTreeMap<String, String>),
    Tensor(RawTensor),
}

/// A tensor's header entry as written; other keys are ignored. Parsed into these types directly (not through
/// `serde_json::Value`, whose numbers cost 24+ bytes each: a 100 MB header of `[0,0,…]` shapes took 1.6 GB).
#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A shape of at most [`MAX_DIMS`] non-negative integers, refused as soon as it grows past that.
fn bounded_shape<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of at most {MAX_DIMS} non-negative integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Vec<u64>, A::Error> {
            let mut v = Vec::new();
            while let Some(d) = s.next_element::<serde_json::Number>()? {
                if v.len() == MAX_DIMS {
                    return Err(A::Error::custom(format!("more than {MAX_DIMS} dimensions")));
                }
                let d = d
                    .as_u64()
                    .ok_or_else(|| A::Error::custom(format!("dimension {d} is not a non-negative integer")))?;
                v.push(d);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(V)
}

/// A JSON object's entries in order, keeping duplicates (serde_json's map would silently keep the last).
struct Entries(Vec<(String, Entry)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    let entry = if name == "__metadata__" {
                        m.next_value::<BTreeMap<String, String>>().map(Entry::Metadata).map_err(|e| {
                            A::Error::custom(format!(
                                "`__metadata__` must map names to strings (a value is not a string): {e}"
                            ))
                        })?
                    } else {
                        m.next_value::<RawTensor>()
                            .map(Entry::Tensor)
                            .map_err(|e| A::Error::custom(format!("tensor `{name}`: {e}")))?
                    };
                    v.push((name, entry));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A parsed safetensors header. Holds no tensor data and no source: pass the same source to the read methods.
#[derive(Debug, Clone)]
pub struct Safetensors {
    /// Absolute offset of the data buffer (8 + header length).
    pub data_offset: u64,
    metadata: BTreeMap<String, String>,
    /// In header order.
    tensors: Vec<SafeTensorInfo>,
    index: HashMap<String, usize>,
}

impl Safetensors {
    /// Parses and validates the header of a safetensors file. Reads only the header.
    pub fn parse(src: &dyn WeightSource) -> Result<Self> {
        let file_len = src.len();
        if file_len < 8 {
            return Err(format_err(format!("truncated: {file_len} bytes, the header length alone takes 8")));
        }
        let mut n = [0u8; 8];
        src.read_exact_at(0, &mut n)?;
        let header_len = u64::from_le_bytes(n);
        if header_len > MAX_HEADER_LEN || header_len > file_len - 8 {
            return Err(format_err(format!(
                "header length {header_len} is impossible (limit {MAX_HEADER_LEN}, file has {} bytes after the length)",
                file_len - 8
            )));
        }
        let header = src.read_at(8, header_len)?;
        Self::from_header(&header, file_len)
    }

    /// Parses the JSON `header` of a file of `file_len` bytes (whose header length field says `header.len()`).
    fn from_header(header: &[u8], file_len: u64) -> Result<Self> {
        let data_offset = 8 + header.len() as u64;
        let data_len = file_len - data_offset;
        let text = std::str::from_utf8(header).map_err(|e| format_err(format!("header is not UTF-8: {e}")))?;
        let Entries(entries) =
            serde_json::from_str(text).map_err(|e| format_err(format!("header is not a valid header object: {e}")))?;

        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(entries.len());
        let mut index = HashMap::with_capacity(entries.len());
        let mut seen_metadata = false;
        for (name, entry) in entries {
            let raw = match entry {
                Entry::Metadata(map) => {
                    if std::mem::replace(&mut seen_metadata, true) {
                        return Err(format_err("duplicate `__metadata__`"));
                    }
                    metadata = map;
                    continue;
                }
                Entry::Tensor(raw) => raw,
            };
            let what = format!("tensor `{name}`");
            let dtype_str = raw.dtype.as_str();
            let dtype = SafeDType::parse(dtype_str)
                .ok_or_else(|| format_err(format!("{what} has unknown dtype `{dtype_str}`")))?;
            let shape = raw.shape;
            let [begin, end] = raw.data_offsets;

            let n_bytes = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .and_then(|n| n.checked_mul(dtype.size()))
                .ok_or_else(|| format_err(format!("{what}: size of shape {shape:?} overflows")))?;
            if begin > end || end > data_len {
                return Err(format_err(format!(
                    "{what}: data_offsets [{begin}, {end}] are not inside the data buffer of {data_len} bytes \
                     (the file is truncated or corrupt)"
                )));
            }
            if end - begin != n_bytes {
                return Err(format_err(format!(
                    "{what}: data_offsets [{begin}, {end}] span {} bytes, but {dtype_str} {shape:?} takes {n_bytes}",
                    end - begin
                )));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(format_err(format!("duplicate tensor `{name}`")));
            }
            tensors.push(SafeTensorInfo { name, dtype, shape, offset: data_offset + begin, n_bytes });
        }

        let mut by_offset: Vec<&SafeTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                return Err(format_err(format!("tensors `{}` and `{}` overlap", w[0].name, w[1].name)));
            }
        }
        Ok(Self { data_offset, metadata, tensors, index })
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// All tensors in header order.
    pub fn tensors(&self) -> &[SafeTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&SafeTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn require(&self, name: &str) -> Result<&SafeTensorInfo> {
        self.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    }

    /// The raw little-endian bytes of one tensor (any dtype), read from `src`.
    pub fn tensor_bytes(&self, src: &dyn WeightSource, name: &str) -> Result<Vec<u8>> {
        let t = self.require(name)?;
        src.read_at(t.offset, t.n_bytes)
    }

    /// `len` bytes of one tensor from `offset` (relative to the tensor's start; checked against its size).
    pub fn tensor_bytes_range(&self, src: &dyn WeightSource, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let t = self.require(name)?;
        crate::loader::source::check_range(t.n_bytes, offset, len)?;
        src.read_at(t.offset + offset, len)
    }

    /// One F32/F16/BF16 tensor decoded to f32, row-major.
    pub fn tensor_f32(&self, src: &dyn WeightSource, name: &str) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        let dtype = t.weight_dtype()?;
        let bytes = src.read_at(t.offset, t.n_bytes)?;
        quant::dequantize(dtype, &bytes, (t.n_bytes / dtype.block_bytes() as u64) as usize)
    }

    /// One I64 or I32 tensor as i64 (for index-like tensors such as `position_ids`).
    pub fn tensor_i64(&self, src: &dyn WeightSource, name: &str) -> Result<Vec<i64>> {
        let t = self.require(name)?;
        let bytes = src.read_at(t.offset, t.n_bytes)?;
        match t.dtype {
            SafeDType::I64 => {
                Ok(bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default())).collect())
            }
            SafeDType::I32 => {
                Ok(bytes.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap_or_default()) as i64).collect())
            }
            d => Err(Error::UnsupportedDtype { op: "tensor_i64 (supported: I64, I32)", dtype: d.name().into() }),
        }
    }
}

// ---- sharded repos ------------------------------------------------------------------------------------------------

/// The `weight_map` of a `model.safetensors.index.json`: tensor name → shard file name.
pub fn parse_index(index_json: &[u8]) -> Result<BTreeMap<String, String>> {
    let err = |d: String| Error::Format { format: "safetensors index", detail: d };
    let v: serde_json::Value = serde_json::from_slice(index_json).map_err(|e| err(format!("not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| err("no `weight_map` object".into()))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| err(format!("weight_map[`{name}`] is not a string")))?;
        if !is_safe_relative_path(file) {
            return Err(err(format!("weight_map[`{name}`] = `{file}` is not a plain relative file name")));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(out)
}

/// A relative path with no `..`, `.` or empty components, no backslash, drive or NUL (so joining it to the repo
/// directory or URL cannot escape it).
fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty() && !p.contains(['\\', ':', '\0']) && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A checkpoint made of one or more safetensors files, addressed by tensor name.
pub struct ShardedSafetensors {
    /// (file name, source, parsed header) per shard.
    shards: Vec<(String, Box<dyn WeightSource>, Safetensors)>,
    /// Tensor name → shard index.
    map: BTreeMap<String, usize>,
}

impl std::fmt::Debug for ShardedSafetensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedSafetensors")
            .field("shards", &self.shards.iter().map(|s| &s.0).collect::<Vec<_>>())
            .field("tensors", &self.map.len())
            .finish()
    }
}

impl ShardedSafetensors {
    /// One `model.safetensors` file.
    pub fn single(file_name: &str, src: Box<dyn WeightSource>) -> Result<Self> {
        let st = Safetensors::parse(src.as_ref())?;
        let map = st.tensors().iter().map(|t| (t.name.clone(), 0)).collect();
        Ok(Self { shards: vec![(file_name.to_string(), src, st)], map })
    }

    /// A sharded checkpoint: parses `index_json`, opens each shard named in its `weight_map` once with
    /// `open_shard(file_name)`, parses its header, and checks that every tensor is where the index says.
    pub fn open(index_json: &[u8], mut open_shard: impl FnMut(&str) -> Result<Box<dyn WeightSource>>) -> Result<Self> {
        let weight_map = parse_index(index_json)?;
        let mut shards: Vec<(String, Box<dyn WeightSource>, Safetensors)> = Vec::new();
        let mut shard_of_file: HashMap<String, usize> = HashMap::new();
        let mut map = BTreeMap::new();
        for (name, file) in weight_map {
            let i = match shard_of_file.get(&file) {
                Some(&i) => i,
                None => {
                    let src = open_shard(&file)?;
                    let st = Safetensors::parse(src.as_ref()).map_err(|e| match e {
                        Error::Format { format, detail } => {
                            Error::Format { format, detail: format!("{file}: {detail}") }
                        }
                        e => e,
                    })?;
                    shards.push((file.clone(), src, st));
                    shard_of_file.insert(file.clone(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            if shards[i].2.tensor(&name).is_none() {
                return Err(Error::Format {
                    format: "safetensors index",
                    detail: format!("the index puts `{name}` in `{file}`, which has no such tensor"),
                });
            }
            map.insert(name, i);
        }
        Ok(Self { shards, map })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Shard file names, in the order they were opened.
    pub fn shard_names(&self) -> impl Iterator<Item = &str> {
        self.shards.iter().map(|s| s.0.as_str())
    }

    /// The `__metadata__` of the first shard (HF writes the same `{"format": "pt"}` in each).
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.shards.first().map(|s| s.2.metadata())
    }

    fn shard(&self, name: &str) -> Result<&(String, Box<dyn WeightSource>, Safetensors)> {
        self.map.get(name).map(|&i| &self.shards[i]).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    }

    pub fn tensor(&self, name: &str) -> Option<&SafeTensorInfo> {
        self.shard(name).ok().and_then(|s| s.2.tensor(name))
    }

    pub fn tensor_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let (_, src, st) = self.shard(name)?;
        st.tensor_bytes(src.as_ref(), name)
    }

    pub fn tensor_bytes_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (_, src, st) = self.shard(name)?;
        st.tensor_bytes_range(src.as_ref(), name, offset, len)
    }

    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (_, src, st) = self.shard(name)?;
        st.tensor_f32(src.as_ref(), name)
    }

    pub fn tensor_i64(&self, name: &str) -> Result<Vec<i64>> {
        let (_, src, st) = self.shard(name)?;
        st.tensor_i64(src.as_ref(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend(header.as_bytes());
        v.extend(data);
        v
    }

    fn err_of(r: Result<Safetensors>) -> String {
        match r {
            Err(Error::Format { format: "safetensors", detail }) => detail,
            other => panic!("expected a safetensors format error, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_reads() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).chain([0x80, 0x3F]).collect();
        let f = file(
            r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
               "b":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]}}  "#,
            &data,
        );
        let st = Safetensors::parse(&f).unwrap();
        assert_eq!(st.metadata()["format"], "pt");
        assert_eq!(st.tensor("w").unwrap().shape, vec![2, 2]);
        assert_eq!(st.tensor_f32(&f, "w").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(st.tensor_f32(&f, "b").unwrap(), vec![1.0]);
        assert!(matches!(st.tensor_f32(&f, "x"), Err(Error::MissingTensor { .. })));
    }

    #[test]
    fn rejects_hostile_headers() {
        let t = |h: &str, data_len: usize| err_of(Safetensors::parse(&file(h, &vec![0u8; data_len])));
        assert!(t(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, 16).contains("span"));
        assert!(t(r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, 8).contains("inside"));
        assert!(t(r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#, 16).contains("inside"));
        assert!(
            t(r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#, 8).contains("overflows")
        );
        assert!(t(r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, 8).contains("non-negative"));
        assert!(t(r#"{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#, 8).contains("unknown dtype"));
        assert!(t(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8)
            .contains("duplicate"));
        assert!(t(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12)
            .contains("overlap"));
        assert!(t(r#"[1,2]"#, 0).contains("JSON object"));
        assert!(t(r#"{"__metadata__":{"a":1}}"#, 0).contains("not a string"));
        let mut huge = (1u64 << 60).to_le_bytes().to_vec();
        huge.extend(b"{}");
        assert!(err_of(Safetensors::parse(&huge)).contains("header length"));
        assert!(err_of(Safetensors::parse(&vec![1u8, 2])).contains("truncated"));
    }

    #[test]
    fn sharded() {
        let a = file(r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &1.5f32.to_le_bytes());
        let b = file(r#"{"y":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#, &[0x00, 0x3C]);
        let index = br#"{"metadata":{"total_size":6},"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}"#;
        let mut opened = Vec::new();
        let s = ShardedSafetensors::open(index, |f| {
            opened.push(f.to_string());
            Ok(Box::new(if f == "a.safetensors" { a.clone() } else { b.clone() }) as Box<dyn WeightSource>)
        })
        .unwrap();
        assert_eq!(opened, ["a.safetensors", "b.safetensors"]);
        assert_eq!(s.tensor_f32("x").unwrap(), vec![1.5]);
        assert_eq!(s.tensor_f32("y").unwrap(), vec![1.0]);
        assert_eq!(s.names().collect::<Vec<_>>(), ["x", "y"]);
        // The index names a tensor its shard lacks.
        let bad = br#"{"weight_map":{"z":"a.safetensors"}}"#;
        assert!(ShardedSafetensors::open(bad, |_| Ok(Box::new(a.clone()) as Box<dyn WeightSource>)).is_err());
        // Path traversal in shard names.
        for f in ["../etc/passwd", "/abs", "a\\b", "", "a//b", "C:x"] {
            let idx = format!(r#"{{"weight_map":{{"x":{}}}}}"#, serde_json::to_string(f).unwrap());
            assert!(parse_index(idx.as_bytes()).is_err(), "{f}");
        }
        assert!(parse_index(br#"{"weight_map":{"x":"sub/model-00001-of-00002.safetensors"}}"#).is_ok());
    }
}

/// Serializes f32 tensors `(name, shape, values)` as a safetensors file: a JSON header (names in sorted order, as
/// the Python library writes them; padded with spaces to 8 bytes), then the little-endian data.
pub fn serialize_f32(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].0.cmp(&tensors[b].0));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| format_err(e.to_string()))?);
    }
    let mut offset = 0usize;
    for &i in &order {
        let (name, shape, data) = &tensors[i];
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Shape {
                op: "safetensors::serialize_f32",
                detail: format!("{name}: shape {shape:?} vs {} values", data.len()),
            });
        }
        if header.contains_key(name) {
            return Err(format_err(format!("tensor `{name}` given twice")));
        }
        let end = offset + data.len() * 4;
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| format_err(e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + offset);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for &i in &order {
        for v in &tensors[i].2 {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod serialize_tests {
    use super::*;
    use crate::loader::MemorySource;

    #[test]
    fn round_trip() {
        let t = vec![
            ("b".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            ("a".to_string(), vec![3], vec![-1.0, 0.5, 7.0]),
        ];
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = serialize_f32(&t, &meta).unwrap();
        let src = MemorySource(bytes);
        let st = Safetensors::parse(&src).unwrap();
        assert_eq!(st.tensors()[0].name, "a");
        assert_eq!(st.tensor_f32(&src, "b").unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(st.tensor_f32(&src, "a").unwrap(), vec![-1.0, 0.5, 7.0]);
        assert_eq!(st.metadata().get("format").map(String::as_str), Some("pt"));
        assert!(serialize_f32(&[("x".into(), vec![2], vec![1.0])], &BTreeMap::new()).is_err());
    }
}
