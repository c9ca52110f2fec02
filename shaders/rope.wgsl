// Rotary position embedding, applied to x (T, H, D) at positions pos0 + t, with cos/sin tables computed on the
// CPU in f64 (cos_sin: (max_pos, D/2) cos values, then (max_pos, D/2) sin values) so every rope-scaling
// variant (linear, llama3, ...) is only a different table, and large angles keep full precision.
// Layouts: default = Hugging Face rotate-half (pairs i, i + D/2); INTERLEAVED = GGUF/Meta (pairs 2i, 2i+1).
// One invocation per pair. bindings: 1 x, 2 cos_sin, 3 out (T, H, D)

override WG: u32 = 256u;

struct Params {
    t: u32,
    heads: u32,
    dim: u32,
    pos0: u32,
    max_pos: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_sin: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let half_d = p.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (idx >= p.t * p.heads * half_d) { return; }
    let i = idx % half_d;
    let th = idx / half_d;        // t * heads + h
    let t = th / p.heads;
    let pos = p.pos0 + t;
    let c = cos_sin[pos * half_d + i];
    let s = cos_sin[p.max_pos * half_d + pos * half_d + i];
    let base = th * p.dim;
#ifdef INTERLEAVED
    let a = base + 2u * i;
    let b = a + 1u;
#else
    let a = base + i;
    let b = a + half_d;
#endif
    let x0 = x[a];
    let x1 = x[b];
    out[a] = x0 * c - x1 * s;
    out[b] = x1 * c + x0 * s;
}
