// GEMV for decode: y[m, n] = sum_k x[m, k] * w[n, k] + bias[n] for MR <= 4 rows of x, reading every weight
// byte once (each weight word is decoded once and dotted with all MR rows of x).
// One entry point per weight dtype: gemv_f32, gemv_f16, gemv_bf16, gemv_q8_0, gemv_q4_0, gemv_q4_1.
// SWIGLU: the weight is an MLP's [gate; up] stacked (2N rows, N = p.n outputs) and
//   y[m, n] = silu(x_m · gate_n + bias[n]) * (x_m · up_n + bias[N + n]):
// the gate and up projections and the SwiGLU product in one pass over x, with no gate/up tensors in memory.
// ROPE (one row of x): the weight is attention's [q; k; v] stacked (HEADS + 2 KV_HEADS heads of HEAD_DIM rows);
//   q is rotated into y (HEADS · HEAD_DIM), k rotated and v as it is into the KV caches at row p.pos: what
//   rope.wgsl's `qkv` entry does, without its dispatch and the qkv round trip through memory. An invocation (or
//   a subgroup) computes both rows of a rotated pair (INTERLEAVED: rows 2i, 2i + 1 of a head; else rotate-half:
//   i, i + HEAD_DIM / 2).
// NORM (one row of x): the RMSNorm before the product as its prologue, x·rsqrt(mean(x²) + eps)·g read in place
//   of x: each subgroup sums x² itself (K is a model's hidden size; no barrier), so a decoder layer's norms take
//   no dispatch of their own.
// RESIDUAL: y = x·wᵀ + bias + res (res laid out like y): the residual add in the store.
//
// Work split (measured on lavapipe; see docs/benchmarks.md):
// - default: one invocation per output row, no barriers and no workgroup memory (barriers are expensive on
//   lavapipe and SwiftShader; a shared-memory tree reduction was slower than this);
// - SUBGROUPS: one subgroup per output row (per quad of rows with one x row, RPT = 4: each x chunk a lane loads
//   is dotted with 4 rows, one reduction serves 4 outputs; H200 Q8_0 GEMV 2.6 x); its lanes read consecutive
//   16-byte chunks of the rows (coalesced) and combine with subgroupAdd, still without barriers. Rows of a
//   workgroup are shared out over its subgroups, so any subgroup size works.
// - SG_X (with SG4 or SG8, the adapter's one subgroup size; one x row, RPT = 4, quantized weights): the default
//   kernel, but each block of 8 x chunks is loaded once per subgroup and shared by subgroupBroadcast. CPU adapters
//   emulate every lane's load as a gather even when all lanes read one address, and x's loads outnumbered the
//   weight's (8 x chunks against 4 weight chunks per block of 4 rows); the trick of matmul_direct.wgsl. Not for
//   f32 / f16 weights (one x chunk per weight chunk): blocks of 8 shared chunks spilled on SwiftShader (f32 GEMV
//   1.5 x slower), blocks of 4 gained nothing on lavapipe.
//
// - WORDS (with SUBGROUPS, one x row, quantized weights; GPUs): the subgroup's lanes over consecutive u32 words
//   of the quad's rows rather than a lane per block (see words4_dot).
//
// Layouts (src/gpu/tensor.rs): all weights are read as vec4<u32> words.
//   f32: K % 4 == 0, 4 elements per vec4.   f16, bf16: K % 8 == 0, 8 halves per vec4 (element 2i in the low half).
//   q8_0: 2 vec4 of qs per block (32 x i8). q4_0 / q4_1: 1 vec4 of qs per block. Scales at word p.scales_offset
//   (a multiple of 4: qs sections are whole vec4s), read through `ws`: q8_0 / q4_0 two f16 `d` per word, q4_1 one
//   word (d | m << 16).

#ifdef SUBGROUP_OPS
#enable subgroups
#endif
#ifdef SG4
const HI = 0u; // the lane holding chunk 4 in the vector it is broadcast from
#endif
#ifdef SG8
const HI = 4u;
#endif
override WG: u32 = 64u;   // invocations per workgroup
override ROWS: u32 = 64u; // output rows per workgroup (== WG without subgroups)
override MR: u32 = 1u;    // rows of x, 1..4
override RPT: u32 = 1u;   // output rows per invocation without subgroups: 4 (only with MR == 1) or 1

