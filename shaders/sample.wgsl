// Token selection on the GPU, so a decode step reads back one u32: argmax, top-k / top-p sampling, and the
// repetition penalty. Every stage is barrier-free (one invocation = one chunk, candidate or token): lavapipe and
// SwiftShader run workgroups as loops over SIMD lanes and punish barriers. No invocation loops more than a few
// thousand times (llvmpipe ends all loops of an invocation after 65535 iterations in total).
//
// The logits row is `logits[row_off .. row_off + V]` (the last row of [T, V]). The vocabulary is cut into C
// chunks of `chunk` logits. Each stage is its own define (one binding set per stage, bindings numbered from 1).
//
// argmax (ties → lowest index, like torch):
//   ARGMAX_PARTIAL  argmax_partial: 1 logits (T, V), 2 part (C)            per chunk: best (value, index)
//   ARGMAX_FINAL    argmax_final:   1 part (C), 2 out (1) u32             best over chunks
// sampling (temperature → top-k → top-p → inverse CDF with the caller's uniform draw):
//   STATS     chunk_stats: 1 logits, 2 stats (C) (max m_c, Σ e^((x-m_c)/T))
//   THRESHOLD threshold:   1 stats, 2 state   state = (global max M, normalizer Z over all V, threshold L)
//             L = K-th largest chunk maximum: at least K logits are ≥ L, so the top K all are; candidates are
//             the logits ≥ L (usually a few × K of them), found without sorting the vocabulary.
//   COUNT     count:       1 logits, 2 state, 3 counts (C)              candidates per chunk
//   COMPACT   compact:     1 logits, 2 state, 3 counts, 4 cand (CAP)   candidates in index order (deterministic);
//                          the last chunk stores the total in state
//   RANK      rank:        1 state, 2 cand, 3 sorted (K)              rank = #(greater, or equal with lower
//                          index): the K best land in sorted[rank] in descending order, no sort needed
//   PICK      pick:        1 state, 2 sorted, 3 out (1) u32           softmax over the K, top-p cut, inverse CDF
// repetition penalty (HF semantics: logit > 0 → logit / penalty, else logit · penalty; each distinct token once):
//   PENALTY   penalty:     1 src (T, V), 2 history (n) u32, 3 dst (T, V) — dst is a copy of src made before
//                          this dispatch; every invocation reads src, so a repeated id writes the same value.

override WG: u32 = 64u;

// Candidate buffer size: candidates past it (only when this many logits tie at or above L) are dropped,
// keeping the lowest indices.
const CAP: u32 = 8192u;
const NEG_INF: f32 = -3.0e38;   // logits at or below it (-inf masks) are never candidates

struct Params {
    v: u32,          // vocabulary size
    row_off: u32,    // first logit of the row
    n_chunks: u32,   // C
    chunk: u32,      // logits per chunk
    k: u32,          // candidates kept (top_k, or the cap when top-k is off)
    top_k_on: u32,   // 1: normalize over the K survivors (HF top-k); 0: over the whole vocabulary
    inv_temp: f32,
    top_p: f32,      // ≥ 1: off
    uniform: f32,    // U[0, 1)
    penalty: f32,
    n_hist: u32,
    _pad: u32,
}

struct Cand {
    val: f32,
    idx: u32,
}

struct State {
    mx: f32,     // global max logit
    z: f32,      // Σ over the vocabulary of e^((x - mx) / T)
    thr: f32,    // candidate threshold L
    total: u32,  // candidates found
}

@group(0) @binding(0) var<uniform> p: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// (a, ia) comes before (b, ib): larger value first, then lower index.
fn before(a: f32, ia: u32, b: f32, ib: u32) -> bool {
    return a > b || (a == b && ia < ib);
}

fn chunk_range(c: u32) -> vec2<u32> {
    let s = c * p.chunk;
    return vec2<u32>(min(s, p.v), min(s + p.chunk, p.v));
}

// A logit that cannot be sampled (-inf or any mask ≤ -3e38, or NaN) never becomes a candidate.
fn usable(x: f32) -> bool {
    return x > NEG_INF;
}

