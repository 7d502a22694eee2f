//! Which role a data dir belongs to. An authority's dir holds `ca.key`,
//! `authority.key` and `authority.db`; a node's holds `node.key`, `node.crt` and
//! `node.db`. Both hold a `ca.crt`, so a command pointed at the other role's dir would
//! otherwise overwrite it: every command checks the role first and refuses a dir of the
//! other one (docs/operations.md, "Data dirs").

use std::path::Path;

/// The role a data dir serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `trellisd authority init|run`.
    Authority,
    /// `trellisd node join|run`.
    Node,
}

impl Role {
    fn markers(self) -> &'static [&'static str] {
        match self {
            Role::Authority => &["ca.key", "authority.key", "authority.db"],
            Role::Node => &["node.key", "node.crt", "node.db"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Authority => "an authority",
            Role::Node => "a node",
        }
    }
}

/// The role `dir` already serves, with the file that shows it; `None` for an empty or
/// missing dir.
pub fn role_of(dir: &Path) -> Option<(Role, &'static str)> {
    [Role::Authority, Role::Node].into_iter().find_map(|role| {
        role.markers()
            .iter()
            .find(|m| dir.join(m).exists())
            .map(|m| (role, *m))
    })
}

/// `Err` with a sentence an operator can act on if `dir` belongs to the other role.
pub fn ensure_role(dir: &Path, want: Role) -> Result<(), String> {
    match role_of(dir) {
        Some((role, marker)) if role != want => Err(format!(
            "{} is {}'s data dir ({marker} exists); refusing to use it for {}: give this \
             command a data dir of its own",
            dir.display(),
            role.name(),
            want.name()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_of_one_role_is_refused_for_the_other() {
        let dir = std::env::temp_dir().join(format!("trellis-datadir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(role_of(&dir), None);
        assert!(ensure_role(&dir, Role::Node).is_ok());
        assert!(ensure_role(&dir, Role::Authority).is_ok());

        std::fs::write(dir.join("node.db"), b"").expect("write");
        assert_eq!(role_of(&dir), Some((Role::Node, "node.db")));
        assert!(ensure_role(&dir, Role::Node).is_ok());
        let refused = ensure_role(&dir, Role::Authority).expect_err("refused");
        assert!(
            refused.contains("a node's data dir (node.db exists)"),
            "{refused}"
        );

        std::fs::remove_file(dir.join("node.db")).expect("rm");
        std::fs::write(dir.join("ca.key"), b"").expect("write");
        assert!(ensure_role(&dir, Role::Node).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
