// A plain vec4 copy: dst[i] = src[i]. The memory-bandwidth yardstick of the kernel benchmark
// (src/bin/kernel_bench.rs): GEMV GB/s are reported as a ratio to this kernel's GB/s on the same adapter.
// bindings: 1 src (n4 vec4), 2 dst (n4 vec4)

override WG: u32 = 256u;

struct Params {
    n4: u32, // vec4 elements
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < p.n4) {
        dst[i] = src[i];
    }
}
