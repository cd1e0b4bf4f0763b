//! Max-pools every channel of a PNG on the GPU: each k×k block of pixels becomes one pixel holding
//! the block's maximum, channel by channel.
//!
//! An image is already a channels-last tensor (rows of pixels of R, G, B[, A] bytes), so it goes
//! to the GPU as it is: N = 1, `Layout::ChannelsLast`, C = 3 or 4. Bright details one pixel wide
//! survive where averaging would wash them out, and a red and a blue pixel in one block make a
//! magenta one, since each channel keeps its own maximum.
//!
//! ```text
//! cargo run --example image_downsample -- [--kernel K] [--out-dir DIR] [--enlarged] [INPUT.png [OUTPUT.png]]
//! ```
//!
//! Without INPUT it draws a 256×256 test pattern and saves it as `DIR/downsample_input.png`;
//! OUTPUT defaults to `DIR/downsample_output.png` (DIR defaults to `.`). `--enlarged` also writes
//! the result scaled back up by K with nearest-neighbour sampling (`*_enlarged.png`), to show both
//! at the same size. The README's pictures come from
//! `cargo run --example image_downsample -- --out-dir docs --enlarged`.

use std::path::{Path, PathBuf};

use wgpool::{Context, GpuTensor, InputShape, Layout, PoolParams, PoolSpec};

