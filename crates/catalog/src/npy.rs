//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0): a reader that converts to the element
//! types pinnersage needs, with errors that name the file and the problem, and a writer.
//!
//! ```
//! use pinnersage_catalog::npy;
//! let dir = std::env::temp_dir().join(format!("npy-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("x.npy");
//! npy::write_f32_matrix(&path, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3).unwrap();
//! let m = npy::read(&path).unwrap().into_f32_matrix().unwrap();
//! assert_eq!((m.rows, m.cols), (2, 3));
//! assert_eq!(m.data[5], 6.0);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// A problem with an NPY file, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct NpyError {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// Element types an NPY file may hold (the numeric ones pinnersage reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// `f2` (IEEE half precision)
    F16,
    /// `f4`
    F32,
    /// `f8`
    F64,
    /// signed integer of the given byte width (`i1`, `i2`, `i4`, `i8`)
    Int(usize),
    /// unsigned integer of the given byte width (`u1`, `u2`, `u4`, `u8`)
    UInt(usize),
}

impl DType {
    fn width(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
            DType::Int(w) | DType::UInt(w) => w,
        }
    }
}

/// An NPY array as read from disk: shape, element type and the raw little-endian data in C order.
#[derive(Debug, Clone)]
pub struct NpyArray {
    path: PathBuf,
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: DType,
    data: Vec<u8>,
}

/// A dense row-major `f32` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixF32 {
    /// Row-major values, `rows * cols` of them.
    pub data: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

/// Reads an NPY file. Fortran-ordered and big-endian arrays are converted to C order, little
/// endian.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray, NpyError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    parse(path, bytes)
}

fn err(path: &Path, problem: impl Into<String>) -> NpyError {
    NpyError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// What an NPY header says about the data that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The array's shape.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: DType,
    /// Whether elements are stored big-endian.
    pub big_endian: bool,
    /// Whether the array is stored column-major.
    pub fortran_order: bool,
    /// Byte offset of the first element.
    pub data_start: usize,
}

impl Header {
    /// Parses and validates the header of the NPY file `path` whose bytes are `bytes`, including
    /// that the data length matches the shape.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, NpyError> {
        if bytes.len() < 10 || &bytes[..6] != MAGIC {
            return Err(err(path, "not an NPY file (missing the \\x93NUMPY magic)"));
        }
        let (header_len, header_start) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 if bytes.len() >= 12 => (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            ),
            v => return Err(err(path, format!("unsupported NPY format version {v}"))),
        };
        let data_start = header_start + header_len;
        let header = bytes
            .get(header_start..data_start)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| err(path, "truncated or non-text NPY header"))?;
        let descr = dict_value(header, "descr")
            .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
            .ok_or_else(|| err(path, "NPY header has no 'descr'"))?;
        let (dtype, big_endian) = parse_descr(descr).ok_or_else(|| {
            err(
                path,
                format!("unsupported dtype '{descr}' (use float32/float64 or an integer type)"),
            )
        })?;
        let fortran_order = match dict_value(header, "fortran_order") {
            Some(v) if v.starts_with("True") => true,
            Some(v) if v.starts_with("False") => false,
            _ => return Err(err(path, "NPY header has no valid 'fortran_order'")),
        };
        let shape = dict_value(header, "shape")
            .and_then(parse_shape)
            .ok_or_else(|| err(path, "NPY header has no valid 'shape'"))?;
        let expected = shape
            .iter()
            .try_fold(dtype.width(), |acc, &s| acc.checked_mul(s))
            .ok_or_else(|| err(path, "shape overflows"))?;
        let available = bytes.len().saturating_sub(data_start);
        if available != expected {
            return Err(err(
                path,
                format!(
                    "data is {available} bytes but shape {shape:?} of {descr} needs {expected}"
                ),
            ));
        }
        Ok(Self {
            shape,
            dtype,
            big_endian,
            fortran_order,
            data_start,
        })
    }

    /// Element `i` (counted in storage order) of the data `bytes` (the whole file) as `f64`.
    fn element(&self, bytes: &[u8], i: usize) -> f64 {
        let w = self.dtype.width();
        let at = self.data_start + i * w;
        let mut buf = [0u8; 8];
        buf[..w].copy_from_slice(&bytes[at..at + w]);
        if self.big_endian {
            buf[..w].reverse();
        }
        decode(self.dtype, buf)
    }
}

