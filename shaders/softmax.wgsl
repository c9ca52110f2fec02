// Row softmax, numerically stable (max-subtracted), one workgroup per row.
// ROWS (CPU adapters): one invocation per row, no workgroup memory and no barriers (each barrier splits a shader
// into resumable pieces on lavapipe / SwiftShader); VEC4 with it where cols % 4 == 0.
// bindings: 1 x (rows, cols), 2 out (rows, cols); IN_PLACE: 1 x, overwritten with the output

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef VEC4
// ROWS with cols % 4 == 0: the row as vec4s (CPU adapters pay per load, not per byte)
alias E = vec4<f32>;
#else
alias E = f32;
#endif
#ifdef IN_PLACE
// the output over x (every element is read before it is written, by the invocation that writes it)
@group(0) @binding(1) var<storage, read_write> x: array<E>;
fn put(i: u32, v: E) { x[i] = v; }
fn got(i: u32) -> E { return x[i]; }
#else
@group(0) @binding(1) var<storage, read> x: array<E>;
@group(0) @binding(2) var<storage, read_write> out: array<E>;
fn put(i: u32, v: E) { out[i] = v; }
fn got(i: u32) -> E { return out[i]; }
#endif

#ifdef ROWS
// pass 1 the max, pass 2 out = exp(x - max) and its sum, pass 3 out *= 1 / sum: one exp per element (an online
// max + rescaled sum needs three, and exp is a long polynomial on CPU adapters)
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (row >= p.rows) { return; }
#ifdef VEC4
    let n = p.cols / 4u;
    let base = row * n;
    var m4 = vec4<f32>(-3.4e38);
    for (var i = 0u; i < n; i++) { m4 = max(m4, x[base + i]); }
    let m = vec4<f32>(max(max(m4.x, m4.y), max(m4.z, m4.w)));
    var s4 = vec4<f32>(0.0);
    for (var i = 0u; i < n; i++) {
        let e = exp(x[base + i] - m);
        put(base + i, e);
        s4 += e;
    }
    let inv = 1.0 / ((s4.x + s4.y) + (s4.z + s4.w));
#else
    let n = p.cols;
    let base = row * n;
    var m = -3.4e38;
    for (var i = 0u; i < n; i++) { m = max(m, x[base + i]); }
    var s = 0.0;
    for (var i = 0u; i < n; i++) {
        let e = exp(x[base + i] - m);
        put(base + i, e);
        s += e;
    }
    let inv = 1.0 / s;
#endif
    for (var i = 0u; i < n; i++) {
        put(base + i, got(base + i) * inv);
    }
}
#else
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.cols;
    // online max + rescaled sum in one pass per invocation
    var m = -3.4e38;
    var s = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        let v = x[base + i];
        let nm = max(m, v);
        s = s * exp(m - nm) + exp(v - nm);
        m = nm;
    }
    red[lid] = m;
    workgroupBarrier();
    var k = WG / 2u;
    loop {
        if (k == 0u) { break; }
        if (lid < k) { red[lid] = max(red[lid], red[lid + k]); }
        workgroupBarrier();
        k = k / 2u;
    }
    let gm = red[0];
    workgroupBarrier();
    red[lid] = s * exp(m - gm);
    workgroupBarrier();
    k = WG / 2u;
    loop {
        if (k == 0u) { break; }
        if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
        workgroupBarrier();
        k = k / 2u;
    }
    let inv = 1.0 / red[0];
    for (var i = lid; i < p.cols; i += WG) {
        put(base + i, exp(x[base + i] - gm) * inv);
    }
}
#endif
