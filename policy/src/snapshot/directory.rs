//! The org's node directory an authority publishes in its trust snapshot: where each of
//! its active nodes accepts peering sessions and which selection role it has. Nodes pick
//! their active and warm peers among these entries (docs/adr/0015). Plain text here, as
//! signed; [`DirectoryEntry::check`] says whether one entry is usable, and the daemon
//! skips entries that are not.

use std::net::SocketAddr;

use trellis_schemas::peering_capnp::trust_snapshot;

use crate::envelope::{malformed, EnvelopeError};

/// Most directory entries one snapshot carries.
pub const MAX_DIRECTORY: usize = 100_000;

/// The selection roles a directory entry may name.
pub const SELECTION_ROLES: [&str; 3] = ["default", "relay", "thin"];

/// One node of the org as the authority lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Its node id, `org/name`.
    pub node: String,
    /// Where it accepts peering sessions, `IP:PORT`.
    pub address: String,
    /// Its selection role: one of [`SELECTION_ROLES`].
    pub role: String,
}

impl DirectoryEntry {
    /// The entry's address, if it is usable in `org`'s directory: a node id of `org`,
    /// a specific (not unspecified) `IP:PORT` with a port, and a known role.
    pub fn check(&self, org: &str) -> Result<SocketAddr, String> {
        let in_org = self
            .node
            .split_once('/')
            .is_some_and(|(o, name)| o == org && !name.is_empty());
        if !in_org {
            return Err(format!("{:?} is not a node of {org}", self.node));
        }
        let address: SocketAddr = self
            .address
            .parse()
            .map_err(|_| format!("{}: address {:?} is not IP:PORT", self.node, self.address))?;
        if address.ip().is_unspecified() || address.port() == 0 {
            return Err(format!(
                "{}: address {address} is not one a peer can dial",
                self.node
            ));
        }
        if !SELECTION_ROLES.contains(&self.role.as_str()) {
            return Err(format!("{}: unknown role {:?}", self.node, self.role));
        }
        Ok(address)
    }
}

fn count(n: usize) -> Result<u32, EnvelopeError> {
    u32::try_from(n).map_err(|_| malformed("too many directory entries"))
}

/// Writes the directory into `root`.
pub(super) fn write(
    root: &mut trust_snapshot::Builder<'_>,
    entries: &[DirectoryEntry],
) -> Result<(), EnvelopeError> {
    let mut list = root.reborrow().init_directory(count(entries.len())?);
    for (i, e) in entries.iter().enumerate() {
        let mut b = list.reborrow().get(count(i)?);
        b.set_node(e.node.as_str());
        b.set_address(e.address.as_str());
        b.set_role(e.role.as_str());
    }
    Ok(())
}

/// Reads the directory from `root` (absent in snapshots of older authorities: empty).
pub(super) fn read(
    root: &trust_snapshot::Reader<'_>,
) -> Result<Vec<DirectoryEntry>, EnvelopeError> {
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, EnvelopeError> {
        t.map_err(malformed)?.to_string().map_err(malformed)
    };
    let list = root.get_directory().map_err(malformed)?;
    if list.len() as usize > MAX_DIRECTORY {
        return Err(malformed("too many directory entries"));
    }
    list.iter()
        .map(|e| {
            Ok(DirectoryEntry {
                node: text(e.get_node())?,
                address: text(e.get_address())?,
                role: text(e.get_role())?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, address: &str, role: &str) -> DirectoryEntry {
        DirectoryEntry {
            node: node.into(),
            address: address.into(),
            role: role.into(),
        }
    }

    #[test]
    fn usable_entries_pass_and_others_say_why() {
        let ok = entry("acme/n1", "127.0.0.1:7001", "relay");
        assert_eq!(ok.check("acme"), Ok("127.0.0.1:7001".parse().unwrap()));
        let cases = [
            (
                entry("globex/n1", "127.0.0.1:7001", "default"),
                "not a node of acme",
            ),
            (
                entry("acme/", "127.0.0.1:7001", "default"),
                "not a node of acme",
            ),
            (entry("acme/n1", "localhost:7001", "default"), "not IP:PORT"),
            (
                entry("acme/n1", "0.0.0.0:7001", "default"),
                "not one a peer can dial",
            ),
            (
                entry("acme/n1", "127.0.0.1:0", "default"),
                "not one a peer can dial",
            ),
            (entry("acme/n1", "127.0.0.1:7001", "hub"), "unknown role"),
        ];
        for (e, why) in cases {
            let err = e.check("acme").expect_err("refused");
            assert!(err.contains(why), "{e:?}: {err}");
        }
    }
}
