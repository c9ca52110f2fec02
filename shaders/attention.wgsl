// Scaled dot-product attention, flash style: online softmax over keys, never a [Tq, kv_len] score matrix.
//
// One invocation owns one (query row i, query head h, key split s) and walks its keys in blocks of BK:
// scores of the block first (BK dot products), then one rescale of the running (max m, sum l, acc[D]) per block
// instead of one per key. No shared memory and no barriers: lavapipe and SwiftShader run workgroups as loops
// over SIMD lanes, where every barrier splits the shader into resumable pieces. Invocation order puts i
// fastest, so neighbouring lanes share the same head and key rows (the same addresses, mostly cached) and,
// under a causal mask, nearly the same key ranges.
//
// The per-head-dim work (q load, dot, rescale, accumulate, store) is unrolled by hand over vec4 slots, guarded
// by compile-time `D4 > j` conditions that fold away. Besides keeping q and acc in registers, this matters for
// correctness on lavapipe: llvmpipe stops *every* loop of an invocation once their iterations together pass
// 65535 (LP_MAX_TGSI_LOOP_ITERATIONS, shared by all loops of the shader), silently leaving the rest undone. With
// the d-loops unrolled an invocation spends about 2 loop iterations per key, and the op caps a split at
// MAX_CHUNK keys to stay far below the limit.
//
// Default entry `attn`:      bindings 1 q (Tq, Hq, D), 2 k (Tmax, Hkv, D), 3 v (Tmax, Hkv, D),
//                            4 dst = out (Tq, Hq, D), normalized.
// SPLIT  (flash decoding):   the keys of each row are cut into n_split chunks handled by different invocations,
//                            which write unnormalized partials: 4 dst = part_o (n_split, Hq, Tq, D),
//                            5 part_ml (n_split, Hq, Tq) as (m, l). Used when Tq*Hq rows alone cannot fill the
//                            device (decode: Tq = 1) or a row has more than MAX_CHUNK keys.
// COMBINE (entry `combine`): bindings 1 part_o, 2 part_ml, 3 out (Tq, Hq, D); one invocation per output element
//                            merges the n_split partials: out = Σ_s e^(m_s-M) o_s / Σ_s e^(m_s-M) l_s.
// SG_KEYS (entry `attn_sg`; GPUs with subgroups of one known size SG): the same bindings, parameters and
//                            outputs (SPLIT too), but parallel over keys: a workgroup is one subgroup and owns a
//                            (row, split); see the kernel.
// Grouped-query attention: query head h reads kv head h / (Hq / Hkv).
// Causal: query i sits at absolute position q_pos0 + i and sees keys 0 ..= q_pos0 + i (and < kv_len).
// D is a multiple of 4 and at most 128 (checked by the op); q, k, v and dst are bound as vec4 arrays.

#ifdef SG_KEYS
#enable subgroups
#endif
override WG: u32 = 64u;

// The head dimension is a compile-time constant (one pipeline per head dim: a handful per model).
#ifdef HEAD_DIM
const D: u32 = {{HEAD_DIM}}u;
#else
const D: u32 = 64u;
#endif
const D4: u32 = D / 4u;
const MAX_D4: u32 = 32u;

// Keys per online-softmax block: one exp-rescale of acc per BK keys.
const BK: u32 = 8u;

// A finite "minus infinity": exp(NEG_BIG - x) is 0 and NEG_BIG - NEG_BIG is 0, never NaN.
const NEG_BIG: f32 = -3.0e38;

