//! Shader sources, bind group layouts and the specialised compute pipelines.
//!
//! Each kernel family is one `.wgsl` file in `shaders/`, compiled per element type (a two-line
//! header declares `T`) with `shaders/common.wgsl` in between. Pipelines are specialised to the
//! problem's geometry through override constants and cached, so a shape seen before costs no
//! compilation; a shape's first passes run the generic form of the general kernels instead
//! ([`generic_shader_source`]: geometry from the uniform, one pipeline for every shape).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::element::DType;
use crate::params::Geometry;

/// `shaders/common.wgsl`.
pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
/// `shaders/max_pool_forward.wgsl`.
pub const FORWARD_WGSL: &str = include_str!("../../shaders/max_pool_forward.wgsl");
/// `shaders/max_pool_backward.wgsl`.
pub const BACKWARD_WGSL: &str = include_str!("../../shaders/max_pool_backward.wgsl");
/// `shaders/max_pool_backward_tiled.wgsl`.
pub const BACKWARD_TILED_WGSL: &str = include_str!("../../shaders/max_pool_backward_tiled.wgsl");
/// `shaders/max_pool_forward_rows.wgsl`.
pub const FORWARD_ROWS_WGSL: &str = include_str!("../../shaders/max_pool_forward_rows.wgsl");
/// `shaders/max_pool_backward_rows.wgsl`.
pub const BACKWARD_ROWS_WGSL: &str = include_str!("../../shaders/max_pool_backward_rows.wgsl");
/// `shaders/max_pool_forward_shared.wgsl`.
pub const FORWARD_SHARED_WGSL: &str = include_str!("../../shaders/max_pool_forward_shared.wgsl");
/// `shaders/max_pool_backward_shared.wgsl`.
pub const BACKWARD_SHARED_WGSL: &str = include_str!("../../shaders/max_pool_backward_shared.wgsl");
/// `shaders/max_pool_forward_span.wgsl`.
pub const FORWARD_SPAN_WGSL: &str = include_str!("../../shaders/max_pool_forward_span.wgsl");
/// `shaders/max_pool_backward_cells.wgsl`.
pub const BACKWARD_CELLS_WGSL: &str = include_str!("../../shaders/max_pool_backward_cells.wgsl");
/// `shaders/max_pool_backward_tiled_rows.wgsl`.
pub const BACKWARD_TILED_ROWS_WGSL: &str = include_str!("../../shaders/max_pool_backward_tiled_rows.wgsl");

/// Threads per workgroup in every kernel (`WORKGROUP_SIZE` in `common.wgsl`).
pub const WORKGROUP_SIZE: u32 = 256;

/// The compute kernels, one per entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `max_pool_forward`: one invocation per output.
    Forward,
    /// `max_pool_backward`: gather, one invocation per input element (and per output for validation).
    Backward,
    /// `max_pool_backward_tiled`: scatter, for windows that tile the input.
    BackwardTiled,
    /// `max_pool_forward_rows`: four outputs of a row per invocation (channels-first, W axis k2 s2).
    ForwardRows,
    /// `max_pool_backward_tiled_rows`: the scatter backward, two outputs of a row per invocation.
    BackwardTiledRows,
    /// `max_pool_backward_rows`: the gather on blocks of four elements of a row.
    BackwardRows,
    /// `max_pool_forward_shared`: overlapping windows from an input tile in workgroup memory.
    ForwardShared,
    /// `max_pool_forward_span`: four outputs of a row per invocation from the 16-byte items
    /// covering their span (channels-first, other W windows than the row kernel's).
    ForwardSpan,
    /// `max_pool_backward_shared`: the gather from window data in workgroup memory.
    BackwardShared,
    /// `max_pool_backward_cells`: the gather on cells of 2×2 positions, four channels per
    /// invocation (channels-last, lane width 4 only).
    BackwardCells,
}

impl Kernel {
    /// Every kernel.
    pub const ALL: [Kernel; 10] = [
        Kernel::Forward,
        Kernel::Backward,
        Kernel::BackwardTiled,
        Kernel::ForwardRows,
        Kernel::BackwardTiledRows,
        Kernel::BackwardRows,
        Kernel::ForwardShared,
        Kernel::BackwardShared,
        Kernel::ForwardSpan,
        Kernel::BackwardCells,
    ];