struct Params {
    m: u32,
    n: u32,
    k: u32,
    scales_offset: u32, // in u32 words
    has_bias: u32,
    pos: u32,     // ROPE: the token's position (its KV cache row)
    max_pos: u32, // ROPE: positions in the cos/sin table
    eps: f32,     // NORM
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // (MR, K); read through xv where one row
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;   // (N, K) in the dtype's layout
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // (N); x again when there is no bias
@group(0) @binding(4) var<storage, read_write> y: array<f32>;   // (MR, N)
// The weight buffer again, as words, for the scales: the buffer need not be a whole number of vec4s, and the
// vec4 view's arrayLength rounds down, so its last scale words are out of bounds there (robust access then
// returns other values: seen on SwiftShader).
@group(0) @binding(5) var<storage, read> ws: array<u32>;
#ifdef ROPE
override HEADS: u32 = 1u;
override KV_HEADS: u32 = 1u;
override HEAD_DIM: u32 = 64u;
@group(0) @binding(6) var<storage, read> cos_sin: array<f32>;           // rope.wgsl's table: (2, max_pos, D/2)
@group(0) @binding(7) var<storage, read_write> k_cache: array<f32>;     // (Tmax, KV_HEADS, HEAD_DIM)
@group(0) @binding(8) var<storage, read_write> v_cache: array<f32>;

// Output rows a and b (a pair of the rotation when they are q or k rows) with values va, vb.
fn store_pair(a: u32, b: u32, va: f32, vb: f32) {
    let qd = HEADS * HEAD_DIM;
    let kd = KV_HEADS * HEAD_DIM;
    let half = HEAD_DIM / 2u;
    if (a >= qd + kd) {
        v_cache[p.pos * kd + a - qd - kd] = va;
        v_cache[p.pos * kd + b - qd - kd] = vb;
        return;
    }
#ifdef INTERLEAVED
    let i = (a % HEAD_DIM) / 2u;
#else
    let i = a % HEAD_DIM;
#endif
    let c = cos_sin[p.pos * half + i];
    let sn = cos_sin[(p.max_pos + p.pos) * half + i];
    let ra = va * c - vb * sn;
    let rb = vb * c + va * sn;
    if (a < qd) {
        y[a] = ra;
        y[b] = rb;
    } else {
        k_cache[p.pos * kd + a - qd] = ra;
        k_cache[p.pos * kd + b - qd] = rb;
    }
}

// The 4 rows of invocation `gi` (RPT = 4): two rotated pairs, (x, y) and (z, w) INTERLEAVED, (x, z) and (y, w)
// rotate-half.
fn rope_rows(gi: u32) -> vec4<u32> {
#ifdef INTERLEAVED
    return vec4<u32>(4u * gi) + vec4<u32>(0u, 1u, 2u, 3u);
#else
    let per_head = HEAD_DIM / 4u;
    let b = gi / per_head * HEAD_DIM + 2u * (gi % per_head);
    return vec4<u32>(b) + vec4<u32>(0u, 1u, HEAD_DIM / 2u, HEAD_DIM / 2u + 1u);
#endif
}

#endif

// The optional bindings are numbered after those bound before them: NORM_AT and RES_AT, set by the op (the
// defaults serve validation).
#ifdef NORM
#ifdef NORM_AT
@group(0) @binding({{NORM_AT}}) var<storage, read> norm_w: array<vec4<f32>>; // (K)
#else
@group(0) @binding(9) var<storage, read> norm_w: array<vec4<f32>>;
#endif
var<private> inv_rms: f32;

// 1 / rms(x) from the x chunks lane, lane + stride, ... of each lane of the subgroup.
fn norm_prologue(lane: u32, stride: u32) {
    var s = 0.0;
    for (var i = lane; i < p.k / 4u; i += stride) {
        s += dot(x[i], x[i]);
    }
    inv_rms = inverseSqrt(subgroupAdd(s) / f32(p.k) + p.eps);
}
#endif
#ifdef RESIDUAL
#ifdef RES_AT
@group(0) @binding({{RES_AT}}) var<storage, read> res: array<f32>; // (MR, N)
#else
@group(0) @binding(10) var<storage, read> res: array<f32>;
#endif
#endif

// x chunk i of the first row of x (NORM: normalized).
fn xv(i: u32) -> vec4<f32> {
#ifdef NORM
    return x[i] * inv_rms * norm_w[i];
#else
    return x[i];
#endif
}

#include half

const FMT_F32: u32 = 0u;
const FMT_F16: u32 = 1u;
const FMT_Q8_0: u32 = 2u;
const FMT_Q4_0: u32 = 3u;
const FMT_Q4_1: u32 = 4u;
const FMT_BF16: u32 = 5u;

// Two f16 or bf16 weights of a word (`fmt` FMT_F16 or FMT_BF16, a constant at every call site).
fn halves(fmt: u32, v: u32) -> vec2<f32> {
    if (fmt == FMT_BF16) { return unpack2x16bfloat(v); }
    return unpack2x16float(v);
}

// acc[m] += dot(wv, x[m, 4i .. 4i+4]) for m < MR. MR is an override constant, so the branches fold away.
fn accum(acc: vec4<f32>, wv: vec4<f32>, i: u32, k4: u32) -> vec4<f32> {
    var a = acc;
    a.x += dot(wv, xv(i));
    if (MR > 1u) { a.y += dot(wv, x[k4 + i]); }
    if (MR > 2u) { a.z += dot(wv, x[2u * k4 + i]); }
    if (MR > 3u) { a.w += dot(wv, x[3u * k4 + i]); }
    return a;
}

fn word(i: u32) -> u32 {
    return ws[i];
}

fn i8x4(v: u32) -> vec4<f32> {
    // sign-extend each byte
    return vec4<f32>(vec4<i32>(i32(v << 24u), i32(v << 16u), i32(v << 8u), i32(v)) >> vec4<u32>(24u));
}

// Nibbles as i32 before the float conversion: i32 -> f32 is one instruction on x86 (what lavapipe and
// SwiftShader run on), u32 -> f32 is a multi-instruction sequence. `off` is 8 for Q4_0 (q - 8), 0 for Q4_1.
fn lo4(v: u32, off: i32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>((vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)) - vec4<i32>(off));
}

