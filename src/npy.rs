//! Reading and writing `.npy` files for the command-line tool (feature `cli`).
//!
//! The reader is written for untrusted input (it is fuzzed): the header is parsed by a small,
//! non-recursive parser, and its claims (shape, element size) are checked with checked arithmetic
//! against the bytes actually present **before** anything is allocated. Every problem is an
//! [`Error`], never a panic and never an allocation larger than the input.
//!
//! What is accepted:
//! - format versions 1.0, 2.0 and 3.0, headers up to [`MAX_HEADER_LEN`] bytes;
//! - values: float32 (`<f4`, `>f4`) and float16 (`<f2`, `>f2`); float64 is refused with a message
//!   that says to convert it with `.astype(np.float32)` (silently rounding would hide a
//!   precision loss the caller did not ask for);
//! - indices: int64 (`<i8`/`>i8`), int32 (`<i4`/`>i4`) and uint32 (`<u4`/`>u4`), where −1
//!   (int64, int32) and `0xFFFFFFFF` (uint32) mean "no index" ([`NO_INDEX`]); any other negative
//!   value, and any value ≥ `u32::MAX` that is not one of those forms, is an error;
//! - big-endian data (`>`) is byte-swapped;
//! - Fortran-order data (`'fortran_order': True`) is **transposed** into C order, so the array
//!   comes back with the same shape and the same logical elements;
//! - the data must be exactly `product(shape) × itemsize` bytes: truncated data and trailing
//!   bytes are both errors.
//!
//! Files are written as format 1.0, C order, little-endian: `<f4`, `<f2` and, for indices, `<i8`
//! (PyTorch's type), with [`NO_INDEX`] written back as −1. Writing goes through a temporary file
//! in the destination's directory that is renamed over the destination: an error leaves no partial
//! file and an existing destination untouched; success replaces it.
//!
//! ```
//! use wgpool::npy;
//! let bytes = npy::encode_values(&[1, 2], &[1.5f32, -2.0]).unwrap();
//! let array = npy::read_array(&bytes).unwrap();
//! assert_eq!(array.shape, vec![1, 2]);
//! assert_eq!(array.data, npy::Data::F32(vec![1.5, -2.0]));
//!
//! let bytes = npy::encode_indices(&[3], &[0, 7, wgpool::NO_INDEX]).unwrap();
//! let (shape, indices) = npy::read_indices(&bytes).unwrap();
//! assert_eq!((shape, indices), (vec![3], vec![0, 7, wgpool::NO_INDEX]));
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::f16;

use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::params::NO_INDEX;

/// The longest header (the dictionary text) the reader accepts, in bytes. NumPy itself refuses
/// headers above 10,000 bytes by default.
pub const MAX_HEADER_LEN: usize = 1 << 16;

/// The largest number of dimensions the reader accepts (NumPy's own limit is 64).
pub const MAX_DIMS: usize = 64;

/// The path used in errors from the in-memory functions.
const MEMORY: &str = "<in-memory .npy>";

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// What went wrong while decoding, before a path is attached.
enum Problem {
    /// The bytes are not a valid `.npy` file (or not a consistent one).
    Malformed(String),
    /// A valid file in a form wgpool does not take (float64, another dtype).
    Unsupported(String),
}

impl Problem {
    fn at(self, path: &str) -> Error {
        match self {
            Problem::Malformed(reason) => Error::File { path: path.to_string(), reason },
            Problem::Unsupported(reason) => Error::Unsupported(format!("{path}: {reason}")),
        }
    }
}

fn malformed(reason: impl Into<String>) -> Problem {
    Problem::Malformed(reason.into())
}

/// The element types the reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// float32 (`f4`).
    F32,
    /// float16 (`f2`).
    F16,
    /// int64 (`i8`).
    I64,
    /// int32 (`i4`).
    I32,
    /// uint32 (`u4`).
    U32,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ElementType::F16 => 2,
            ElementType::F32 | ElementType::I32 | ElementType::U32 => 4,
            ElementType::I64 => 8,
        }
    }
    /// NumPy's name (`float32`, ...).
    pub fn numpy_name(self) -> &'static str {
        match self {
            ElementType::F32 => "float32",
            ElementType::F16 => "float16",
            ElementType::I64 => "int64",
            ElementType::I32 => "int32",
            ElementType::U32 => "uint32",
        }
    }
}

