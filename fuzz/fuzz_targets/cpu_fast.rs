//! Differential fuzzing of the fast CPU path against `cpu::reference`, bit for bit.
//!
//! The bytes choose a problem (rank 1–3, layout, batch, channels, per-axis sizes and parameters,
//! f32 or f16), a palette of nasty values (NaN payloads and signs, ±inf, ±0, ties, subnormals,
//! random bits) and how the input picks from it, a palette of gradients, the rayon pool the fast
//! path runs on (1 to 7 threads: `task_count` only splits work with several threads; pin the
//! fuzzer to one core with `taskset` to keep it on one CPU), and a few spoiled indices. Every
//! entry point (`forward`, `forward_into`, `forward_values`, `forward_values_into`, `backward`,
//! `backward_into`; `_into` buffers poisoned with NaN first) must give the reference's bits, its
//! indices and, for invalid indices, its `Error::InvalidIndices { count }`.
//!
//! `WGPOOL_CPU_ISA=baseline|avx2|avx512` in the environment caps the kernels' instruction set.
//!
//!     taskset -c 1 cargo +nightly fuzz run cpu_fast -- -jobs=1 -workers=1
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wgpool::{Element, InputShape, Layout, NO_INDEX, PoolParams, PoolSpec, cpu, f16};

/// Problems above this many input elements are skipped.
const MAX_INPUT: usize = 300_000;

/// Reads the fuzzer's bytes; zeros once they run out.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.u8() as usize % from.len()]
    }
    /// The bytes not read yet.
    fn rest(&self) -> &[u8] {
        self.data.get(self.at..).unwrap_or(&[])
    }
}

/// The tests' seeded generators (SplitMix64 `Rng`), for inputs longer than the fuzzer's bytes.
#[path = "../../tests/suite/generators.rs"]
mod generators;
use generators::Rng;

/// What the target needs beyond [`Element`]: values from bits, and the format's fields.
trait Bits: Element {
    const SIGN: u32;
    const EXP: u32; // exponent mask
    const QUIET: u32;
    const MANT: u32;
    fn from_u32(bits: u32) -> Self;
}

impl Bits for f32 {
    const SIGN: u32 = 0x8000_0000;
    const EXP: u32 = 0x7f80_0000;
    const QUIET: u32 = 0x0040_0000;
    const MANT: u32 = 0x007f_ffff;
    fn from_u32(bits: u32) -> Self {
        f32::from_bits(bits)
    }
}

impl Bits for f16 {
    const SIGN: u32 = 0x8000;
    const EXP: u32 = 0x7c00;
    const QUIET: u32 = 0x0200;
    const MANT: u32 = 0x03ff;
    fn from_u32(bits: u32) -> Self {
        f16::from_bits(bits as u16)
    }
}

/// One nasty value from the bytes.
fn nasty<T: Bits>(b: &mut Bytes) -> T {
    let kind = b.u8();
    let sign = if kind & 0x80 != 0 { T::SIGN } else { 0 };
    let raw = b.u32();
    let bits = match kind % 12 {
        // NaN: quiet or signalling, a payload, either sign.
        0 | 1 => {
            let quiet = if raw & 1 != 0 { T::QUIET } else { 0 };
            let mut payload = (raw >> 1) & (T::MANT & !T::QUIET);
            if quiet == 0 && payload == 0 {
                payload = 1;
            }
            sign | T::EXP | quiet | payload
        }
        2 => sign | T::EXP,                                           // ±inf
        3 => sign,                                                    // ±0
        4 | 5 => T::from_f32((raw % 5) as f32 - 2.0).to_bits_u32(),   // small integers: ties
        6 => sign | (raw & T::MANT).max(1),                           // subnormal
        7 => sign | (T::EXP - 1),                                     // ±max finite
        8 => T::from_f32(-((raw % 1000) as f32) / 8.0).to_bits_u32(), // negatives
        _ => {
            if T::SIGN == 0x8000 {
                raw & 0xffff
            } else {
                raw
            }
        }
    };
    T::from_u32(bits)
}

/// One gradient from the bytes: mostly exactly summable values, then the nasty ones.
fn gradient<T: Bits>(b: &mut Bytes) -> T {
    let kind = b.u8();
    match kind % 8 {
        0..=3 => T::from_f32((b.u8() as i8) as f32 / 4.0),
        4 => T::from_f32((b.u16() as i16) as f32 * 3.0e-3),
        _ => nasty(b),
    }
}

