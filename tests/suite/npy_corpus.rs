//! Replays the `.npy` fuzz corpus on stable: every file in `fuzz/corpus/npy_read/` (and in
//! `fuzz/artifacts/npy_read/`, where `cargo fuzz` leaves crashing inputs) goes through the
//! in-memory and the file readers. None may panic or allocate much beyond the file's size; the
//! `valid_*` seeds (written by `fuzz/make_corpus.py`) must decode to their known shape and
//! elements, and the `bad_*` seeds must be refused.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wgpool::npy::{self, Data};
use wgpool::{NO_INDEX, f16};

use super::robustness::alloc_probe::measure;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/npy_read");
const ARTIFACTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/artifacts/npy_read");

/// Every regular file under `dir`, recursively (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The float values every valid float seed holds: `0.5 * i - 1` in C order.
fn floats(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.5 * i as f32 - 1.0).collect()
}

fn f32s(n: usize) -> Data {
    Data::F32(floats(n))
}

/// What each valid seed decodes to: shape, elements, and the indices `read_indices` gives (or the
/// error it gives) for the integer ones.
type Expected = (Vec<usize>, Data, Option<Result<Vec<u32>, &'static str>>);

fn valid_seeds() -> BTreeMap<&'static str, Expected> {
    let m = usize::MAX;
    let halves = |n| Data::F16(floats(n).into_iter().map(f16::from_f32).collect());
    let specials = [0x7FC0_0001u32, 0xFFC0_0000, 0x7F80_0000, 0xFF80_0000, 0x8000_0000, 0x7F80_0001];
    BTreeMap::from([
        ("valid_f4_1x2x3", (vec![1, 2, 3], f32s(6), None)),
        ("valid_f4_be_2x3", (vec![2, 3], f32s(6), None)),
        ("valid_f4_fortran_2x3", (vec![2, 3], f32s(6), None)),
        ("valid_f4_fortran_be_2x3x4", (vec![2, 3, 4], f32s(24), None)),
        ("valid_f4_fortran_1d_5", (vec![5], f32s(5), None)),
        ("valid_f4_nchw_1x2x4x4", (vec![1, 2, 4, 4], f32s(32), None)),
        ("valid_f4_ncdhw_1x1x2x2x3", (vec![1, 1, 2, 2, 3], f32s(12), None)),
        ("valid_f4_scalar", (vec![], f32s(1), None)),
        ("valid_f4_empty_0x3", (vec![0, 3], f32s(0), None)),
        ("valid_f4_empty_fortran_3x0", (vec![3, 0], f32s(0), None)),
        ("valid_f2_3", (vec![3], halves(3), None)),
        ("valid_f2_be_fortran_3x2", (vec![3, 2], halves(6), None)),
        ("valid_f4_v2_2", (vec![2], f32s(2), None)),
        ("valid_f4_v3_2", (vec![2], f32s(2), None)),
        ("valid_f4_py2_long", (vec![1, 2], f32s(2), None)),
        ("valid_f4_double_quotes", (vec![1, 2], f32s(2), None)),
        ("valid_f4_key_order", (vec![1, 2], f32s(2), None)),
        ("valid_f4_tabs", (vec![1, 2], f32s(2), None)),
        ("valid_f4_unpadded", (vec![1, 2], f32s(2), None)),
        ("valid_f4_specials_6", (vec![6], Data::F32(specials.map(f32::from_bits).to_vec()), None)),
        ("valid_f4_zero_huge", (vec![0, m, m], f32s(0), None)),
        (
            "valid_i8_idx_2x2",
            (vec![2, 2], Data::I64(vec![0, -1, 5, 4_294_967_294]), Some(Ok(vec![0, NO_INDEX, 5, 4_294_967_294]))),
        ),
        ("valid_i8_be_idx_3", (vec![3], Data::I64(vec![7, -1, 0]), Some(Ok(vec![7, NO_INDEX, 0])))),
        ("valid_i4_idx_3", (vec![3], Data::I32(vec![-1, i32::MAX, 3]), Some(Ok(vec![NO_INDEX, i32::MAX as u32, 3])))),
        ("valid_i4_be_fortran_idx_2x2", (vec![2, 2], Data::I32(vec![1, 2, 3, -1]), Some(Ok(vec![1, 2, 3, NO_INDEX])))),
        ("valid_u4_idx_3", (vec![3], Data::U32(vec![u32::MAX, 1, 2]), Some(Ok(vec![NO_INDEX, 1, 2])))),
        ("valid_u4_be_idx_2", (vec![2], Data::U32(vec![u32::MAX, 9]), Some(Ok(vec![NO_INDEX, 9])))),
        ("valid_i8_out_of_range_3", (vec![3], Data::I64(vec![0, -2, 1 << 40]), Some(Err("index element 1 is -2")))),
    ])
}

/// Bad seeds whose message must say why (the others only need to be refused).
fn bad_messages() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("bad_empty", "empty file"),
        ("bad_magic_zip", "not a .npy file"),
        ("bad_version_4_0", "version 4.0"),
        ("bad_v2_header_len_4g", "above the limit"),
        ("bad_v2_header_len_past_end", "truncated .npy header"),
        ("bad_v3_invalid_utf8", "not valid UTF-8"),
        ("bad_v1_latin1_descr", "invalid dtype"),
        ("bad_structured_descr", "structured"),
        ("bad_descr_le_f8", "float64"),
        ("bad_descr_be_f8", "float64"),
        ("bad_descr_le_c8", "not supported"),
        ("bad_65_dims", "more than 64"),
        ("bad_truncated_data", "truncated"),
        ("bad_trailing_data", "trailing bytes"),
        ("bad_huge_1tb", "needs 4398046511104 data bytes"),
        ("bad_huge_numel_overflow", "more elements than this machine can address"),
        ("bad_huge_bytes_overflow", "more bytes than this machine can address"),
        ("bad_huge_digits", "too large"),
        ("bad_huge_fortran", "truncated"),
        ("bad_header_only", "truncated"),
    ])
}

