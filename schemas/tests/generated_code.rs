//! The committed generated code must match what `capnpc` makes from each schema.
//!
//! Needs the `capnp` compiler (Debian package `capnproto`); skipped where it is absent.
//! `TRELLIS_REGEN_SCHEMAS=1` rewrites the committed file instead of comparing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Each schema and its committed generated file.
const SCHEMAS: [(&str, &str); 2] = [
    ("peering.capnp", "src/generated/peering_capnp.rs"),
    ("enrollment.capnp", "src/generated/enrollment_capnp.rs"),
];

fn capnp_version() -> Option<String> {
    let output = Command::new("capnp").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A fresh directory under cargo's per-target temp dir, unique to this process.
fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trellis-schemas-regen-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear scratch dir");
    }
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn generated_code_is_current() {
    for (schema, generated) in SCHEMAS {
        check(schema, generated);
    }
}

fn check(schema: &str, generated: &str) {
    let Some(version) = capnp_version() else {
        println!(
            "generated_code_is_current skipped: capnp not installed \
             (install the Debian package `capnproto` to check the committed code)"
        );
        return;
    };

    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = scratch_dir();
    capnpc::CompilerCommand::new()
        .src_prefix(crate_dir)
        .file(crate_dir.join(schema))
        .output_path(&out_dir)
        .run()
        .expect("capnp compile");
    let file_name = Path::new(generated)
        .file_name()
        .expect("generated file name");
    let fresh = std::fs::read(out_dir.join(file_name)).expect("read generated code");
    std::fs::remove_dir_all(&out_dir).expect("remove scratch dir");

    let committed_path = crate_dir.join(generated);
    if std::env::var_os("TRELLIS_REGEN_SCHEMAS").is_some_and(|v| v == "1") {
        std::fs::write(&committed_path, &fresh).expect("write committed generated code");
        println!("regenerated {} with {version}", committed_path.display());
        return;
    }

    let committed = std::fs::read(&committed_path).expect("read committed generated code");
    if committed == fresh {
        return;
    }
    // capnpc records the compiler's version in a header comment; a machine with another
    // `capnp` release than the one that generated the committed file may differ only there.
    let committed_version = compiler_line(&committed);
    if without_compiler_line(&committed) == without_compiler_line(&fresh) {
        println!(
            "generated code matches apart from the compiler version comment \
             (committed: {committed_version:?}, this machine: {version:?})"
        );
        return;
    }
    panic!(
        "{} is stale: it differs from what {version} and capnpc generate from {schema} \
         (committed file made by {committed_version:?}). Regenerate with \
         `TRELLIS_REGEN_SCHEMAS=1 cargo test -p trellis-schemas --test generated_code` \
         and commit the result.",
        committed_path.display(),
    );
}

const COMPILER_LINE: &str = "// capnp binary version:";

fn compiler_line(code: &[u8]) -> Option<String> {
    String::from_utf8_lossy(code)
        .lines()
        .find(|line| line.starts_with(COMPILER_LINE))
        .map(str::to_owned)
}

fn without_compiler_line(code: &[u8]) -> Vec<u8> {
    code.split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.starts_with(COMPILER_LINE.as_bytes()))
        .flatten()
        .copied()
        .collect()
}
