//! Every shader entry point (the general kernels also in their generic form), for every
//! element type, through naga to SPIR-V (checked by `spirv-val`), MSL (Metal), HLSL (DX12) and
//! GLSL (GL): the backends this machine has no GPU for are at least compiled for.

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpool::gpu::kernels::{Kernel, LaneWidth, Variant, generic_shader_source, override_constants, shader_source};
use wgpool::{DType, InputShape, Layout, PoolParams, PoolSpec};

/// `kernel` specialised to `spec`, or in its `generic` form (geometry from the uniform); with
/// `other_form`, the gathers in their single-pass form with one-row blocks, and the forward
/// kernels values-only (no index stores).
fn specialised(
    kernel: Kernel,
    dtype: DType,
    width: LaneWidth,
    spec: &PoolSpec,
    (generic, other_form): (bool, bool),
) -> (naga::Module, naga::valid::ModuleInfo) {
    let source =
        if generic { generic_shader_source(kernel, dtype, width) } else { shader_source(kernel, dtype, width) };
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{} ({}): {}", kernel.entry_point(), dtype.name(), e.emit_to_string(&source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{} ({}): {}", kernel.entry_point(), dtype.name(), e.emit_to_string(&source)));
    let mut constants = naga::back::PipelineConstants::default();
    let g = spec.validate().unwrap();
    // Two-row gather blocks where the input has two rows (one-row blocks in the other form).
    let block_rows = if other_form { 1 } else { wgpool::cpu::reference::gather_block_rows(&g) as u32 };
    let single_pass = other_form && kernel.has_nan_pass();
    let variant = Variant { block_rows, single_pass, generic, ..Variant::new(kernel, width) };
    for (name, value) in override_constants(variant, &g) {
        constants.insert(name.to_string(), value);
    }
    if other_form && kernel.entry_point().starts_with("max_pool_forward") {
        constants.insert("WRITE_INDICES".to_string(), 0.0);
    }
    let entry = Some((naga::ShaderStage::Compute, kernel.entry_point()));
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, entry, &constants).unwrap();
    (module.into_owned(), info.into_owned())
}

fn specs() -> Vec<PoolSpec> {
    vec![
        PoolSpec::new(InputShape::nchw(2, 3, 8, 8), PoolParams::new([2, 2])),
        // The span kernel (overlapping W windows, widths divisible by 4).
        PoolSpec::new(InputShape::nchw(2, 3, 9, 16), PoolParams::new([3, 3]).stride([2, 2]).padding([1, 1])),
        PoolSpec::new(
            InputShape::new(2, 3, [5, 6, 16]),
            PoolParams::new([3, 2, 2]).stride([1, 2, 2]).padding([1, 1, 0]).dilation([2, 1, 1]),
        ),
        PoolSpec::new(InputShape::nchw(2, 8, 8, 6), PoolParams::new([2, 3])).layout(Layout::ChannelsLast),
        PoolSpec::new(
            InputShape::new(1, 4, [5, 6, 7]),
            PoolParams::new([3, 3, 2]).stride([2, 1, 1]).padding([1, 1, 1]).dilation([1, 2, 1]),
        )
        .layout(Layout::ChannelsLast),
    ]
}

fn spirv_val(words: &[u32], name: &str) {
    let dir = std::env::temp_dir().join(format!("wgpool-spv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.spv"));
    std::fs::write(&path, bytemuck::cast_slice(words)).unwrap();
    match std::process::Command::new("spirv-val").arg("--target-env").arg("vulkan1.1").arg(&path).output() {
        Ok(out) => assert!(
            out.status.success(),
            "spirv-val rejects {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "spirv-val not found ({e}); under CI=true it must be installed (Debian: spirv-tools)");
            eprintln!("spirv-val not found ({e}): SPIR-V of {name} was written but not validated; install spirv-tools");
        }
    }
}

