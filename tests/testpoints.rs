//! The list of test points is complete and every point is exercised: each name in
//! `testpoint::NAMES` is used by exactly the point calls in `src/`, no call names an unlisted
//! point, and the crash-point test (`c-tests/test_crashpoints.c`, which kills a process at each
//! one) runs every listed name.

use std::collections::BTreeSet;
use std::path::Path;

/// The names passed to `testpoint::hit`/`note`/`fail` in the sources under `dir`: every string
/// literal of the call's statement (a call choosing between names lists them all there).
fn used_names(dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            used_names(&p, out);
            continue;
        }
        if !matches!(p.extension(), Some(x) if x == "rs") || p.ends_with("testpoint.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&p).unwrap();
        for call in ["testpoint::hit(", "testpoint::note(", "testpoint::fail("] {
            for (at, _) in src.match_indices(call) {
                let rest = &src[at + call.len()..];
                let end = rest.find(';').unwrap_or(rest.len());
                let args = &rest[..end];
                let lits: Vec<&str> = args.split('"').skip(1).step_by(2).collect();
                assert!(
                    !lits.is_empty(),
                    "{}: a point without a literal name",
                    p.display()
                );
                out.extend(lits.iter().map(|s| s.to_string()));
            }
        }
    }
}

#[test]
fn every_listed_point_is_placed_and_every_placed_point_listed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used = BTreeSet::new();
    used_names(&root.join("src"), &mut used);
    let listed: BTreeSet<String> = tshm::testpoint::NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        listed.len(),
        tshm::testpoint::NAMES.len(),
        "a name is listed twice"
    );
    let unlisted: Vec<_> = used.difference(&listed).collect();
    let unplaced: Vec<_> = listed.difference(&used).collect();
    assert!(unlisted.is_empty(), "points not in NAMES: {unlisted:?}");
    assert!(
        unplaced.is_empty(),
        "NAMES entries with no point: {unplaced:?}"
    );
    let doc = std::fs::read_to_string(root.join("src/testpoint.rs")).unwrap();
    for n in tshm::testpoint::NAMES {
        assert!(
            doc.contains(&format!("`{n}`")),
            "{n} has no line in the module doc"
        );
    }
}

#[test]
fn the_crash_test_kills_at_every_point() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = std::fs::read_to_string(root.join("c-tests/test_crashpoints.c")).unwrap();
    let missing: Vec<_> = tshm::testpoint::NAMES
        .iter()
        .filter(|n| !c.contains(&format!("{{\"{n}\",")))
        .collect();
    assert!(
        missing.is_empty(),
        "test_crashpoints.c runs no case for {missing:?}"
    );
}

/// A point armed in this very process (its own test binary: the arming is read once): a
/// listed point fails on request, the others do not.
#[test]
fn an_armed_fail_point_fails_only_itself() {
    std::env::set_var("TSHM_TEST_FAIL_AT", "engine_probe");
    assert!(tshm::testpoint::fail("engine_probe"));
    assert!(!tshm::testpoint::fail("close_init"));
}