/// A parsed and checked `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The `descr` string as written in the file (for instance `<f4`).
    pub descr: String,
    /// The element type it names.
    pub element: ElementType,
    /// Whether the data is big-endian (byte-swapped on reading).
    pub big_endian: bool,
    /// Whether the data is in Fortran (column-major) order (transposed on reading).
    pub fortran_order: bool,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// Where the data starts (bytes from the start of the file).
    pub data_offset: usize,
    /// How many data bytes the shape and element type need (checked, so it fits `usize`).
    pub data_len: usize,
}

impl Header {
    /// The number of elements (`product(shape)`, checked when the header was parsed).
    pub fn numel(&self) -> usize {
        self.data_len / self.element.size()
    }
}

/// The elements of an array, in C order, converted to host byte order.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// float32 elements.
    F32(Vec<f32>),
    /// float16 elements.
    F16(Vec<f16>),
    /// int64 elements.
    I64(Vec<i64>),
    /// int32 elements.
    I32(Vec<i32>),
    /// uint32 elements.
    U32(Vec<u32>),
}

impl Data {
    /// The element type.
    pub fn element(&self) -> ElementType {
        match self {
            Data::F32(_) => ElementType::F32,
            Data::F16(_) => ElementType::F16,
            Data::I64(_) => ElementType::I64,
            Data::I32(_) => ElementType::I32,
            Data::U32(_) => ElementType::U32,
        }
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::U32(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoded array: its shape and its elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Data,
}

/// Floating-point tensor data: what pooling takes as input and gradients.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// float32.
    F32(Vec<f32>),
    /// float16.
    F16(Vec<f16>),
}

impl Values {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Values::F32(_) => DType::F32,
            Values::F16(_) => DType::F16,
        }
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Array {
    /// The elements as pooling values (float32 or float16), or an error naming the dtype found.
    pub fn into_values(self) -> Result<(Vec<usize>, Values)> {
        self.into_values_at().map_err(|p| p.at(MEMORY))
    }

    fn into_values_at(self) -> std::result::Result<(Vec<usize>, Values), Problem> {
        match self.data {
            Data::F32(v) => Ok((self.shape, Values::F32(v))),
            Data::F16(v) => Ok((self.shape, Values::F16(v))),
            other => Err(Problem::Unsupported(format!(
                "values must be float32 or float16, but this file holds {}",
                other.element().numpy_name()
            ))),
        }
    }

    /// The elements as pooling indices (u32, [`NO_INDEX`] for −1), or an error for a float file
    /// or an index that does not fit.
    pub fn into_indices(self) -> Result<(Vec<usize>, Vec<u32>)> {
        self.into_indices_at().map_err(|p| p.at(MEMORY))
    }

    fn into_indices_at(self) -> std::result::Result<(Vec<usize>, Vec<u32>), Problem> {
        let bad = |i: usize, v: i128| {
            malformed(format!(
                "index element {i} is {v}; indices must lie in 0..{} (positions inside the (n, c) plane), or be -1 (no index)",
                u32::MAX
            ))
        };
        let indices = match self.data {
            Data::I64(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, &x) in v.iter().enumerate() {
                    out.push(match x {
                        -1 => NO_INDEX,
                        0..0xFFFF_FFFF => x as u32,
                        _ => return Err(bad(i, x as i128)),
                    });
                }
                out
            }
            Data::I32(v) => {
                let mut out = Vec::with_capacity(v.len());
                for (i, &x) in v.iter().enumerate() {
                    out.push(match x {
                        -1 => NO_INDEX,
                        0.. => x as u32,
                        _ => return Err(bad(i, x as i128)),
                    });
                }
                out
            }
            // 0xFFFFFFFF is uint32's spelling of -1, which is NO_INDEX already.
            Data::U32(v) => v,
            other => {
                return Err(Problem::Unsupported(format!(
                    "indices must be int64, int32 or uint32, but this file holds {}",
                    other.element().numpy_name()
                )));
            }
        };
        Ok((self.shape, indices))
    }
}

// ---------------------------------------------------------------------------------------------
// Header parsing
// ---------------------------------------------------------------------------------------------