    /// The entry point's name (also the `.wgsl` file's stem).
    pub fn entry_point(self) -> &'static str {
        match self {
            Kernel::Forward => "max_pool_forward",
            Kernel::Backward => "max_pool_backward",
            Kernel::BackwardTiled => "max_pool_backward_tiled",
            Kernel::ForwardRows => "max_pool_forward_rows",
            Kernel::BackwardTiledRows => "max_pool_backward_tiled_rows",
            Kernel::BackwardRows => "max_pool_backward_rows",
            Kernel::ForwardShared => "max_pool_forward_shared",
            Kernel::BackwardShared => "max_pool_backward_shared",
            Kernel::ForwardSpan => "max_pool_forward_span",
            Kernel::BackwardCells => "max_pool_backward_cells",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Kernel::Forward => FORWARD_WGSL,
            Kernel::Backward => BACKWARD_WGSL,
            Kernel::BackwardTiled => BACKWARD_TILED_WGSL,
            Kernel::ForwardRows => FORWARD_ROWS_WGSL,
            Kernel::BackwardTiledRows => BACKWARD_TILED_ROWS_WGSL,
            Kernel::BackwardRows => BACKWARD_ROWS_WGSL,
            Kernel::ForwardShared => FORWARD_SHARED_WGSL,
            Kernel::BackwardShared => BACKWARD_SHARED_WGSL,
            Kernel::ForwardSpan => FORWARD_SPAN_WGSL,
            Kernel::BackwardCells => BACKWARD_CELLS_WGSL,
        }
    }

    pub(crate) fn is_backward(self) -> bool {
        !matches!(self, Kernel::Forward | Kernel::ForwardRows | Kernel::ForwardShared | Kernel::ForwardSpan)
    }

    /// Whether the kernel sums plainly and settles NaN bits in a second pass, and so has a
    /// [`Variant::single_pass`] form: the gathers `max_pool_backward`, `_rows` and `_cells` (not
    /// the workgroup-memory one, which tracks NaN bits in its one pass).
    pub fn has_nan_pass(self) -> bool {
        matches!(self, Kernel::Backward | Kernel::BackwardRows | Kernel::BackwardCells)
    }

    /// Whether a workgroup works on a tile held in workgroup memory (one workgroup per tile).
    pub fn is_shared(self) -> bool {
        matches!(self, Kernel::ForwardShared | Kernel::BackwardShared)
    }

    /// Whether one invocation handles a block of adjacent outputs of a row.
    pub fn is_rows(self) -> bool {
        matches!(self, Kernel::ForwardRows | Kernel::BackwardTiledRows | Kernel::BackwardRows | Kernel::ForwardSpan)
    }

    /// For the row-blocked kernels ([`Kernel::is_rows`]), whether `g` is a geometry the kernel
    /// handles (the CPU mirror's eligibility test); `true` for the others.
    pub fn takes(self, g: &Geometry) -> bool {
        use crate::cpu::reference::{gather_rows_eligible, rows_eligible, span_eligible};
        match self {
            Kernel::ForwardRows => rows_eligible(g, 4),
            Kernel::BackwardTiledRows => g.tiles() && rows_eligible(g, 2),
            Kernel::BackwardRows => gather_rows_eligible(g),
            Kernel::ForwardSpan => span_eligible(g),
            _ => true,
        }
    }

    /// Elements per array item of the kernel's three tensor bindings, in binding order, for the
    /// row-blocked kernels (forward: input, values, indices; backward: grad_output, indices,
    /// grad_input); the others use the lane width for all three.
    pub fn items(self) -> [u64; 3] {
        match self {
            Kernel::ForwardRows | Kernel::ForwardSpan => [4, 4, 4],
            Kernel::BackwardTiledRows => [2, 2, 4],
            Kernel::BackwardRows => [1, 1, 4],
            _ => [1, 1, 1],
        }
    }
}

/// Channels per invocation: 1, or 4 adjacent channels of a channels-last tensor (16-byte accesses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LaneWidth {
    /// One element per invocation.
    One,
    /// Four adjacent channels per invocation (`vec4`).
    Four,
}

impl LaneWidth {
    /// 1 or 4.
    pub fn get(self) -> usize {
        match self {
            LaneWidth::One => 1,
            LaneWidth::Four => 4,
        }
    }
}

/// One way to run a pass: a kernel, the channels per invocation, the rows per block of the
/// row-block gather, and whether a gather tracks NaN bits in one pass or settles them in two. [`Context::forward_variants`](super::Context::forward_variants) and
/// [`Context::backward_variants`](super::Context::backward_variants) list those that apply to a
/// problem, the context's choice first; [`RecordOptions::variant`](super::RecordOptions::variant)
/// forces one (to compare kernels on a GPU, or to step around a driver's fault). Every variant
/// gives the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The kernel.
    pub kernel: Kernel,
    /// Channels per invocation ([`LaneWidth::One`] for the row-blocked and workgroup-memory
    /// kernels, which block along W instead).
    pub width: LaneWidth,
    /// Rows per block of [`Kernel::BackwardRows`] (`BLOCK_ROWS`: 1 or 2); 1 for the others.
    pub block_rows: u32,
    /// For the gathers with a NaN pass ([`Kernel::has_nan_pass`]): track PyTorch's NaN bits in
    /// the one pass over the windows (`SINGLE_PASS`), instead of the default plain sums and a
    /// second pass where a NaN turned up. Off by default; listed for comparing the two on a GPU.
    pub single_pass: bool,
    /// The generic form ([`Kernel::Forward`], [`Kernel::Backward`] and [`Kernel::BackwardTiled`]
    /// only): geometry read from the uniform instead of specialised through override constants,
    /// so that one pipeline per element type and lane width serves every shape. What a shape's
    /// first calls run (see [`ContextOptions::generic_calls`](super::ContextOptions::generic_calls));
    /// slower per pass (divisions by sizes go through magic numbers, window loops keep runtime
    /// trip counts).
    pub generic: bool,
    /// For [`Kernel::BackwardRows`] and [`Kernel::BackwardCells`] with dilation 1 on H and W and
    /// the strides dividing the block's rows and columns (`FIXED_COVER`): every block meets the
    /// windows at the same phase, so which of its elements each window can cover is fixed when
    /// the pipeline is compiled, and the plain pass tests only those pairs (case B: 18 of 48
    /// per row block, 9 of 16 per cell); which windows a block anchors for the validation is
    /// fixed likewise, and the anchored windows' indices get a dilation-1 check. Same bits, same
    /// count of invalid indices.
    pub fixed_cover: bool,
}