fn hi4(v: u32, off: i32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>((vec4<u32>(v) >> vec4<u32>(4u, 12u, 20u, 28u)) & vec4<u32>(15u)) - vec4<i32>(off));
}

// Partial dot products of weight row `row` with the MR rows of x over the chunks lane, lane + stride, ...
// (a chunk is 4 f32, 8 f16 or one 32-element block). `fmt` is a constant at every call site.
fn row_dot(fmt: u32, row: u32, lane: u32, stride: u32) -> vec4<f32> {
    let k4 = p.k / 4u;
    var acc = vec4<f32>(0.0);
    if (fmt == FMT_F32) {
        let base = row * k4;
        for (var i = lane; i < k4; i += stride) {
            acc = accum(acc, bitcast<vec4<f32>>(w[base + i]), i, k4);
        }
    } else if (fmt == FMT_F16 || fmt == FMT_BF16) {
        let k8 = p.k / 8u;
        let base = row * k8;
        for (var i = lane; i < k8; i += stride) {
            let q = w[base + i];
            acc = accum(acc, vec4<f32>(halves(fmt, q.x), halves(fmt, q.y)), 2u * i, k4);
            acc = accum(acc, vec4<f32>(halves(fmt, q.z), halves(fmt, q.w)), 2u * i + 1u, k4);
        }
    } else if (fmt == FMT_Q8_0) {
        let bpr = p.k / 32u;
        for (var j = lane; j < bpr; j += stride) {
            let b = row * bpr + j;
            let q0 = w[2u * b];
            let q1 = w[2u * b + 1u];
            let xi = 8u * j;
            var s = accum(vec4<f32>(0.0), i8x4(q0.x), xi, k4);
            s = accum(s, i8x4(q0.y), xi + 1u, k4);
            s = accum(s, i8x4(q0.z), xi + 2u, k4);
            s = accum(s, i8x4(q0.w), xi + 3u, k4);
            s = accum(s, i8x4(q1.x), xi + 4u, k4);
            s = accum(s, i8x4(q1.y), xi + 5u, k4);
            s = accum(s, i8x4(q1.z), xi + 6u, k4);
            s = accum(s, i8x4(q1.w), xi + 7u, k4);
            let ds = unpack2x16float(word(p.scales_offset + b / 2u));
            acc += s * select(ds.x, ds.y, (b & 1u) == 1u);
        }
    } else if (fmt == FMT_Q4_0) {
        let bpr = p.k / 32u;
        for (var j = lane; j < bpr; j += stride) {
            let b = row * bpr + j;
            let q = w[b];
            let xi = 8u * j;
            // word t: low nibbles = elements 4t..4t+3, high nibbles = elements 16+4t..16+4t+3
            var s = accum(vec4<f32>(0.0), lo4(q.x, 8), xi, k4);
            s = accum(s, lo4(q.y, 8), xi + 1u, k4);
            s = accum(s, lo4(q.z, 8), xi + 2u, k4);
            s = accum(s, lo4(q.w, 8), xi + 3u, k4);
            s = accum(s, hi4(q.x, 8), xi + 4u, k4);
            s = accum(s, hi4(q.y, 8), xi + 5u, k4);
            s = accum(s, hi4(q.z, 8), xi + 6u, k4);
            s = accum(s, hi4(q.w, 8), xi + 7u, k4);
            let ds = unpack2x16float(word(p.scales_offset + b / 2u));
            acc += s * select(ds.x, ds.y, (b & 1u) == 1u);
        }
    } else {
        // Q4_1: x = q * d + m, dequantized before the dot (d may be 0, so m cannot be factored through d)
        let bpr = p.k / 32u;
        for (var j = lane; j < bpr; j += stride) {
            let b = row * bpr + j;
            let q = w[b];
            let dm = unpack2x16float(word(p.scales_offset + b));
            let d = vec4<f32>(dm.x);
            let m = vec4<f32>(dm.y);
            let xi = 8u * j;
            acc = accum(acc, fma(lo4(q.x, 0), d, m), xi, k4);
            acc = accum(acc, fma(lo4(q.y, 0), d, m), xi + 1u, k4);
            acc = accum(acc, fma(lo4(q.z, 0), d, m), xi + 2u, k4);
            acc = accum(acc, fma(lo4(q.w, 0), d, m), xi + 3u, k4);
            acc = accum(acc, fma(hi4(q.x, 0), d, m), xi + 4u, k4);
            acc = accum(acc, fma(hi4(q.y, 0), d, m), xi + 5u, k4);
            acc = accum(acc, fma(hi4(q.z, 0), d, m), xi + 6u, k4);
            acc = accum(acc, fma(hi4(q.w, 0), d, m), xi + 7u, k4);
        }
    }
    return acc;
}