struct Params {
    tq: u32,
    hq: u32,
    hkv: u32,
    kv_len: u32,
    q_pos0: u32,
    causal: u32,
    n_split: u32,
    chunk: u32,   // keys per split (a multiple of BK)
    scale: f32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

#ifdef TRANSPOSE_V
// TRANSPOSE_V (entry `transpose_v`): vt (Hkv, D, kv_len) from the first kv_len rows of v (Tmax, Hkv, D), so each
// (head, dim) row of vt runs over the keys: the weight layout of the p·v product when bidirectional attention runs
// as GEMMs (src/ops/attention.rs, attention_gemm). One invocation per element, writes contiguous.
// bindings: 1 v, 2 vt
@group(0) @binding(1) var<storage, read> v_rows: array<f32>;
@group(0) @binding(2) var<storage, read_write> vt: array<f32>;

@compute @workgroup_size(WG)
fn transpose_v(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_id(wid, nwg, lid);
    if (g >= p.kv_len * p.hkv * D) { return; }
    let t = g % p.kv_len;
    let hd = g / p.kv_len;      // head * D + d
    vt[g] = v_rows[t * p.hkv * D + hd];
}
#else
#ifdef COMBINE
@group(0) @binding(1) var<storage, read> part_o: array<f32>;         // (n_split, Hq, Tq, D)
@group(0) @binding(2) var<storage, read> part_ml: array<vec2<f32>>;  // (n_split, Hq, Tq): (max, sum)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;      // (Tq, Hq, D)

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_id(wid, nwg, lid);
    let rows = p.tq * p.hq;
    if (g >= rows * D) { return; }
    let d = g % D;
    let row = g / D;            // h * Tq + i
    let i = row % p.tq;
    let h = row / p.tq;
    var mx = NEG_BIG;
    for (var s = 0u; s < p.n_split; s++) {
        mx = max(mx, part_ml[s * rows + row].x);
    }
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < p.n_split; s++) {
        let ml = part_ml[s * rows + row];
        let w = exp(ml.x - mx);   // 0 for splits past the causal end (m = NEG_BIG)
        l += w * ml.y;
        o += w * part_o[(s * rows + row) * D + d];
    }
    out[(i * p.hq + h) * D + d] = o / l;
}
#else
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;   // (Tq, Hq, D)
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;   // (Tmax, Hkv, D), rows < kv_len valid
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;   // (Tmax, Hkv, D)
#ifdef SPLIT
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;     // part_o (n_split, Hq, Tq, D)
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>; // (n_split, Hq, Tq)
#else
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;     // out (Tq, Hq, D)
#endif

// This invocation's query row (pre-multiplied by the softmax scale) and output accumulator, D4 slots used.
var<private> qv: array<vec4<f32>, MAX_D4>;
var<private> acc: array<vec4<f32>, MAX_D4>;

// The work unit g < Tq·Hq·n_split (an invocation of `attn`, a subgroup of `attn_sg`): row = h·Tq + i (i fastest),
// split s, kv head hk, and its keys start..stop (a causal row ends at its own position).
struct Unit {
    row: u32,
    s: u32,
    i: u32,
    h: u32,
    hk: u32,
    start: u32,
    stop: u32,
}

fn unit(g: u32) -> Unit {
    let rows = p.tq * p.hq;
    let row = g % rows;
    let i = row % p.tq;
    let h = row / p.tq;
    var end = p.kv_len;
    if (p.causal != 0u) {
        end = min(end, p.q_pos0 + i + 1u);
    }
    let start = (g / rows) * p.chunk;
    return Unit(row, g / rows, i, h, h / (p.hq / p.hkv), start, min(end, start + p.chunk));
}

// ---- per-head-dim helpers, unrolled over the D4 vec4 slots (see the header for why) ----

