//! The `[selection]` section of `trellis.toml`: peer selection inside the org
//! (docs/adr/0015-peer-selection-from-a-signed-directory.md). Without the section the
//! node keeps exactly its configured peers; with it, the node is listed in the org's
//! node directory and keeps a few active peers chosen among the directory's nodes.
//!
//! ```toml
//! [selection]
//! role = "default"               # default (3-5 active), relay (8-20) or thin (1-3)
//! advertise = "10.0.0.5:7001"    # where peers dial us; default: `listen` if specific
//! bootstrap = ["acme/n1@10.0.0.1:7001", "acme/n2@10.0.0.2:7001"]
//! min_active = 3                 # default from the role
//! max_active = 5                 # default from the role
//! max_warm = 4                   # candidates probed each round
//! swap_margin_pct = 30           # a swap must cut the cost by this much
//! min_hold = "60s"               # an active peer is kept at least this long
//! round = "2s"                   # how often the node reconsiders its peers
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use trellis_routing::selection::{NodeRole, SelectionConfig};
use trellis_routing::NodeId;

use super::{ConfigError, Int, Source, Text};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelection {
    role: Text,
    advertise: Text,
    #[serde(default)]
    bootstrap: Vec<Spanned<String>>,
    min_active: Int,
    max_active: Int,
    max_warm: Int,
    swap_margin_pct: Int,
    min_hold: Text,
    round: Text,
}

/// Peer selection settings (present only when the config has a `[selection]` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The node's role, as listed in the directory.
    pub role: NodeRole,
    /// Where peers dial this node (`None`: `listen`, once it is known to be specific).
    pub advertise: Option<SocketAddr>,
    /// Cold candidates used before the directory names any node.
    pub bootstrap: Vec<(NodeId, SocketAddr)>,
    /// The selector's tunables.
    pub selector: SelectionConfig,
    /// Time between selection rounds.
    pub round: Duration,
}

/// The directory's name of `role`.
pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Default => "default",
        NodeRole::Relay => "relay",
        NodeRole::Thin => "thin",
    }
}

/// The role named `name` in a config or a directory entry.
pub fn role_from_name(name: &str) -> Option<NodeRole> {
    match name {
        "default" => Some(NodeRole::Default),
        "relay" => Some(NodeRole::Relay),
        "thin" => Some(NodeRole::Thin),
        _ => None,
    }
}

pub(super) fn selection(
    src: &Source<'_>,
    raw: &RawSelection,
    own_org: &trellis_routing::OrgId,
) -> Result<Selection, ConfigError> {
    let role = match &raw.role {
        None => NodeRole::Default,
        Some(v) => role_from_name(v.get_ref()).ok_or_else(|| {
            src.at(
                v.span(),
                format!("role must be default, relay or thin, got {:?}", v.get_ref()),
            )
        })?,
    };
    let advertise = raw
        .advertise
        .as_ref()
        .map(|v| {
            let a = src.socket_addr(v, "advertise")?;
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(src.at(v.span(), "advertise must name a specific IP and port"));
            }
            Ok(a)
        })
        .transpose()?;
    let mut bootstrap = Vec::with_capacity(raw.bootstrap.len());
    for b in &raw.bootstrap {
        let entry = b.get_ref().split_once('@').and_then(|(node, addr)| {
            Some((NodeId::new(node).ok()?, addr.parse::<SocketAddr>().ok()?))
        });
        let Some((node, addr)) = entry else {
            return Err(src.at(
                b.span(),
                format!("bootstrap entry {:?} is not NODE_ID@IP:PORT", b.get_ref()),
            ));
        };
        if !node.in_org(own_org) {
            return Err(src.at(
                b.span(),
                format!("bootstrap node {node} is not in this node's org {own_org}"),
            ));
        }
        bootstrap.push((node, addr));
    }
    let mut selector = SelectionConfig::for_role(role);
    selector.min_active =
        src.int_or(&raw.min_active, "min_active", 1..=1000, selector.min_active)?;
    selector.max_active =
        src.int_or(&raw.max_active, "max_active", 1..=1000, selector.max_active)?;
    if selector.min_active > selector.max_active {
        let span = raw.min_active.as_ref().or(raw.max_active.as_ref());
        let why = format!(
            "min_active ({}) is above max_active ({})",
            selector.min_active, selector.max_active
        );
        return Err(match span {
            Some(v) => src.at(v.span(), why),
            None => src.whole(why),
        });
    }
    selector.long_links = usize::from(selector.min_active >= 2);
    selector.max_warm = src.int_or(&raw.max_warm, "max_warm", 0..=100, selector.max_warm)?;
    selector.swap_margin_pct = src.int_or(
        &raw.swap_margin_pct,
        "swap_margin_pct",
        1..=100,
        selector.swap_margin_pct,
    )?;
    let duration = |v: &Text, default: Duration| match v {
        Some(v) => src.duration(v),
        None => Ok(default),
    };
    selector.min_hold = duration(&raw.min_hold, selector.min_hold)?;
    let round = duration(&raw.round, Duration::from_secs(2))?;
    if round < Duration::from_millis(100) {
        if let Some(v) = &raw.round {
            return Err(src.at(v.span(), "round must be at least 100ms"));
        }
    }
    Ok(Selection {
        role,
        advertise,
        bootstrap,
        selector,
        round,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use trellis_routing::selection::NodeRole;

    use crate::node::config::tests::parse_text as parse;

    #[test]
    fn no_section_means_no_selection_and_the_role_seeds_the_range() {
        let c = parse("listen = \"127.0.0.1:1\"\n").expect("valid");
        assert!(c.selection.is_none());
        let c = parse(
            "listen = \"127.0.0.1:1\"\n[selection]\nrole = \"relay\"\n\
             bootstrap = [\"acme/n1@127.0.0.1:7001\"]\nround = \"500ms\"\n",
        )
        .expect("valid");
        let s = c.selection.expect("on");
        assert_eq!(s.role, NodeRole::Relay);
        assert_eq!((s.selector.min_active, s.selector.max_active), (8, 20));
        assert_eq!(s.bootstrap.len(), 1);
        assert_eq!(s.round, Duration::from_millis(500));
        let c = parse("listen = \"127.0.0.1:1\"\n[selection]\nmax_active = 4\n").expect("valid");
        assert_eq!(c.selection.expect("on").selector.max_active, 4);
    }

    #[test]
    fn bad_values_are_refused_at_their_line() {
        for (text, why) in [
            ("role = \"hub\"", "role must be"),
            ("bootstrap = [\"127.0.0.1:7001\"]", "not NODE_ID@IP:PORT"),
            (
                "bootstrap = [\"globex/n1@127.0.0.1:7001\"]",
                "not in this node's org",
            ),
            ("advertise = \"0.0.0.0:7001\"", "specific IP"),
            ("min_active = 6", "above max_active"),
            ("round = \"1ms\"", "at least 100ms"),
            ("bogus = 1", "bogus"),
        ] {
            let err = parse(&format!("listen = \"127.0.0.1:1\"\n[selection]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(why), "{text}: {err}");
            if why != "bogus" {
                assert!(err.contains(":3:"), "{text}: {err}");
            }
        }
    }
}
