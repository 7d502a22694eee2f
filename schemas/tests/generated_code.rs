//! The committed generated code must be what `capnpc` makes from each schema.
//!
//! Three checks, the first two on every machine (CI included, no `capnp` needed):
//! 1. each schema's SHA-256 equals the stamp written when its code was generated, so a
//!    schema edited without regenerating fails;
//! 2. capnpc's code generator, run on the committed `CodeGeneratorRequest` (what `capnp
//!    compile` handed it), reproduces the committed code byte for byte;
//! 3. where the `capnp` compiler exists (Debian package `capnproto`), compiling the schema
//!    afresh gives the same code (apart from the compiler-version comment).
//!
//! `TRELLIS_REGEN_SCHEMAS=1` (needs `capnp`) rewrites the code, the request and the stamp.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Each schema and its committed generated file; the request and stamp sit beside it as
/// `<stem>.request.bin` and `<stem>.capnp.sha256`.
const SCHEMAS: [(&str, &str); 2] = [
    ("peering.capnp", "src/generated/peering_capnp.rs"),
    ("enrollment.capnp", "src/generated/enrollment_capnp.rs"),
];

fn crate_dir() -> std::path::PathBuf {
    manifest_dir()
}

fn capnp_version() -> Option<String> {
    let output = Command::new("capnp").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn regenerate_requested() -> bool {
    std::env::var_os("TRELLIS_REGEN_SCHEMAS").is_some_and(|v| v == "1")
}

/// A fresh directory under cargo's per-target temp dir, unique to this process and use.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trellis-schemas-{tag}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clear scratch dir");
    }
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn stem(schema: &str) -> &str {
    schema.trim_end_matches(".capnp")
}

fn request_path(schema: &str) -> PathBuf {
    crate_dir().join(format!("src/generated/{}.request.bin", stem(schema)))
}

fn stamp_path(schema: &str) -> PathBuf {
    crate_dir().join(format!("src/generated/{}.capnp.sha256", stem(schema)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

const REGEN_HINT: &str = "Regenerate with `TRELLIS_REGEN_SCHEMAS=1 cargo test -p trellis-schemas \
     --test generated_code` (needs the `capnp` compiler) and commit the result.";

#[test]
fn generated_code_is_current() {
    if regenerate_requested() {
        let version = capnp_version().expect("TRELLIS_REGEN_SCHEMAS=1 needs the capnp compiler");
        for (schema, generated) in SCHEMAS {
            regenerate(schema, generated, &version);
        }
        return;
    }
    for (schema, generated) in SCHEMAS {
        check_stamp(schema);
        check_request(schema, generated);
        match capnp_version() {
            Some(version) => check_compiler(schema, generated, &version),
            None => println!(
                "{schema}: compiler check skipped (capnp not installed); stamp and request \
                 checks passed"
            ),
        }
    }
}

/// Writes the generated code, the raw request and the schema stamp.
fn regenerate(schema: &str, generated: &str, version: &str) {
    let out_dir = scratch_dir("regen");
    capnpc::CompilerCommand::new()
        .src_prefix(crate_dir())
        .file(crate_dir().join(schema))
        .output_path(&out_dir)
        .raw_code_generator_request_path(request_path(schema))
        .run()
        .expect("capnp compile");
    let fresh = read(&out_dir.join(file_name(generated)));
    std::fs::remove_dir_all(&out_dir).expect("remove scratch dir");
    std::fs::write(crate_dir().join(generated), &fresh).expect("write generated code");
    let stamp = format!("{}\n", sha256_hex(&read(&crate_dir().join(schema))));
    std::fs::write(stamp_path(schema), stamp).expect("write stamp");
    println!("regenerated {generated}, its request and stamp with {version}");
}

fn file_name(generated: &str) -> &std::ffi::OsStr {
    Path::new(generated)
        .file_name()
        .expect("generated file name")
}

fn check_stamp(schema: &str) {
    let stamp = String::from_utf8_lossy(&read(&stamp_path(schema)))
        .trim()
        .to_owned();
    let now = sha256_hex(&read(&crate_dir().join(schema)));
    assert_eq!(
        stamp, now,
        "{schema} changed since its code was generated. {REGEN_HINT}"
    );
}

fn check_request(schema: &str, generated: &str) {
    let out_dir = scratch_dir("request");
    let request = std::fs::File::open(request_path(schema)).expect("open committed request");
    capnpc::codegen::CodeGenerationCommand::new()
        .output_directory(&out_dir)
        .run(request)
        .expect("run capnpc on the committed request");
    let fresh = read(&out_dir.join(file_name(generated)));
    std::fs::remove_dir_all(&out_dir).expect("remove scratch dir");
    assert!(
        fresh == read(&crate_dir().join(generated)),
        "{generated} differs from what capnpc generates from the committed request. {REGEN_HINT}"
    );
}

fn check_compiler(schema: &str, generated: &str, version: &str) {
    let out_dir = scratch_dir("compile");
    capnpc::CompilerCommand::new()
        .src_prefix(crate_dir())
        .file(crate_dir().join(schema))
        .output_path(&out_dir)
        .run()
        .expect("capnp compile");
    let fresh = read(&out_dir.join(file_name(generated)));
    std::fs::remove_dir_all(&out_dir).expect("remove scratch dir");
    let committed = read(&crate_dir().join(generated));
    // capnpc records the compiler's version in a header comment; a machine with another
    // `capnp` release than the one that generated the committed file may differ only there.
    assert!(
        without_compiler_line(&committed) == without_compiler_line(&fresh),
        "{generated} is stale: it differs from what {version} and capnpc generate from \
         {schema}. {REGEN_HINT}"
    );
}

const COMPILER_LINE: &str = "// capnp binary version:";

fn without_compiler_line(code: &[u8]) -> Vec<u8> {
    code.split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.starts_with(COMPILER_LINE.as_bytes()))
        .flatten()
        .copied()
        .collect()
}

/// The package dir at run time (cargo sets it for tests), so a test binary built from
/// another checkout sharing the target dir reads this checkout's files.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}