fn bits<T: Element>(v: &[T]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits_u32()).collect()
}

/// Logical coordinates (n, c, spatial...) of element `i` of a tensor of `shape` stored in `layout`.
fn coords(shape: &InputShape, layout: Layout, mut i: usize) -> Vec<usize> {
    let dims = shape.dims(layout);
    let mut c = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        c[a] = i % dims[a].max(1);
        i /= dims[a].max(1);
    }
    // Back to (n, c, spatial...).
    if layout == Layout::ChannelsLast {
        let ch = c.pop().unwrap();
        c.insert(1, ch);
    }
    c
}

struct Ctx<'a> {
    spec: &'a PoolSpec,
    dtype: &'static str,
    threads: usize,
}

impl Ctx<'_> {
    fn describe(&self) -> String {
        let isa = std::env::var("WGPOOL_CPU_ISA").unwrap_or_else(|_| "default".into());
        format!("{:?} dtype={} WGPOOL_CPU_ISA={isa} threads={}", self.spec, self.dtype, self.threads)
    }

    fn fail(&self, what: &str, msg: String) -> ! {
        panic!("MISMATCH in {what}: {msg}\n  spec: {}", self.describe());
    }

    fn same(&self, what: &str, got: &[u32], want: &[u32], shape: &InputShape) {
        if got.len() != want.len() {
            self.fail(what, format!("length {} != {}", got.len(), want.len()));
        }
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let n = (0..got.len()).filter(|&i| got[i] != want[i]).count();
            self.fail(
                what,
                format!(
                    "element {i} (n, c, spatial {:?}) expected {:#x} got {:#x} ({n} of {} differ)",
                    coords(shape, self.spec.layout, i),
                    want[i],
                    got[i],
                    got.len()
                ),
            );
        }
    }
}

fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: [OnceLock<rayon::ThreadPool>; 8] = [const { OnceLock::new() }; 8];
    POOLS[threads].get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap())
}