fn load_q(qb: u32, scale: f32) {
    qv[0] = q[qb] * scale;
    if (D4 > 1u) { qv[1] = q[qb + 1u] * scale; }
    if (D4 > 2u) { qv[2] = q[qb + 2u] * scale; }
    if (D4 > 3u) { qv[3] = q[qb + 3u] * scale; }
    if (D4 > 4u) { qv[4] = q[qb + 4u] * scale; }
    if (D4 > 5u) { qv[5] = q[qb + 5u] * scale; }
    if (D4 > 6u) { qv[6] = q[qb + 6u] * scale; }
    if (D4 > 7u) { qv[7] = q[qb + 7u] * scale; }
    if (D4 > 8u) { qv[8] = q[qb + 8u] * scale; }
    if (D4 > 9u) { qv[9] = q[qb + 9u] * scale; }
    if (D4 > 10u) { qv[10] = q[qb + 10u] * scale; }
    if (D4 > 11u) { qv[11] = q[qb + 11u] * scale; }
    if (D4 > 12u) { qv[12] = q[qb + 12u] * scale; }
    if (D4 > 13u) { qv[13] = q[qb + 13u] * scale; }
    if (D4 > 14u) { qv[14] = q[qb + 14u] * scale; }
    if (D4 > 15u) { qv[15] = q[qb + 15u] * scale; }
    if (D4 > 16u) { qv[16] = q[qb + 16u] * scale; }
    if (D4 > 17u) { qv[17] = q[qb + 17u] * scale; }
    if (D4 > 18u) { qv[18] = q[qb + 18u] * scale; }
    if (D4 > 19u) { qv[19] = q[qb + 19u] * scale; }
    if (D4 > 20u) { qv[20] = q[qb + 20u] * scale; }
    if (D4 > 21u) { qv[21] = q[qb + 21u] * scale; }
    if (D4 > 22u) { qv[22] = q[qb + 22u] * scale; }
    if (D4 > 23u) { qv[23] = q[qb + 23u] * scale; }
    if (D4 > 24u) { qv[24] = q[qb + 24u] * scale; }
    if (D4 > 25u) { qv[25] = q[qb + 25u] * scale; }
    if (D4 > 26u) { qv[26] = q[qb + 26u] * scale; }
    if (D4 > 27u) { qv[27] = q[qb + 27u] * scale; }
    if (D4 > 28u) { qv[28] = q[qb + 28u] * scale; }
    if (D4 > 29u) { qv[29] = q[qb + 29u] * scale; }
    if (D4 > 30u) { qv[30] = q[qb + 30u] * scale; }
    if (D4 > 31u) { qv[31] = q[qb + 31u] * scale; }
}

fn dot_k(kb: u32) -> f32 {
    var s = dot(qv[0], k[kb]);
    if (D4 > 1u) { s += dot(qv[1], k[kb + 1u]); }
    if (D4 > 2u) { s += dot(qv[2], k[kb + 2u]); }
    if (D4 > 3u) { s += dot(qv[3], k[kb + 3u]); }
    if (D4 > 4u) { s += dot(qv[4], k[kb + 4u]); }
    if (D4 > 5u) { s += dot(qv[5], k[kb + 5u]); }
    if (D4 > 6u) { s += dot(qv[6], k[kb + 6u]); }
    if (D4 > 7u) { s += dot(qv[7], k[kb + 7u]); }
    if (D4 > 8u) { s += dot(qv[8], k[kb + 8u]); }
    if (D4 > 9u) { s += dot(qv[9], k[kb + 9u]); }
    if (D4 > 10u) { s += dot(qv[10], k[kb + 10u]); }
    if (D4 > 11u) { s += dot(qv[11], k[kb + 11u]); }
    if (D4 > 12u) { s += dot(qv[12], k[kb + 12u]); }
    if (D4 > 13u) { s += dot(qv[13], k[kb + 13u]); }
    if (D4 > 14u) { s += dot(qv[14], k[kb + 14u]); }
    if (D4 > 15u) { s += dot(qv[15], k[kb + 15u]); }
    if (D4 > 16u) { s += dot(qv[16], k[kb + 16u]); }
    if (D4 > 17u) { s += dot(qv[17], k[kb + 17u]); }
    if (D4 > 18u) { s += dot(qv[18], k[kb + 18u]); }
    if (D4 > 19u) { s += dot(qv[19], k[kb + 19u]); }
    if (D4 > 20u) { s += dot(qv[20], k[kb + 20u]); }
    if (D4 > 21u) { s += dot(qv[21], k[kb + 21u]); }
    if (D4 > 22u) { s += dot(qv[22], k[kb + 22u]); }
    if (D4 > 23u) { s += dot(qv[23], k[kb + 23u]); }
    if (D4 > 24u) { s += dot(qv[24], k[kb + 24u]); }
    if (D4 > 25u) { s += dot(qv[25], k[kb + 25u]); }
    if (D4 > 26u) { s += dot(qv[26], k[kb + 26u]); }
    if (D4 > 27u) { s += dot(qv[27], k[kb + 27u]); }
    if (D4 > 28u) { s += dot(qv[28], k[kb + 28u]); }
    if (D4 > 29u) { s += dot(qv[29], k[kb + 29u]); }
    if (D4 > 30u) { s += dot(qv[30], k[kb + 30u]); }
    if (D4 > 31u) { s += dot(qv[31], k[kb + 31u]); }
    return s;
}

