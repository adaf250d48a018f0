//! The test process's scratch directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `<temp>/<prefix>-<pid>`, emptied at its first use in this process: in a fresh PID namespace
/// (a CI container) each run repeats the last one's PIDs, and no test may start from the files
/// another run left.
pub fn dir(prefix: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}