/// Compares decoded data, floats by their bits (NaN payloads included).
fn same_data(a: &Data, b: &Data) -> bool {
    match (a, b) {
        (Data::F32(x), Data::F32(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
        (Data::F16(x), Data::F16(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
        _ => a == b,
    }
}

/// Everything the readers may do with `bytes` (from `path`): no panic, little allocation, and
/// the in-memory and file readers, the typed views and the header parser agree.
fn replay(path: &Path, bytes: &[u8]) -> Result<npy::Array, String> {
    let name = path.display();
    let outcome = std::panic::catch_unwind(|| {
        let (array, cost) = measure(|| npy::read_array(bytes));
        // Data as large as the file, plus a second copy for Fortran order, plus messages.
        let bound = 2 * bytes.len() + (64 << 10);
        assert!(cost.largest <= bound, "{name}: read_array allocated {} bytes at once", cost.largest);
        let values = npy::read_values(bytes);
        let indices = npy::read_indices(bytes);
        let header = npy::parse_header(bytes);
        let from_file = npy::read_array_file(path);
        (array, values, indices, header, from_file)
    });
    let (array, values, indices, header, from_file) = match outcome {
        Ok(r) => r,
        Err(p) => {
            let text = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{name}: the .npy reader panicked: {}", text.unwrap_or_default());
        }
    };
    assert_eq!(from_file.is_ok(), array.is_ok(), "{name}: file and memory readers disagree: {from_file:?}");
    match &array {
        Ok(a) => {
            let numel = a.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            assert_eq!(numel, Some(a.data.len()), "{name}: shape and elements");
            let h = header.unwrap_or_else(|e| panic!("{name}: decodes but its header does not parse: {e}"));
            assert_eq!(h.shape, a.shape, "{name}");
            assert_eq!(h.data_offset + h.data_len, bytes.len(), "{name}: header claims");
            let f = from_file.as_ref().unwrap();
            assert!(f.shape == a.shape && same_data(&f.data, &a.data), "{name}: file and memory readers differ");
            let float = matches!(a.data, Data::F32(_) | Data::F16(_));
            assert_eq!(values.is_ok(), float, "{name}: read_values");
            if float {
                assert!(indices.is_err(), "{name}: a float file read as indices");
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty(), "{name}: an empty message");
            assert!(values.is_err() && indices.is_err(), "{name}: typed views accept what read_array refuses");
        }
    }
    array.map_err(|e| e.to_string())
}

#[test]
fn npy_corpus_replays_without_panic() {
    let start = std::time::Instant::now();
    let corpus = files_under(Path::new(CORPUS));
    let artifacts = files_under(Path::new(ARTIFACTS));
    assert!(corpus.len() >= 80, "the seed corpus {CORPUS} is missing: run `python3 fuzz/make_corpus.py`");
    let valid = valid_seeds();
    let bad = bad_messages();
    let (mut decoded, mut refused) = (0, 0);
    let mut seen_valid = 0;
    let mut seen_bad = 0;
    for path in corpus.iter().chain(&artifacts) {
        let bytes = std::fs::read(path).expect("read a corpus file");
        let result = replay(path, &bytes);
        if result.is_ok() {
            decoded += 1;
        } else {
            refused += 1;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if let Some((shape, data, idx)) = valid.get(stem) {
            seen_valid += 1;
            let a = result.unwrap_or_else(|e| panic!("{stem} must decode: {e}"));
            assert_eq!(&a.shape, shape, "{stem}: shape");
            assert!(same_data(&a.data, data), "{stem}: elements {:?}, want {data:?}", a.data);
            match idx {
                Some(Ok(want)) => assert_eq!(&npy::read_indices(&bytes).unwrap().1, want, "{stem}: indices"),
                Some(Err(needle)) => {
                    let e = npy::read_indices(&bytes).unwrap_err().to_string();
                    assert!(e.contains(needle), "{stem}: {e:?} lacks {needle:?}");
                }
                None => {}
            }
        } else if stem.starts_with("valid_") {
            panic!("{stem}: a valid seed without an expectation in valid_seeds()");
        } else if stem.starts_with("bad_") {
            seen_bad += 1;
            let e = result.expect_err(stem);
            if let Some(needle) = bad.get(stem) {
                assert!(e.contains(needle), "{stem}: {e:?} lacks {needle:?}");
            }
        }
    }
    assert_eq!(seen_valid, valid.len(), "every valid seed is in the corpus");
    assert!(bad.keys().all(|k| corpus.iter().any(|p| p.file_stem().is_some_and(|s| s == *k))), "bad seeds missing");
    eprintln!(
        "npy corpus: {} files ({} artifacts): {decoded} decoded, {refused} refused ({seen_bad} named bad seeds) in {:?}",
        corpus.len() + artifacts.len(),
        artifacts.len(),
        start.elapsed()
    );
}