struct Args {
    kernel: usize,
    out_dir: PathBuf,
    enlarged: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: image_downsample [--kernel K] [--out-dir DIR] [--enlarged] [INPUT.png [OUTPUT.png]]";
    let mut args = Args { kernel: 4, out_dir: ".".into(), enlarged: false, input: None, output: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => {
                let k = it.next().ok_or(usage)?;
                args.kernel = k.parse().ok().filter(|&k| k > 0).ok_or(format!("--kernel: not a size: {k}"))?;
            }
            "--out-dir" => args.out_dir = it.next().ok_or(usage)?.into(),
            "--enlarged" => args.enlarged = true,
            "-h" | "--help" => return Err(usage.into()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}\n{usage}")),
            _ if args.input.is_none() => args.input = Some(arg.into()),
            _ if args.output.is_none() => args.output = Some(arg.into()),
            _ => return Err(usage.into()),
        }
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("image_downsample: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out_dir)?;

    // Pixels as bytes, row by row, `channels` per pixel.
    let (width, height, channels, pixels) = match &args.input {
        Some(path) => {
            let image = image::open(path)?;
            if image.color().has_alpha() {
                let rgba = image.to_rgba8();
                (rgba.width(), rgba.height(), 4, rgba.into_raw())
            } else {
                let rgb = image.to_rgb8();
                (rgb.width(), rgb.height(), 3, rgb.into_raw())
            }
        }
        None => {
            let pattern = test_pattern(256);
            let path = args.out_dir.join("downsample_input.png");
            pattern.save(&path)?;
            println!("wrote the test pattern to {}", path.display());
            (pattern.width(), pattern.height(), 3, pattern.into_raw())
        }
    };

    // One image, channels last: exactly the bytes' order. ceil_mode keeps a partial block at the
    // right and bottom edges when the size is not a multiple of the kernel.
    let k = args.kernel;
    let spec = PoolSpec::new(
        InputShape::new(1, channels, [height as usize, width as usize]),
        PoolParams::new([k, k]).ceil_mode(true),
    )
    .layout(Layout::ChannelsLast);
    let input: Vec<f32> = pixels.iter().map(|&b| b as f32).collect();

    let ctx = Context::new()?;
    let tensor = GpuTensor::upload(&ctx, spec.input.clone(), spec.layout, &input)?;
    let pooled = ctx.forward_tensor(&spec, &tensor)?;
    let values = pooled.values.download(&ctx)?;
    assert_eq!(values, wgpool::cpu::forward(&spec, &input)?.values, "GPU and CPU disagree");

    let out = pooled.values.shape();
    let (out_h, out_w) = (out.spatial[0] as u32, out.spatial[1] as u32);
    // Maxima of bytes are bytes: the conversion back is exact.
    let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
    let output = args.output.clone().unwrap_or_else(|| args.out_dir.join("downsample_output.png"));
    save(&output, out_w, out_h, channels, bytes.clone())?;
    println!(
        "{}: {width}×{height}×{channels} → {out_w}×{out_h}×{channels}, kernel {k}, on {}",
        output.display(),
        ctx.describe()
    );
    if args.enlarged {
        let path = output.with_file_name(format!(
            "{}_enlarged.png",
            output.file_stem().and_then(|s| s.to_str()).unwrap_or("downsample_output")
        ));
        let (big, big_w, big_h) = enlarge(&bytes, out_w, out_h, channels, k as u32);
        save(&path, big_w, big_h, channels, big)?;
        println!("{}: the same, {k}× larger (nearest neighbour)", path.display());
    }
    Ok(())
}

fn save(path: &Path, width: u32, height: u32, channels: usize, bytes: Vec<u8>) -> image::ImageResult<()> {
    let color = if channels == 4 { image::ExtendedColorType::Rgba8 } else { image::ExtendedColorType::Rgb8 };
    image::save_buffer(path, &bytes, width, height, color)
}

/// Each pixel repeated `k × k` times.
fn enlarge(bytes: &[u8], width: u32, height: u32, channels: usize, k: u32) -> (Vec<u8>, u32, u32) {
    let (big_w, big_h) = (width * k, height * k);
    let mut big = Vec::with_capacity((big_w * big_h) as usize * channels);
    for y in 0..big_h {
        for x in 0..big_w {
            let at = ((y / k * width + x / k) as usize) * channels;
            big.extend_from_slice(&bytes[at..at + channels]);
        }
    }
    (big, big_w, big_h)
}

/// A colourful `size × size` pattern: a dark hue swirl with rings, thin bright curves and single
/// bright pixels: the details that max pooling keeps.
fn test_pattern(size: u32) -> image::RgbImage {
    let s = size as f32;
    let mut image = image::RgbImage::from_fn(size, size, |x, y| {
        let (u, v) = (x as f32 / s - 0.5, y as f32 / s - 0.5);
        let r = (u * u + v * v).sqrt();
        let hue = v.atan2(u) / std::f32::consts::TAU + 1.2 * r;
        let value = 0.22 + 0.2 * (0.5 + 0.5 * (r * 40.0).sin());
        hsv(hue, 0.75, value)
    });
    // Three one-pixel sine curves, drawn column by column without gaps.
    for (curve, hue) in [(0usize, 0.0f32), (1, 0.33), (2, 0.6)] {
        let y_at = |x: u32| {
            let t = x as f32 / s * std::f32::consts::TAU;
            (s / 2.0 + s * 0.3 * (t * (curve + 1) as f32 * 0.5 + curve as f32 * 1.7).sin()).round() as i64
        };
        for x in 0..size {
            let (y0, y1) = (y_at(x), y_at((x + 1).min(size - 1)));
            for y in y0.min(y1)..=y0.max(y1) {
                if (0..size as i64).contains(&y) {
                    image.put_pixel(x, y as u32, hsv(hue, 0.9, 1.0));
                }
            }
        }
    }
    // Single bright pixels on a jittered grid, in every hue.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for gy in (8..size).step_by(16) {
        for gx in (8..size).step_by(16) {
            let (x, y) = (gx + (next() % 7) as u32 - 3, gy + (next() % 7) as u32 - 3);
            image.put_pixel(x, y, hsv((next() % 1000) as f32 / 1000.0, 0.8, 1.0));
        }
    }
    image
}

fn hsv(hue: f32, saturation: f32, value: f32) -> image::Rgb<u8> {
    let h = hue.rem_euclid(1.0) * 6.0;
    let f = |n: f32| {
        let k = (n + h) % 6.0;
        value - value * saturation * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    image::Rgb([f(5.0), f(3.0), f(1.0)].map(|c| (c * 255.0).round() as u8))
}
