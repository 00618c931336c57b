//! Runs `independent_check.py` (a second implementation of protocol v1, Python standard
//! library only, written from docs/PROTOCOL.md) over the document's test vectors. Skipped with
//! a note when python3 is not installed; the Rust check in `vectors.rs` always runs.

use std::process::Command;

#[test]
fn a_python_implementation_from_the_spec_agrees_with_every_vector() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let script = format!("{dir}/tests/it/independent_check.py");
    let doc = format!("{dir}/../../docs/PROTOCOL.md");
    let out = match Command::new("python3").arg(&script).arg(&doc).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipping: python3 not available ({e})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "independent implementation disagrees:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 mismatches"), "{stdout}");
}
