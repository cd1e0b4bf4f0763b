// Benchmark baseline, not a pooling kernel: copies vec4<f32> elements. Its bandwidth (bytes read
// plus bytes written per second) is the ceiling a wgpu kernel can reach on the adapter; `wgpool
// bench` reports every pooling pass as a percentage of it.

@group(0) @binding(0) var<storage, read> source: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> destination: array<vec4<f32>>;

@compute @workgroup_size(256)
fn copy_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(num_workgroups) workgroups: vec3<u32>,
) {
    let t = (workgroup.y * workgroups.x + workgroup.x) * 256u + local;
    if t < arrayLength(&destination) {
        destination[t] = source[t];
    }
}
