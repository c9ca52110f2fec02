//! Just enough of the ONNX format to take the weights out of a model file: the graph's initializers (name, dims,
//! dtype, data) and its nodes (name, op type, inputs, outputs), so a converter can name unnamed initializers by
//! the node that consumes them. No operator is executed.
//!
//! ONNX files are protocol buffers (`onnx.proto`, <https://github.com/onnx/onnx/blob/main/onnx/onnx.proto>):
//! `ModelProto.graph` = field 7; `GraphProto.node` = 1, `.initializer` = 5; `NodeProto.input` = 1, `.output` = 2,
//! `.name` = 3, `.op_type` = 4; `TensorProto.dims` = 1, `.data_type` = 2, `.float_data` = 4, `.name` = 8,
//! `.raw_data` = 9, `.data_location` = 14. Only the wire format is decoded here (varint, 64-bit, length-delimited,
//! 32-bit); unknown fields are skipped. Input is hostile: every length is checked against the bytes left, and
//! tensor sizes against their data, before anything is allocated.

use crate::error::{Error, Result};

fn bad(detail: impl Into<String>) -> Error {
    Error::Format { format: "ONNX", detail: detail.into() }
}

/// One decoded protobuf field.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed, // 32- or 64-bit values: not needed by anything read here
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(bad("varint longer than 64 bits"));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(bad(format!("a field of {n} bytes runs past the end ({left} left)")));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// The next `(field number, value)`, or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed
            }
            w => return Err(bad(format!("unsupported wire type {w} (field {num})"))),
        };
        Ok(Some((num, f)))
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// An ONNX `TensorProto` data type.
pub const ONNX_FLOAT: i32 = 1;

/// A graph initializer: its bytes stay in the model file's buffer.
pub struct Initializer<'a> {
    pub name: String,
    pub dims: Vec<usize>,
    pub data_type: i32,
    raw: Option<&'a [u8]>,
    float_data: Option<&'a [u8]>,
}

impl Initializer<'_> {
    pub fn n_elements(&self) -> Result<usize> {
        self.dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(format!("{}: dims overflow", self.name)))
    }

    /// The values of a float32 tensor (from `raw_data` or packed `float_data`), checked against its dims.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        if self.data_type != ONNX_FLOAT {
            return Err(Error::UnsupportedDtype {
                op: "ONNX initializer (only float32 is read)",
                dtype: format!("`{}`: data_type {}", self.name, self.data_type),
            });
        }
        let n = self.n_elements()?;
        let bytes = self
            .raw
            .or(self.float_data)
            .ok_or_else(|| bad(format!("`{}` has no inline data (external data is not supported)", self.name)))?;
        if n.checked_mul(4) != Some(bytes.len()) {
            return Err(bad(format!(
                "`{}`: {} data bytes for dims {:?} ({} floats)",
                self.name,
                bytes.len(),
                self.dims,
                n
            )));
        }
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

/// A graph node (operator instance).
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// The parts of an ONNX model's main graph read here.
pub struct OnnxGraph<'a> {
    pub initializers: Vec<Initializer<'a>>,
    pub nodes: Vec<Node>,
}

impl<'a> OnnxGraph<'a> {
    /// Parses a whole `.onnx` file (a serialized `ModelProto`).
    pub fn parse(model: &'a [u8]) -> Result<Self> {
        let mut graph = None;
        let mut r = Reader::new(model);
        while let Some((num, f)) = r.next()? {
            if let (7, Field::Bytes(b)) = (num, f) {
                graph = Some(b);
            }
        }
        let graph = graph.ok_or_else(|| bad("no graph (is this an ONNX model file?)"))?;
        let mut out = OnnxGraph { initializers: Vec::new(), nodes: Vec::new() };
        let mut r = Reader::new(graph);
        while let Some((num, f)) = r.next()? {
            match (num, f) {
                (1, Field::Bytes(b)) => out.nodes.push(parse_node(b)?),
                (5, Field::Bytes(b)) => out.initializers.push(parse_tensor(b)?),
                _ => {}
            }
        }
        Ok(out)
    }

    pub fn initializer(&self, name: &str) -> Option<&Initializer<'a>> {
        self.initializers.iter().find(|t| t.name == name)
    }

    /// The nodes that take `value` as an input.
    pub fn consumers(&self, value: &str) -> Vec<&Node> {
        self.nodes.iter().filter(|n| n.inputs.iter().any(|i| i == value)).collect()
    }
}

fn parse_node(b: &[u8]) -> Result<Node> {
    let mut n = Node { name: String::new(), op_type: String::new(), inputs: Vec::new(), outputs: Vec::new() };
    let mut r = Reader::new(b);
    while let Some((num, f)) = r.next()? {
        if let Field::Bytes(s) = f {
            match num {
                1 => n.inputs.push(utf8(s, "node input")?),
                2 => n.outputs.push(utf8(s, "node output")?),
                3 => n.name = utf8(s, "node name")?,
                4 => n.op_type = utf8(s, "op_type")?,
                _ => {}
            }
        }
    }
    Ok(n)
}