/// Parses and checks the header of a `.npy` file.
///
/// `bytes` needs to hold the header only (the data may be absent), so that a file reader can look
/// at a bounded prefix first. The returned [`Header::data_len`] is checked arithmetic: the caller
/// compares it with the bytes that actually follow.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    parse_header_inner(bytes).map_err(|p| p.at(MEMORY))
}

fn parse_header_inner(bytes: &[u8]) -> std::result::Result<Header, Problem> {
    if bytes.is_empty() {
        return Err(malformed("empty file, not a .npy file"));
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(malformed("not a .npy file (it does not start with the \\x93NUMPY magic)"));
    }
    if bytes.len() < 10 {
        return Err(malformed(format!("truncated .npy header ({} bytes)", bytes.len())));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2usize, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(malformed(format!(
                "unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are supported)"
            )));
        }
    };
    let text_start = 8 + len_bytes;
    if bytes.len() < text_start {
        return Err(malformed(format!("truncated .npy header ({} bytes)", bytes.len())));
    }
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    if header_len > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "the .npy header claims {header_len} bytes, above the limit of {MAX_HEADER_LEN}"
        )));
    }
    let data_offset = text_start + header_len; // both small: no overflow
    if bytes.len() < data_offset {
        return Err(malformed(format!(
            "truncated .npy header: it claims {header_len} bytes but only {} follow",
            bytes.len() - text_start
        )));
    }
    let raw = &bytes[text_start..data_offset];
    let text: String = if utf8 {
        std::str::from_utf8(raw).map_err(|_| malformed("the .npy header is not valid UTF-8"))?.to_string()
    } else {
        // Versions 1 and 2 are latin-1.
        raw.iter().map(|&b| b as char).collect()
    };
    let dict = parse_dict(&text).map_err(|e| malformed(format!("bad .npy header: {e}")))?;
    let (element, big_endian) = parse_descr(&dict.descr)?;
    let numel = dict.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
        malformed(format!("the shape {:?} has more elements than this machine can address", dict.shape))
    })?;
    let data_len = numel.checked_mul(element.size()).ok_or_else(|| {
        malformed(format!(
            "the shape {:?} of {} needs more bytes than this machine can address",
            dict.shape,
            element.numpy_name()
        ))
    })?;
    Ok(Header {
        descr: dict.descr,
        element,
        big_endian,
        fortran_order: dict.fortran_order,
        shape: dict.shape,
        data_offset,
        data_len,
    })
}

/// Parses a NumPy type string such as `<f4`: a byte-order character (`<` little, `>` big, `=`
/// native, `|` not applicable), a kind character and a size in bytes. Written here rather than
/// taken from a crate: the tool must refuse hostile headers without panicking (a `.npy` crate's
/// parser panicked on two-byte non-ASCII strings), and it keeps the library free of C build steps
/// on other targets. `tests/suite/cli.rs` checks it against the `npyz` crate.
fn parse_descr(descr: &str) -> std::result::Result<(ElementType, bool), Problem> {
    let invalid = || malformed(format!("invalid dtype {descr:?} in the .npy header"));
    if !descr.is_ascii() || descr.len() < 2 || descr.len() > 32 {
        return Err(invalid());
    }
    let bytes = descr.as_bytes();
    let (big_endian, rest) = match bytes[0] {
        b'<' | b'|' => (false, &bytes[1..]),
        b'>' => (true, &bytes[1..]),
        b'=' => (cfg!(target_endian = "big"), &bytes[1..]),
        _ => (false, bytes),
    };
    let (&kind, size) = rest.split_first().ok_or_else(invalid)?;
    // NumPy's kind characters; anything else is not a dtype at all.
    if !b"biufcmMOSUVa?".contains(&kind) {
        return Err(invalid());
    }
    if size.is_empty() || size.len() > 4 || !size.iter().all(u8::is_ascii_digit) {
        // Also datetimes ('M8[ns]'), structured and other exotic dtypes: refused below as
        // unsupported when they parse, here when they don't.
        return Err(Problem::Unsupported(format!(
            "dtype {descr:?} is not supported: values must be float32 ('<f4') or float16 ('<f2'), \
             indices int64 ('<i8'), int32 ('<i4') or uint32 ('<u4')"
        )));
    }
    let size: usize = std::str::from_utf8(size).ok().and_then(|s| s.parse().ok()).ok_or_else(invalid)?;
    let element = match (kind, size) {
        (b'f', 4) => ElementType::F32,
        (b'f', 2) => ElementType::F16,
        (b'i', 8) => ElementType::I64,
        (b'i', 4) => ElementType::I32,
        (b'u', 4) => ElementType::U32,
        (b'f', 8) => {
            return Err(Problem::Unsupported(format!(
                "float64 data ({descr:?}) is not supported: wgpool pools float32 (or float16); \
                 convert it with `np.save(path, x.astype(np.float32))`"
            )));
        }
        _ => {
            return Err(Problem::Unsupported(format!(
                "dtype {descr:?} is not supported: values must be float32 ('<f4') or float16 ('<f2'), \
                 indices int64 ('<i8'), int32 ('<i4') or uint32 ('<u4')"
            )));
        }
    };
    Ok((element, big_endian))
}

