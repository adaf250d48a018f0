//! Shared pieces of the fuzz targets: a reader that turns the fuzzer's bytes into choices, and
//! the checks every target applies to a result code.

use std::ffi::CStr;
use tshm::error::TSHM_INTERNAL;

/// Draws choices from the input; an exhausted input reads as zeros (so every input is valid).
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | (self.u32() as u64) << 32
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// Up to `max` raw bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let n = (self.u8() as usize).min(max);
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos += n;
        &self.data[start..end]
    }

    /// A 64-bit value biased towards the boundaries that break code: 0, 1, small numbers,
    /// powers of two and their neighbours, the all-ones patterns, or `near` plus a small delta.
    pub fn interesting(&mut self, near: u64) -> u64 {
        match self.u8() % 12 {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u32::MAX as u64,
            4 => (self.u8() % 64) as u64,
            5 => 1u64 << (self.u8() % 64),
            6 => (1u64 << (self.u8() % 64)).wrapping_sub(1),
            7 => near.wrapping_add((self.u8() as i8) as i64 as u64),
            8 => near.wrapping_add(1),
            9 => near.wrapping_sub(1),
            10 => self.u32() as u64,
            _ => self.u64(),
        }
    }
}

/// The last error message of this thread, for failure reports.
pub fn errmsg() -> String {
    let p = tshm::ffi::tshm_errmsg();
    if p.is_null() {
        return "(none)".into();
    }
    // SAFETY: a non-NULL tshm_errmsg() is a NUL-terminated string valid until the next failure.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Fails the run on `TSHM_INTERNAL` (a libtshm bug by definition) and on any code outside the
/// documented set; returns `rc` otherwise.
pub fn check(what: &str, rc: i32) -> i32 {
    assert!(rc != TSHM_INTERNAL, "{what}: TSHM_INTERNAL ({})", errmsg());
    const KNOWN: [i32; 14] = [0, 3, 5, 7, 8, 10, 11, 12, 13, 14, 21, 40, 41, 2];
    assert!(KNOWN.contains(&rc), "{what}: undocumented result code {rc}");
    rc
}

/// Asserts that `rc` is one of `allowed`.
pub fn expect(what: &str, rc: i32, allowed: &[i32]) {
    check(what, rc);
    assert!(
        allowed.contains(&rc),
        "{what}: returned {rc}, expected one of {allowed:?} ({})",
        errmsg()
    );
}

/// A private scratch directory for this fuzzing process (removed by nobody: the fuzzer's
/// process is short-lived and /tmp is scratch).
pub fn scratch_dir(target: &str) -> std::path::PathBuf {
    let base = std::env::var_os("TSHM_FUZZ_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("tshm-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

pub fn cpath(p: &std::path::Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}
