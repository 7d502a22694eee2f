//! Peering configs: one TOML file per partner org in the node's `peering_dir`.
//!
//! Contract:
//! * A peering config names the partner org, its CA bundle and the partner's role
//!   relative to us (customer, peer or provider; never internal). The CA bundle is
//!   trusted *only* for sessions with nodes of that org (docs/security.md).
//! * Every endpoint's node id is in the partner org, and the partner org is not ours.
//! * A directory holds at most one file per org; files are read in file-name order and
//!   anything not ending in `.toml` is skipped.
//! * Errors are [`ConfigError`]s with the same one-line `FILE:LINE:COL: REASON` shape as
//!   the node config; a bad CA file is reported at the `ca` line.
//!
//! ```toml
//! org = "globex"
//! ca = "globex-ca.pem"
//! role = "customer"
//! [[endpoint]]
//! address = "127.0.0.1:7301"
//! node_id = "globex/edge-1"
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use toml::Spanned;
use trellis_routing::{NodeId, OrgId, Relationship};

use super::config::{read_text, ConfigError, Int, Source, ANY_POSITIVE, DEFAULT_LOCAL_PREF};

/// Default routes a partner may announce before its session is closed.
pub const DEFAULT_MAX_ROUTES: usize = 10_000;
/// Default trust level of a partner, 0..=100.
pub const DEFAULT_TRUST: u8 = 50;

/// One node of the partner org that we peer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its QUIC (UDP) address.
    pub address: SocketAddr,
    /// Its node id; in the partner org.
    pub node_id: NodeId,
    /// Only accept its connections, never dial it.
    pub passive: bool,
}

/// The peering with one partner org.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeeringConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// The partner org.
    pub org: OrgId,
    /// The partner's CA certificates, DER, in file order (at least one).
    pub ca_ders: Vec<Vec<u8>>,
    /// The partner's role relative to us: customer, peer or provider.
    pub role: Relationship,
    /// Routes one partner node may announce before its session is closed.
    pub max_routes: usize,
    /// Trust level, 0..=100: weighs the link cost ([`PeeringConfig::effective_link_cost`]).
    pub trust: u8,
    /// Cost added to the metric of routes learned from the partner, 1..=65535.
    pub link_cost: u32,
    /// Local preference of routes learned from the partner.
    pub local_pref: u32,
    /// The partner nodes we peer with (at least one).
    pub endpoints: Vec<Endpoint>,
    /// Cedar policies for this peering (import and export filters), added to the node's
    /// policies (docs/adr/0016-cedar-decides.md).
    pub policy: Option<PathBuf>,
}

impl PeeringConfig {
    /// The link cost sessions with this partner use: `link_cost × (200 − trust) / 100`,
    /// so a fully trusted partner (100) costs `link_cost` and an untrusted one (0) twice
    /// that; between equally long paths the decision process prefers the more trusted
    /// partner (docs/adr/0009-partner-trust-weighs-link-cost.md).
    pub fn effective_link_cost(&self) -> u32 {
        let weight = 200 - u64::from(self.trust.min(100));
        let cost = u64::from(self.link_cost) * weight / 100;
        u32::try_from(cost.max(1)).unwrap_or(u32::MAX)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeering {
    org: Spanned<String>,
    ca: Spanned<String>,
    role: Spanned<String>,
    max_routes: Int,
    trust: Int,
    link_cost: Int,
    local_pref: Int,
    policy: Option<Spanned<String>>,
    #[serde(default, rename = "endpoint")]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Spanned<String>,
    node_id: Spanned<String>,
    passive: Option<bool>,
}

impl PeeringConfig {
    /// Reads and parses `path` (and the CA bundle it names).
    pub fn load(path: &Path, own_org: &OrgId) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path, own_org)
    }

    /// Parses `text` as if read from `file`; the CA path is taken from `file`'s directory.
    pub fn parse(text: &str, file: &Path, own_org: &OrgId) -> Result<Self, ConfigError> {
        parse_located(text, file, own_org).map(|(config, _)| config)
    }
}