fn check<T: Bits>(spec: &PoolSpec, b: &mut Bytes, threads: usize) {
    let g = spec.validate().expect("validated by the caller");
    let ctx = Ctx { spec, dtype: if T::SIGN == 0x8000 { "f16" } else { "f32" }, threads };
    let (in_shape, out_shape) = (g.input_shape(), g.output_shape());
    let (n_in, n_out) = (g.input_len(), g.output_len());

    // The input: a palette, a mode, then one palette entry per element.
    let palette: Vec<T> = (0..1 + b.u8() as usize % 12).map(|_| nasty::<T>(b)).collect();
    let mode = b.u8() % 6;
    let mut rng = Rng::new(u64::from(b.u32()) << 32 | u64::from(b.u32()));
    // The gradients (their own rng), the spoils; the input elements follow the rest of the bytes.
    let mut grad_rng = Rng::new(rng.next_u64());
    let gpal: Vec<T> = (0..1 + b.u8() as usize % 10).map(|_| gradient::<T>(b)).collect();
    let gmode = b.u8() % 3;
    let grad_output: Vec<T> = (0..n_out)
        .map(|_| {
            let r = grad_rng.next_u64();
            match gmode {
                0 => gpal[r as usize % gpal.len()],
                1 => T::from_f32(((r % 33) as f32 - 16.0) / 8.0),
                _ => T::from_u32(r as u32 & if T::SIGN == 0x8000 { 0xffff } else { u32::MAX }),
            }
        })
        .collect();
    let spoils = b.u8();
    let spoil_bytes: Vec<u8> = (0..12).map(|_| b.u8()).collect();
    let direct: Vec<u8> = b.rest().to_vec();
    let mut choice = |i: usize| -> u64 { direct.get(i).map_or_else(|| rng.next_u64(), |&x| u64::from(x)) };
    let input: Vec<T> = (0..n_in)
        .map(|i| {
            let r = choice(i);
            let from_palette = palette[r as usize % palette.len()];
            match mode {
                // Mostly one value (ties everywhere), a few others.
                1 if r % 8 != 0 => palette[0],
                // Increasing or decreasing along memory, with palette entries sprinkled.
                2 if r % 16 != 0 => T::from_f32(i as f32),
                3 if r % 16 != 0 => T::from_f32(-(i as f32)),
                // Random bits.
                4 => T::from_u32((r >> 8) as u32 & if T::SIGN == 0x8000 { 0xffff } else { u32::MAX }),
                _ => from_palette,
            }
        })
        .collect();

    let want = cpu::reference::forward(spec, &input).unwrap_or_else(|e| ctx.fail("reference forward", e.to_string()));
    let (want_v, want_i) = (bits(&want.values), want.indices.clone());
    let poison_v = T::from_u32(T::EXP | T::QUIET | 0x5a);
    let fast = pool(threads);

    fast.install(|| {
        // forward
        let got = cpu::forward(spec, &input).unwrap_or_else(|e| ctx.fail("forward", e.to_string()));
        ctx.same("forward values", &bits(&got.values), &want_v, &out_shape);
        ctx.same("forward indices", &got.indices, &want_i, &out_shape);
        // forward_into, poisoned
        let (mut v, mut i) = (vec![poison_v; n_out], vec![0xdead_beef_u32; n_out]);
        cpu::forward_into(spec, &input, &mut v, &mut i).unwrap_or_else(|e| ctx.fail("forward_into", e.to_string()));
        ctx.same("forward_into values", &bits(&v), &want_v, &out_shape);
        ctx.same("forward_into indices", &i, &want_i, &out_shape);
        // forward_values
        let got = cpu::forward_values(spec, &input).unwrap_or_else(|e| ctx.fail("forward_values", e.to_string()));
        ctx.same("forward_values", &bits(&got), &want_v, &out_shape);
        // forward_values_into, poisoned
        let mut v = vec![poison_v; n_out];
        cpu::forward_values_into(spec, &input, &mut v)
            .unwrap_or_else(|e| ctx.fail("forward_values_into", e.to_string()));
        ctx.same("forward_values_into", &bits(&v), &want_v, &out_shape);
    });

    // Backward with the forward's (valid) indices, then with a few spoiled ones.
    let backward = |what: &str, indices: &[u32]| {
        let want = cpu::reference::backward(spec, &grad_output, indices);
        if what == "backward (valid indices)" {
            if let Err(e) = &want {
                ctx.fail("reference backward", format!("refused the forward's indices: {e}"));
            }
        }
        fast.install(|| {
            let got = cpu::backward(spec, &grad_output, indices);
            match (&got, &want) {
                (Ok(got), Ok(want)) => ctx.same(&format!("{what}: backward"), &bits(got), &bits(want), &in_shape),
                _ => {
                    if got != want {
                        ctx.fail(&format!("{what}: backward"), format!("got {got:?} expected {want:?}"));
                    }
                }
            }
            let mut gi = vec![poison_v; n_in];
            let got = cpu::backward_into(spec, &grad_output, indices, &mut gi);
            match (&got, &want) {
                (Ok(()), Ok(want)) => ctx.same(&format!("{what}: backward_into"), &bits(&gi), &bits(want), &in_shape),
                (Err(e), Err(w)) if e == w => {}
                _ => ctx.fail(
                    &format!("{what}: backward_into"),
                    format!("got {got:?} expected {:?}", want.as_ref().map(|_| ())),
                ),
            }
        });
    };
    backward("backward (valid indices)", &want_i);

    if n_out == 0 {
        return;
    }
    let plane = g.plane_in() as u32;
    let mut bad = want_i.clone();
    let mut sb = Bytes { data: &spoil_bytes, at: 0 };
    let mut list = vec![];
    for _ in 0..1 + spoils % 3 {
        let t = (sb.u16() as usize * 7919 + rng.next_u64() as usize) % bad.len();
        let old = bad[t];
        bad[t] = match sb.u8() % 7 {
            0 => NO_INDEX,
            1 => plane.wrapping_add(sb.u8() as u32 % 3),
            2 => (rng.next_u64() % u64::from(plane.max(1))) as u32,
            3 => old.wrapping_add(1),
            4 => old.wrapping_sub(1),
            5 => bad[(t + 1) % bad.len()],                 // a neighbour's index
            _ => old.wrapping_add(g.axes[2].input as u32), // the next input row
        };
        list.push((t, old, bad[t]));
    }
    backward(&format!("backward (spoiled indices {list:?})"), &bad);
}

/// Output sizes the kernels' thresholds care about (rows of 7, 8, 16, 28, 32, 64 outputs...).
/// Not 1 first: zero bytes pick the first entry, and with 1 there nearly half of a grown corpus
/// had one output on its last axis.
const W_OUTPUTS: [usize; 28] =
    [16, 2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 1, 17, 24, 27, 28, 29, 31, 32, 33, 35, 48, 56, 63, 64, 65, 66];