struct Dict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A cursor over the header text; every method is bounded and non-recursive.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        self.skip_ws();
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => Err(format!("expected '{}' at byte {} but found {:?}", c as char, self.i, describe_byte(x))),
            None => Err(format!("expected '{}' but the header ended", c as char)),
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_ws();
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            Some(x) => {
                return Err(format!("expected a string at byte {} but found {:?}", self.i, describe_byte(x)));
            }
            None => return Err("expected a string but the header ended".into()),
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == quote {
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                return Ok(s);
            }
            if c == b'\\' {
                return Err("escape sequences in header strings are not supported".into());
            }
            self.i += 1;
        }
        Err("unterminated string in the header".into())
    }
    fn word(&mut self) -> &[u8] {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_alphanumeric() {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            w => Err(format!("fortran_order must be True or False, found {:?}", String::from_utf8_lossy(w))),
        }
    }
    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.skip_ws();
        let close = match self.peek() {
            Some(b'(') => b')',
            Some(b'[') => b']',
            _ => return Err("shape must be a tuple of integers".into()),
        };
        self.i += 1;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(dims);
            }
            let mut value: usize = 0;
            let mut digits = 0;
            while let Some(c @ b'0'..=b'9') = self.peek() {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add((c - b'0') as usize))
                    .ok_or_else(|| format!("shape dimension {} is too large for this machine", dims.len()))?;
                digits += 1;
                self.i += 1;
            }
            if digits == 0 {
                return Err(match self.peek() {
                    Some(b'-') => "shape dimensions cannot be negative".to_string(),
                    Some(x) => {
                        format!("expected a shape dimension at byte {} but found {:?}", self.i, describe_byte(x))
                    }
                    None => "the shape is not closed".to_string(),
                });
            }
            // Python 2 wrote long integers with an `L` suffix.
            if self.peek() == Some(b'L') {
                self.i += 1;
            }
            if dims.len() == MAX_DIMS {
                return Err(format!("the shape has more than {MAX_DIMS} dimensions"));
            }
            dims.push(value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                Some(x) => {
                    return Err(format!(
                        "expected ',' or '{}' in the shape at byte {} but found {:?}",
                        close as char,
                        self.i,
                        describe_byte(x)
                    ));
                }
                None => return Err("the shape is not closed".into()),
            }
        }
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() { (b as char).to_string() } else { format!("\\x{b:02x}") }
}

