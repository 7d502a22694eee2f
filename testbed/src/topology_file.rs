//! Hand-written topologies, read from TOML files.
//!
//! ```toml
//! # A comment describing the topology (drawing welcome)
//! [[org]]
//! name = "acme"                      # org id (DNS label)
//! nodes = ["edge-1", "edge-2", "core"]
//! [[org]]
//! name = "globex"
//! nodes = ["gw"]
//! [[link]]
//! a = "acme/edge-1"
//! b = "acme/core"                    # same org: internal
//! [[link]]
//! a = "acme/core"
//! b = "globex/gw"
//! role = "provider"                  # cross-org: what b is to a
//! delay = "20ms"                     # optional impairments (multi-process emulator)
//! jitter = "2ms"
//! loss = "1%"
//! ```
//!
//! Rules, checked by [`parse`]:
//! * org names are unique org ids (one lowercase DNS label), and every org
//!   declares at least one node; node names are unique within their org and
//!   `org/name` is a valid node id;
//! * a link joins two declared nodes (written `org/name`), never a node to
//!   itself, and at most one link joins a pair of nodes (in either direction);
//! * a link between two orgs needs a `role`: what `b` is to `a`, one of
//!   `customer`, `peer` or `provider`; a link inside one org is internal and
//!   takes no role;
//! * `delay` and `jitter` are durations (`"20ms"`, `"1.5s"`, `"250us"`, `"0"`)
//!   of at most [`MAX_DELAY_MS`] milliseconds; `loss` is a fraction
//!   (`"0.01"` or `0.01`) or a percentage (`"1%"`) below 100%;
//! * every node is reachable from every other over the links.
//!
//! Errors name the problem and, where the file locates it, the line:
//! `line 12: link acme/x - acme/core: no such node acme/x`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::{Spanned, Value};
use trellis_routing::{NodeId, OrgId, Relationship};

use crate::topology::{LinkSpec, Shape, Topology};

/// Largest `delay` or `jitter` a link may have, in milliseconds (one minute).
pub const MAX_DELAY_MS: f64 = 60_000.0;

/// Most nodes a topology file may declare.
pub const MAX_NODES: usize = 100_000;

/// How the multi-process link emulator degrades one link. The in-process
/// simulator ignores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkImpairment {
    /// One-way delay, in milliseconds.
    pub delay_ms: f64,
    /// Random variation of the delay (plus or minus), in milliseconds.
    pub jitter_ms: f64,
    /// Probability that one transmission is lost, in `[0, 1)`.
    pub loss: f64,
}

/// A topology read from a file (or generated, see [`resolve`]).
#[derive(Debug, Clone)]
pub struct TopologyFile {
    /// Nodes and links, nodes in file order (org by org).
    pub topology: Topology,
    /// The impairment of each link, parallel to `topology.links`.
    pub impairments: Vec<LinkImpairment>,
    /// Org ids, in file order.
    pub orgs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    org: Vec<RawOrg>,
    #[serde(default)]
    link: Vec<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    name: Spanned<String>,
    #[serde(default)]
    nodes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    a: Spanned<String>,
    b: Spanned<String>,
    role: Option<Spanned<String>>,
    delay: Option<Spanned<Value>>,
    jitter: Option<Spanned<Value>>,
    loss: Option<Spanned<Value>>,
}

/// Maps byte offsets of the text to 1-based line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn at(&self, span: &Range<usize>, msg: impl std::fmt::Display) -> String {
        format!("line {}: {msg}", self.of(span))
    }
}