/// A little-endian element (zero-padded to 8 bytes) as `f64`.
fn decode(dtype: DType, buf: [u8; 8]) -> f64 {
    match dtype {
        DType::F16 => half::f16::from_le_bytes([buf[0], buf[1]]).to_f64(),
        DType::F32 => f64::from(f32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
        DType::F64 => f64::from_le_bytes(buf),
        DType::Int(w) => sign_extend(w, buf) as f64,
        DType::UInt(_) => u64::from_le_bytes(buf) as f64,
    }
}

/// A little-endian signed integer of `width` bytes (zero-padded to 8) as `i64`.
fn sign_extend(width: usize, buf: [u8; 8]) -> i64 {
    let shift = 64 - 8 * width as u32;
    (i64::from_le_bytes(buf) << shift) >> shift
}

/// Parses the bytes of an NPY file already in memory; `path` names it in errors.
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<NpyArray, NpyError> {
    let header = Header::parse(path, &bytes)?;
    let mut bytes = bytes;
    let width = header.dtype.width();
    bytes.drain(..header.data_start);
    if header.big_endian {
        bytes.chunks_exact_mut(width).for_each(|c| c.reverse());
    }
    if header.fortran_order && header.shape.len() > 1 {
        bytes = fortran_to_c(&bytes, &header.shape, width);
    }
    Ok(NpyArray {
        path: path.to_path_buf(),
        shape: header.shape,
        dtype: header.dtype,
        data: bytes,
    })
}

/// A 2-D NPY matrix read in place from a memory map, row by row, without loading it: for
/// importing embedding matrices larger than memory.
#[derive(Debug)]
pub struct MappedMatrix {
    path: PathBuf,
    map: memmap2::Mmap,
    header: Header,
    rows: usize,
    cols: usize,
}

impl MappedMatrix {
    /// Maps the file and checks that it is a non-empty 2-D numeric array.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NpyError> {
        let path = path.as_ref();
        let file = fs::File::open(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
        // SAFETY: the map is read-only; pinnersage does not modify input files while importing
        // them (a concurrent writer could change what we read, never memory safety of Rust data
        // we own, since we only copy values out).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| err(path, format!("cannot map: {e}")))?;
        let header = Header::parse(path, &map)?;
        let (rows, cols) = match header.shape[..] {
            [r, c] if r > 0 && c > 0 => (r, c),
            [_, _] => {
                return Err(err(
                    path,
                    format!("array is empty (shape {:?})", header.shape),
                ));
            }
            _ => {
                return Err(err(
                    path,
                    format!(
                        "expected a 2-D array (rows x dim), found shape {:?}",
                        header.shape
                    ),
                ));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
            header,
            rows,
            cols,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` converted to `f32` into `out` (resized to `cols`); fails on a value that is not
    /// finite in `f32`, naming the row and column.
    pub fn row_into(&self, r: usize, out: &mut Vec<f32>) -> Result<(), NpyError> {
        out.clear();
        for c in 0..self.cols {
            let i = if self.header.fortran_order {
                c * self.rows + r
            } else {
                r * self.cols + c
            };
            let v = self.header.element(&self.map, i);
            let f = v as f32;
            if !f.is_finite() {
                return Err(err(
                    &self.path,
                    format!("value at row {r}, column {c} is not finite in float32 ({v})"),
                ));
            }
            out.push(f);
        }
        Ok(())
    }
}

/// The text after `'key':` in a Python dict literal.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let pat = format!("'{key}':");
    let at = header.find(&pat)? + pat.len();
    Some(header[at..].trim_start())
}

fn parse_descr(descr: &str) -> Option<(DType, bool)> {
    // Not `split_at(1)`: an empty descr, or one starting with a multi-byte character, would panic.
    let mut chars = descr.chars();
    let big = match chars.next()? {
        '<' | '|' | '=' => false,
        '>' => true,
        _ => return None,
    };
    let ty = chars.as_str();
    let dtype = match ty {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i1" | "i2" | "i4" | "i8" => DType::Int(ty[1..].parse().ok()?),
        "u1" | "u2" | "u4" | "u8" => DType::UInt(ty[1..].parse().ok()?),
        _ => return None,
    };
    Some((dtype, big && dtype.width() > 1))
}

fn parse_shape(v: &str) -> Option<Vec<usize>> {
    let inner = v.strip_prefix('(')?.split(')').next()?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

/// Reorders column-major element bytes into row-major.
fn fortran_to_c(bytes: &[u8], shape: &[usize], width: usize) -> Vec<u8> {
    let count = bytes.len() / width;
    let mut out = vec![0u8; bytes.len()];
    let mut idx = vec![0usize; shape.len()];
    for f in 0..count {
        // f enumerates in Fortran order: the first index varies fastest.
        let mut c = 0;
        for (k, &i) in idx.iter().enumerate() {
            c = c * shape[k] + i;
        }
        out[c * width..(c + 1) * width].copy_from_slice(&bytes[f * width..(f + 1) * width]);
        for (k, i) in idx.iter_mut().enumerate() {
            *i += 1;
            if *i < shape[k] {
                break;
            }
            *i = 0;
        }
    }
    out
}

impl NpyArray {
    fn element(&self, i: usize) -> f64 {
        decode(self.dtype, self.raw(i))
    }

    /// Element `i`'s little-endian bytes, zero-padded to 8.
    fn raw(&self, i: usize) -> [u8; 8] {
        let w = self.dtype.width();
        let mut buf = [0u8; 8];
        buf[..w].copy_from_slice(&self.data[i * w..(i + 1) * w]);
        buf
    }

    fn problem(&self, problem: impl Into<String>) -> NpyError {
        err(&self.path, problem)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.width()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All elements in C order as `f64`, whatever the shape (exact for every supported type
    /// except 64-bit integers beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.element(i)).collect()
    }

    /// The array as a 2-D `f32` matrix (from `f2`, `f4`, `f8` or integers). Fails for other ranks,
    /// for empty arrays and for values that are not finite in `f32`, naming the row and column.
    pub fn into_f32_matrix(self) -> Result<MatrixF32, NpyError> {
        let (rows, cols) = match self.shape[..] {
            [r, c] => (r, c),
            _ => {
                return Err(self.problem(format!(
                    "expected a 2-D array (rows x dim), found shape {:?}",
                    self.shape
                )));
            }
        };
        if rows == 0 || cols == 0 {
            return Err(self.problem(format!("array is empty (shape {:?})", self.shape)));
        }
        let data: Vec<f32> = if self.dtype == DType::F32 {
            self.data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            (0..self.len()).map(|i| self.element(i) as f32).collect()
        };
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            return Err(self.problem(format!(
                "value at row {}, column {} is not finite in float32 ({})",
                pos / cols,
                pos % cols,
                self.element(pos)
            )));
        }
        Ok(MatrixF32 { data, rows, cols })
    }

    /// The array as a vector of `i64` (shape `(n,)` or `(n, 1)`), from integers or floats
    /// (rounded down). Fails on non-finite or out-of-range values, naming the index.
    pub fn into_i64_vector(self) -> Result<Vec<i64>, NpyError> {
        match self.shape[..] {
            [_] | [_, 1] => {}
            _ => {
                return Err(self.problem(format!(
                    "expected a 1-D array, found shape {:?}",
                    self.shape
                )));
            }
        }
        (0..self.len())
            .map(|i| {
                let buf = self.raw(i);
                match self.dtype {
                    DType::Int(w) => Ok(sign_extend(w, buf)),
                    DType::UInt(_) => i64::try_from(u64::from_le_bytes(buf))
                        .map_err(|_| self.problem(format!("value at index {i} exceeds i64"))),
                    DType::F16 | DType::F32 | DType::F64 => {
                        let v = self.element(i).floor();
                        if v.is_finite() && v.abs() < 9.2e18 {
                            Ok(v as i64)
                        } else {
                            Err(self.problem(format!(
                                "value at index {i} is not a finite timestamp ({})",
                                self.element(i)
                            )))
                        }
                    }
                }
            })
            .collect()
    }
}

fn write_npy(path: &Path, descr: &str, shape: &str, payload: &[u8]) -> Result<(), NpyError> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| err(path, "header too long"))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(fs::File::create(path)?);
        f.write_all(MAGIC)?;
        f.write_all(&[1, 0])?;
        f.write_all(&header_len.to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        f.write_all(payload)?;
        f.flush()
    };
    write().map_err(|e| err(path, format!("cannot write: {e}")))
}

/// Writes a row-major `rows x cols` `f32` matrix as NPY (`<f4`, version 1.0).
pub fn write_f32_matrix(
    path: impl AsRef<Path>,
    data: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(), NpyError> {
    let path = path.as_ref();
    if data.len() != rows * cols {
        return Err(err(
            path,
            format!("{} values do not fill {rows} x {cols}", data.len()),
        ));
    }
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(path, "<f4", &format!("({rows}, {cols})"), &payload)
}

/// Writes a 1-D `i64` vector as NPY (`<i8`, version 1.0).
pub fn write_i64_vector(path: impl AsRef<Path>, data: &[i64]) -> Result<(), NpyError> {
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        path.as_ref(),
        "<i8",
        &format!("({},)", data.len()),
        &payload,
    )
}

impl pinnersage_core::error::Kind for NpyError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
        let h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out
    }

    #[test]
    fn reads_f64_fortran_matrix_as_c_order_f32() {
        let mut bytes = header("<f8", true, "(2, 3)");
        // Column-major [[1,2,3],[4,5,6]] is 1,4,2,5,3,6.
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend(v.to_le_bytes());
        }
        let m = parse(Path::new("x.npy"), bytes)
            .unwrap()
            .into_f32_matrix()
            .unwrap();
        assert_eq!(m.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn reads_half_precision_in_both_endians() {
        // 1.0 = 0x3c00, -2.5 = 0xc100, 0.099975586 = 0x2e66 in IEEE half precision.
        for (descr, bytes) in [
            ("<f2", [0x00u8, 0x3c, 0x00, 0xc1, 0x66, 0x2e]),
            (">f2", [0x3c, 0x00, 0xc1, 0x00, 0x2e, 0x66]),
        ] {
            let mut file = header(descr, false, "(1, 3)");
            file.extend(bytes);
            let m = parse(Path::new("h.npy"), file)
                .unwrap()
                .into_f32_matrix()
                .unwrap();
            assert_eq!(m.data, vec![1.0, -2.5, 0.099975586]);
        }
    }

    #[test]
    fn reads_big_endian_and_small_ints() {
        let mut bytes = header(">i4", false, "(2,)");
        for v in [-7i32, 1_700_000_000] {
            bytes.extend(v.to_be_bytes());
        }
        let v = parse(Path::new("t.npy"), bytes)
            .unwrap()
            .into_i64_vector()
            .unwrap();
        assert_eq!(v, vec![-7, 1_700_000_000]);
        let mut bytes = header("|i1", false, "(3,)");
        bytes.extend([0xffu8, 5, 0x80]);
        let v = parse(Path::new("t.npy"), bytes)
            .unwrap()
            .into_i64_vector()
            .unwrap();
        assert_eq!(v, vec![-1, 5, -128]);
    }

    #[test]
    fn errors_name_file_and_problem() {
        let e = parse(Path::new("bad.npy"), b"hello world".to_vec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad.npy: not an NPY file (missing the \\x93NUMPY magic)"
        );

        let mut bytes = header("<f4", false, "(2, 2)");
        bytes.extend([0u8; 12]);
        let e = parse(Path::new("short.npy"), bytes).unwrap_err();
        assert!(e.to_string().contains("data is 12 bytes"), "{e}");

        let mut bytes = header("<U4", false, "(1,)");
        bytes.extend([0u8; 16]);
        let e = parse(Path::new("s.npy"), bytes).unwrap_err();
        assert!(e.to_string().contains("unsupported dtype '<U4'"), "{e}");

        let mut bytes = header("<f4", false, "(1, 2)");
        bytes.extend(1.0f32.to_le_bytes());
        bytes.extend(f32::NAN.to_le_bytes());
        let e = parse(Path::new("nan.npy"), bytes)
            .unwrap()
            .into_f32_matrix()
            .unwrap_err();
        assert!(
            e.to_string().contains("row 0, column 1 is not finite"),
            "{e}"
        );

        let mut bytes = header("<f4", false, "(3,)");
        bytes.extend([0u8; 12]);
        let e = parse(Path::new("v.npy"), bytes)
            .unwrap()
            .into_f32_matrix()
            .unwrap_err();
        assert!(e.to_string().contains("expected a 2-D array"), "{e}");
    }

    #[test]
    fn round_trips_through_files() {
        let dir = std::env::temp_dir().join(format!("npy-rt-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.npy");
        write_i64_vector(&p, &[3, -4, i64::MAX]).unwrap();
        assert_eq!(
            read(&p).unwrap().into_i64_vector().unwrap(),
            vec![3, -4, i64::MAX]
        );
        let bytes = fs::read(&p).unwrap();
        let header_end = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_end % 64, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn odd_descriptors_are_errors_not_panics() {
        for descr in ["", "é4", "<", ">x9", "\u{1F600}f4", "<f4\u{301}"] {
            let mut bytes = header(descr, false, "(1, 1)");
            bytes.extend(1.0f32.to_le_bytes());
            assert!(parse(Path::new("d.npy"), bytes).is_err(), "{descr:?}");
        }
    }
}
