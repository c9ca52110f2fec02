//! GGUF v2/v3 parser (llama.cpp's model format): header, metadata key/values, tensor infos, alignment and the
//! data section. Spec: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.
//!
//! ```text
//! magic "GGUF" | version: u32 (2, 3) | tensor_count: u64 | kv_count: u64
//! kv_count × { key: string | value_type: u32 | value }
//! tensor_count × { name: string | n_dims: u32 | ne: [u64; n_dims] | ggml_type: u32 | offset: u64 }
//! padding to `general.alignment` (u32, default 32) | data section (tensor offsets are relative to its start)
//! string = len: u64 | UTF-8 bytes;   array = elem_type: u32 | count: u64 | count × value
//! ```
//! All little-endian. `ne[0]` is the innermost (contiguous) dimension: a row-major PyTorch/numpy tensor of shape
//! `[rows, cols]` has `ne = [cols, rows]`; [`GgufTensorInfo::shape`] gives the row-major order.
//!
//! The parser reads the header through a [`WeightSource`] in chunks and treats it as hostile: every count and
//! length is bounded by the bytes left in the source (and by hard caps) before anything is allocated, all size
//! arithmetic is overflow-checked, tensor ranges must lie inside the data section without overlapping, and every
//! failure is an [`Error::Format`] `{ format: "GGUF", .. }` (or `UnsupportedDtype` when reading a tensor type we
//! cannot decode). Tensors are read one at a time with [`Gguf::tensor_bytes`] / [`Gguf::tensor_f32`].

use std::collections::HashMap;

use super::{quant, ChunkReader, DType, WeightSource};
use crate::error::{Error, Result};

/// `"GGUF"` as the first four bytes of the file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// Longest metadata key accepted (the spec caps keys at 65535 bytes).
const MAX_KEY_LEN: u64 = 65_535;
/// Longest string value accepted (chat templates are kilobytes; this only stops absurd lengths).
const MAX_STRING_LEN: u64 = 64 << 20;
/// Most elements in one metadata array (vocabularies have ~10^5).
const MAX_ARRAY_LEN: u64 = 1 << 22;
/// Most array elements in all the metadata together (bounds memory: each takes ~32 bytes in memory).
const MAX_TOTAL_ARRAY_ELEMS: u64 = 1 << 24;
/// Deepest nesting of arrays in arrays.
const MAX_ARRAY_DEPTH: u32 = 4;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Most tensors / key-values accepted (also bounded by the file's size).
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KVS: u64 = 1 << 20;
/// Most entries reserved up front from a count in the file (vectors grow past it as entries actually parse).
const PREALLOC: u64 = 4096;

fn format_err(detail: impl Into<String>) -> Error {
    Error::Format { format: "GGUF", detail: detail.into() }
}

// ---- ggml tensor types --------------------------------------------------------------------------------------------

/// (id, name, elements per block, bytes per block) for every ggml type id a GGUF file may hold
/// (from ggml.h `enum ggml_type` / gguf-py `GGML_QUANT_SIZES`; removed ids 4, 5, 31–33, 36–38 are absent).
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// A ggml tensor type id known to this parser (its size is known, so its byte range can be validated), whether
/// or not we can decode it: see [`GgmlType::dtype`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q8_0: Self = Self(8);
    pub const BF16: Self = Self(30);

    /// The type with this id, or a format error for an id ggml does not define.
    pub fn from_id(id: u32) -> Result<Self> {
        if GGML_TYPES.iter().any(|t| t.0 == id) {
            Ok(Self(id))
        } else {
            Err(format_err(format!("unknown ggml tensor type id {id}")))
        }
    }

    fn entry(self) -> &'static (u32, &'static str, u64, u64) {
        // Only constructed from ids in the table.
        GGML_TYPES.iter().find(|t| t.0 == self.0).unwrap_or(&GGML_TYPES[0])
    }

    pub fn id(self) -> u32 {
        self.0
    }

    /// ggml's name for the type (`"Q4_K"`…).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().3
    }

    /// The runtime dtype, or [`Error::UnsupportedDtype`] naming the ggml type for the ones we cannot decode.
    pub fn dtype(self) -> Result<DType> {
        Ok(match self.0 {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            8 => DType::Q8_0,
            30 => DType::BF16,
            _ => {
                return Err(Error::UnsupportedDtype {
                    op: "the GGUF loader (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1; re-quantize the model)",
                    dtype: format!("ggml type {} (id {})", self.name(), self.0),
                })
            }
        })
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DType> for GgmlType {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => Self::F32,
            DType::F16 => Self::F16,
            DType::BF16 => Self::BF16,
            DType::Q8_0 => Self::Q8_0,
            DType::Q4_0 => Self::Q4_0,
            DType::Q4_1 => Self::Q4_1,
        }
    }
}