/// Parses and validates the text of a topology file.
pub fn parse(text: &str) -> Result<TopologyFile, String> {
    let lines = Lines(text);
    let raw: RawFile = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => lines.at(&span, e.message().trim_end()),
        None => e.message().trim_end().to_string(),
    })?;

    // Orgs and nodes.
    let mut orgs: Vec<String> = Vec::new();
    let mut org_line: HashMap<String, usize> = HashMap::new();
    let mut topology = Topology::default();
    let mut node_index: HashMap<String, usize> = HashMap::new();
    let mut node_line: Vec<usize> = Vec::new();
    for org in &raw.org {
        let span = org.name.span();
        let name = org.name.get_ref();
        OrgId::new(name).map_err(|e| lines.at(&span, format!("org {name:?}: {e}")))?;
        if let Some(first) = org_line.get(name.as_str()) {
            return Err(lines.at(
                &span,
                format!("org {name} is declared twice (first on line {first})"),
            ));
        }
        org_line.insert(name.clone(), lines.of(&span));
        if org.nodes.is_empty() {
            return Err(lines.at(
                &span,
                format!("org {name} has no nodes (add nodes = [\"...\"])"),
            ));
        }
        for n in &org.nodes {
            let nspan = n.span();
            let full = format!("{name}/{}", n.get_ref());
            let id = NodeId::new(&full).map_err(|e| {
                lines.at(&nspan, format!("node {:?} of org {name}: {e}", n.get_ref()))
            })?;
            if node_index.contains_key(&full) {
                return Err(lines.at(&nspan, format!("node {full} is declared twice")));
            }
            node_index.insert(full, topology.nodes.len());
            node_line.push(lines.of(&nspan));
            topology.nodes.push(id);
        }
        orgs.push(name.clone());
    }
    if topology.nodes.len() < 2 {
        return Err(format!(
            "a topology needs at least 2 nodes, this one declares {} (add [[org]] tables with nodes = [...])",
            topology.nodes.len()
        ));
    }
    if topology.nodes.len() > MAX_NODES {
        return Err(format!(
            "{} nodes declared; at most {MAX_NODES}",
            topology.nodes.len()
        ));
    }

    // Links.
    let mut impairments = Vec::with_capacity(raw.link.len());
    let mut link_line: HashMap<(usize, usize), usize> = HashMap::new();
    for link in &raw.link {
        let span = link.a.span();
        let (a_name, b_name) = (link.a.get_ref(), link.b.get_ref());
        let here = |msg: String| lines.at(&span, format!("link {a_name} - {b_name}: {msg}"));
        let find = |name: &str| {
            node_index
                .get(name)
                .copied()
                .ok_or_else(|| here(no_such_node(name, &topology, &orgs)))
        };
        let a = find(a_name)?;
        let b = find(b_name)?;
        if a == b {
            return Err(here("joins a node to itself".into()));
        }
        let key = (a.min(b), a.max(b));
        if let Some(first) = link_line.get(&key) {
            return Err(here(format!(
                "the two nodes are already linked (line {first}); one link per pair"
            )));
        }
        link_line.insert(key, lines.of(&span));
        let (a_org, b_org) = (topology.nodes[a].org_str(), topology.nodes[b].org_str());
        let role = match (&link.role, a_org == b_org) {
            (None, true) => Relationship::Internal,
            (Some(r), true) => {
                return Err(lines.at(
                    &r.span(),
                    format!(
                        "link {a_name} - {b_name}: both ends are in org {a_org}, so the link is internal and takes no role (remove role = {:?})",
                        r.get_ref()
                    ),
                ))
            }
            (None, false) => {
                return Err(here(format!(
                    "the link joins orgs {a_org} and {b_org} and needs a role: what {b_name} is to {a_name} (role = \"customer\", \"peer\" or \"provider\")"
                )))
            }
            (Some(r), false) => match r.get_ref().as_str() {
                "customer" => Relationship::Customer,
                "peer" => Relationship::Peer,
                "provider" => Relationship::Provider,
                other => {
                    return Err(lines.at(
                        &r.span(),
                        format!(
                            "link {a_name} - {b_name}: unknown role {other:?} (customer, peer or provider: what {b_name} is to {a_name})"
                        ),
                    ))
                }
            },
        };
        let quantity = |field: &str,
                        v: &Option<Spanned<Value>>,
                        f: fn(&Value) -> Result<f64, String>| match v {
            None => Ok(0.0),
            Some(v) => f(v.get_ref())
                .map_err(|e| lines.at(&v.span(), format!("link {a_name} - {b_name}: {field} {e}"))),
        };
        impairments.push(LinkImpairment {
            delay_ms: quantity("delay", &link.delay, duration_ms)?,
            jitter_ms: quantity("jitter", &link.jitter, duration_ms)?,
            loss: quantity("loss", &link.loss, loss)?,
        });
        topology.links.push(LinkSpec { a, b, role });
    }

    // Connectivity.
    let reached = reachable(&topology);
    if let Some(lost) = reached.iter().position(|r| !r) {
        let missing: Vec<&str> = (0..topology.nodes.len())
            .filter(|i| !reached[*i])
            .map(|i| topology.nodes[i].as_str())
            .collect();
        let list = if missing.len() > 5 {
            format!("{} and {} more", missing[..5].join(", "), missing.len() - 5)
        } else {
            missing.join(", ")
        };
        return Err(format!(
            "line {}: node {} is unreachable from {}: the topology must be connected (not reachable: {list})",
            node_line[lost], topology.nodes[lost], topology.nodes[0]
        ));
    }

    Ok(TopologyFile {
        topology,
        impairments,
        orgs,
    })
}

/// Reads and parses a topology file; errors start with the path.
pub fn load(path: &Path) -> Result<TopologyFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Resolves a `--topology` argument: a built-in shape name, or a path to a
/// `.toml` file.
///
/// A built-in shape is generated with `nodes`, `orgs` and `seed` (see
/// [`Topology::generate`]), with no impairments and the orgs taken from the
/// node ids in order of appearance; a file ignores the three.
pub fn resolve(arg: &str, nodes: usize, orgs: usize, seed: u64) -> Result<TopologyFile, String> {
    match arg.parse::<Shape>() {
        Ok(shape) => {
            let topology = Topology::generate(shape, nodes, orgs, seed)?;
            let mut names: Vec<String> = Vec::new();
            for n in &topology.nodes {
                if !names.iter().any(|o| o == n.org_str()) {
                    names.push(n.org_str().to_string());
                }
            }
            Ok(TopologyFile {
                impairments: vec![LinkImpairment::default(); topology.links.len()],
                topology,
                orgs: names,
            })
        }
        Err(shape_err) => {
            let path = Path::new(arg);
            if arg.ends_with(".toml") || path.exists() {
                load(path)
            } else {
                Err(format!(
                    "{shape_err}; or give the path of a .toml topology file"
                ))
            }
        }
    }
}