impl Variant {
    /// `kernel` at `width`, one row per block.
    pub fn new(kernel: Kernel, width: LaneWidth) -> Self {
        Self { kernel, width, block_rows: 1, single_pass: false, generic: false, fixed_cover: false }
    }

    /// The generic form of the kernel that stands in for this one in a shape's first calls, at
    /// the same lane width, geometry from the uniform: [`Kernel::Forward`] for the forward
    /// kernels, [`Kernel::BackwardTiled`] for the scatters (windows that tile the input),
    /// [`Kernel::Backward`] (which takes every geometry) for the other backward kernels.
    pub fn generic(self) -> Self {
        let kernel = match self.kernel {
            Kernel::BackwardTiled | Kernel::BackwardTiledRows => Kernel::BackwardTiled,
            k if k.is_backward() => Kernel::Backward,
            _ => Kernel::Forward,
        };
        Self { generic: true, ..Self::new(kernel, self.width) }
    }

    /// A short name: the entry point without `max_pool_`, then `/2rows` for two-row gather
    /// blocks, ` x4` for four channels per invocation, ` single-pass` for
    /// [`Variant::single_pass`], ` fixed` for [`Variant::fixed_cover`] and ` generic` for
    /// [`Variant::generic`] (`backward_rows/2rows`, `forward x4`, `backward x4 single-pass`,
    /// `backward_rows/2rows fixed`, `forward generic`).
    pub fn name(&self) -> String {
        let mut name = self.kernel.entry_point().trim_start_matches("max_pool_").to_string();
        if self.block_rows != 1 {
            name += &format!("/{}rows", self.block_rows);
        }
        if self.width == LaneWidth::Four {
            name += " x4";
        }
        if self.single_pass {
            name += " single-pass";
        }
        if self.fixed_cover {
            name += " fixed";
        }
        if self.generic {
            name += " generic";
        }
        name
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The complete WGSL source of `kernel` for element type `dtype` at lane width `width`: a header
/// declaring `T` and the lane types, then `shaders/common.wgsl`, then the kernel's file.
pub fn shader_source(kernel: Kernel, dtype: DType, width: LaneWidth) -> String {
    let header = shader_header(kernel, dtype, width);
    format!("{header}{COMMON_WGSL}\n{}", kernel.body())
}

/// The constants that a generic pipeline ([`Variant::generic`]) reads from `params.geometry`
/// instead: name `i` is in `params.geometry[i / 4][i % 4]`.
pub const GENERIC_GEOMETRY: [&str; 22] = [
    "LANES", "CAND_D", "CAND_H", "CAND_W", "IN_D", "IN_H", "IN_W", "OUT_D", "OUT_H", "OUT_W", "K_D", "K_H", "K_W",
    "S_D", "S_H", "S_W", "P_D", "P_H", "P_W", "DIL_D", "DIL_H", "DIL_W",
];

/// The source of the generic form of `kernel` ([`Kernel::Forward`], [`Kernel::Backward`] or
/// [`Kernel::BackwardTiled`]): [`shader_source`] with the geometry overrides of `common.wgsl`
/// turned into private variables that the entry point first loads from `params.geometry`
/// ([`GENERIC_GEOMETRY`]). The kernel text is the same; only where its sizes come from changes
/// (and, with the `GENERIC` override on, how it divides by them).
pub fn generic_shader_source(kernel: Kernel, dtype: DType, width: LaneWidth) -> String {
    let takes = matches!(kernel, Kernel::Forward | Kernel::Backward | Kernel::BackwardTiled);
    assert!(takes, "{} has no generic form", kernel.entry_point());
    let mut common = String::with_capacity(COMMON_WGSL.len());
    for line in COMMON_WGSL.lines() {
        let name = line.strip_prefix("override ").and_then(|rest| rest.split(':').next());
        match name {
            Some(name) if GENERIC_GEOMETRY.contains(&name) => common += &format!("var<private> {name}: u32;\n"),
            _ => common += &format!("{line}\n"),
        }
    }
    let loads: String = GENERIC_GEOMETRY
        .iter()
        .enumerate()
        .map(|(i, name)| format!("    {name} = params.geometry[{}].{};\n", i / 4, ["x", "y", "z", "w"][i % 4]))
        .collect();
    common += &format!("fn load_geometry() {{\n{loads}}}\n");
    // The call goes first in the entry point's body: the line after its signature's `) {`.
    let body = kernel.body();
    let entry = body.find(&format!("fn {}(", kernel.entry_point())).expect("the kernel's entry point");
    let open = entry + body[entry..].find(") {\n").expect("the entry point's body") + ") {\n".len();
    let header = shader_header(kernel, dtype, width);
    format!("{header}{common}\n{}    load_geometry();\n{}", &body[..open], &body[open..])
}

/// What precedes `common.wgsl`: the element type, the lane types and their helpers.
fn shader_header(kernel: Kernel, dtype: DType, width: LaneWidth) -> String {
    let element = match dtype {
        DType::F32 => "alias T = f32;\n",
        DType::F16 => "enable f16;\nalias T = f16;\n",
    };
    let lanes = match width {
        LaneWidth::One => {
            "alias V = T;\nalias I = u32;\nalias B = bool;\nalias VF = f32;\n\
             fn count_false(b: B) -> u32 { return select(1u, 0u, b); }\n"
        }
        LaneWidth::Four => {
            "alias V = vec4<T>;\nalias I = vec4<u32>;\nalias B = vec4<bool>;\nalias VF = vec4<f32>;\n\
             fn count_false(b: B) -> u32 { let c = select(vec4<u32>(1u), vec4<u32>(0u), b); return c.x + c.y + c.z + c.w; }\n"
        }
    };
    // The forward kernel re-reads each lane's value at its argmax.
    let reread = match (kernel, width) {
        (Kernel::Forward, LaneWidth::One) => {
            "fn load_lanes(base: u32, arg: I) -> V { return input[base + arg * LANES]; }\n"
        }
        (Kernel::Forward, LaneWidth::Four) => {
            "fn load_lanes(base: u32, arg: I) -> V {\n    return V(input[base + arg.x * LANES].x, input[base + arg.y * LANES].y, \
             input[base + arg.z * LANES].z, input[base + arg.w * LANES].w);\n}\n"
        }
        _ => "",
    };
    // PyTorch's CPU NaN bits for backward sums (`Element::nan_result`, `Element::INDEFINITE`): GPUs
    // canonicalise NaNs made by arithmetic differently, so the result is chosen, not computed.
    // f32 keeps the gradient's payload with bit operations; naga cannot bitcast f16 to integers,
    // so f16 takes its NaNs from the uniform `params.constants`.
    let nan = match dtype {
        DType::F32 => {
            "fn nan_result(v: V) -> V { return bitcast<V>(bitcast<I>(v) | I(0x00400000u)); }\n\
             fn nan_result4(v: vec4<T>) -> vec4<T> { return bitcast<vec4<T>>(bitcast<vec4<u32>>(v) | vec4<u32>(0x00400000u)); }\n"
        }
        DType::F16 => {
            "fn nan_result(v: V) -> V { return V(params.constants.x); }\n\
             fn nan_result4(v: vec4<T>) -> vec4<T> { return vec4<T>(params.constants.x); }\n"
        }
    };
    let nan_lanes = "fn indefinite() -> T { return params.constants.y; }\n";
    format!("{element}{lanes}{reread}{nan}{nan_lanes}")
}

/// The sizes a generic pipeline divides by, in the order of the `DIV_*` slots of
/// `shaders/common.wgsl`; `params.divisors` holds their [`magic_numbers`].
pub const GENERIC_DIVISORS: [&str; 13] =
    ["LANES", "IN_W", "IN_H", "IN_D", "OUT_W", "OUT_H", "OUT_D", "S_D", "S_H", "S_W", "DIL_D", "DIL_H", "DIL_W"];

/// What the uniform tells a generic pipeline ([`Variant::generic`]) about `g` at lane width
/// `width`: `params.geometry` (the values of [`GENERIC_GEOMETRY`]) and `params.divisors` (the
/// [`magic_numbers`] of [`GENERIC_DIVISORS`]). Specialised pipelines have these as constants and
/// ignore them.
pub fn generic_uniform(width: LaneWidth, g: &Geometry) -> ([[u32; 4]; 6], [[u32; 4]; 13]) {
    let mut geometry = [[0u32; 4]; 6];
    let mut divisors = [[0u32; 4]; 13];
    for (name, value) in override_constants(Variant::new(Kernel::Forward, width), g) {
        if let Some(i) = GENERIC_GEOMETRY.iter().position(|n| *n == name) {
            geometry[i / 4][i % 4] = value as u32;
        }
        if let Some(i) = GENERIC_DIVISORS.iter().position(|n| *n == name) {
            let [m, l] = magic_numbers(value as u32);
            divisors[i] = [m, l, 0, 0];
        }
    }
    (geometry, divisors)
}

/// The magic numbers `[m, l]` that divide by `d` with a multiply-high, shifts and adds
/// (Granlund and Montgomery): `l = ceil(log2 d)`, `m = floor(2^32 (2^l - d) / d) + 1`. `d` = 0
/// (never a size) is taken as 1.
pub fn magic_numbers(d: u32) -> [u32; 2] {
    let d = d.max(1) as u64;
    let l = 64 - (d - 1).leading_zeros();
    let m = ((1u64 << 32) * ((1u64 << l) - d) / d + 1) as u32;
    [m, l]
}

/// `x / d` from `d`'s [`magic_numbers`], as `magic_div` in `shaders/common.wgsl` computes it.
pub fn magic_div(x: u32, [m, l]: [u32; 2]) -> u32 {
    let t = ((x as u64 * m as u64) >> 32) as u32;
    let s = l.min(1);
    (t + ((x - t) >> s)) >> (l - s)
}

/// `params.constants` for `dtype`: the NaN a NaN gradient gives (used by f16), the NaN
/// `inf + -inf` gives, and −inf, as raw little-endian bits (f16 values packed two per u32).
pub fn constants(dtype: DType) -> [u32; 4] {
    use crate::element::Element;
    match dtype {
        DType::F32 => [f32::NAN.to_bits(), f32::INDEFINITE.to_bits(), f32::NEG_INFINITY.to_bits(), 0],
        DType::F16 => {
            let bits = |v: half::f16| v.to_bits() as u32;
            let nan = half::f16::NAN.nan_result();
            [bits(nan) | bits(half::f16::INDEFINITE) << 16, bits(half::f16::NEG_INFINITY), 0, 0]
        }
    }
}

/// The override constants that specialise `variant` to a geometry (names as in `common.wgsl`,
/// plus the tile of the workgroup-memory kernels and the rows of the row-block gather).
///
/// A generic variant has only its switches here (`GENERIC`, `SINGLE_PASS`, `RANGED_TAPS`).
pub fn override_constants(variant: Variant, g: &Geometry) -> Vec<(&'static str, f64)> {
    let Variant { kernel, width, block_rows, single_pass, generic, fixed_cover } = variant;
    if generic {
        return vec![
            ("GENERIC", 1.0),
            ("SINGLE_PASS", if single_pass { 1.0 } else { 0.0 }),
            ("RANGED_TAPS", if ranged_taps(g) { 1.0 } else { 0.0 }),
        ];
    }
    let (_, lanes) = g.groups_and_lanes();
    let [d, h, w] = g.axes;
    let mut c = vec![("LANES", (lanes / width.get()) as f64)];
    let tile = |forward| crate::cpu::reference::shared_tile(g, forward).unwrap_or([8, 32]);
    match kernel {
        Kernel::ForwardShared => {
            let [rows, columns] = tile(true);
            c.extend([("TILE_OH", rows as f64), ("TILE_OW", columns as f64)]);
        }
        Kernel::BackwardShared => {
            let [rows, columns] = tile(false);
            c.extend([("TILE_IH", rows as f64), ("TILE_IW", columns as f64)]);
        }
        Kernel::BackwardRows => {
            c.extend([("BLOCK_ROWS", block_rows as f64), ("FIXED_COVER", if fixed_cover { 1.0 } else { 0.0 })])
        }
        Kernel::BackwardCells => {
            let [rows, columns] = crate::cpu::reference::cell_size(g);
            c.extend([
                ("CELL_H", rows as f64),
                ("CELL_W", columns as f64),
                ("FIXED_COVER", if fixed_cover { 1.0 } else { 0.0 }),
            ]);
        }
        _ => {}
    }
    c.push(("SINGLE_PASS", if single_pass { 1.0 } else { 0.0 }));
    let names: [[&'static str; 3]; 6] = [
        ["IN_D", "IN_H", "IN_W"],
        ["OUT_D", "OUT_H", "OUT_W"],
        ["K_D", "K_H", "K_W"],
        ["S_D", "S_H", "S_W"],
        ["P_D", "P_H", "P_W"],
        ["DIL_D", "DIL_H", "DIL_W"],
    ];
    c.push(("RANGED_TAPS", if ranged_taps(g) { 1.0 } else { 0.0 }));
    for (axis, name) in [d, h, w].iter().zip(["CAND_D", "CAND_H", "CAND_W"]) {
        c.push((name, axis.effective_kernel().div_ceil(axis.stride) as f64));
    }
    for (field, names) in names.iter().enumerate() {
        for (axis, name) in [d, h, w].iter().zip(names) {
            let v = match field {
                0 => axis.input,
                1 => axis.output,
                2 => axis.kernel,
                3 => axis.stride,
                4 => axis.padding,
                _ => axis.dilation,
            };
            c.push((name, v as f64));
        }
    }
    c
}

/// Kernels above this size on some axis make the window loops visit only real taps
/// (`RANGED_TAPS` in `common.wgsl`); below, the loops keep constant trip counts and unroll.
pub const RANGED_TAPS_ABOVE: usize = 64;

/// Whether `g`'s window loops visit only real taps (see [`RANGED_TAPS_ABOVE`]).
pub fn ranged_taps(g: &Geometry) -> bool {
    g.axes.iter().any(|a| a.kernel > RANGED_TAPS_ABOVE)
}

/// What a pipeline is specialised to: the geometry without the batch (which only changes counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    variant: Variant,
    dtype: DType,
    /// False for a values-only forward (`WRITE_INDICES`).
    write_indices: bool,
    /// Lanes and axes; `None` for a generic variant, which serves every geometry.
    shape: Option<(usize, [crate::params::Axis; 3])>,
    /// `RANGED_TAPS` (part of the shape, but a switch of the generic pipelines too).
    ranged_taps: bool,
}

impl PipelineKey {
    fn new(variant: Variant, dtype: DType, g: &Geometry, write_indices: bool) -> Self {
        let shape = (!variant.generic).then(|| (g.groups_and_lanes().1, g.axes));
        Self { variant, dtype, write_indices, shape, ranged_taps: ranged_taps(g) }
    }
}

/// Shader modules per (kernel, dtype), the two bind group layouts and a cache of specialised
/// pipelines.
pub(crate) struct Kernels {
    forward_layout: wgpu::BindGroupLayout,
    backward_layout: wgpu::BindGroupLayout,
    forward_pipeline_layout: wgpu::PipelineLayout,
    backward_pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(Kernel, DType, LaneWidth, bool), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Passes run so far, per specialised pipeline not yet compiled, in its generic stand-in.
    generic_runs: Mutex<HashMap<PipelineKey, u32>>,
    /// Specialised pipelines queued for, or being compiled on, the background thread.
    compiling: Mutex<std::collections::HashSet<PipelineKey>>,
    /// The background thread's queue.
    #[cfg(not(target_arch = "wasm32"))]
    background: Mutex<Background>,
}

/// Compiles waiting for the background thread (see [`Kernels::compile_in_background`]), and
/// whether that thread runs.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Default)]
struct Background {
    jobs: std::collections::VecDeque<CompileJob>,
    worker: bool,
}

/// One pipeline for the background thread to compile.
#[cfg(not(target_arch = "wasm32"))]
struct CompileJob {
    key: PipelineKey,
    variant: Variant,
    dtype: DType,
    g: Geometry,
    write_indices: bool,
}

/// Waits for the queue's last submission by polling without blocking, every half millisecond,
/// at most `timeout`; false on a timeout or a lost device. A blocking `device.poll` would hold
/// wgpu's resource lock for the whole wait, stalling the caller's threads wherever they destroy
/// a buffer meanwhile; the queue runs the thread's warm-up after everything submitted before
/// it, which on a busy GPU can take a while.
#[cfg(not(target_arch = "wasm32"))]
fn wait_polling(device: &wgpu::Device, queue: &wgpu::Queue, timeout: Option<std::time::Duration>) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&done);
    queue.on_submitted_work_done(move || flag.store(true, Ordering::Release));
    let start = std::time::Instant::now();
    loop {
        if device.poll(wgpu::PollType::Poll).is_err() {
            return false;
        }
        if done.load(Ordering::Acquire) {
            return true;
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// Most compiles queued for the background thread; a shape that finds the queue full compiles
/// at its next pass instead, as without the thread (shapes that change at every call would
/// otherwise queue compiles faster than one thread works them off).
#[cfg(not(target_arch = "wasm32"))]
const BACKGROUND_QUEUE_LIMIT: usize = 32;

/// Most pipelines kept; beyond this the cache is cleared (shapes in a training loop repeat).
const PIPELINE_CACHE_LIMIT: usize = 256;

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform_entry() -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<ParamsUniform>() as u64),
        },
        count: None,
    }
}