#ifdef ARGMAX_PARTIAL
@group(0) @binding(1) var<storage, read> logits: array<f32>;       // (T, V)
@group(0) @binding(2) var<storage, read_write> part: array<Cand>;  // (C)

@compute @workgroup_size(WG)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_id(wid, nwg, lid);
    if (c >= p.n_chunks) { return; }
    let r = chunk_range(c);
    var best = Cand(logits[p.row_off + r.x], r.x);
    for (var j = r.x + 1u; j < r.y; j++) {
        let x = logits[p.row_off + j];
        if (x > best.val) {   // strict: the first of equal values wins
            best = Cand(x, j);
        }
    }
    part[c] = best;
}
#endif

#ifdef ARGMAX_FINAL
@group(0) @binding(1) var<storage, read> part: array<Cand>;        // (C)
@group(0) @binding(2) var<storage, read_write> out: array<u32>;    // (1)

@compute @workgroup_size(1)
fn argmax_final() {
    var best = part[0];
    for (var c = 1u; c < p.n_chunks; c++) {
        let b = part[c];
        if (before(b.val, b.idx, best.val, best.idx)) {
            best = b;
        }
    }
    out[0] = best.idx;
}
#endif

#ifdef STATS
@group(0) @binding(1) var<storage, read> logits: array<f32>;            // (T, V)
@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>; // (C): (max, sum of exp)

@compute @workgroup_size(WG)
fn chunk_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_id(wid, nwg, lid);
    if (c >= p.n_chunks) { return; }
    let r = chunk_range(c);
    var m = NEG_INF;
    for (var j = r.x; j < r.y; j++) {
        m = max(m, logits[p.row_off + j]);
    }
    var s = 0.0;
    for (var j = r.x; j < r.y; j++) {
        let x = logits[p.row_off + j];
        if (usable(x)) {
            s += exp((x - m) * p.inv_temp);
        }
    }
    stats[c] = vec2<f32>(m, s);
}
#endif

#ifdef THRESHOLD
@group(0) @binding(1) var<storage, read> stats: array<vec2<f32>>;   // (C)
@group(0) @binding(2) var<storage, read_write> state: State;

@compute @workgroup_size(WG)
fn threshold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_id(wid, nwg, lid);
    if (c >= p.n_chunks) { return; }
    let mc = stats[c].x;
    // This chunk's rank among the chunk maxima; the one at rank K-1 is the threshold.
    var rank = 0u;
    for (var o = 0u; o < p.n_chunks; o++) {
        if (before(stats[o].x, o, mc, c)) {
            rank++;
        }
    }
    if (rank == p.k - 1u) {
        state.thr = mc;
    }
    if (c == 0u) {
        if (p.n_chunks < p.k) {
            state.thr = NEG_INF;   // fewer chunks than K: every usable logit is a candidate
        }
        var mx = NEG_INF;
        for (var o = 0u; o < p.n_chunks; o++) {
            mx = max(mx, stats[o].x);
        }
        var z = 0.0;
        for (var o = 0u; o < p.n_chunks; o++) {
            let st = stats[o];
            if (st.y > 0.0) {
                z += st.y * exp((st.x - mx) * p.inv_temp);
            }
        }
        state.mx = mx;
        state.z = z;
    }
}
#endif

#ifdef COUNT
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // (T, V)
@group(0) @binding(2) var<storage, read> state: State;
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;  // (C)

@compute @workgroup_size(WG)
fn count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_id(wid, nwg, lid);
    if (c >= p.n_chunks) { return; }
    let r = chunk_range(c);
    let thr = state.thr;
    var n = 0u;
    for (var j = r.x; j < r.y; j++) {
        let x = logits[p.row_off + j];
        if (x >= thr && usable(x)) {
            n++;
        }
    }
    counts[c] = n;
}
#endif

#ifdef COMPACT
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // (T, V)
@group(0) @binding(2) var<storage, read_write> state: State;
@group(0) @binding(3) var<storage, read> counts: array<u32>;        // (C)
@group(0) @binding(4) var<storage, read_write> cand: array<Cand>;   // (CAP)