fn parse_dict(text: &str) -> std::result::Result<Dict, String> {
    let mut c = Cursor { s: text.as_bytes(), i: 0 };
    c.expect(b'{')?;
    let mut descr = None;
    let mut fortran_order = None;
    let mut shape = None;
    loop {
        c.skip_ws();
        if c.peek() == Some(b'}') {
            c.i += 1;
            break;
        }
        let key = c.string()?;
        c.expect(b':')?;
        let duplicate = match key.as_str() {
            "descr" => {
                c.skip_ws();
                if c.peek() == Some(b'[') {
                    return Err("structured (record) dtypes are not supported: save a plain float32 array".into());
                }
                descr.replace(c.string()?).is_some()
            }
            "fortran_order" => fortran_order.replace(c.boolean()?).is_some(),
            "shape" => shape.replace(c.shape()?).is_some(),
            other => return Err(format!("unexpected key {other:?}")),
        };
        if duplicate {
            return Err(format!("key {key:?} appears twice"));
        }
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.i += 1,
            Some(b'}') => {}
            Some(x) => {
                return Err(format!("expected ',' or '}}' at byte {} but found {:?}", c.i, describe_byte(x)));
            }
            None => return Err("the dictionary is not closed".into()),
        }
    }
    c.skip_ws();
    if c.i != c.s.len() {
        return Err(format!("unexpected {:?} after the dictionary at byte {}", describe_byte(c.s[c.i]), c.i));
    }
    Ok(Dict {
        descr: descr.ok_or("the key 'descr' is missing")?,
        fortran_order: fortran_order.ok_or("the key 'fortran_order' is missing")?,
        shape: shape.ok_or("the key 'shape' is missing")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Decodes a whole `.npy` file held in memory (the fuzzing entry point).
///
/// Every supported element type comes back as it is stored (see [`Data`]), in C order and host
/// byte order; float64 and other dtypes are errors. Nothing larger than `bytes` is allocated.
pub fn read_array(bytes: &[u8]) -> Result<Array> {
    decode(bytes).map_err(|p| p.at(MEMORY))
}

/// Decodes a float32 or float16 `.npy` file held in memory: its shape and values.
pub fn read_values(bytes: &[u8]) -> Result<(Vec<usize>, Values)> {
    decode(bytes).and_then(Array::into_values_at).map_err(|p| p.at(MEMORY))
}

/// Decodes an int64, int32 or uint32 `.npy` index file held in memory: its shape and the
/// indices as u32 (−1 forms become [`NO_INDEX`]).
pub fn read_indices(bytes: &[u8]) -> Result<(Vec<usize>, Vec<u32>)> {
    decode(bytes).and_then(Array::into_indices_at).map_err(|p| p.at(MEMORY))
}

fn decode(bytes: &[u8]) -> std::result::Result<Array, Problem> {
    let header = parse_header_inner(bytes)?;
    let data = &bytes[header.data_offset..];
    if data.len() != header.data_len {
        let what = if data.len() < header.data_len { "truncated" } else { "trailing bytes after the data" };
        return Err(malformed(format!(
            "{what}: shape {:?} of {} needs {} data bytes but the file has {}",
            header.shape,
            header.element.numpy_name(),
            header.data_len,
            data.len()
        )));
    }
    let be = header.big_endian;
    let mut data = match header.element {
        ElementType::F32 => Data::F32(data.chunks_exact(4).map(|c| f32::from_bits(word4(c, be))).collect()),
        ElementType::F16 => Data::F16(data.chunks_exact(2).map(|c| f16::from_bits(word2(c, be))).collect()),
        ElementType::I32 => Data::I32(data.chunks_exact(4).map(|c| word4(c, be) as i32).collect()),
        ElementType::U32 => Data::U32(data.chunks_exact(4).map(|c| word4(c, be)).collect()),
        ElementType::I64 => Data::I64(data.chunks_exact(8).map(|c| word8(c, be) as i64).collect()),
    };
    if header.fortran_order && header.shape.len() > 1 {
        let shape = &header.shape;
        data = match data {
            Data::F32(v) => Data::F32(fortran_to_c(&v, shape)),
            Data::F16(v) => Data::F16(fortran_to_c(&v, shape)),
            Data::I64(v) => Data::I64(fortran_to_c(&v, shape)),
            Data::I32(v) => Data::I32(fortran_to_c(&v, shape)),
            Data::U32(v) => Data::U32(fortran_to_c(&v, shape)),
        };
    }
    Ok(Array { shape: header.shape, data })
}

fn word2(c: &[u8], big_endian: bool) -> u16 {
    let b = [c[0], c[1]];
    if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
}

fn word4(c: &[u8], big_endian: bool) -> u32 {
    let b = [c[0], c[1], c[2], c[3]];
    if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
}

fn word8(c: &[u8], big_endian: bool) -> u64 {
    let b = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    if big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) }
}

