//! Byte sources for the loader: the [`WeightSource`] trait and its in-memory, file and browser implementations,
//! the runtime [`DType`] of weights, and the chunked header reader the parsers share.
//! Depends on nothing but `crate::error`, so the fuzz crate (fuzz/) can compile it on its own.

use crate::error::{Error, Result};

/// Random-access bytes: a file, an in-memory buffer, a browser `Uint8Array`.
///
/// Object-safe and synchronous; implementations need not be `Send`/`Sync` (a JS object is neither).
pub trait WeightSource {
    /// Total size in bytes.
    fn len(&self) -> u64;

    /// True when the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`; errors (never short-reads) when that range
    /// is not inside the source.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Reads `len` bytes at `offset`. The range is checked against [`len`](Self::len) before allocating.
    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_range(self.len(), offset, len)?;
        let n = usize::try_from(len).map_err(|_| Error::Io(format!("read of {len} bytes does not fit in memory")))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }
}

/// Errors unless `offset..offset + len` lies inside `0..total` (overflow-checked).
pub(crate) fn check_range(total: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::Io(format!("read of {len} bytes at offset {offset} is outside the source of {total} bytes"))),
    }
}

/// An in-memory source: a `Vec<u8>`, a `&[u8]`, an `Arc<[u8]>`… (anything that derefs to bytes).
#[derive(Debug, Clone)]
pub struct MemorySource<B: AsRef<[u8]>>(pub B);

impl<B: AsRef<[u8]>> WeightSource for MemorySource<B> {
    fn len(&self) -> u64 {
        self.0.as_ref().len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = self.0.as_ref();
        check_range(bytes.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize; // fits: offset < bytes.len()
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }
}

/// A borrowed slice (pass `&slice`: a `&&[u8]` coerces to `&dyn WeightSource`).
impl WeightSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        MemorySource(self).read_exact_at(offset, buf)
    }
}

impl WeightSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        MemorySource(self.as_slice()).read_exact_at(offset, buf)
    }
}

/// A local file, read with positioned reads (no shared cursor, so `&self` suffices). Native only.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct FileSource {
    #[cfg(any(unix, windows))]
    file: std::fs::File,
    #[cfg(not(any(unix, windows)))]
    file: std::sync::Mutex<std::fs::File>,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let len = file.metadata().map_err(|e| Error::Io(format!("{}: {e}", path.display())))?.len();
        #[cfg(not(any(unix, windows)))]
        let file = std::sync::Mutex::new(file);
        Ok(Self { file, len })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl WeightSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, buf.len() as u64)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(buf, offset)?;
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::FileExt;
            let mut done = 0usize;
            while done < buf.len() {
                let n = self.file.seek_read(&mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(Error::Io(format!("unexpected end of file at offset {}", offset + done as u64)));
                }
                done += n;
            }
        }
        #[cfg(not(any(unix, windows)))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = self.file.lock().map_err(|_| Error::Io("file lock poisoned".into()))?;
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(buf)?;
        }
        Ok(())
    }
}

/// A browser `Uint8Array` (e.g. from `fetch(...).arrayBuffer()` or a picked `File`), read in slices so that only
/// the bytes of the tensor being loaded are copied into wasm memory.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Clone)]
pub struct JsBytesSource(pub js_sys::Uint8Array);

#[cfg(target_arch = "wasm32")]
impl WeightSource for JsBytesSource {
    fn len(&self) -> u64 {
        self.0.length() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len(), offset, buf.len() as u64)?;
        // Both fit in u32: the array's length is a u32.
        let start = offset as u32;
        self.0.subarray(start, start + buf.len() as u32).copy_to(buf);
        Ok(())
    }
}

/// The element types our kernels consume, shared by both file formats. Quantized types are ggml blocks of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// ggml `block_q8_0`: f16 `d`, 32 × i8; value = q·d.
    Q8_0,
    /// ggml `block_q4_0`: f16 `d`, 16 bytes of nibbles; value = (q − 8)·d.
    Q4_0,
    /// ggml `block_q4_1`: f16 `d`, f16 `m`, 16 bytes of nibbles; value = q·d + m.
    Q4_1,
}

impl DType {
    /// Elements per block (1 for plain float types).
    pub const fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => 32,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
        }
    }

    /// Bytes taken by `n` elements, or `None` when `n` is not a whole number of blocks or the size overflows.
    pub fn n_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if n % bs != 0 {
            return None;
        }
        (n / bs).checked_mul(self.block_bytes() as u64)
    }

    /// True for the ggml block formats.
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// The ggml / GGUF name (`"Q4_0"`, `"F16"`…).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A forward-only reader over a [`WeightSource`] that fetches the header in chunks (not byte by byte, not the
/// whole file). Used by the GGUF parser.
pub(crate) struct ChunkReader<'a> {
    src: &'a dyn WeightSource,
    len: u64,
    /// Absolute position of the next byte to hand out.
    pos: u64,
    buf: Vec<u8>,
    /// Absolute position of `buf[0]`.
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    const CHUNK: u64 = 64 * 1024;

    pub(crate) fn new(src: &'a dyn WeightSource) -> Self {
        Self { src, len: src.len(), pos: 0, buf: Vec::new(), buf_start: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Takes the next `n` bytes, or `None` when fewer than `n` remain (the caller turns that into its format's
    /// error). Callers bound `n` by [`remaining`](Self::remaining) first, so nothing absurd is allocated.
    pub(crate) fn take(&mut self, n: u64) -> Result<Option<&[u8]>> {
        if n > self.remaining() {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + n > buf_end {
            // Refill: at least a chunk, at most what is left of the source.
            let want = n.max(Self::CHUNK).min(self.remaining());
            self.buf.resize(want as usize, 0);
            self.src.read_exact_at(self.pos, &mut self.buf)?;
            self.buf_start = self.pos;
        }
        let start = (self.pos - self.buf_start) as usize;
        self.pos += n;
        Ok(Some(&self.buf[start..start + n as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_bounds() {
        let src = MemorySource(vec![1u8, 2, 3, 4]);
        assert_eq!(src.read_at(1, 2).unwrap(), vec![2, 3]);
        assert_eq!(src.read_at(4, 0).unwrap(), Vec::<u8>::new());
        assert!(src.read_at(3, 2).is_err());
        assert!(src.read_at(u64::MAX, 2).is_err());
        assert!(src.read_at(0, u64::MAX).is_err());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn file_source_reads_positioned() {
        let path = std::env::temp_dir().join(format!("webvlm-loader-{}.bin", std::process::id()));
        std::fs::write(&path, b"hello world").unwrap();
        let src = FileSource::open(&path).unwrap();
        assert_eq!(src.len(), 11);
        assert_eq!(src.read_at(6, 5).unwrap(), b"world");
        assert_eq!(src.read_at(0, 5).unwrap(), b"hello");
        assert!(src.read_at(7, 5).is_err());
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn chunk_reader_crosses_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = ChunkReader::new(&data);
        let mut pos = 0usize;
        for step in [1usize, 7, 65_536, 3, 100_000, 20_000] {
            let got = r.take(step as u64).unwrap().unwrap().to_vec();
            assert_eq!(got, data[pos..pos + step]);
            pos += step;
        }
        assert!(r.take(data.len() as u64).unwrap().is_none());
        assert_eq!(r.pos() as usize, pos);
    }
}