/// A uniform buffer holding `params`. Written through the queue rather than mapped at creation:
/// on a device that is already gone (destroyed, lost, its callback not run yet) wgpu's
/// `create_buffer_init` panics, the queue write only reports an error.
pub(crate) fn params_buffer(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    params: &ParamsUniform,
) -> wgpu::Buffer {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: std::mem::size_of::<ParamsUniform>() as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buffer, 0, bytemuck::bytes_of(params));
    buffer
}

/// Mirrors `struct Params` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ParamsUniform {
    /// x: outputs in chunk, y: inputs in chunk.
    pub counts: [u32; 4],
    /// Element offsets: x input/grad_output, y values/grad_input, z indices, w invalid counter.
    pub bases: [u32; 4],
    /// NaN for NaN gradients, NaN for `inf + -inf`, −inf (see [`constants`]).
    pub constants: [u32; 4],
    /// The geometry for generic pipelines (see [`generic_uniform`]).
    pub geometry: [[u32; 4]; 6],
    /// The magic numbers of its divisors (see [`generic_uniform`]).
    pub divisors: [[u32; 4]; 13],
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let forward_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpool forward"),
            entries: &[uniform_entry(), storage_entry(1, true), storage_entry(2, false), storage_entry(3, false)],
        });
        let backward_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpool backward"),
            entries: &[
                uniform_entry(),
                storage_entry(1, true),
                storage_entry(2, true),
                storage_entry(3, false),
                storage_entry(4, false),
            ],
        });
        let pipeline_layout = |label, layout: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            })
        };
        Self {
            forward_pipeline_layout: pipeline_layout("wgpool forward", &forward_layout),
            backward_pipeline_layout: pipeline_layout("wgpool backward", &backward_layout),
            forward_layout,
            backward_layout,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            generic_runs: Mutex::new(HashMap::new()),
            compiling: Mutex::new(std::collections::HashSet::new()),
            #[cfg(not(target_arch = "wasm32"))]
            background: Mutex::new(Background::default()),
        }
    }

    pub fn bind_group_layout(&self, kernel: Kernel) -> &wgpu::BindGroupLayout {
        if kernel.is_backward() { &self.backward_layout } else { &self.forward_layout }
    }

    fn module(&self, device: &wgpu::Device, variant: Variant, dtype: DType) -> wgpu::ShaderModule {
        let Variant { kernel, width, generic, .. } = variant;
        let key = (kernel, dtype, width, generic);
        if let Some(module) = self.modules.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return module.clone();
        }
        // Parsed and validated outside the lock: a thread that needs another module, already
        // made, does not wait for this one.
        let source =
            if generic { generic_shader_source(kernel, dtype, width) } else { shader_source(kernel, dtype, width) };
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(kernel.entry_point()),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        self.modules.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(module).clone()
    }

    /// The variant a pass of `g` runs when the context picked `chosen`: `chosen` where its
    /// pipeline is compiled or the geometry has had `generic_calls` passes already, else (one
    /// more pass counted) its generic stand-in ([`Variant::generic`]), so that a shape seen once
    /// compiles nothing of its own. Also whether that pass was the last of the shape's generic
    /// passes (its next compiles), where [`Kernels::compile_in_background`] may start the
    /// compile.
    pub fn tiered(
        &self,
        chosen: Variant,
        dtype: DType,
        g: &Geometry,
        write_indices: bool,
        generic_calls: u32,
    ) -> (Variant, bool) {
        if chosen.generic || generic_calls == 0 {
            return (chosen, false);
        }
        let key = PipelineKey::new(chosen, dtype, g, write_indices);
        if self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
            return (chosen, false);
        }
        // Its compile is queued or under way on another thread: the generic kernel until it is
        // there.
        if self.compiling.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) {
            return (chosen.generic(), false);
        }
        let mut runs = self.generic_runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.len() >= PIPELINE_CACHE_LIMIT {
            runs.clear();
        }
        let count = runs.entry(key).or_insert(0);
        if *count >= generic_calls {
            runs.remove(&key);
            return (chosen, false);
        }
        *count += 1;
        (chosen.generic(), *count == generic_calls)
    }

    /// Queues the compile of `variant`'s pipeline for `g` for a thread of its own, unless it is
    /// compiled, queued or the queue is full ([`BACKGROUND_QUEUE_LIMIT`]), and starts that
    /// thread if none runs. The thread compiles each queued pipeline, runs it once on nothing
    /// (see [`Kernels::record_warm_up`]), waits for that (at most `timeout`, polling without
    /// blocking: see [`wait_polling`]) and only then, if no error came up, puts it in the cache;
    /// [`Kernels::tiered`] runs the generic stand-in meanwhile. A compile that fails (out of memory, a lost device, a timeout) leaves nothing
    /// in the cache, so the next pass compiles again, where its error is reported.
    #[cfg(not(target_arch = "wasm32"))]
    #[allow(clippy::too_many_arguments)]
    pub fn compile_in_background(
        self: &std::sync::Arc<Self>,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        timeout: Option<std::time::Duration>,
        variant: Variant,
        dtype: DType,
        g: &Geometry,
        write_indices: bool,
    ) {
        let key = PipelineKey::new(variant, dtype, g, write_indices);
        if self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
            return;
        }
        let mut background = self.background.lock().unwrap_or_else(|e| e.into_inner());
        if background.jobs.len() >= BACKGROUND_QUEUE_LIMIT
            || !self.compiling.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
        {
            return;
        }
        background.jobs.push_back(CompileJob { key, variant, dtype, g: *g, write_indices });
        if background.worker {
            return;
        }
        let (kernels, device, queue) = (std::sync::Arc::clone(self), device.clone(), queue.clone());
        let spawned = std::thread::Builder::new()
            .name("wgpool compile".into())
            .spawn(move || kernels.work_off_compiles(&device, &queue, timeout));
        match spawned {
            Ok(_) => background.worker = true,
            // No thread to be had: the passes compile it themselves, as without this option.
            Err(_) => {
                let mut compiling = self.compiling.lock().unwrap_or_else(|e| e.into_inner());
                for job in background.jobs.drain(..) {
                    compiling.remove(&job.key);
                }
            }
        }
    }

    /// The background thread: compiles the queued pipelines one after another, and ends when
    /// the queue is empty. If it panics, the queued compiles are dropped (their shapes compile
    /// at their next pass).
    #[cfg(not(target_arch = "wasm32"))]
    fn work_off_compiles(&self, device: &wgpu::Device, queue: &wgpu::Queue, timeout: Option<std::time::Duration>) {
        /// Takes a job's key out of `compiling` however the job ends, and on a panic the
        /// whole queue.
        struct Done<'a>(&'a Kernels, Option<PipelineKey>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut keys: Vec<PipelineKey> = self.1.take().into_iter().collect();
                // The locks in the order `compile_in_background` takes them: the queue first.
                if std::thread::panicking() {
                    let mut background = self.0.background.lock().unwrap_or_else(|e| e.into_inner());
                    keys.extend(background.jobs.drain(..).map(|job| job.key));
                    background.worker = false;
                }
                let mut compiling = self.0.compiling.lock().unwrap_or_else(|e| e.into_inner());
                for key in keys {
                    compiling.remove(&key);
                }
            }
        }
        loop {
            let job = {
                let mut background = self.background.lock().unwrap_or_else(|e| e.into_inner());
                match background.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        // Under the lock: a job queued after this finds no worker and starts one.
                        background.worker = false;
                        return;
                    }
                }
            };
            let _done = Done(self, Some(job.key));
            // Error scopes are per thread: these catch this compile's errors only.
            let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
            let pipeline = self.compile(device, job.variant, job.dtype, &job.g, job.write_indices);
            let mut encoder = device.create_command_encoder(&Default::default());
            self.record_warm_up(device, queue, &mut encoder, &[(job.variant.kernel, pipeline.clone())], job.dtype);
            queue.submit([encoder.finish()]);
            let waited = wait_polling(device, queue, timeout);
            let errors = [internal.pop(), validation.pop(), oom.pop()].map(pollster::block_on);
            if waited && errors.iter().all(Option::is_none) {
                self.insert(job.key, pipeline);
                self.generic_runs.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.key);
            }
        }
    }

    /// Records one dispatch of each of `pipelines` on one workgroup with nothing to do (counts
    /// of 0, tiny buffers): some drivers (Mesa's lavapipe and llvmpipe) compile a shader's
    /// machine code at its first dispatch, not when the pipeline is created.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn record_warm_up(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        encoder: &mut wgpu::CommandEncoder,
        pipelines: &[(Kernel, wgpu::ComputePipeline)],
        dtype: DType,
    ) {
        // One buffer per storage binding (a read and a write of one buffer may not meet in a
        // dispatch), each larger than any element the kernels declare.
        let dummies: Vec<wgpu::Buffer> = (0..4)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpool warm-up"),
                    size: 256,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let params = ParamsUniform {
            counts: [0; 4],
            bases: [0; 4],
            constants: constants(dtype),
            geometry: [[0; 4]; 6],
            divisors: [[0; 4]; 13],
        };
        let uniform = params_buffer(device, queue, "wgpool warm-up params", &params);
        for (kernel, pipeline) in pipelines {
            let storage = if kernel.is_backward() { 4 } else { 3 };
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            entries.extend(dummies[..storage].iter().enumerate().map(|(i, buffer)| wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buffer.as_entire_binding(),
            }));
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpool warm-up"),
                layout: self.bind_group_layout(*kernel),
                entries: &entries,
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry_point()),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
    }

    /// The number of compiled pipelines in the cache.
    pub fn pipelines(&self) -> usize {
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The pipeline for `variant` specialised to `g`, compiled on first use; `write_indices`
    /// false makes a forward kernel values-only.
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        variant: Variant,
        dtype: DType,
        g: &Geometry,
        write_indices: bool,
    ) -> wgpu::ComputePipeline {
        let key = PipelineKey::new(variant, dtype, g, write_indices);
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return p.clone();
        }
        // Compiled outside the lock: other threads keep recording meanwhile.
        let pipeline = self.compile(device, variant, dtype, g, write_indices);
        self.insert(key, pipeline)
    }

    /// Compiles the pipeline of `variant` for `g`, without caching it.
    fn compile(
        &self,
        device: &wgpu::Device,
        variant: Variant,
        dtype: DType,
        g: &Geometry,
        write_indices: bool,
    ) -> wgpu::ComputePipeline {
        let kernel = variant.kernel;
        let module = self.module(device, variant, dtype);
        let mut constants = override_constants(variant, g);
        if !write_indices {
            constants.push(("WRITE_INDICES", 0.0));
        }
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry_point()),
            layout: Some(if kernel.is_backward() {
                &self.backward_pipeline_layout
            } else {
                &self.forward_pipeline_layout
            }),
            module: &module,
            entry_point: Some(kernel.entry_point()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        })
    }

    /// Puts `pipeline` in the cache (emptied first when full) unless another thread put one
    /// there first, and returns the cached one.
    fn insert(&self, key: PipelineKey, pipeline: wgpu::ComputePipeline) -> wgpu::ComputePipeline {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if pipelines.len() >= PIPELINE_CACHE_LIMIT {
            pipelines.clear();
        }
        pipelines.entry(key).or_insert(pipeline).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `magic_div` (and so the shaders' division, which it mirrors) is exact for the sizes
    /// that matter and for every x near the edges, whatever the divisor.
    #[test]
    fn magic_division_is_exact() {
        let mut divisors: Vec<u32> = (1..=4100).collect();
        divisors.extend([
            65_535,
            65_536,
            65_537,
            1 << 20,
            (1 << 31) - 1,
            1 << 31,
            (1 << 31) + 1,
            u32::MAX - 1,
            u32::MAX,
        ]);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        };
        for &d in &divisors {
            let magic = magic_numbers(d);
            let mut xs: Vec<u32> = vec![0, 1, d - 1, d, d.wrapping_add(1), u32::MAX, u32::MAX - 1, u32::MAX / d * d];
            xs.extend((0..64).map(|_| next()));
            xs.extend((0..16).map(|_| next() % 1_000_000));
            for x in xs {
                assert_eq!(magic_div(x, magic), x / d, "{x} / {d} with {magic:?}");
            }
        }
    }

    /// The `DIV_*` slots of `common.wgsl` are [`GENERIC_DIVISORS`] in order, and the overrides
    /// the generic source turns into private variables are exactly [`GENERIC_GEOMETRY`].
    #[test]
    fn generic_slots_match_common_wgsl() {
        let slot = |name: &str| -> u32 {
            let line = COMMON_WGSL.lines().find(|l| l.starts_with(&format!("const {name}: u32 = "))).unwrap();
            line.trim_end_matches("u;").rsplit(' ').next().unwrap().parse().unwrap()
        };
        for (i, name) in GENERIC_DIVISORS.iter().enumerate().take(7) {
            assert_eq!(slot(&format!("DIV_{name}")), i as u32, "{name}");
        }
        assert_eq!(&GENERIC_DIVISORS[7..10], ["S_D", "S_H", "S_W"]);
        assert_eq!(slot("DIV_STRIDE"), 7);
        assert_eq!(&GENERIC_DIVISORS[10..], ["DIL_D", "DIL_H", "DIL_W"]);
        assert_eq!(slot("DIV_DILATION"), 10);
        let source = generic_shader_source(Kernel::Backward, DType::F32, LaneWidth::One);
        for name in GENERIC_GEOMETRY {
            assert!(source.contains(&format!("var<private> {name}: u32;")), "{name}");
            assert!(!source.contains(&format!("override {name}:")), "{name}");
        }
        assert!(source.contains("override GENERIC: bool"));
    }
}