const OTHER_OUTPUTS: [usize; 14] = [4, 2, 3, 1, 5, 7, 8, 9, 14, 16, 17, 28, 32, 33];

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes { data, at: 0 };
    let flags = b.u8();
    let rank = 1 + (flags % 3) as usize;
    let layout = if flags & 0x04 != 0 { Layout::ChannelsLast } else { Layout::ChannelsFirst };
    let f16 = flags & 0x08 != 0;
    let ceil_mode = flags & 0x10 != 0;
    let threads = [1, 2, 3, 4, 7, 1, 2, 4][(flags >> 5) as usize];
    let batch = 1 + (b.u8() % 3) as usize;
    let c = b.u8();
    let channels = match c % 4 {
        0 => 1 + (c as usize / 4) % 3,
        1 => [4, 8, 12, 16, 24, 32, 40, 20, 28, 36][(c as usize / 4) % 10],
        2 => [16, 32, 8, 4, 5, 7, 9, 15, 17, 31, 33][(c as usize / 4) % 11],
        _ => 1 + (c as usize / 4) % 40,
    };
    // A preset for every axis, or free parameters per axis.
    let preset = b.u8();
    let (mut kernel, mut stride, mut padding, mut dilation, mut spatial) = (vec![], vec![], vec![], vec![], vec![]);
    for axis in 0..rank {
        let last = axis == rank - 1;
        let (k, s, p, d) = match preset % 8 {
            0 | 1 => (2, 2, 0, 1),
            2 => (3, 2, b.u8() as usize % 2, 1),
            3 => (1 + b.u8() as usize % 4, 0, 0, 1), // stride = kernel below
            _ => {
                let k = 1 + b.u8() as usize % 4;
                let s = if b.u8() % 3 == 0 { k } else { 1 + b.u8() as usize % 4 };
                let p = b.u8() as usize % (k / 2 + 1);
                let d = match b.u8() % 8 {
                    0 => 2,
                    1 => 3,
                    _ => 1,
                };
                (k, s, p, d)
            }
        };
        let s = if s == 0 { k } else { s };
        let eff = d * (k - 1) + 1;
        // The size: from an output size of interest (an exact tiling plus a remainder), or raw.
        let cap = if last {
            140
        } else if rank == 3 && axis == 0 {
            24
        } else {
            70
        };
        let sb = b.u8();
        let size = if sb & 1 == 0 {
            let o = if last { b.pick(&W_OUTPUTS) } else { b.pick(&OTHER_OUTPUTS) };
            let extra = if sb & 2 == 0 { 0 } else { (sb as usize >> 2) % s.max(1) + (sb as usize >> 6) % 2 };
            ((o - 1) * s + eff + extra).saturating_sub(2 * p).max(1)
        } else {
            1 + (sb as usize >> 1) % if last { 70 } else { 40 }
        };
        kernel.push(k);
        stride.push(s);
        padding.push(p);
        dilation.push(d);
        spatial.push(size.min(cap));
    }
    let params = PoolParams::new(kernel).stride(stride).padding(padding).dilation(dilation).ceil_mode(ceil_mode);
    let spec = PoolSpec::new(InputShape::new(batch, channels, spatial), params).layout(layout);
    let Ok(g) = spec.validate() else { return };
    if g.input_len() > MAX_INPUT {
        return;
    }
    // `WGPOOL_FUZZ_SPECS=1`: print the problem instead of checking it (to see what a corpus covers:
    // `WGPOOL_FUZZ_SPECS=1 cpu_fast -runs=0 corpus/cpu_fast`).
    static SPECS: OnceLock<bool> = OnceLock::new();
    if *SPECS.get_or_init(|| std::env::var_os("WGPOOL_FUZZ_SPECS").is_some()) {
        let axes = &g.axes[3 - rank..];
        let col = |f: fn(&wgpool::Axis) -> usize| axes.iter().map(f).collect::<Vec<_>>();
        eprintln!(
            "SPEC layout={} dtype={} threads={threads} n={batch} c={channels} in={:?} out={:?} k={:?} s={:?} p={:?} d={:?} ceil={ceil_mode} numel={}",
            layout.name(),
            if f16 { "f16" } else { "f32" },
            col(|a| a.input),
            col(|a| a.output),
            col(|a| a.kernel),
            col(|a| a.stride),
            col(|a| a.padding),
            col(|a| a.dilation),
            g.input_len()
        );
        return;
    }
    if f16 {
        check::<f16>(&spec, &mut b, threads);
    } else {
        check::<f32>(&spec, &mut b, threads);
    }
});