// ---- metadata values ----------------------------------------------------------------------------------------------

/// GGUF metadata value type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Fewest bytes a value of this type takes in the file.
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element type (as declared, even when empty) and the elements.
    Array(ValueType, Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::U8(_) => ValueType::U8,
            MetaValue::I8(_) => ValueType::I8,
            MetaValue::U16(_) => ValueType::U16,
            MetaValue::I16(_) => ValueType::I16,
            MetaValue::U32(_) => ValueType::U32,
            MetaValue::I32(_) => ValueType::I32,
            MetaValue::F32(_) => ValueType::F32,
            MetaValue::Bool(_) => ValueType::Bool,
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array(..) => ValueType::Array,
            MetaValue::U64(_) => ValueType::U64,
            MetaValue::I64(_) => ValueType::I64,
            MetaValue::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value, widened (for lenient typed accessors).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float value (F32, or F64 narrowed).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
}

// ---- tensor infos -------------------------------------------------------------------------------------------------

/// One tensor's description, validated against the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension. 1 to 4 entries, none zero.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the tensor's data in the source (data section start + the file's relative offset).
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product() // validated not to overflow at parse time
    }

    /// Row-major shape (outermost first), as in PyTorch/numpy: `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// The runtime dtype, or [`Error::UnsupportedDtype`] naming the ggml type.
    pub fn dtype(&self) -> Result<DType> {
        self.ggml_type.dtype()
    }
}

// ---- the parsed file ----------------------------------------------------------------------------------------------

/// A parsed GGUF header. Holds no tensor data and no source: pass the same source to the read methods.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// Header reader: [`ChunkReader`] plus GGUF's primitive types and error wording.
struct Reader<'a> {
    r: ChunkReader<'a>,
    total_array_elems: u64,
}

impl Reader<'_> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let (pos, left) = (self.r.pos(), self.r.remaining());
        self.r
            .take(n)?
            .ok_or_else(|| format_err(format!("truncated: {what} needs {n} bytes at offset {pos}, only {left} left")))
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String> {
        let pos = self.r.pos();
        let len = self.u64(what)?;
        if len > max || len > self.r.remaining() {
            return Err(format_err(format!(
                "{what} at offset {pos} claims {len} bytes (limit {max}, {} left in the file)",
                self.r.remaining()
            )));
        }
        let b = self.bytes(len, what)?.to_vec();
        String::from_utf8(b).map_err(|e| format_err(format!("{what} at offset {pos} is not UTF-8: {e}")))
    }

    fn value(&mut self, ty: ValueType, depth: u32, what: &str) -> Result<MetaValue> {
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => MetaValue::U32(self.u32(what)?),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let pos = self.r.pos();
                match self.array::<1>(what)?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => return Err(format_err(format!("{what} at offset {pos}: bool byte is {b}, not 0 or 1"))),
                }
            }
            ValueType::String => MetaValue::String(self.string(MAX_STRING_LEN, what)?),
            ValueType::U64 => MetaValue::U64(self.u64(what)?),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Array => {
                let pos = self.r.pos();
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format_err(format!(
                        "{what} at offset {pos}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let id = self.u32(what)?;
                let elem = ValueType::from_id(id)
                    .ok_or_else(|| format_err(format!("{what} at offset {pos}: unknown array element type {id}")))?;
                let count = self.u64(what)?;
                let fits = count.checked_mul(elem.min_size()).is_some_and(|b| b <= self.r.remaining());
                self.total_array_elems = self.total_array_elems.saturating_add(count);
                if !fits || count > MAX_ARRAY_LEN || self.total_array_elems > MAX_TOTAL_ARRAY_ELEMS {
                    return Err(format_err(format!(
                        "{what} at offset {pos}: array of {count} {elem:?} does not fit ({} bytes left, limit {MAX_ARRAY_LEN} \
                         elements per array and {MAX_TOTAL_ARRAY_ELEMS} in all)",
                        self.r.remaining()
                    )));
                }
                let mut items = Vec::with_capacity(count.min(PREALLOC) as usize);
                for _ in 0..count {
                    items.push(self.value(elem, depth + 1, what)?);
                }
                MetaValue::Array(elem, items)
            }
        })
    }
}

