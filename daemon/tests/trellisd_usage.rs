//! `trellisd` refuses bad invocations with one line and exit code 2 (usage) or 1
//! (refused), without touching existing state. (Building this test also makes cargo build
//! the `trellisd` binary that the CLI's process tests drive.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trellisd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trellisd"))
        .args(args)
        .env("TRELLIS_LOG", "warn")
        .output()
        .expect("run trellisd")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "expected one line, got {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn init_twice_is_refused_and_keeps_the_first_ca() {
    let dir = scratch("trellisd-init-twice");
    let d = dir.to_str().expect("path");
    let first = trellisd(&[
        "authority",
        "init",
        "--org",
        "acme",
        "--data-dir",
        d,
        "--json",
    ]);
    assert!(first.status.success());
    let key = std::fs::read(dir.join("ca.key")).expect("ca key");
    let second = trellisd(&["authority", "init", "--org", "acme", "--data-dir", d]);
    assert_eq!(second.status.code(), Some(1));
    assert!(one_line_error(&second).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("ca key"), key);
    let fingerprint: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert!(fingerprint["ca_fingerprint"]
        .as_str()
        .is_some_and(|f| f.starts_with("sha256:")));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn bad_org_uninitialised_dir_and_malformed_join_string_are_usage_errors() {
    let dir = scratch("trellisd-usage");
    let d = dir.to_str().expect("path");
    let bad_org = trellisd(&["authority", "init", "--org", "Not_An_Org", "--data-dir", d]);
    assert_eq!(bad_org.status.code(), Some(2));
    one_line_error(&bad_org);
    let no_init = trellisd(&[
        "authority",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
    ]);
    assert_eq!(no_init.status.code(), Some(2));
    assert!(one_line_error(&no_init).contains("authority init"));
    let join = trellisd(&[
        "node",
        "join",
        "--name",
        "n",
        "--data-dir",
        d,
        "trellis-join:acme@bad",
    ]);
    assert_eq!(join.status.code(), Some(2));
    assert!(one_line_error(&join).contains("malformed join string"));
    let ttl = trellisd(&[
        "authority",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
        "--cert-lifetime",
        "soon",
    ]);
    assert_eq!(ttl.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
