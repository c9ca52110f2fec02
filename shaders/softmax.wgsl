// placeholder: kernel family not written yet
@compute @workgroup_size(1) fn main() {}