impl Gguf {
    /// Parses the header of a GGUF file and validates every tensor's range. Reads only the header.
    pub fn parse(src: &dyn WeightSource) -> Result<Self> {
        let file_len = src.len();
        let mut r = Reader { r: ChunkReader::new(src), total_array_elems: 0 };

        let magic = r.array::<4>("magic")?;
        if magic != GGUF_MAGIC {
            return Err(format_err(format!("bad magic {magic:02x?} (expected \"GGUF\"); this is not a GGUF file")));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err(format_err("GGUF v1 is not supported; re-convert the model with a current llama.cpp")),
            v if (2..=3).contains(&v.swap_bytes()) => {
                return Err(format_err("big-endian GGUF is not supported; use a little-endian conversion"))
            }
            v => return Err(format_err(format!("unsupported GGUF version {v} (supported: 2, 3)"))),
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        // A key/value takes ≥ 8 (key length) + 4 (type) + 1 bytes; a tensor info ≥ 8 + 4 + 8 + 4 + 8.
        let left = r.r.remaining();
        if kv_count > MAX_KVS || kv_count.saturating_mul(13) > left {
            return Err(format_err(format!("metadata count {kv_count} is impossible for a file of {file_len} bytes")));
        }
        if tensor_count > MAX_TENSORS || tensor_count.saturating_mul(32) > left {
            return Err(format_err(format!(
                "tensor count {tensor_count} is impossible for a file of {file_len} bytes"
            )));
        }

        let mut metadata = Vec::with_capacity(kv_count.min(PREALLOC) as usize);
        let mut meta_index = HashMap::with_capacity(kv_count.min(PREALLOC) as usize);
        for i in 0..kv_count {
            let key = r.string(MAX_KEY_LEN, &format!("metadata key #{i}"))?;
            let what = format!("metadata `{key}`");
            let pos = r.r.pos();
            let id = r.u32(&what)?;
            let ty = ValueType::from_id(id)
                .ok_or_else(|| format_err(format!("{what} at offset {pos}: unknown value type {id}")))?;
            let value = r.value(ty, 0, &what)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(format_err(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, value));
        }

        let alignment = match meta_index.get(KEY_ALIGNMENT).map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::U32(a)) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some(v) => {
                return Err(format_err(format!("`{KEY_ALIGNMENT}` must be a power-of-two u32, got {v:?}")));
            }
        };