/// Parses a peering config and returns the span of its `org` value too.
fn parse_located(
    text: &str,
    file: &Path,
    own_org: &OrgId,
) -> Result<(PeeringConfig, Range<usize>), ConfigError> {
    let src = Source { file, text };
    let raw: RawPeering = src.deserialize()?;
    let org = OrgId::new(raw.org.get_ref()).map_err(|e| src.at(raw.org.span(), e.to_string()))?;
    if &org == own_org {
        return Err(src.at(
            raw.org.span(),
            format!("org {org} is this node's own org; its peers go in trellis.toml"),
        ));
    }
    let role = match Relationship::from_name(raw.role.get_ref()) {
        Some(role) if role != Relationship::Internal => role,
        _ => {
            return Err(src.at(
                raw.role.span(),
                format!(
                    "role {:?} is not one of \"customer\", \"peer\", \"provider\"",
                    raw.role.get_ref()
                ),
            ))
        }
    };
    let ca_ders = read_ca_bundle(&src, &raw.ca)?;
    if raw.endpoints.is_empty() {
        return Err(src.whole("a peering needs at least one [[endpoint]]"));
    }
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    let (mut ids, mut addrs) = (HashSet::new(), HashSet::new());
    for e in &raw.endpoints {
        let node_id = src.node_id(&e.node_id)?;
        if !node_id.in_org(&org) {
            return Err(src.at(
                e.node_id.span(),
                format!("endpoint {node_id} is not in the partner org {org}"),
            ));
        }
        if !ids.insert(node_id.clone()) {
            return Err(src.at(
                e.node_id.span(),
                format!("endpoint {node_id} is listed twice"),
            ));
        }
        let address = src.socket_addr(&e.address, "address")?;
        if !addrs.insert(address) {
            return Err(src.at(
                e.address.span(),
                format!("address {address} is used by two endpoints"),
            ));
        }
        endpoints.push(Endpoint {
            address,
            node_id,
            passive: e.passive.unwrap_or(false),
        });
    }
    let config = PeeringConfig {
        file: file.to_owned(),
        org,
        ca_ders,
        role,
        max_routes: src.int_or(
            &raw.max_routes,
            "max_routes",
            ANY_POSITIVE,
            DEFAULT_MAX_ROUTES,
        )?,
        trust: src.int_or(&raw.trust, "trust", 0..=100, DEFAULT_TRUST)?,
        link_cost: src.link_cost(&raw.link_cost)?,
        local_pref: src.int_or(
            &raw.local_pref,
            "local_pref",
            0..=i64::from(u32::MAX),
            DEFAULT_LOCAL_PREF,
        )?,
        endpoints,
        policy: raw
            .policy
            .as_ref()
            .map(|p| src.relative_path(p, "policy"))
            .transpose()?,
    };
    Ok((config, raw.org.span()))
}

/// Reads every certificate of the CA bundle named by `ca`; each must be a CA certificate.
fn read_ca_bundle(src: &Source<'_>, ca: &Spanned<String>) -> Result<Vec<Vec<u8>>, ConfigError> {
    let path = src.relative_path(ca, "ca")?;
    let shown = path.display();
    let bad = |why: String| src.at(ca.span(), format!("ca file {shown}: {why}"));
    let pem = std::fs::read(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut ders = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let der = cert.map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
            bad(format!(
                "certificate {} does not parse: {e}",
                ders.len() + 1
            ))
        })?;
        if !parsed.is_ca() {
            return Err(bad(format!(
                "certificate {} ({}) is not a CA certificate",
                ders.len() + 1,
                parsed.subject()
            )));
        }
        ders.push(der.to_vec());
    }
    if ders.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(ders)
}

/// Loads every `*.toml` file of `dir`, sorted by file name. Two files for one org are an
/// error at the second file's `org` line.
pub fn load_dir(dir: &Path, own_org: &OrgId) -> Result<Vec<PeeringConfig>, ConfigError> {
    let unreadable = |e: std::io::Error| ConfigError::File {
        file: dir.to_owned(),
        reason: format!("cannot read peering directory: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut seen: HashMap<OrgId, PathBuf> = HashMap::new();
    let mut configs = Vec::with_capacity(files.len());
    for file in files {
        let text = read_text(&file)?;
        let (config, org_span) = parse_located(&text, &file, own_org)?;
        if let Some(first) = seen.get(&config.org) {
            let src = Source {
                file: &file,
                text: &text,
            };
            return Err(src.at(
                org_span,
                format!(
                    "org {} already has a peering config in {}",
                    config.org,
                    first.display()
                ),
            ));
        }
        seen.insert(config.org.clone(), file.clone());
        configs.push(config);
    }
    Ok(configs)
}

#[cfg(test)]
#[path = "peering_tests.rs"]
mod tests;