/// Which nodes node 0 reaches over the links.
fn reachable(t: &Topology) -> Vec<bool> {
    let mut seen = vec![false; t.nodes.len()];
    if t.nodes.is_empty() {
        return seen;
    }
    let g = t.graph();
    let mut dfs = petgraph::visit::Dfs::new(&g, petgraph::graph::NodeIndex::new(0));
    while let Some(x) = dfs.next(&g) {
        seen[x.index()] = true;
    }
    seen
}

/// Explains why `name` is not a declared node, with a hint.
fn no_such_node(name: &str, t: &Topology, orgs: &[String]) -> String {
    let Some((org, node)) = name.split_once('/') else {
        let matches: Vec<&str> = t
            .nodes
            .iter()
            .map(NodeId::as_str)
            .filter(|id| id.split_once('/').is_some_and(|(_, n)| n == name))
            .collect();
        return match matches.as_slice() {
            [one] => {
                format!("no such node {name} (nodes are written org/name: did you mean {one}?)")
            }
            _ => format!(
                "no such node {name} (nodes are written org/name, like {})",
                t.nodes[0]
            ),
        };
    };
    if !orgs.iter().any(|o| o == org) {
        return format!(
            "no such node {name}: no org {org:?} is declared (orgs: {})",
            orgs.join(", ")
        );
    }
    let members: Vec<&str> = t
        .nodes
        .iter()
        .filter(|id| id.org_str() == org)
        .filter_map(|id| id.as_str().split_once('/').map(|(_, n)| n))
        .collect();
    let elsewhere: Vec<&str> = t
        .nodes
        .iter()
        .map(NodeId::as_str)
        .filter(|id| id.split_once('/').is_some_and(|(_, n)| n == node))
        .collect();
    let hint = match elsewhere.as_slice() {
        [one] => format!("; did you mean {one}?"),
        _ => String::new(),
    };
    format!(
        "no such node {name}: org {org} declares {}{hint}",
        members.join(", ")
    )
}

/// A duration in milliseconds: `"20ms"`, `"1.5s"`, `"250us"`, `"0"` (or the
/// number 0).
fn duration_ms(v: &Value) -> Result<f64, String> {
    let ms = match v {
        Value::String(s) => {
            let s = s.trim();
            let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1000.0)
            } else {
                (s, f64::NAN)
            };
            let x: f64 = num.trim().parse().map_err(|_| {
                format!("{s:?} is not a duration (like \"20ms\", \"1.5s\" or \"0\")")
            })?;
            if scale.is_nan() {
                if x != 0.0 {
                    return Err(format!("{s:?} needs a unit (\"{s}ms\" or \"{s}s\")"));
                }
                0.0
            } else {
                x * scale
            }
        }
        Value::Integer(0) => 0.0,
        Value::Float(x) if *x == 0.0 => 0.0,
        Value::Integer(_) | Value::Float(_) => {
            return Err(format!(
                "{v} needs a unit: write a string like \"{v}ms\" or \"{v}s\""
            ))
        }
        _ => {
            return Err(format!(
                "{v} is not a duration (like \"20ms\", \"1.5s\" or \"0\")"
            ))
        }
    };
    if !(0.0..=MAX_DELAY_MS).contains(&ms) {
        return Err(format!(
            "{v} is out of range: between 0 and {}s",
            MAX_DELAY_MS / 1000.0
        ));
    }
    Ok(ms)
}

/// A loss probability: `"1%"`, `"0.01"`, `0.01` or `0`, below 100%.
fn loss(v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::String(s) => {
            let s = s.trim();
            let (num, scale) = match s.strip_suffix('%') {
                Some(n) => (n, 100.0),
                None => (s, 1.0),
            };
            let x: f64 = num
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a loss (like \"1%\" or \"0.01\")"))?;
            x / scale
        }
        Value::Float(x) => *x,
        Value::Integer(i) => *i as f64,
        _ => return Err(format!("{v} is not a loss (like \"1%\" or \"0.01\")")),
    };
    if !(0.0..1.0).contains(&x) {
        let hint = match v {
            Value::String(s) if !s.contains('%') && (1.0..100.0).contains(&x) => {
                format!(" (did you mean \"{}%\"?)", s.trim())
            }
            Value::Integer(_) | Value::Float(_) if (1.0..100.0).contains(&x) => {
                format!(" (did you mean \"{v}%\"?)")
            }
            _ => String::new(),
        };
        return Err(format!(
            "{v} is out of range: a fraction in [0, 1) or a percentage in [0%, 100%){hint}"
        ));
    }
    Ok(x)
}