fn parse_tensor(b: &[u8]) -> Result<Initializer<'_>> {
    let mut t = Initializer { name: String::new(), dims: Vec::new(), data_type: 0, raw: None, float_data: None };
    let mut external = false;
    let mut r = Reader::new(b);
    while let Some((num, f)) = r.next()? {
        match (num, f) {
            (1, Field::Varint(d)) => t.dims.push(dim(d)?),
            (1, Field::Bytes(packed)) => {
                let mut p = Reader::new(packed);
                while p.pos < packed.len() {
                    t.dims.push(dim(p.varint()?)?);
                }
            }
            (2, Field::Varint(v)) => t.data_type = i32::try_from(v).map_err(|_| bad("data_type out of range"))?,
            (4, Field::Bytes(s)) => t.float_data = Some(s),
            (8, Field::Bytes(s)) => t.name = utf8(s, "tensor name")?,
            (9, Field::Bytes(s)) => t.raw = Some(s),
            (14, Field::Varint(v)) => external = v == 1,
            _ => {}
        }
    }
    if t.dims.len() > 8 {
        return Err(bad(format!("`{}` has {} dims", t.name, t.dims.len())));
    }
    if external {
        t.raw = None;
        t.float_data = None;
    }
    Ok(t)
}

fn dim(d: u64) -> Result<usize> {
    // dims are int64; a negative one arrives as a huge u64
    if d > (1u64 << 40) {
        return Err(bad(format!("tensor dim {d} is out of range")));
    }
    Ok(d as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes_field(num: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn varint_field(num: u64, v: u64, out: &mut Vec<u8>) {
        varint(num << 3, out);
        varint(v, out);
    }

    fn model(tensor: &[u8], node: &[u8]) -> Vec<u8> {
        let mut g = Vec::new();
        bytes_field(1, node, &mut g);
        bytes_field(5, tensor, &mut g);
        let mut m = Vec::new();
        varint_field(1, 8, &mut m); // ir_version
        bytes_field(7, &g, &mut m);
        m
    }

    #[test]
    fn reads_initializers_and_nodes() {
        let mut t = Vec::new();
        varint_field(1, 2, &mut t);
        varint_field(1, 3, &mut t); // unpacked dims
        varint_field(2, 1, &mut t);
        bytes_field(8, b"w", &mut t);
        let vals: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
        bytes_field(9, &vals, &mut t);
        let mut n = Vec::new();
        bytes_field(1, b"x", &mut n);
        bytes_field(1, b"w", &mut n);
        bytes_field(2, b"y", &mut n);
        bytes_field(3, b"/mm/MatMul", &mut n);
        bytes_field(4, b"MatMul", &mut n);
        let m = model(&t, &n);
        let g = OnnxGraph::parse(&m).unwrap();
        let w = g.initializer("w").unwrap();
        assert_eq!(w.dims, vec![2, 3]);
        assert_eq!(w.to_f32().unwrap(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        let users = g.consumers("w");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "/mm/MatMul");
        assert_eq!(users[0].op_type, "MatMul");
        assert_eq!(users[0].outputs, vec!["y"]);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        // every truncation of a valid model is an error or a smaller valid graph, never a panic
        let mut t = Vec::new();
        varint_field(1, 4, &mut t);
        varint_field(2, 1, &mut t);
        bytes_field(8, b"w", &mut t);
        bytes_field(9, &[0u8; 16], &mut t);
        let m = model(&t, b"");
        for cut in 0..m.len() {
            let _ = OnnxGraph::parse(&m[..cut]);
        }
        // data size does not match dims
        let mut t2 = Vec::new();
        varint_field(1, 5, &mut t2);
        varint_field(2, 1, &mut t2);
        bytes_field(8, b"w", &mut t2);
        bytes_field(9, &[0u8; 16], &mut t2);
        let m2 = model(&t2, b"");
        let g = OnnxGraph::parse(&m2).unwrap();
        assert!(g.initializer("w").unwrap().to_f32().is_err());
        // a length prefix past the end
        let mut m3 = Vec::new();
        varint(7 << 3 | 2, &mut m3);
        varint(1 << 40, &mut m3);
        assert!(OnnxGraph::parse(&m3).is_err());
        // a group (wire type 3) and an over-long varint
        assert!(OnnxGraph::parse(&[7 << 3 | 3]).is_err());
        assert!(OnnxGraph::parse(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        // not a model at all
        assert!(OnnxGraph::parse(b"").is_err());
        // an int64 tensor is refused by to_f32
        let mut t4 = Vec::new();
        varint_field(1, 1, &mut t4);
        varint_field(2, 7, &mut t4);
        bytes_field(8, b"i", &mut t4);
        bytes_field(9, &[0u8; 8], &mut t4);
        let m4 = model(&t4, b"");
        assert!(OnnxGraph::parse(&m4).unwrap().initializer("i").unwrap().to_f32().is_err());
    }
}