/// Reorders column-major data of `shape` into row-major order. `data.len()` is the shape's
/// product (checked by the caller).
fn fortran_to_c<T: Copy>(data: &[T], shape: &[usize]) -> Vec<T> {
    let rank = shape.len();
    if data.is_empty() {
        return Vec::new();
    }
    // Column-major strides: the first axis is contiguous.
    let mut strides = vec![1usize; rank];
    for k in 1..rank {
        strides[k] = strides[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; rank];
    let mut src = 0usize;
    for _ in 0..data.len() {
        out.push(data[src]);
        // Advance the row-major multi-index (last axis fastest) and the column-major offset.
        let mut k = rank;
        while k > 0 {
            k -= 1;
            idx[k] += 1;
            src += strides[k];
            if idx[k] < shape[k] {
                break;
            }
            src -= strides[k] * shape[k];
            idx[k] = 0;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn io_error(path: &str, what: &str, e: &std::io::Error) -> Error {
    Error::File { path: path.to_string(), reason: format!("{what}: {e}") }
}

/// Reads a file, bounded by what its header claims: the header is read and checked first, and
/// the data is read only when the file holds exactly the claimed number of bytes.
fn read_file_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|e| io_error(&name, "cannot open", &e))?;
    let meta = file.metadata().map_err(|e| io_error(&name, "cannot read metadata", &e))?;
    if meta.is_dir() {
        return Err(Error::File { path: name, reason: "is a directory, not a .npy file".into() });
    }
    // A bounded prefix holds any acceptable header.
    let prefix_cap = (12 + MAX_HEADER_LEN) as u64;
    let mut bytes = Vec::new();
    (&mut file).take(prefix_cap).read_to_end(&mut bytes).map_err(|e| io_error(&name, "cannot read", &e))?;
    let header = parse_header_inner(&bytes).map_err(|p| p.at(&name))?;
    // Everything the header claims, plus one byte to notice trailing data.
    let total = header.data_offset as u64 + header.data_len as u64;
    if meta.is_file() && meta.len() != total {
        // Let `decode` word the error the same way for files and memory, without reading.
        let what = if meta.len() < total { "truncated" } else { "trailing bytes after the data" };
        return Err(Error::File {
            path: name,
            reason: format!(
                "{what}: shape {:?} of {} needs {} data bytes but the file has {}",
                header.shape,
                header.element.numpy_name(),
                header.data_len,
                meta.len().saturating_sub(header.data_offset as u64)
            ),
        });
    }
    if (bytes.len() as u64) < total {
        let rest = total - bytes.len() as u64;
        if meta.is_file() {
            bytes.try_reserve_exact(rest as usize).map_err(|e| Error::File {
                path: name.clone(),
                reason: format!("cannot allocate {rest} bytes: {e}"),
            })?;
        }
        (&mut file).take(rest + 1).read_to_end(&mut bytes).map_err(|e| io_error(&name, "cannot read", &e))?;
    }
    Ok(bytes)
}

/// Reads a `.npy` file of any supported element type (see [`read_array`]).
pub fn read_array_file(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    let bytes = read_file_bytes(path)?;
    decode(&bytes).map_err(|p| p.at(&path.display().to_string()))
}

/// Reads a float32 or float16 `.npy` file: its shape and values.
pub fn read_values_file(path: impl AsRef<Path>) -> Result<(Vec<usize>, Values)> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = read_file_bytes(path)?;
    decode(&bytes).and_then(Array::into_values_at).map_err(|p| p.at(&name))
}

/// Reads an int64, int32 or uint32 `.npy` index file: its shape and the indices as u32 (−1 forms
/// become [`NO_INDEX`]).
pub fn read_indices_file(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<u32>)> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = read_file_bytes(path)?;
    decode(&bytes).and_then(Array::into_indices_at).map_err(|p| p.at(&name))
}

// ---------------------------------------------------------------------------------------------
// Encoding and writing
// ---------------------------------------------------------------------------------------------

fn check_shape(shape: &[usize], len: usize) -> Result<()> {
    let numel = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| Error::TooLarge {
        what: format!("element count of shape {shape:?}"),
        value: shape.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128)),
        limit: usize::MAX as u128,
    })?;
    if numel != len {
        return Err(Error::ShapeMismatch {
            what: format!("elements for an .npy array of shape {shape:?}"),
            expected: numel as u64,
            found: len as u64,
        });
    }
    Ok(())
}