        struct Raw {
            name: String,
            dims: Vec<u64>,
            ggml_type: GgmlType,
            rel_offset: u64,
            n_bytes: u64,
        }
        let mut raws = Vec::with_capacity(tensor_count.min(PREALLOC) as usize);
        let mut tensor_index = HashMap::with_capacity(tensor_count.min(PREALLOC) as usize);
        for i in 0..tensor_count {
            let name = r.string(MAX_KEY_LEN, &format!("tensor #{i} name"))?;
            let what = format!("tensor `{name}`");
            let n_dims = r.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format_err(format!("{what} has {n_dims} dimensions (supported: 1 to {MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            let pos = r.r.pos();
            let type_id = r.u32(&what)?;
            let ggml_type = GgmlType::from_id(type_id)
                .map_err(|_| format_err(format!("{what} at offset {pos}: unknown ggml tensor type id {type_id}")))?;
            let rel_offset = r.u64(&what)?;

            if let Some(d) = dims.iter().position(|&d| d == 0) {
                return Err(format_err(format!("{what} has a zero dimension (ne[{d}] = 0) in {dims:?}")));
            }
            let n_elems = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| format_err(format!("{what}: element count of {dims:?} overflows")))?;
            let bs = ggml_type.block_size();
            if dims[0] % bs != 0 {
                return Err(format_err(format!(
                    "{what}: innermost dimension {} is not a multiple of the {ggml_type} block size {bs}",
                    dims[0]
                )));
            }
            let n_bytes = (n_elems / bs)
                .checked_mul(ggml_type.type_size())
                .ok_or_else(|| format_err(format!("{what}: byte size overflows")))?;
            if rel_offset % alignment != 0 {
                return Err(format_err(format!(
                    "{what}: offset {rel_offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), raws.len()).is_some() {
                return Err(format_err(format!("duplicate tensor name `{name}`")));
            }
            raws.push(Raw { name, dims, ggml_type, rel_offset, n_bytes });
        }

        let header_end = r.r.pos();
        let data_offset =
            header_end.checked_next_multiple_of(alignment).ok_or_else(|| format_err("data offset overflows"))?;
        let data_len = file_len.saturating_sub(data_offset);
        let mut tensors = Vec::with_capacity(raws.len());
        for t in raws {
            let in_range = t.rel_offset.checked_add(t.n_bytes).is_some_and(|end| end <= data_len);
            if !in_range || data_offset > file_len {
                return Err(format_err(format!(
                    "tensor `{}` ({} bytes at data offset {}) extends past the end of the file ({file_len} bytes, data \
                     section at {data_offset}); the file is truncated or corrupt",
                    t.name, t.n_bytes, t.rel_offset
                )));
            }
            tensors.push(GgufTensorInfo {
                name: t.name,
                dims: t.dims,
                ggml_type: t.ggml_type,
                offset: data_offset + t.rel_offset,
                n_bytes: t.n_bytes,
            });
        }
        let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                return Err(format_err(format!("tensors `{}` and `{}` overlap", w[0].name, w[1].name)));
            }
        }

        Ok(Self { version, alignment, data_offset, metadata, meta_index, tensors, tensor_index })
    }

    // ---- metadata ---------------------------------------------------------------------------------------------

    /// All key/values in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| format_err(format!("missing metadata key `{key}`")))
    }

    fn type_err(key: &str, want: &str, v: &MetaValue) -> Error {
        format_err(format!("metadata `{key}` is {:?}, expected {want}", v.value_type()))
    }

    fn get_int<T: TryFrom<i128>>(&self, key: &str, want: &str) -> Result<T> {
        let v = self.require(key)?;
        let i = v.as_i128().ok_or_else(|| Self::type_err(key, want, v))?;
        T::try_from(i).map_err(|_| format_err(format!("metadata `{key}` = {i} does not fit in {want}")))
    }