fn bias_at(row: u32) -> f32 {
    if (p.has_bias != 0u) { return bias[row]; }
    return 0.0;
}

fn silu4(v: vec4<f32>) -> vec4<f32> {
    return v / (vec4<f32>(1.0) + exp(-v));
}

// The up row's partial dot products for output row `row` (SWIGLU), else nothing.
fn up_dot(fmt: u32, row: u32, lane: u32, stride: u32) -> vec4<f32> {
#ifdef SWIGLU
    return row_dot(fmt, p.n + row, lane, stride);
#else
    return vec4<f32>(0.0);
#endif
}

// y[m, row] for the MR rows of x from the gate (or only) dot products `g` and the up ones `u` (SWIGLU).
fn store(row: u32, g: vec4<f32>, u: vec4<f32>) {
    var v = g + vec4<f32>(bias_at(row));
#ifdef SWIGLU
    v = silu4(v) * (u + vec4<f32>(bias_at(p.n + row)));
#endif
#ifdef RESIDUAL
    for (var m = 0u; m < MR; m++) { v[m] += res[m * p.n + row]; }
#endif
    y[row] = v.x;
    if (MR > 1u) { y[p.n + row] = v.y; }
    if (MR > 2u) { y[2u * p.n + row] = v.z; }
    if (MR > 3u) { y[3u * p.n + row] = v.w; }
}

// ---- MR == 1 without subgroups: RPT = 4 rows per invocation --------------------------------------------------
// On lavapipe / SwiftShader every load is a per-lane gather, and x's loads cost as much as w's; dotting each x
// chunk with 4 weight rows cuts the x loads per weight byte by 4. Rows past N re-read row N-1 and are not stored.

fn f16_dot(fmt: u32, q: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    return dot(vec4<f32>(halves(fmt, q.x), halves(fmt, q.y)), x0)
         + dot(vec4<f32>(halves(fmt, q.z), halves(fmt, q.w)), x1);
}

fn q8_0_blk(b: u32, xs: array<vec4<f32>, 8>) -> f32 {
    let q0 = w[2u * b];
    let q1 = w[2u * b + 1u];
    let s = dot(i8x4(q0.x), xs[0]) + dot(i8x4(q0.y), xs[1]) + dot(i8x4(q0.z), xs[2]) + dot(i8x4(q0.w), xs[3])
          + dot(i8x4(q1.x), xs[4]) + dot(i8x4(q1.y), xs[5]) + dot(i8x4(q1.z), xs[6]) + dot(i8x4(q1.w), xs[7]);
    let ds = unpack2x16float(word(p.scales_offset + b / 2u));
    return s * select(ds.x, ds.y, (b & 1u) == 1u);
}

