// 16-bit floats two per u32 word (element 2i in the low half), the layouts of src/gpu/tensor.rs: f16 is read
// with the builtin unpack2x16float; bf16 (the high 16 bits of an f32) widens exactly by a shift and a mask.
// Library file: functions only.
fn unpack2x16bfloat(v: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(vec2<u32>(v << 16u, v & 0xffff0000u));
}