@compute @workgroup_size(WG)
fn compact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = linear_id(wid, nwg, lid);
    if (c >= p.n_chunks) { return; }
    // exclusive prefix sum of the counts, per invocation: C ≤ 1024 additions, no second dispatch
    var off = 0u;
    for (var o = 0u; o < c; o++) {
        off += counts[o];
    }
    if (c == p.n_chunks - 1u) {
        state.total = min(off + counts[c], CAP);
    }
    if (counts[c] == 0u || off >= CAP) { return; }
    let r = chunk_range(c);
    let thr = state.thr;
    for (var j = r.x; j < r.y; j++) {
        let x = logits[p.row_off + j];
        if (x >= thr && usable(x)) {
            if (off < CAP) {
                cand[off] = Cand(x, j);
            }
            off++;
        }
    }
}
#endif

#ifdef RANK
@group(0) @binding(1) var<storage, read> state: State;
@group(0) @binding(2) var<storage, read> cand: array<Cand>;          // (CAP), state.total valid
@group(0) @binding(3) var<storage, read_write> sorted: array<Cand>;  // (K), descending

@compute @workgroup_size(WG)
fn rank(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_id(wid, nwg, lid);
    let n = state.total;
    if (j >= n) { return; }
    let me = cand[j];
    var r = 0u;
    for (var o = 0u; o < n; o++) {
        let c = cand[o];
        if (before(c.val, c.idx, me.val, me.idx)) {
            r++;
        }
    }
    if (r < p.k) {
        sorted[r] = me;
    }
}
#endif

#ifdef PICK
@group(0) @binding(1) var<storage, read> state: State;
@group(0) @binding(2) var<storage, read> sorted: array<Cand>;      // (K), descending
@group(0) @binding(3) var<storage, read_write> out: array<u32>;    // (1)

@compute @workgroup_size(1)
fn pick() {
    let n = min(p.k, state.total);
    if (n == 0u) {   // every logit is -inf: nothing can be sampled
        out[0] = 0u;
        return;
    }
    let mx = state.mx;
    // normalizer: over the top-k survivors (HF applies top-p after top-k), else over the whole vocabulary
    var zn = state.z;
    if (p.top_k_on != 0u) {
        zn = 0.0;
        for (var j = 0u; j < n; j++) {
            zn += exp((sorted[j].val - mx) * p.inv_temp);
        }
    }
    // top-p (HF TopPLogitsWarper): keep a token while the mass strictly before it is < top_p
    var keep = n;
    var mass = 0.0;
    if (p.top_p < 1.0) {
        let cut = p.top_p * zn;
        for (var j = 0u; j < n; j++) {
            if (j > 0u && mass >= cut) {
                keep = j;
                break;
            }
            mass += exp((sorted[j].val - mx) * p.inv_temp);
        }
    }
    var kept = 0.0;
    for (var j = 0u; j < keep; j++) {
        kept += exp((sorted[j].val - mx) * p.inv_temp);
    }
    // inverse CDF: the first token whose cumulative mass exceeds uniform · kept
    let goal = p.uniform * kept;
    var acc = 0.0;
    var chosen = sorted[keep - 1u].idx;
    for (var j = 0u; j < keep; j++) {
        acc += exp((sorted[j].val - mx) * p.inv_temp);
        if (acc > goal) {
            chosen = sorted[j].idx;
            break;
        }
    }
    out[0] = chosen;
}
#endif

#ifdef PENALTY
@group(0) @binding(1) var<storage, read> src: array<f32>;          // (T, V)
@group(0) @binding(2) var<storage, read> history: array<u32>;      // (n) token ids
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;    // (T, V), a copy of src

@compute @workgroup_size(WG)
fn penalty(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_id(wid, nwg, lid);
    if (j >= p.n_hist) { return; }
    let id = history[j];
    if (id >= p.v) { return; }   // ids outside the vocabulary (padding) are ignored
    let x = src[p.row_off + id];
    dst[p.row_off + id] = select(x * p.penalty, x / p.penalty, x > 0.0);
}
#endif
