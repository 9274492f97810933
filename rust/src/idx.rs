//! IDX file parsing (the MNIST / Fashion-MNIST container format).
//!
//! Layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte,
//! the only type MNIST uses and the only one accepted here), a byte with the
//! number of dimensions (1..=4), one `u32` per dimension, then the data.
//! Files may be raw or gzip-compressed; gzip is detected by its magic bytes,
//! not by the file name.
//!
//! Safety against forged headers: the payload is never pre-allocated from
//! the header. Raw files are checked against their real length before any
//! copy; gzip streams are decompressed incrementally and reading stops one
//! byte past what the header promises, so a header that claims gigabytes
//! costs no more memory than the stream really holds.

use flate2::read::MultiGzDecoder;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The only IDX element type accepted: unsigned byte.
pub const TYPE_U8: u8 = 0x08;
/// Most dimensions an IDX header may declare here.
pub const MAX_DIMS: usize = 4;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Largest pre-allocation made for a gzip payload before bytes arrive.
const GZIP_PREALLOC_LIMIT: usize = 1 << 24;

/// What went wrong while reading an IDX file.
#[derive(Debug)]
pub enum IdxError {
    /// The file could not be opened or read (missing file, permissions, ...).
    Io(io::Error),
    /// The bytes are not a valid unsigned-byte IDX file; the text says why.
    Format(String),
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::Io(e) => write!(f, "{e}"),
            IdxError::Format(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for IdxError {}

fn format_err<T>(msg: impl Into<String>) -> Result<T, IdxError> {
    Err(IdxError::Format(msg.into()))
}

/// A decoded IDX array of unsigned bytes in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// A validated IDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxHeader {
    pub dims: Vec<usize>,
    /// Bytes the header itself occupies (4 + 4 * ndim).
    pub header_len: usize,
    /// Number of payload bytes the header promises (product of dims).
    pub payload_len: usize,
}

/// Parse and validate the header at the start of `bytes` (decompressed).
pub fn parse_header(bytes: &[u8]) -> Result<IdxHeader, IdxError> {
    if bytes.is_empty() {
        return format_err("empty file");
    }
    if bytes.len() < 4 {
        return format_err(format!(
            "truncated header: {} byte(s), need at least 4",
            bytes.len()
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return format_err(format!(
            "wrong magic: first two bytes are {:#04x} {:#04x}, expected 0x00 0x00",
            bytes[0], bytes[1]
        ));
    }
    if bytes[2] != TYPE_U8 {
        return format_err(format!(
            "unsupported type byte {:#04x}: only 0x08 (unsigned byte) is supported",
            bytes[2]
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > MAX_DIMS {
        return format_err(format!(
            "unsupported number of dimensions {ndim}: expected 1 to {MAX_DIMS}"
        ));
    }
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        return format_err(format!(
            "truncated header: {} byte(s), the {ndim} dimension sizes need {header_len}",
            bytes.len()
        ));
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut payload_len: usize = 1;
    for i in 0..ndim {
        let o = 4 + 4 * i;
        let d = u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize;
        payload_len = payload_len.checked_mul(d).ok_or_else(|| {
            IdxError::Format(format!(
                "dimensions overflow: the product of {:?} does not fit in memory addressing",
                read_dims_lossy(bytes, ndim)
            ))
        })?;
        dims.push(d);
    }
    Ok(IdxHeader { dims, header_len, payload_len })
}

fn read_dims_lossy(bytes: &[u8], ndim: usize) -> Vec<u32> {
    (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
        })
        .collect()
}

/// Parse a complete, already-decompressed IDX buffer.
pub fn parse_raw(bytes: &[u8]) -> Result<IdxArray, IdxError> {
    let h = parse_header(bytes)?;
    let have = bytes.len() - h.header_len;
    check_payload_len(&h, have)?;
    Ok(IdxArray { dims: h.dims, data: bytes[h.header_len..].to_vec() })
}

fn check_payload_len(h: &IdxHeader, have: usize) -> Result<(), IdxError> {
    if have < h.payload_len {
        return format_err(format!(
            "truncated data: header {:?} promises {} byte(s), file holds {have}",
            h.dims, h.payload_len
        ));
    }
    if have > h.payload_len {
        return format_err(format!(
            "trailing data: header {:?} promises {} byte(s), file holds {have}",
            h.dims, h.payload_len
        ));
    }
    Ok(())
}

/// True if `bytes` starts with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[..2] == GZIP_MAGIC
}

/// Parse IDX bytes that may be gzip-compressed.
pub fn parse_bytes(bytes: &[u8]) -> Result<IdxArray, IdxError> {
    if is_gzip(bytes) {
        parse_gzip(bytes)
    } else {
        parse_raw(bytes)
    }
}

fn gzip_err(e: io::Error) -> IdxError {
    IdxError::Format(format!("corrupt gzip stream: {e}"))
}

/// Read from a gzip stream until `buf` has `want` bytes or the stream ends.
fn read_upto<R: Read>(r: &mut R, buf: &mut Vec<u8>, want: usize) -> Result<(), IdxError> {
    if buf.len() >= want {
        return Ok(());
    }
    let need = (want - buf.len()) as u64;
    r.by_ref().take(need).read_to_end(buf).map_err(gzip_err)?;
    Ok(())
}

fn parse_gzip(bytes: &[u8]) -> Result<IdxArray, IdxError> {
    let mut dec = MultiGzDecoder::new(bytes);
    let mut head = Vec::with_capacity(4 + 4 * MAX_DIMS);
    read_upto(&mut dec, &mut head, 4)?;
    // Validate the fixed part first so a bad magic is reported as such.
    if head.len() >= 4 {
        let ndim = head[3] as usize;
        if (1..=MAX_DIMS).contains(&ndim) {
            read_upto(&mut dec, &mut head, 4 + 4 * ndim)?;
        }
    }
    let h = parse_header(&head)?;
    let extra = head.len() - h.header_len; // always 0: we never over-read
    debug_assert_eq!(extra, 0);
    // Pre-allocate at most a bounded amount; the rest grows with real bytes.
    let mut data = Vec::with_capacity(h.payload_len.min(GZIP_PREALLOC_LIMIT));
    // Read one byte past the promise to detect trailing data.
    let limit = (h.payload_len as u64).saturating_add(1);
    dec.by_ref().take(limit).read_to_end(&mut data).map_err(gzip_err)?;
    check_payload_len(&h, data.len())?;
    Ok(IdxArray { dims: h.dims, data })
}

/// Read an IDX file (raw or gzip) from disk.
pub fn read_file(path: &Path) -> Result<IdxArray, IdxError> {
    let mut f = File::open(path).map_err(IdxError::Io)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(IdxError::Io)?;
    parse_bytes(&bytes)
}

/// Encode an array as raw IDX bytes (used by tests and tools).
pub fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8, 0u8, TYPE_U8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn msg(r: Result<IdxArray, IdxError>) -> String {
        match r {
            Err(IdxError::Format(m)) => m,
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn roundtrip_raw_and_gzip() {
        let data: Vec<u8> = (0..24).collect();
        let raw = encode(&[2, 3, 4], &data);
        let a = parse_bytes(&raw).unwrap();
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data, data);
        let b = parse_bytes(&gz(&raw)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn zero_sized_dimension_is_valid() {
        let a = parse_bytes(&encode(&[0, 28, 28], &[])).unwrap();
        assert_eq!(a.dims, vec![0, 28, 28]);
        assert!(a.data.is_empty());
    }

    #[test]
    fn each_malformed_class_is_named() {
        assert!(msg(parse_bytes(&[])).contains("empty"));
        assert!(msg(parse_bytes(&[0, 0, 8])).contains("truncated header"));
        assert!(msg(parse_bytes(&[0, 0, 8, 3, 0, 0])).contains("truncated header"));
        assert!(msg(parse_bytes(&[1, 0, 8, 1, 0, 0, 0, 0])).contains("magic"));
        assert!(msg(parse_bytes(&[0, 0, 9, 1, 0, 0, 0, 0])).contains("type byte"));
        assert!(msg(parse_bytes(&[0, 0, 8, 0])).contains("dimensions"));
        assert!(msg(parse_bytes(&[0, 0, 8, 5])).contains("dimensions"));
        let mut huge = vec![0u8, 0, 8, 4];
        for _ in 0..4 {
            huge.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        assert!(msg(parse_bytes(&huge)).contains("overflow"));
        let short = encode(&[10], &[1, 2, 3]);
        assert!(msg(parse_bytes(&short)).contains("truncated data"));
        let long = encode(&[2], &[1, 2, 3]);
        assert!(msg(parse_bytes(&long)).contains("trailing data"));
    }

    #[test]
    fn forged_gzip_header_does_not_allocate_the_promise() {
        // 60000 x 60000 x 60000 bytes promised, 3 bytes given.
        let raw = encode(&[60000, 60000, 60000], &[1, 2, 3]);
        assert!(msg(parse_bytes(&gz(&raw))).contains("truncated data"));
    }

    #[test]
    fn corrupt_and_truncated_gzip() {
        let raw = encode(&[4, 4], &[7u8; 16]);
        let mut z = gz(&raw);
        let n = z.len();
        z.truncate(n - 10);
        assert!(msg(parse_bytes(&z)).contains("gzip"));
        let mut z = gz(&raw);
        for b in z.iter_mut().skip(10).take(8) {
            *b ^= 0xa5;
        }
        let m = msg(parse_bytes(&z));
        assert!(m.contains("gzip") || m.contains("truncated"), "{m}");
        // Valid gzip of a truncated IDX payload.
        let short = encode(&[100], &[1u8; 10]);
        assert!(msg(parse_bytes(&gz(&short))).contains("truncated data"));
    }

    #[test]
    fn missing_file_is_io_not_found() {
        match read_file(Path::new("/definitely/not/here.idx")) {
            Err(IdxError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_bytes(&bytes);
            let _ = parse_bytes(&gz(&bytes));
        }

        #[test]
        fn random_headers_with_valid_prefix_never_panic(ndim in 0u8..6, tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut bytes = vec![0u8, 0, 8, ndim];
            bytes.extend_from_slice(&tail);
            let _ = parse_bytes(&bytes);
            let _ = parse_bytes(&gz(&bytes));
        }
    }
}
