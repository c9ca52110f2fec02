// Elementwise kernels over flat f32 arrays.
// Unary (default):  out[i] = f(a[i])                    bindings: 1 a (n), 2 out (n)
// BINARY:           out[i] = f(a[i], b[i % b_len])      bindings: 1 a (n), 2 b (b_len), 3 out (n)
// b_len < n broadcasts b over rows (a bias or a per-channel scale of length cols).
// The SwiGLU gate is binary: out = silu(a) * b with a = gate, b = up (same length); swiglu_halves is unary over
// rows [gate | up] of 2 * b_len values: out[r, j] = silu(a[r, j]) * a[r, b_len + j] (n = rows * b_len).

override WG: u32 = 256u;

struct Params {
    n: u32,
    b_len: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
#ifdef BINARY
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
#endif

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

#include activation

#ifdef BINARY
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i] + b[i % p.b_len];
}

@compute @workgroup_size(WG)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i] * b[i % p.b_len];
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = silu(a[i]) * b[i % p.b_len];
}
#else
@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = a[i] * p.alpha;
}

@compute @workgroup_size(WG)
fn gelu_tanh_fn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = gelu_tanh(a[i]);
}

@compute @workgroup_size(WG)
fn gelu_erf_fn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = gelu_erf(a[i]);
}

@compute @workgroup_size(WG)
fn silu_fn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[i] = silu(a[i]);
}

@compute @workgroup_size(WG)
fn swiglu_halves(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let j = i % p.b_len;
    let g = 2u * (i - j) + j; // row r = i / b_len: element j of its gate half at 2 r b_len + j
    out[i] = silu(a[g]) * a[g + p.b_len];
}
#endif
