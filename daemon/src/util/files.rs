//! Files with the right modes, written atomically: secrets 0600, data dirs 0700.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700, or tightens an existing one to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir) with `mode`.
///
/// A crash leaves either the old file or the new one, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)?.sync_all()
}

/// Opens a store: owner-only file, WAL, `synchronous=FULL` (a committed transaction
/// survives power loss), and a 5 s busy timeout for a second process on the same file.
pub fn open_sqlite(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    restrict(path);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Makes a store file readable by its owner only (0600); SQLite gives its `-wal` and
/// `-shm` files the same mode. Best effort: the data dir is 0700 in any case.
pub fn restrict(path: &Path) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
}

/// Writes a secret (private key) with mode 0600; refuses to overwrite an existing one.
pub fn write_secret_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            ),
        ));
    }
    write_atomic(path, bytes, 0o600)
}

/// Reads a secret, refusing one that others can read (mode must be 0600 or stricter).
pub fn read_secret(path: &Path) -> io::Result<Vec<u8>> {
    let meta = fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {mode:o}; a key file must be 0600 (chmod 600 it)",
                path.display()
            ),
        ));
    }
    fs::read(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_0600_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("trellis-files-{}", std::process::id()));
        private_dir(&dir).expect("dir");
        let key = dir.join("k.key");
        let _ = fs::remove_file(&key);
        write_secret_new(&key, b"secret").expect("write");
        let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_secret_new(&key, b"other").is_err());
        assert_eq!(read_secret(&key).expect("read"), b"secret");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_secret(&key).is_err());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