// Q4 blocks without per-nibble shifts or offsets (this loop is ALU-bound on CPU adapters): a nibble masked in
// place is an exact integer q·2^(8c) (c = byte in the word), so it is dotted with x pre-scaled by 2^-(8c) (exact:
// powers of two), shared by the 4 rows. The offsets are applied per block: Σ(q−8)x = Σqx − 8Σx (Q4_0) and
// Σ(qd + m)x = dΣqx + mΣx (Q4_1). `xs` holds x·(1, 2^-8, 2^-16, 2^-24) for elements 0..15 (low nibbles) and
// 16..31 (high nibbles, shifted down by 4 first).
fn q4_sum(q: vec4<u32>, xs: array<vec4<f32>, 8>) -> f32 {
    let m = vec4<u32>(0xFu, 0xF00u, 0xF0000u, 0xF000000u);
    let lo = vec4<u32>(q.x, q.y, q.z, q.w) & vec4<u32>(0x0F0F0F0Fu);
    let hi = (vec4<u32>(q.x, q.y, q.z, q.w) >> vec4<u32>(4u)) & vec4<u32>(0x0F0F0F0Fu);
    return dot(vec4<f32>(vec4<i32>(vec4<u32>(lo.x) & m)), xs[0]) + dot(vec4<f32>(vec4<i32>(vec4<u32>(lo.y) & m)), xs[1])
         + dot(vec4<f32>(vec4<i32>(vec4<u32>(lo.z) & m)), xs[2]) + dot(vec4<f32>(vec4<i32>(vec4<u32>(lo.w) & m)), xs[3])
         + dot(vec4<f32>(vec4<i32>(vec4<u32>(hi.x) & m)), xs[4]) + dot(vec4<f32>(vec4<i32>(vec4<u32>(hi.y) & m)), xs[5])
         + dot(vec4<f32>(vec4<i32>(vec4<u32>(hi.z) & m)), xs[6]) + dot(vec4<f32>(vec4<i32>(vec4<u32>(hi.w) & m)), xs[7]);
}

fn q4_0_blk(b: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
    let ds = unpack2x16float(word(p.scales_offset + b / 2u));
    return (q4_sum(w[b], xs) - 8.0 * xsum) * select(ds.x, ds.y, (b & 1u) == 1u);
}

fn q4_1_blk(b: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
    let dm = unpack2x16float(word(p.scales_offset + b));
    return q4_sum(w[b], xs) * dm.x + dm.y * xsum;
}

fn blk_dot(fmt: u32, b: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
    if (fmt == FMT_Q8_0) { return q8_0_blk(b, xs); }
    if (fmt == FMT_Q4_0) { return q4_0_blk(b, xs, xsum); }
    return q4_1_blk(b, xs, xsum);
}

fn f32_dot4(i: vec4<u32>, xv: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(bitcast<vec4<f32>>(w[i.x]), xv), dot(bitcast<vec4<f32>>(w[i.y]), xv),
                     dot(bitcast<vec4<f32>>(w[i.z]), xv), dot(bitcast<vec4<f32>>(w[i.w]), xv));
}

fn f16_dot4(fmt: u32, i: vec4<u32>, x0: vec4<f32>, x1: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(f16_dot(fmt, w[i.x], x0, x1), f16_dot(fmt, w[i.y], x0, x1), f16_dot(fmt, w[i.z], x0, x1),
                     f16_dot(fmt, w[i.w], x0, x1));
}

#ifdef SG_X
var<private> sl: u32; // subgroup_invocation_id, set by the quantized entry points (SG_X is for them only)

// x chunks xi .. xi + 7 times `sc`: lane s loads chunk xi + s (and xi + 4 + s with SG4), the others come by
// broadcast. In uniform control flow only (every lane of the subgroup calls it with the same xi).
fn x_block(xi: u32, sc: vec4<f32>) -> array<vec4<f32>, 8> {
    let xa = xv(xi + sl) * sc;
#ifdef SG4
    let xc = xv(xi + 4u + sl) * sc;
#else
    let xc = xa;
#endif
    return array<vec4<f32>, 8>(subgroupBroadcast(xa, 0u), subgroupBroadcast(xa, 1u), subgroupBroadcast(xa, 2u),
                               subgroupBroadcast(xa, 3u), subgroupBroadcast(xc, HI), subgroupBroadcast(xc, HI + 1u),
                               subgroupBroadcast(xc, HI + 2u), subgroupBroadcast(xc, HI + 3u));
}

// The sum of x chunks xi .. xi + 7 (each lane adds the chunks it loaded, the subgroup adds the lanes).
fn x_block_sum(xi: u32) -> f32 {
    var v = xv(xi + sl);
#ifdef SG4
    v += xv(xi + 4u + sl);
#endif
    return subgroupAdd(dot(v, vec4<f32>(1.0)));
}
#endif

