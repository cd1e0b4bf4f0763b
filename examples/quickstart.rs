//! The shortest correct use of wgpool: pool a tensor on the GPU, then route a gradient back.

use wgpool::{Context, InputShape, PoolParams, PoolSpec};

fn main() -> Result<(), wgpool::Error> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.describe());
    // torch.nn.functional.max_pool2d(x, kernel_size=2, return_indices=True), x of shape (1, 1, 4, 4)
    let spec = PoolSpec::new(InputShape::nchw(1, 1, 4, 4), PoolParams::new([2, 2]));
    let input: Vec<f32> = (0..16).map(|i| ((i * 7) % 16) as f32).collect();
    let pooled = ctx.forward(&spec, &input)?;
    println!("values  {:?}\nindices {:?}", pooled.values, pooled.indices);
    let grad_input = ctx.backward(&spec, &[1.0f32, 2.0, 3.0, 4.0], &pooled.indices)?;
    println!("grad_input {grad_input:?}");
    Ok(())
}