/// The header (magic, version 1.0, dictionary padded to a multiple of 64 bytes).
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + length (2) + dict + padding + '\n' ≡ 0 (mod 64)
    let unpadded = 10 + dict.len() + 1;
    dict.extend(std::iter::repeat_n(' ', unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // The dictionary of at most MAX_DIMS dims of ≤ 20 digits stays far below 65,535 bytes.
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Encodes values as a `.npy` file (`<f4` for f32, `<f2` for f16), C order.
pub fn encode_values<T: Element>(shape: &[usize], data: &[T]) -> Result<Vec<u8>> {
    check_shape(shape, data.len())?;
    if shape.len() > MAX_DIMS {
        return Err(Error::Unsupported(format!("an .npy array has at most {MAX_DIMS} dimensions")));
    }
    let (descr, size) = match T::DTYPE {
        DType::F32 => ("<f4", 4),
        DType::F16 => ("<f2", 2),
    };
    let mut out = header_bytes(descr, shape);
    let bytes = data.len().checked_mul(size).ok_or_else(|| Error::TooLarge {
        what: "bytes of the .npy data".into(),
        value: data.len() as u128 * size as u128,
        limit: usize::MAX as u128,
    })?;
    out.reserve_exact(bytes);
    for &x in data {
        let bits = x.to_bits_u32();
        match size {
            2 => out.extend_from_slice(&(bits as u16).to_le_bytes()),
            _ => out.extend_from_slice(&bits.to_le_bytes()),
        }
    }
    Ok(out)
}

/// Encodes indices as an int64 (`<i8`) `.npy` file, C order, with [`NO_INDEX`] written as −1.
pub fn encode_indices(shape: &[usize], indices: &[u32]) -> Result<Vec<u8>> {
    check_shape(shape, indices.len())?;
    if shape.len() > MAX_DIMS {
        return Err(Error::Unsupported(format!("an .npy array has at most {MAX_DIMS} dimensions")));
    }
    let mut out = header_bytes("<i8", shape);
    let bytes = indices.len().checked_mul(8).ok_or_else(|| Error::TooLarge {
        what: "bytes of the .npy data".into(),
        value: indices.len() as u128 * 8,
        limit: usize::MAX as u128,
    })?;
    out.reserve_exact(bytes);
    for &i in indices {
        let v: i64 = if i == NO_INDEX { -1 } else { i as i64 };
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// A file written under a temporary name next to its destination, waiting for
/// [`StagedFile::commit`]. Dropping it uncommitted removes the temporary file.
///
/// Staging several outputs first and committing them afterwards keeps a failure in writing one
/// from leaving the others half done.
#[derive(Debug)]
pub struct StagedFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl StagedFile {
    /// Writes `bytes` to a new temporary file in `dest`'s directory (flushed to disk).
    pub fn write(dest: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dest = dest.as_ref().to_path_buf();
        let name = dest.display().to_string();
        let file_name =
            dest.file_name().ok_or_else(|| Error::File { path: name.clone(), reason: "not a file name".into() })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if dest.is_dir() {
            return Err(Error::File { path: name, reason: "is a directory".into() });
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(file_name);
        temp_name.push(format!(".wgpool-tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let temp = dir.join(temp_name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| io_error(&name, "cannot create a temporary file next to it", &e))?;
        // From here on, dropping `staged` removes the temporary file.
        let staged = StagedFile { temp, dest, committed: false };
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io_error(&name, "cannot write", &e))?;
        Ok(staged)
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Renames the temporary file over the destination (replacing an existing file).
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.dest)
            .map_err(|e| io_error(&self.dest.display().to_string(), "cannot rename into place", &e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    StagedFile::write(path, bytes)?.commit()
}

/// Writes values as a `.npy` file (`<f4` or `<f2`) through a temporary file and a rename.
pub fn write_values_file<T: Element>(path: impl AsRef<Path>, shape: &[usize], data: &[T]) -> Result<()> {
    write_file_atomic(path, &encode_values(shape, data)?)
}

/// Writes indices as an int64 `.npy` file (−1 for [`NO_INDEX`]) through a temporary file and a
/// rename.
pub fn write_indices_file(path: impl AsRef<Path>, shape: &[usize], indices: &[u32]) -> Result<()> {
    write_file_atomic(path, &encode_indices(shape, indices)?)
}