fn acc_scale(c: f32) {
    acc[0] *= c;
    if (D4 > 1u) { acc[1] *= c; }
    if (D4 > 2u) { acc[2] *= c; }
    if (D4 > 3u) { acc[3] *= c; }
    if (D4 > 4u) { acc[4] *= c; }
    if (D4 > 5u) { acc[5] *= c; }
    if (D4 > 6u) { acc[6] *= c; }
    if (D4 > 7u) { acc[7] *= c; }
    if (D4 > 8u) { acc[8] *= c; }
    if (D4 > 9u) { acc[9] *= c; }
    if (D4 > 10u) { acc[10] *= c; }
    if (D4 > 11u) { acc[11] *= c; }
    if (D4 > 12u) { acc[12] *= c; }
    if (D4 > 13u) { acc[13] *= c; }
    if (D4 > 14u) { acc[14] *= c; }
    if (D4 > 15u) { acc[15] *= c; }
    if (D4 > 16u) { acc[16] *= c; }
    if (D4 > 17u) { acc[17] *= c; }
    if (D4 > 18u) { acc[18] *= c; }
    if (D4 > 19u) { acc[19] *= c; }
    if (D4 > 20u) { acc[20] *= c; }
    if (D4 > 21u) { acc[21] *= c; }
    if (D4 > 22u) { acc[22] *= c; }
    if (D4 > 23u) { acc[23] *= c; }
    if (D4 > 24u) { acc[24] *= c; }
    if (D4 > 25u) { acc[25] *= c; }
    if (D4 > 26u) { acc[26] *= c; }
    if (D4 > 27u) { acc[27] *= c; }
    if (D4 > 28u) { acc[28] *= c; }
    if (D4 > 29u) { acc[29] *= c; }
    if (D4 > 30u) { acc[30] *= c; }
    if (D4 > 31u) { acc[31] *= c; }
}

fn acc_add(w: f32, vb: u32) {
    acc[0] += w * v[vb];
    if (D4 > 1u) { acc[1] += w * v[vb + 1u]; }
    if (D4 > 2u) { acc[2] += w * v[vb + 2u]; }
    if (D4 > 3u) { acc[3] += w * v[vb + 3u]; }
    if (D4 > 4u) { acc[4] += w * v[vb + 4u]; }
    if (D4 > 5u) { acc[5] += w * v[vb + 5u]; }
    if (D4 > 6u) { acc[6] += w * v[vb + 6u]; }
    if (D4 > 7u) { acc[7] += w * v[vb + 7u]; }
    if (D4 > 8u) { acc[8] += w * v[vb + 8u]; }
    if (D4 > 9u) { acc[9] += w * v[vb + 9u]; }
    if (D4 > 10u) { acc[10] += w * v[vb + 10u]; }
    if (D4 > 11u) { acc[11] += w * v[vb + 11u]; }
    if (D4 > 12u) { acc[12] += w * v[vb + 12u]; }
    if (D4 > 13u) { acc[13] += w * v[vb + 13u]; }
    if (D4 > 14u) { acc[14] += w * v[vb + 14u]; }
    if (D4 > 15u) { acc[15] += w * v[vb + 15u]; }
    if (D4 > 16u) { acc[16] += w * v[vb + 16u]; }
    if (D4 > 17u) { acc[17] += w * v[vb + 17u]; }
    if (D4 > 18u) { acc[18] += w * v[vb + 18u]; }
    if (D4 > 19u) { acc[19] += w * v[vb + 19u]; }
    if (D4 > 20u) { acc[20] += w * v[vb + 20u]; }
    if (D4 > 21u) { acc[21] += w * v[vb + 21u]; }
    if (D4 > 22u) { acc[22] += w * v[vb + 22u]; }
    if (D4 > 23u) { acc[23] += w * v[vb + 23u]; }
    if (D4 > 24u) { acc[24] += w * v[vb + 24u]; }
    if (D4 > 25u) { acc[25] += w * v[vb + 25u]; }
    if (D4 > 26u) { acc[26] += w * v[vb + 26u]; }
    if (D4 > 27u) { acc[27] += w * v[vb + 27u]; }
    if (D4 > 28u) { acc[28] += w * v[vb + 28u]; }
    if (D4 > 29u) { acc[29] += w * v[vb + 29u]; }
    if (D4 > 30u) { acc[30] += w * v[vb + 30u]; }
    if (D4 > 31u) { acc[31] += w * v[vb + 31u]; }
}

