//! Generates the ABI tests: ctest reads `src/decls.rs` (the Rust view of the C API), writes a C
//! file that includes `tshm.h` and reports sizes, alignments, offsets, constant values and
//! function addresses, compiles it (with `-Werror`), and writes the Rust half (`all.rs`) that
//! compares them. Before that, the names declared in the header and in decls.rs are compared,
//! so that nothing added to the header goes unchecked.

use std::collections::BTreeSet;
use std::path::Path;

fn main() {
    // SYSTEST_INCLUDE_DIR checks another copy of tshm.h (e.g. an installed one); by default the
    // committed header, whose directory tshm's build script exports (`links = "tshm"`).
    println!("cargo:rerun-if-env-changed=SYSTEST_INCLUDE_DIR");
    let include = std::env::var("SYSTEST_INCLUDE_DIR")
        .or_else(|_| std::env::var("DEP_TSHM_INCLUDE"))
        .unwrap_or_else(|_| "../include".into());
    let header = Path::new(&include).join("tshm.h");
    let header_text = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", header.display()));
    let decls_text = std::fs::read_to_string("src/decls.rs").expect("read src/decls.rs");
    check_same_names(&header_names(&header_text), &decls_names(&decls_text));

    let mut cfg = ctest::TestGenerator::new();
    cfg.header("tshm.h").include(&include);
    // `tshm` is opaque in C (`typedef struct tshm tshm;`): no sizeof, no fields.
    cfg.skip_struct(|s| s.ident() == "tshm");
    ctest::generate_test(&mut cfg, "src/decls.rs", "all.rs").expect("ctest generation failed");

    // The package version of tshm, which `tshm_libversion()` returns: main.rs checks the header's
    // TSHM_VERSION string against it.
    let manifest = std::fs::read_to_string("../Cargo.toml").expect("read ../Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("../Cargo.toml has a version");
    println!("cargo:rustc-env=TSHM_PKG_VERSION={version}");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/decls.rs");
    println!("cargo:rerun-if-changed=../Cargo.toml");
    println!("cargo:rerun-if-changed={}", header.display());
}

fn ident_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Macros, types and functions declared by tshm.h (as cbindgen writes it: one declaration
/// starts per line).
fn header_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            ident_prefix(rest)
        } else if let Some(rest) = line.strip_prefix("typedef struct ") {
            ident_prefix(rest)
        } else if let Some(rest) = line.strip_prefix("typedef ") {
            // A function pointer type: `typedef void (*name)(...)`.
            rest.split_once("(*").map_or("", |(_, r)| ident_prefix(r))
        } else if line.starts_with(|c: char| c.is_ascii_alphabetic()) && line.contains('(') {
            // A prototype: `int tshm_open(const char *db_path, ...);`.
            let before = &line[..line.find('(').unwrap()];
            before.rsplit([' ', '*']).next().unwrap_or("")
        } else {
            ""
        };
        if name.starts_with("tshm") || name.starts_with("TSHM_") {
            names.insert(name.to_string());
        }
    }
    names.remove("TSHM_H"); // include guard
    names
}

/// Public constants, types and functions of decls.rs.
fn decls_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        for kw in ["pub const ", "pub struct ", "pub type ", "pub fn "] {
            if let Some(rest) = line.strip_prefix(kw) {
                names.insert(ident_prefix(rest).to_string());
            }
        }
    }
    names
}

fn check_same_names(header: &BTreeSet<String>, decls: &BTreeSet<String>) {
    let only_header: Vec<_> = header.difference(decls).collect();
    let only_decls: Vec<_> = decls.difference(header).collect();
    if !only_header.is_empty() || !only_decls.is_empty() {
        panic!(
            "tshm.h and systest/src/decls.rs declare different items\n  only in tshm.h: \
             {only_header:?}\n  only in decls.rs: {only_decls:?}"
        );
    }
}