#ifdef WORDS
// ---- WORDS (SUBGROUPS, RPT = 4, quantized weights): lanes over the rows' u32 words ------------------------------
// A lane per block (rows4_dot's default) has each lane load its block's 8 x chunks, 128 bytes from its
// neighbours': each x load of the subgroup touches a cache line per lane. Here a lane takes one u32 word of each
// of the quad's rows per step (8 Q4 or 4 Q8_0 elements), so the subgroup reads consecutive words of every row and
// nearly consecutive x chunks, and the lanes of a block share its scale word (one address). Integers become
// floats by OR-ing them into the mantissa of 2^23 (exact for n < 2^23: the float 2^23 + n) and subtracting 2^23:
// a logic op and an add in place of an integer-to-float conversion. H200 (docs/benchmarks.md): Q4_0 / Q4_1
// 2.1-2.3 x the lane-per-block kernel's GB/s, Q8_0 within 5 % of it.

fn ufloat4(v: vec4<u32>, off: f32) -> vec4<f32> {
    return bitcast<vec4<f32>>(v | vec4<u32>(0x4B000000u)) - vec4<f32>(8388608.0 + off);
}

// d of block b for Q8_0 / Q4_0 (two f16 per scale word; only the one wanted is converted)
fn half_scale(b: u32) -> f32 {
    return unpack2x16float(word(p.scales_offset + b / 2u) >> (16u * (b & 1u))).x;
}

// Σ q_i·2^(8c_i)·x'_i over a Q4 word, x' pre-scaled (x_scaled): the nibbles of bytes 0..2 are masked in place
// (2^23 + q·2^(8c) is exact for c ≤ 2) and byte 3's shifted down (its nibble would overlap the exponent); low
// nibbles dotted with x0, high nibbles with x1.
fn q4_word(q: u32, x0: vec4<f32>, x1: vec4<f32>) -> f32 {
    let mask = vec4<u32>(0xFu, 0xF00u, 0xF0000u, 0xFu);
    let lo = (vec4<u32>(q) >> vec4<u32>(0u, 0u, 0u, 24u)) & mask;
    let hi = (vec4<u32>(q) >> vec4<u32>(4u, 4u, 4u, 28u)) & mask;
    return dot(ufloat4(lo, 0.0), x0) + dot(ufloat4(hi, 0.0), x1);
}

// x chunk v scaled for q4_word: element c times 2^-(8c) for c ≤ 2 (exact: powers of two)
fn x_scaled(v: vec4<f32>) -> vec4<f32> {
    return v * vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0);
}

// Σ q_i·x_i over a Q8_0 word (two's complement bytes, read as q + 128 after flipping their sign bits)
fn q8_word(q: u32, xc: vec4<f32>) -> f32 {
    let u = (vec4<u32>(q ^ 0x80808080u) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u);
    return dot(ufloat4(u, 128.0), xc);
}

fn words4_dot(fmt: u32, r: vec4<u32>, lane: u32, stride: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    let bpr = p.k / 32u;
    if (fmt == FMT_Q8_0) {
        // word i of a row: elements 4i .. 4i + 3 (x chunk i) of block i / 8
        let wpr = p.k / 4u;
        let base = r * wpr;
        for (var i = lane; i < wpr; i += stride) {
            let xc = xv(i);
            let b = r * bpr + vec4<u32>(i / 8u);
            let s = vec4<f32>(q8_word(word(base.x + i), xc), q8_word(word(base.y + i), xc),
                              q8_word(word(base.z + i), xc), q8_word(word(base.w + i), xc));
            acc += s * vec4<f32>(half_scale(b.x), half_scale(b.y), half_scale(b.z), half_scale(b.w));
        }
    } else {
        // word i of a row: word t = i % 4 of block j = i / 4, whose low nibbles are the block's elements
        // 4t .. 4t + 3 (x chunk 8j + t) and high nibbles 16 + 4t .. 16 + 4t + 3 (x chunk 8j + 4 + t)
        let wpr = p.k / 8u;
        let base = r * wpr;
        for (var i = lane; i < wpr; i += stride) {
            let xc = 2u * i - (i & 3u);
            let x0 = xv(xc);
            let x1 = xv(xc + 4u);
            // Q4_0: Σ (q - 8)·x = Σ q·x - 8·Σ x; Q4_1: Σ (q·d + m)·x = d·Σ q·x + m·Σ x
            let xsum = dot(x0 + x1, vec4<f32>(1.0));
            let xs0 = x_scaled(x0);
            let xs1 = x_scaled(x1);
            let b = r * bpr + vec4<u32>(i / 4u);
            let s = vec4<f32>(q4_word(word(base.x + i), xs0, xs1), q4_word(word(base.y + i), xs0, xs1),
                              q4_word(word(base.z + i), xs0, xs1), q4_word(word(base.w + i), xs0, xs1));
            if (fmt == FMT_Q4_0) {
                acc += (s - vec4<f32>(8.0 * xsum))
                    * vec4<f32>(half_scale(b.x), half_scale(b.y), half_scale(b.z), half_scale(b.w));
            } else {
                let d0 = unpack2x16float(word(p.scales_offset + b.x));
                let d1 = unpack2x16float(word(p.scales_offset + b.y));
                let d2 = unpack2x16float(word(p.scales_offset + b.z));
                let d3 = unpack2x16float(word(p.scales_offset + b.w));
                acc += s * vec4<f32>(d0.x, d1.x, d2.x, d3.x) + vec4<f32>(d0.y, d1.y, d2.y, d3.y) * xsum;
            }
        }
    }
    return acc;
}
#endif

