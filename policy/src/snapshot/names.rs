//! The name rules an authority publishes in its trust snapshot: scopes (which of its
//! nodes may originate which of its names), delegations (which of its names another org
//! may originate) and partner CA pins (docs/adr/0011). Plain text here; the daemon turns
//! them into `trellis_routing::NameRules` and skips entries that do not parse.

use trellis_schemas::peering_capnp::trust_snapshot;

use crate::envelope::{malformed, EnvelopeError};

/// Most scopes or delegations one snapshot carries.
pub const MAX_NAME_RULES: usize = 10_000;
/// Most names in one scope or delegation.
pub const MAX_NAMES_PER_RULE: usize = 1_000;
/// Most partner CA pins one snapshot carries.
pub const MAX_PARTNER_CAS: usize = 256;

/// Which names one node (or every node, `*`) of the org may originate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameScope {
    /// A node id of the org, or `*`.
    pub node: String,
    /// Names or aggregates (`*.eu.acme`) of the org.
    pub names: Vec<String>,
}

/// Names of the org that another org (or one of its nodes) may originate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameDelegation {
    /// An org id, or a node id of another org.
    pub grantee: String,
    /// Names or aggregates of the delegating org.
    pub names: Vec<String>,
}

/// A partner org's CA certificate, trusted for that org only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerCa {
    /// The partner org.
    pub org: String,
    /// Its CA certificate, DER.
    pub ca_certificate_der: Vec<u8>,
}

fn count(n: usize) -> Result<u32, EnvelopeError> {
    u32::try_from(n).map_err(|_| malformed("too many entries"))
}

fn set_texts(
    mut list: capnp::text_list::Builder<'_>,
    items: &[String],
) -> Result<(), EnvelopeError> {
    for (i, item) in items.iter().enumerate() {
        list.set(count(i)?, item.as_str());
    }
    Ok(())
}

fn texts(list: capnp::text_list::Reader<'_>) -> Result<Vec<String>, EnvelopeError> {
    if list.len() as usize > MAX_NAMES_PER_RULE {
        return Err(malformed("too many names in one rule"));
    }
    list.iter()
        .map(|t| t.map_err(malformed)?.to_string().map_err(malformed))
        .collect()
}

/// Writes the three lists into `root`.
pub(super) fn write(
    root: &mut trust_snapshot::Builder<'_>,
    scopes: &[NameScope],
    delegations: &[NameDelegation],
    partner_cas: &[PartnerCa],
) -> Result<(), EnvelopeError> {
    let mut list = root.reborrow().init_name_scopes(count(scopes.len())?);
    for (i, s) in scopes.iter().enumerate() {
        let mut b = list.reborrow().get(count(i)?);
        b.set_node(s.node.as_str());
        set_texts(b.init_names(count(s.names.len())?), &s.names)?;
    }
    let mut list = root.reborrow().init_delegations(count(delegations.len())?);
    for (i, d) in delegations.iter().enumerate() {
        let mut b = list.reborrow().get(count(i)?);
        b.set_grantee(d.grantee.as_str());
        set_texts(b.init_names(count(d.names.len())?), &d.names)?;
    }
    let mut list = root.reborrow().init_partner_cas(count(partner_cas.len())?);
    for (i, p) in partner_cas.iter().enumerate() {
        let mut b = list.reborrow().get(count(i)?);
        b.set_org(p.org.as_str());
        b.set_ca_certificate_der(&p.ca_certificate_der);
    }
    Ok(())
}

/// What [`read`] returns.
pub(super) type Rules = (Vec<NameScope>, Vec<NameDelegation>, Vec<PartnerCa>);

/// Reads the three lists from `root`, within the limits above.
pub(super) fn read(root: &trust_snapshot::Reader<'_>) -> Result<Rules, EnvelopeError> {
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, EnvelopeError> {
        t.map_err(malformed)?.to_string().map_err(malformed)
    };
    let scopes = root.get_name_scopes().map_err(malformed)?;
    let delegations = root.get_delegations().map_err(malformed)?;
    let partners = root.get_partner_cas().map_err(malformed)?;
    if scopes.len() as usize > MAX_NAME_RULES
        || delegations.len() as usize > MAX_NAME_RULES
        || partners.len() as usize > MAX_PARTNER_CAS
    {
        return Err(malformed("too many name rules or partner CAs"));
    }
    let scopes = scopes
        .iter()
        .map(|s| {
            Ok(NameScope {
                node: text(s.get_node())?,
                names: texts(s.get_names().map_err(malformed)?)?,
            })
        })
        .collect::<Result<_, EnvelopeError>>()?;
    let delegations = delegations
        .iter()
        .map(|d| {
            Ok(NameDelegation {
                grantee: text(d.get_grantee())?,
                names: texts(d.get_names().map_err(malformed)?)?,
            })
        })
        .collect::<Result<_, EnvelopeError>>()?;
    let partners = partners
        .iter()
        .map(|p| {
            Ok(PartnerCa {
                org: text(p.get_org())?,
                ca_certificate_der: p.get_ca_certificate_der().map_err(malformed)?.to_vec(),
            })
        })
        .collect::<Result<_, EnvelopeError>>()?;
    Ok((scopes, delegations, partners))
}