#[test]
fn every_entry_point_translates_to_every_backend() {
    for kernel in Kernel::ALL {
        for (dtype, width) in
            [DType::F32, DType::F16].into_iter().flat_map(|d| [(d, LaneWidth::One), (d, LaneWidth::Four)])
        {
            for (i, spec) in specs().iter().enumerate() {
                if width == LaneWidth::Four && (spec.layout != Layout::ChannelsLast || spec.input.channels % 4 != 0) {
                    continue;
                }
                let shared_ok =
                    |forward| wgpool::cpu::reference::shared_tile(&spec.validate().unwrap(), forward).is_some();
                if kernel.is_shared() && (width == LaneWidth::Four || !shared_ok(kernel == Kernel::ForwardShared)) {
                    continue;
                }
                let g = spec.validate().unwrap();
                if kernel.is_rows() && (width == LaneWidth::Four || !kernel.takes(&g)) {
                    continue;
                }
                // The cell gather exists at lane width 4 only.
                if kernel == Kernel::BackwardCells && width == LaneWidth::One {
                    continue;
                }
                // The kernels with a generic form also in that form, on the first two problems.
                let generic = matches!(kernel, Kernel::Forward | Kernel::Backward | Kernel::BackwardTiled) && i < 2;
                for generic in [false, true].into_iter().filter(|&g| !g || generic) {
                    let form = if generic { "_generic" } else { "" };
                    let name = format!("{}_{}_x{}_{i}{form}", kernel.entry_point(), dtype.name(), width.get());
                    // Every other problem compiles the other form (single-pass gathers, values-only
                    // forward kernels).
                    let (module, info) = specialised(kernel, dtype, width, spec, (generic, i % 2 == 1));
                    let words = spv::write_vec(
                        &module,
                        &info,
                        &spv::Options::default(),
                        Some(&spv::PipelineOptions {
                            shader_stage: naga::ShaderStage::Compute,
                            entry_point: kernel.entry_point().into(),
                        }),
                    )
                    .unwrap_or_else(|e| panic!("SPIR-V {name}: {e}"));
                    spirv_val(&words, &name);

                    let pipeline = msl::PipelineOptions {
                        entry_point: Some((naga::ShaderStage::Compute, kernel.entry_point().into())),
                        ..Default::default()
                    };
                    let options = msl::Options { lang_version: (2, 4), ..Default::default() };
                    let (metal, _) = msl::write_string(&module, &info, &options, &pipeline)
                        .unwrap_or_else(|e| panic!("MSL {name}: {e}"));
                    assert!(metal.contains("kernel void"), "MSL {name}");

                    let mut hlsl_out = String::new();
                    let options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
                    let pipeline = hlsl::PipelineOptions {
                        entry_point: Some((naga::ShaderStage::Compute, kernel.entry_point().into())),
                    };
                    hlsl::Writer::new(&mut hlsl_out, &options, &pipeline)
                        .write(&module, &info, None)
                        .unwrap_or_else(|e| panic!("HLSL {name}: {e}"));
                    assert!(hlsl_out.contains("[numthreads(256, 1, 1)]"), "HLSL {name}");

                    let mut glsl_out = String::new();
                    let pipeline = glsl::PipelineOptions {
                        shader_stage: naga::ShaderStage::Compute,
                        entry_point: kernel.entry_point().into(),
                        multiview: None,
                    };
                    let glsl_result = glsl::Writer::new(
                        &mut glsl_out,
                        &module,
                        &info,
                        &glsl::Options::default(),
                        &pipeline,
                        Default::default(),
                    )
                    .and_then(|mut w| w.write().map(|_| ()));
                    match dtype {
                        DType::F32 => glsl_result.unwrap_or_else(|e| panic!("GLSL {name}: {e}")),
                        // naga's GLSL writer has no 16-bit floats: f16 must be refused there (and the
                        // GL backend never offers SHADER_F16).
                        DType::F16 => assert!(glsl_result.is_err(), "GLSL accepted f16 for {name}"),
                    }
                }
            }
        }
    }
}

#[test]
fn shaders_never_spell_negative_infinity_or_use_max() {
    // Browsers (Tint) reject -inf constants, and max() is backend-defined for NaN.
    for kernel in Kernel::ALL {
        let source = shader_source(kernel, DType::F32, LaneWidth::Four);
        let code: String = source.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
        for banned in ["0xff800000", "-inf", "max(best", "!= v", "v != "] {
            assert!(!code.contains(banned), "{} contains {banned:?}", kernel.entry_point());
        }
    }
}