// The dot products of x with weight rows r (in range), as one vec4, over the chunks lane, lane + stride, ...
// (one invocation: 0, 1; SUBGROUPS: the subgroup's lanes, whose partial sums the caller adds).
fn rows4_dot(fmt: u32, r: vec4<u32>, lane: u32, stride: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    if (fmt == FMT_F32) {
        let k4 = p.k / 4u;
        let base = r * k4;
        for (var i = lane; i < k4; i += stride) {
            acc += f32_dot4(base + vec4<u32>(i), xv(i));
        }
    } else if (fmt == FMT_F16 || fmt == FMT_BF16) {
        let k8 = p.k / 8u;
        let base = r * k8;
        for (var i = lane; i < k8; i += stride) {
            acc += f16_dot4(fmt, base + vec4<u32>(i), xv(2u * i), xv(2u * i + 1u));
        }
    } else {
#ifdef WORDS
        return words4_dot(fmt, r, lane, stride);
#else
        let bpr = p.k / 32u;
        let base = r * bpr;
        // Q4: x pre-scaled for q4_sum, and its sum for the offsets
        let q4 = fmt != FMT_Q8_0;
        let sc = select(vec4<f32>(1.0), vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0), q4);
        for (var j = lane; j < bpr; j += stride) {
            let xi = 8u * j;
#ifdef SG_X
            let xs = x_block(xi, sc);
            var xsum = 0.0;
            if (q4) {
                xsum = x_block_sum(xi);
            }
#else
            var xs = array<vec4<f32>, 8>(xv(xi), xv(xi + 1u), xv(xi + 2u), xv(xi + 3u),
                                         xv(xi + 4u), xv(xi + 5u), xv(xi + 6u), xv(xi + 7u));
            var xsum = 0.0;
            if (q4) {
                let one = vec4<f32>(1.0);
                xsum = dot(xs[0] + xs[1] + xs[2] + xs[3] + xs[4] + xs[5] + xs[6] + xs[7], one);
                for (var t = 0u; t < 8u; t++) { xs[t] *= sc; }
            }
#endif
            acc += vec4<f32>(blk_dot(fmt, base.x + j, xs, xsum), blk_dot(fmt, base.y + j, xs, xsum),
                             blk_dot(fmt, base.z + j, xs, xsum), blk_dot(fmt, base.w + j, xs, xsum));
        }
#endif
    }
    return acc;
}

// The up rows' dot products for gate rows r (SWIGLU), else nothing.
fn up4_dot(fmt: u32, r: vec4<u32>, lane: u32, stride: u32) -> vec4<f32> {
#ifdef SWIGLU
    return rows4_dot(fmt, r + vec4<u32>(p.n), lane, stride);
#else
    return vec4<f32>(0.0);
#endif
}

// Output rows r (RPT = 4; row0 = the quad's first row, < N) from their gate (or only) dot products g and the up
// ones u (SWIGLU). ROPE: p.n is a whole number of heads (HEAD_DIM % 4 == 0), so all 4 rows exist; else rows
// past N (clamped in r) are not stored.
fn store4(row0: u32, r: vec4<u32>, g: vec4<f32>, u: vec4<f32>) {
    var v = g;
    if (p.has_bias != 0u) { v += vec4<f32>(bias[r.x], bias[r.y], bias[r.z], bias[r.w]); }
#ifdef SWIGLU
    var uu = u;
    if (p.has_bias != 0u) { uu += vec4<f32>(bias[p.n + r.x], bias[p.n + r.y], bias[p.n + r.z], bias[p.n + r.w]); }
    v = silu4(v) * uu;
#endif
#ifdef RESIDUAL
    v += vec4<f32>(res[r.x], res[r.y], res[r.z], res[r.w]);
#endif
#ifdef ROPE
#ifdef INTERLEAVED
    store_pair(r.x, r.y, v.x, v.y);
    store_pair(r.z, r.w, v.z, v.w);
#else
    store_pair(r.x, r.z, v.x, v.z);
    store_pair(r.y, r.w, v.y, v.w);
#endif
#else
    for (var i = 0u; i < 4u; i++) {
        if (row0 + i < p.n) { y[row0 + i] = v[i]; }
    }
#endif
}

