//! The org's node directory: where each node accepts peering sessions and its selection
//! role, as the node reported it when it subscribed to snapshots. Published in every
//! trust snapshot (active nodes only), so the org's nodes can choose their peers among
//! each other (docs/adr/0015).
//!
//! A node can only list itself: the server takes the node id from the client
//! certificate. An unchanged listing changes nothing; a changed one publishes a snapshot.

use rusqlite::{params, Connection, OptionalExtension};
use trellis_policy::DirectoryEntry;
use trellis_routing::NodeId;

use super::nodes::publish;
use super::{to_i64, Store, StoreError};
use crate::pki::Ca;

/// The entries of the active nodes, by node id.
pub(super) fn snapshot_directory(conn: &Connection) -> Result<Vec<DirectoryEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT d.node_id, d.address, d.role FROM directory d
         JOIN nodes n ON n.node_id = d.node_id
         WHERE n.state = 'active' ORDER BY d.node_id",
    )?;
    let entries = stmt
        .query_map([], |r| {
            Ok(DirectoryEntry {
                node: r.get(0)?,
                address: r.get(1)?,
                role: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(entries)
}

/// What [`Store::list_node`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Listed {
    /// The node was listed like this already.
    Unchanged,
    /// The listing changed; the snapshot of this version carries it.
    Published(u64),
    /// The listing is not usable (why); nothing changed.
    Refused(String),
}

impl Store {
    /// Lists `node` at `address` with `role` (empty: `default`) in the directory; an
    /// active node's new or changed listing publishes a new snapshot.
    pub fn list_node(
        &mut self,
        ca: &Ca,
        node: &NodeId,
        address: &str,
        role: &str,
        now: u64,
    ) -> Result<Listed, StoreError> {
        let role = if role.is_empty() { "default" } else { role };
        let entry = DirectoryEntry {
            node: node.as_str().to_owned(),
            address: address.to_owned(),
            role: role.to_owned(),
        };
        if let Err(why) = entry.check(ca.org().as_str()) {
            return Ok(Listed::Refused(why));
        }
        let tx = self.immediate()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM nodes WHERE node_id=?1",
                [node.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        if state.as_deref() != Some("active") {
            return Ok(Listed::Refused(format!(
                "{} is not an active node",
                node.as_str()
            )));
        }
        let stored: Option<(String, String)> = tx
            .query_row(
                "SELECT address, role FROM directory WHERE node_id=?1",
                [node.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if stored.as_ref() == Some(&(entry.address.clone(), entry.role.clone())) {
            return Ok(Listed::Unchanged);
        }
        tx.execute(
            "INSERT INTO directory(node_id, address, role, updated_at) VALUES(?1, ?2, ?3, ?4)
             ON CONFLICT(node_id) DO UPDATE SET address=?2, role=?3, updated_at=?4",
            params![node.as_str(), entry.address, entry.role, to_i64(now)],
        )?;
        let why = format!("directory: {} at {} ({role})", node.as_str(), entry.address);
        let version = publish(&tx, ca, node.as_str(), &why, now)?;
        tx.commit()?;
        Ok(Listed::Published(version))
    }
}
