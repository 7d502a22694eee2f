//! Name rules and partner CA pins, published in the trust snapshot (docs/adr/0011):
//! scopes narrow which nodes of the org may originate which of its names, delegations let
//! another org originate some of them, and partner CA pins let every node of the org verify
//! a partner's origins. Each change is audited and publishes a new snapshot at once.

use rusqlite::{params, Connection};
use trellis_policy::snapshot::{NameDelegation, NameScope, PartnerCa};
use trellis_routing::ownership::NamePattern;
use trellis_routing::{NodeId, OrgId};

use super::nodes::publish;
use super::{audit, json_list, to_i64, Store, StoreError};
use crate::admin::{ApiError, ErrorKind, NameRuleInfo, NamesInfo, PartnerCaInfo};
use crate::pki::Ca;

/// Which kind of rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// Narrows the org's own nodes.
    Scope,
    /// Grants another org.
    Delegation,
}

impl RuleKind {
    fn as_str(self) -> &'static str {
        match self {
            RuleKind::Scope => "scope",
            RuleKind::Delegation => "delegation",
        }
    }
}

fn bad(message: String) -> StoreError {
    ApiError::new(ErrorKind::BadRequest, message).into()
}

/// Checks a rule's subject and names against the org `own`; `Err` with a sentence.
fn check_rule(
    own: &OrgId,
    kind: RuleKind,
    subject: &str,
    names: &[String],
) -> Result<(), StoreError> {
    match kind {
        RuleKind::Scope if subject == "*" => {}
        RuleKind::Scope => {
            let node = NodeId::new(subject).map_err(|e| bad(format!("node {subject:?}: {e}")))?;
            if !node.in_org(own) {
                return Err(bad(format!(
                    "a scope is for a node of {} or `*`, not {subject}",
                    own.as_str()
                )));
            }
        }
        RuleKind::Delegation => {
            let org = match NodeId::new(subject) {
                Ok(node) => node.org(),
                Err(_) => OrgId::new(subject).map_err(|e| {
                    bad(format!(
                        "grantee {subject:?} is neither a node nor an org: {e}"
                    ))
                })?,
            };
            if &org == own {
                return Err(bad(format!(
                    "{subject} is in {}: a delegation is for another org (use a scope)",
                    own.as_str()
                )));
            }
        }
    }
    if names.len() > trellis_policy::snapshot::MAX_NAMES_PER_RULE {
        return Err(bad(format!(
            "{} names in one rule; at most {}",
            names.len(),
            trellis_policy::snapshot::MAX_NAMES_PER_RULE
        )));
    }
    for name in names {
        NamePattern::new(name, own).map_err(bad)?;
    }
    Ok(())
}

/// Scopes, delegations and partner CA pins, as a snapshot carries them.
pub(super) type SnapshotRules = (Vec<NameScope>, Vec<NameDelegation>, Vec<PartnerCa>);