// The 4 rows of quad `gi` (RPT = 4), clamped to the matrix.
fn quad_rows(gi: u32) -> vec4<u32> {
#ifdef ROPE
    return min(rope_rows(gi), vec4<u32>(p.n - 1u));
#else
    return min(vec4<u32>(4u * gi) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
#endif
}

#ifdef SUBGROUPS
fn gemv(fmt: u32, wg: u32, sid: u32, nsg: u32, lane: u32, sg_size: u32) {
    // Subgroup-uniform loops: every lane of a subgroup takes the same rows, so subgroupAdd sees full subgroups.
    if (RPT == 4u) {
        // MR == 1: a quad of rows per subgroup step (ROWS / 4 per workgroup), each x chunk a lane loads dotted
        // with all 4 rows (a quantized block's 8 x chunks served 1 weight chunk with a row per subgroup), one
        // reduction per quad. ROPE: the quad is two rotated pairs.
        for (var qd = sid; qd < ROWS / 4u; qd += nsg) {
            let gi = wg * (ROWS / 4u) + qd;
            if (4u * gi >= p.n) { return; }
            let r = quad_rows(gi);
            let g = subgroupAdd(rows4_dot(fmt, r, lane, sg_size));
            let u = subgroupAdd(up4_dot(fmt, r, lane, sg_size));
            if (lane == 0u) { store4(4u * gi, r, g, u); }
        }
        return;
    }
#ifndef ROPE
    for (var r = sid; r < ROWS; r += nsg) {
        let row = wg * ROWS + r;
        if (row >= p.n) { return; }
        let g = subgroupAdd(row_dot(fmt, row, lane, sg_size));
        let u = subgroupAdd(up_dot(fmt, row, lane, sg_size));
        if (lane == 0u) { store(row, g, u); }
    }
#endif
}

#else
fn gemv(fmt: u32, wg: u32, li: u32) {
    if (RPT == 4u) {
        // MR == 1: ROWS == 4 * WG
        let row0 = wg * ROWS + 4u * li;
#ifndef SG_X
        if (row0 >= p.n) { return; }
#endif
        let r = quad_rows(row0 / 4u);
        let g = rows4_dot(fmt, r, 0u, 1u);
        let u = up4_dot(fmt, r, 0u, 1u);
        if (row0 < p.n) { store4(row0, r, g, u); }
        return;
    }
    let row = wg * ROWS + li;
    if (li >= ROWS || row >= p.n) { return; }
    store(row, row_dot(fmt, row, 0u, 1u), up_dot(fmt, row, 0u, 1u));
}

#endif

// The invocation's ids, in two structs because uniformity analysis (Tint's) tracks a struct as a whole: the
// workgroup's and subgroup's (uniform within a subgroup), and the invocation's own (lanes wherever subgroup
// operations are used).
struct Group {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
#ifdef SUBGROUP_OPS
    @builtin(subgroup_size) sgs: u32,
#endif
#ifdef SUBGROUPS
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) nsg: u32,
#endif
}

struct Lane {
    @builtin(local_invocation_index) li: u32,
#ifdef SUBGROUP_OPS
    @builtin(subgroup_invocation_id) lane: u32,
#endif
}

fn entry(fmt: u32, g: Group, l: Lane) {
    let wg = g.wid.x + g.wid.y * g.nwg.x;
#ifdef SG_X
    sl = l.lane;
#endif
#ifdef NORM
    // before any return: the subgroup is whole (a workgroup smaller than the subgroup has WG lanes)
    norm_prologue(l.lane, min(g.sgs, WG));
#endif
#ifdef SUBGROUPS
    gemv(fmt, wg, g.sid, g.nsg, l.lane, g.sgs);
#else
    gemv(fmt, wg, l.li);
#endif
}

@compute @workgroup_size(WG)
fn gemv_f32(g: Group, l: Lane) { entry(FMT_F32, g, l); }
@compute @workgroup_size(WG)
fn gemv_f16(g: Group, l: Lane) { entry(FMT_F16, g, l); }
@compute @workgroup_size(WG)
fn gemv_bf16(g: Group, l: Lane) { entry(FMT_BF16, g, l); }
@compute @workgroup_size(WG)
fn gemv_q8_0(g: Group, l: Lane) { entry(FMT_Q8_0, g, l); }
@compute @workgroup_size(WG)
fn gemv_q4_0(g: Group, l: Lane) { entry(FMT_Q4_0, g, l); }
@compute @workgroup_size(WG)
fn gemv_q4_1(g: Group, l: Lane) { entry(FMT_Q4_1, g, l); }