    /// An integer key as u32 (any integer type whose value fits is accepted).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_int(key, "u32")
    }

    /// An integer key as i32 (any integer type whose value fits is accepted).
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get_int(key, "i32")
    }

    /// An integer key as u64 (any integer type whose value fits is accepted).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_int(key, "u64")
    }

    /// An integer key as i64 (any integer type whose value fits is accepted).
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_int(key, "i64")
    }

    /// A float key (F32, or F64 narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::type_err(key, "f32", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            MetaValue::Bool(b) => Ok(*b),
            v => Err(Self::type_err(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::type_err(key, "string", v))
    }

    fn get_array(&self, key: &str, want: &str) -> Result<&[MetaValue]> {
        match self.require(key)? {
            MetaValue::Array(_, items) => Ok(items),
            v => Err(Self::type_err(key, want, v)),
        }
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key, "array of strings")?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| Self::type_err(key, "array of strings", v)))
            .collect()
    }

    /// An array of floats (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.get_array(key, "array of f32")?
            .iter()
            .map(|v| v.as_f32().ok_or_else(|| Self::type_err(key, "array of f32", v)))
            .collect()
    }

    /// An array of integers as i64 (e.g. `tokenizer.ggml.token_type`); u64 values above i64::MAX are an error.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        self.get_array(key, "array of integers")?
            .iter()
            .map(|v| {
                v.as_i128()
                    .and_then(|i| i64::try_from(i).ok())
                    .ok_or_else(|| Self::type_err(key, "array of integers", v))
            })
            .collect()
    }

    // ---- tensors ----------------------------------------------------------------------------------------------

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn require_tensor(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })
    }

    /// The raw ggml bytes of one tensor, read from `src` (the source this header was parsed from). Errors with
    /// [`Error::UnsupportedDtype`] for tensor types the runtime cannot use.
    pub fn tensor_bytes(&self, src: &dyn WeightSource, name: &str) -> Result<Vec<u8>> {
        let t = self.require_tensor(name)?;
        t.dtype()?;
        src.read_at(t.offset, t.n_bytes)
    }

    /// `len` bytes of one tensor from `offset` (relative to the tensor's start; checked against its size).
    pub fn tensor_bytes_range(&self, src: &dyn WeightSource, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let t = self.require_tensor(name)?;
        t.dtype()?;
        crate::loader::source::check_range(t.n_bytes, offset, len)?;
        src.read_at(t.offset + offset, len)
    }

    /// One tensor decoded to f32 (in ggml order: `dims[0]` fastest).
    pub fn tensor_f32(&self, src: &dyn WeightSource, name: &str) -> Result<Vec<f32>> {
        let t = self.require_tensor(name)?;
        let dtype = t.dtype()?;
        let n = usize::try_from(t.n_elements()).map_err(|_| Error::BadTensor {
            name: name.into(),
            detail: "too many elements for this platform".into(),
        })?;
        let bytes = src.read_at(t.offset, t.n_bytes)?;
        quant::dequantize(dtype, &bytes, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF writer for tests.
    struct W(Vec<u8>);
    impl W {
        fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
            let mut w = W(b"GGUF".to_vec());
            w.0.extend(version.to_le_bytes());
            w.0.extend(n_tensors.to_le_bytes());
            w.0.extend(n_kv.to_le_bytes());
            w
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.0.extend((s.len() as u64).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, off: u64) -> &mut Self {
            self.str(name).u32(dims.len() as u32);
            for &d in dims {
                self.u64(d);
            }
            self.u32(ty).u64(off)
        }
        fn pad(&mut self, align: usize) -> &mut Self {
            while self.0.len() % align != 0 {
                self.0.push(0);
            }
            self
        }
    }

    fn is_format_err(r: Result<Gguf>) -> String {
        match r {
            Err(Error::Format { format: "GGUF", detail }) => detail,
            other => panic!("expected a GGUF format error, got {other:?}"),
        }
    }

    #[test]
    fn parses_minimal_file() {
        let mut w = W::new(3, 2, 2);
        w.str("a.u32").u32(4).u32(7);
        w.str("a.arr").u32(9).u32(8).u64(2).str("x").str("yz");
        w.tensor("t.f32", &[4, 2], 0, 0).tensor("t.q8", &[32], 8, 32).pad(32);
        let data: Vec<f32> = (0..8).map(|i| i as f32).collect();
        w.0.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        w.pad(32);
        w.0.extend(quant::quantize_q8_0(&[127.0; 32]).unwrap());
        let g = Gguf::parse(&w.0).unwrap();
        assert_eq!(g.get_u32("a.u32").unwrap(), 7);
        assert_eq!(g.get_str_array("a.arr").unwrap(), vec!["x", "yz"]);
        assert_eq!(g.tensor("t.f32").unwrap().shape(), vec![2, 4]);
        assert_eq!(g.tensor_f32(&w.0, "t.f32").unwrap(), data);
        assert_eq!(g.tensor_f32(&w.0, "t.q8").unwrap(), vec![127.0; 32]);
        assert!(matches!(g.tensor_bytes(&w.0, "nope"), Err(Error::MissingTensor { .. })));
        assert!(g.get_str("a.u32").is_err());
        assert!(g.get_u32("missing").is_err());
    }

    #[test]
    fn rejects_hostile_headers() {
        // Huge string length: must not allocate.
        let mut w = W::new(3, 0, 1);
        w.u64(1 << 60);
        w.0.extend([0u8; 32]);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("claims"));
        // Huge counts.
        let w = W::new(3, u64::MAX, 0);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("tensor count"));
        let w = W::new(3, 0, u64::MAX);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("metadata count"));
        // Huge array.
        let mut w = W::new(3, 0, 1);
        w.str("k").u32(9).u32(4).u64(1 << 61);
        w.0.extend([0u8; 32]);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("array"));
        // Deeply nested arrays.
        let mut w = W::new(3, 0, 1);
        w.str("k").u32(9);
        for _ in 0..10 {
            w.u32(9).u64(1);
        }
        w.0.extend([0u8; 64]);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("nested"));
        // Versions and magic.
        assert!(is_format_err(Gguf::parse(&W::new(1, 0, 0).0)).contains("v1"));
        assert!(is_format_err(Gguf::parse(&W::new(3u32.swap_bytes(), 0, 0).0)).contains("big-endian"));
        assert!(is_format_err(Gguf::parse(&W::new(9, 0, 0).0)).contains("version"));
        let mut bad = W::new(3, 0, 0).0;
        bad[0] = b'X';
        assert!(is_format_err(Gguf::parse(&bad)).contains("magic"));
        assert!(is_format_err(Gguf::parse(&Vec::new())).contains("truncated"));
    }

    #[test]
    fn rejects_bad_tensors() {
        let cases: &[(&[u64], u32, u64, &str)] = &[
            (&[0, 4], 0, 0, "zero dimension"),
            (&[1 << 32, 1 << 32], 0, 0, "overflows"),
            (&[u64::MAX], 0, 0, "overflows"),
            (&[1 << 40], 0, 0, "past the end"),
            (&[4], 0, u64::MAX - 31, "past the end"),
            (&[4], 0, 7, "alignment"),
            (&[33], 8, 0, "block size"),
            (&[4], 99, 0, "unknown ggml tensor type"),
            (&[1, 1, 1, 1, 1], 0, 0, "dimensions"),
        ];
        for &(dims, ty, off, needle) in cases {
            let mut w = W::new(3, 1, 0);
            w.tensor("t", dims, ty, off).pad(32);
            w.0.extend([0u8; 64]);
            let msg = is_format_err(Gguf::parse(&w.0));
            assert!(msg.contains(needle), "{dims:?} ty {ty} off {off}: {msg}");
        }
        // Overlap and duplicates.
        let mut w = W::new(3, 2, 0);
        w.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32).pad(32);
        w.0.extend([0u8; 128]);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("overlap"));
        let mut w = W::new(3, 2, 0);
        w.tensor("a", &[4], 0, 0).tensor("a", &[4], 0, 32).pad(32);
        w.0.extend([0u8; 128]);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("duplicate"));
        // Unsupported but known type parses, and reading it names the type.
        let mut w = W::new(3, 1, 0);
        w.tensor("k", &[256], 12, 0).pad(32);
        w.0.extend([0u8; 144]);
        let g = Gguf::parse(&w.0).unwrap();
        match g.tensor_bytes(&w.0, "k") {
            Err(Error::UnsupportedDtype { dtype, .. }) => {
                assert!(dtype.contains("Q4_K"), "{dtype}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alignment_key_is_validated() {
        let mut w = W::new(3, 0, 1);
        w.str(KEY_ALIGNMENT).u32(4).u32(48);
        assert!(is_format_err(Gguf::parse(&w.0)).contains("power-of-two"));
        let mut w = W::new(3, 1, 1);
        w.str(KEY_ALIGNMENT).u32(4).u32(64);
        w.tensor("t", &[4], 0, 0).pad(64);
        w.0.extend([0u8; 16]);
        let g = Gguf::parse(&w.0).unwrap();
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_offset % 64, 0);
    }
}