/// Everything the next snapshot carries about names, in a stable order.
pub(super) fn snapshot_rules(conn: &Connection) -> Result<SnapshotRules, StoreError> {
    let mut scopes = Vec::new();
    let mut delegations = Vec::new();
    let mut stmt =
        conn.prepare("SELECT kind, subject, names FROM name_rules ORDER BY kind, subject")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, subject, names) = row?;
        let names = json_list(&names);
        match kind.as_str() {
            "scope" => scopes.push(NameScope {
                node: subject,
                names,
            }),
            _ => delegations.push(NameDelegation {
                grantee: subject,
                names,
            }),
        }
    }
    let mut stmt = conn.prepare("SELECT org, der FROM partner_cas ORDER BY org")?;
    let partners = stmt
        .query_map([], |r| {
            Ok(PartnerCa {
                org: r.get(0)?,
                ca_certificate_der: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((scopes, delegations, partners))
}

impl Store {
    /// Sets the rule of `kind` for `subject` to `names` (empty: removes it), and publishes
    /// a new snapshot.
    pub fn set_name_rule(
        &mut self,
        ca: &Ca,
        kind: RuleKind,
        subject: &str,
        names: &[String],
        actor: &str,
        now: u64,
    ) -> Result<NamesInfo, StoreError> {
        check_rule(ca.org(), kind, subject, names)?;
        let tx = self.immediate()?;
        if names.is_empty() {
            let removed = tx.execute(
                "DELETE FROM name_rules WHERE kind=?1 AND subject=?2",
                params![kind.as_str(), subject],
            )?;
            if removed == 0 {
                return Err(super::not_found(kind.as_str(), subject));
            }
        } else {
            let count: i64 = tx.query_row("SELECT count(*) FROM name_rules", [], |r| r.get(0))?;
            if count >= trellis_policy::snapshot::MAX_NAME_RULES as i64 {
                return Err(super::conflict("too many name rules".into()));
            }
            let list = serde_json::to_string(names).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO name_rules(kind, subject, names, updated_at) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(kind, subject) DO UPDATE SET names=?3, updated_at=?4",
                params![kind.as_str(), subject, list, to_i64(now)],
            )?;
        }
        let action = format!("names.{}", kind.as_str());
        audit(&tx, now, actor, &action, subject, &names.join(","))?;
        let version = publish(&tx, ca, actor, &action, now)?;
        tx.commit()?;
        self.names_info(version)
    }

    /// Pins `der` as the CA of partner `org` for every node of this org.
    pub fn set_partner_ca(
        &mut self,
        ca: &Ca,
        org: &OrgId,
        der: Option<&[u8]>,
        actor: &str,
        now: u64,
    ) -> Result<NamesInfo, StoreError> {
        if org == ca.org() {
            return Err(bad(format!("{} is this authority's own org", org.as_str())));
        }
        let tx = self.immediate()?;
        let detail = match der {
            Some(der) => {
                let fingerprint = crate::pki::fingerprint(der);
                tx.execute(
                    "INSERT INTO partner_cas(org, der, fingerprint, added_at) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT(org) DO UPDATE SET der=?2, fingerprint=?3, added_at=?4",
                    params![org.as_str(), der, fingerprint, to_i64(now)],
                )?;
                format!("ca={fingerprint}")
            }
            None => {
                let removed = tx.execute("DELETE FROM partner_cas WHERE org=?1", [org.as_str()])?;
                if removed == 0 {
                    return Err(super::not_found("partner", org.as_str()));
                }
                "removed".into()
            }
        };
        audit(&tx, now, actor, "partners.ca", org.as_str(), &detail)?;
        let version = publish(&tx, ca, actor, "partner CA", now)?;
        tx.commit()?;
        self.names_info(version)
    }

    /// The rules and pins, with the newest snapshot version (`names list`).
    pub fn list_names(&self) -> Result<NamesInfo, StoreError> {
        let version: i64 =
            self.conn
                .query_row("SELECT coalesce(max(version), 0) FROM snapshots", [], |r| {
                    r.get(0)
                })?;
        self.names_info(super::to_u64(version))
    }

    fn names_info(&self, snapshot_version: u64) -> Result<NamesInfo, StoreError> {
        let (scopes, delegations, _) = snapshot_rules(&self.conn)?;
        let mut rules: Vec<NameRuleInfo> = scopes
            .into_iter()
            .map(|s| NameRuleInfo {
                kind: "scope".into(),
                subject: s.node,
                names: s.names,
            })
            .collect();
        rules.extend(delegations.into_iter().map(|d| NameRuleInfo {
            kind: "delegation".into(),
            subject: d.grantee,
            names: d.names,
        }));
        let mut stmt = self
            .conn
            .prepare("SELECT org, fingerprint FROM partner_cas ORDER BY org")?;
        let partner_cas = stmt
            .query_map([], |r| {
                Ok(PartnerCaInfo {
                    org: r.get(0)?,
                    fingerprint: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NamesInfo {
            rules,
            partner_cas,
            snapshot_version,
        })
    }
}
