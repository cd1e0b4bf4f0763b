//! The performance cases of the project (A–G, F1, F3), shared by `cargo bench`, `wgpool bench`
//! and `benches/compare_torch.py` (which lists the same shapes).

use crate::params::{InputShape, Layout, PoolParams, PoolSpec};

/// One benchmark case.
#[derive(Debug, Clone)]
pub struct BenchCase {
    /// Short name (`A`, `B`, ..., `F1`, `F3`, `G`).
    pub name: &'static str,
    /// Input shape.
    pub input: InputShape,
    /// Pooling parameters.
    pub params: PoolParams,
    /// Layouts measured (channels-last only for 2-D, as in PyTorch's anchors).
    pub layouts: &'static [Layout],
}

impl BenchCase {
    /// The spec of this case in `layout`.
    pub fn spec(&self, layout: Layout) -> PoolSpec {
        PoolSpec::new(self.input.clone(), self.params.clone()).layout(layout)
    }
}

const BOTH: &[Layout] = &[Layout::ChannelsFirst, Layout::ChannelsLast];
const FIRST: &[Layout] = &[Layout::ChannelsFirst];

/// The cases of the performance issue at full size.
pub fn full() -> Vec<BenchCase> {
    let k2 = || PoolParams::new([2, 2]);
    vec![
        BenchCase { name: "A", input: InputShape::nchw(32, 64, 112, 112), params: k2(), layouts: BOTH },
        BenchCase {
            name: "B",
            input: InputShape::nchw(32, 64, 112, 112),
            params: PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1]),
            layouts: BOTH,
        },
        BenchCase { name: "C", input: InputShape::nchw(8, 256, 56, 56), params: k2(), layouts: BOTH },
        BenchCase { name: "D", input: InputShape::nchw(1, 3, 1024, 1024), params: k2(), layouts: BOTH },
        BenchCase { name: "E", input: InputShape::nchw(16, 512, 14, 14), params: k2(), layouts: BOTH },
        BenchCase { name: "F1", input: InputShape::new(32, 64, [4096]), params: PoolParams::new([2]), layouts: FIRST },
        BenchCase {
            name: "F3",
            input: InputShape::new(4, 32, [32, 32, 32]),
            params: PoolParams::new([2, 2, 2]),
            layouts: FIRST,
        },
        BenchCase { name: "G", input: InputShape::nchw(64, 64, 224, 224), params: k2(), layouts: BOTH },
    ]
}

/// The same cases with the batch (and for D the image) shrunk so that software adapters finish
/// quickly: the quick mode of the benchmarks.
pub fn quick() -> Vec<BenchCase> {
    full()
        .into_iter()
        .map(|mut c| {
            c.input.batch = 1;
            if c.name == "D" {
                c.input.spatial = vec![256, 256];
            }
            if c.name == "G" {
                c.input.channels = 16;
            }
            c
        })
        .collect()
}