fn store_acc(ob: u32, c: f32) {
    dst[ob] = acc[0] * c;
    if (D4 > 1u) { dst[ob + 1u] = acc[1] * c; }
    if (D4 > 2u) { dst[ob + 2u] = acc[2] * c; }
    if (D4 > 3u) { dst[ob + 3u] = acc[3] * c; }
    if (D4 > 4u) { dst[ob + 4u] = acc[4] * c; }
    if (D4 > 5u) { dst[ob + 5u] = acc[5] * c; }
    if (D4 > 6u) { dst[ob + 6u] = acc[6] * c; }
    if (D4 > 7u) { dst[ob + 7u] = acc[7] * c; }
    if (D4 > 8u) { dst[ob + 8u] = acc[8] * c; }
    if (D4 > 9u) { dst[ob + 9u] = acc[9] * c; }
    if (D4 > 10u) { dst[ob + 10u] = acc[10] * c; }
    if (D4 > 11u) { dst[ob + 11u] = acc[11] * c; }
    if (D4 > 12u) { dst[ob + 12u] = acc[12] * c; }
    if (D4 > 13u) { dst[ob + 13u] = acc[13] * c; }
    if (D4 > 14u) { dst[ob + 14u] = acc[14] * c; }
    if (D4 > 15u) { dst[ob + 15u] = acc[15] * c; }
    if (D4 > 16u) { dst[ob + 16u] = acc[16] * c; }
    if (D4 > 17u) { dst[ob + 17u] = acc[17] * c; }
    if (D4 > 18u) { dst[ob + 18u] = acc[18] * c; }
    if (D4 > 19u) { dst[ob + 19u] = acc[19] * c; }
    if (D4 > 20u) { dst[ob + 20u] = acc[20] * c; }
    if (D4 > 21u) { dst[ob + 21u] = acc[21] * c; }
    if (D4 > 22u) { dst[ob + 22u] = acc[22] * c; }
    if (D4 > 23u) { dst[ob + 23u] = acc[23] * c; }
    if (D4 > 24u) { dst[ob + 24u] = acc[24] * c; }
    if (D4 > 25u) { dst[ob + 25u] = acc[25] * c; }
    if (D4 > 26u) { dst[ob + 26u] = acc[26] * c; }
    if (D4 > 27u) { dst[ob + 27u] = acc[27] * c; }
    if (D4 > 28u) { dst[ob + 28u] = acc[28] * c; }
    if (D4 > 29u) { dst[ob + 29u] = acc[29] * c; }
    if (D4 > 30u) { dst[ob + 30u] = acc[30] * c; }
    if (D4 > 31u) { dst[ob + 31u] = acc[31] * c; }
}


#ifdef SG_KEYS
// One subgroup per (query row, split), its lanes over keys: lane j scores key t0 + j (the dot product walks the
// lane's own key row, q held by every lane), the block's max and sum come by subgroupMax / subgroupAdd, and for
// p·v each lane owns dims lane, lane + SG, ... with each key's weight taken from its lane by subgroupShuffle (the
// lanes read a v row together: contiguous). The default kernel runs one invocation per (row, split): for decode,
// 9-36 of them, which left a GPU idle (H100: ~45 µs per decode attention, 30 % of the step's GPU time).
#ifdef SG
const SGN: u32 = {{SG}}u;
#else
const SGN: u32 = 32u;
#endif
const DL: u32 = (D + SGN - 1u) / SGN;

@compute @workgroup_size(SGN)
fn attn_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(subgroup_invocation_id) lane: u32) {
    let g = wid.x + wid.y * nwg.x;   // uniform over the workgroup (= the subgroup)
    let rows = p.tq * p.hq;
    if (g >= rows * p.n_split) { return; }
    let u = unit(g); // the work unit: row (i, h), split s, kv head hk, keys start..stop

    load_q((u.i * p.hq + u.h) * D4, p.scale);
    var o: array<f32, DL>;
    var m = NEG_BIG;
    var l = 0.0;
    let kstride = p.hkv * D4;
    let kh = u.hk * D4;
    for (var t0 = u.start; t0 < u.stop; t0 += SGN) {
        let t = t0 + lane;
        let valid = t < u.stop;
        var sc = NEG_BIG;
        if (valid) { sc = dot_k(t * kstride + kh); }
        let bm = max(m, subgroupMax(sc));
        let corr = exp(m - bm);
        let w = select(0.0, exp(sc - bm), valid);
        l = l * corr + subgroupAdd(w);
        for (var r = 0u; r < DL; r++) { o[r] *= corr; }
        let nb = min(SGN, u.stop - t0);
        for (var j = 0u; j < nb; j++) {
            let wj = subgroupShuffle(w, j);
            let vb = (t0 + j) * kstride + kh;
            for (var r = 0u; r < DL; r++) {
                let d = lane + r * SGN;
                if (d < D) { o[r] += wj * v[vb + d / 4u][d % 4u]; }
            }
        }
        m = bm;
    }

#ifdef SPLIT
    let ob = (u.s * rows + u.row) * D4;
    let c = 1.0;
    if (lane == 0u) { part_ml[u.s * rows + u.row] = vec2<f32>(m, l); }
#else
    // l >= 1: every row sees at least key 0 (the op rejects kv_len = 0)
    let ob = (u.i * p.hq + u.h) * D4;
    let c = 1.0 / l;
#endif
    for (var r = 0u; r < DL; r++) {
        let d = lane + r * SGN;
        if (d < D) { dst[ob + d / 4u][d % 4u] = o[r] * c; }
    }
}
#else
@compute @workgroup_size(WG)
fn attn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_id(wid, nwg, lid);
    let rows = p.tq * p.hq;
    if (g >= rows * p.n_split) { return; }
    let u = unit(g); // the work unit: row (i, h), split s, kv head hk, keys start..stop

    load_q((u.i * p.hq + u.h) * D4, p.scale);
    acc_scale(0.0);
    var m = NEG_BIG;
    var l = 0.0;
    let kstride = p.hkv * D4;   // vec4 slots per cache row
    let kh = u.hk * D4;
    var t = u.start;
    loop {
        if (t >= u.stop) { break; }
        let nb = min(BK, u.stop - t);
        var sc: array<f32, BK>;
        var bm = m;
        for (var j = 0u; j < BK; j++) {
            if (j < nb) {
                let x = dot_k((t + j) * kstride + kh);
                sc[j] = x;
                bm = max(bm, x);
            }
        }
        let corr = exp(m - bm);
        l *= corr;
        acc_scale(corr);
        for (var j = 0u; j < BK; j++) {
            if (j < nb) {
                let w = exp(sc[j] - bm);
                l += w;
                acc_add(w, (t + j) * kstride + kh);
            }
        }
        m = bm;
        t += nb;
    }

#ifdef SPLIT
    store_acc((u.s * rows + u.row) * D4, 1.0);
    part_ml[u.s * rows + u.row] = vec2<f32>(m, l);
#else
    // l >= 1 here: every row sees at least key 0 (the op rejects kv_len = 0).
    store_acc((u.i * p.hq + u.h) * D4, 1.0 / l);
#endif
}
#endif
#endif
#endif
