//! Commands against a node daemon: peers, routes, topology (and `status` for nodes).

use clap::{Subcommand, ValueEnum};

use trellis_daemon::admin::{
    NodeStatus, PeerInfo, ReloadReport, Request, RouteDetail, RouteInfo, Topology,
};
use trellis_daemon::util::time::rfc3339;

use crate::authority::call;
use crate::table::render;
use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum Peers {
    /// Configured peers and their sessions.
    List,
    /// One peer in detail.
    Show {
        /// Node id ORG/NAME.
        node_id: String,
    },
    /// Add a peer of this node's org (kept across restarts).
    Add {
        /// Node id ORG/NAME.
        node_id: String,
        /// Its QUIC address HOST:PORT.
        #[arg(long)]
        address: String,
        /// Link cost.
        #[arg(long)]
        link_cost: Option<u32>,
    },
    /// Remove a peer: close its session and withdraw its routes.
    Remove {
        /// Node id ORG/NAME.
        node_id: String,
    },
    /// Close the session with a peer; it is redialed.
    Reset {
        /// Node id ORG/NAME.
        node_id: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Protocol {
    Tcp,
    Http,
    Grpc,
}

#[derive(Subcommand)]
pub enum Routes {
    /// The best route of every service.
    List,
    /// Every path of one service.
    Show {
        /// Service name.
        service: String,
    },
    /// Originate a service from this node, or every route of a file as one change.
    Advertise {
        /// Service name, e.g. books.acme.
        #[arg(required_unless_present = "file")]
        service: Option<String>,
        /// Where it listens, HOST:PORT.
        #[arg(long, required_unless_present = "file")]
        endpoint: Option<String>,
        /// What it speaks.
        #[arg(long, value_enum, default_value = "tcp")]
        protocol: Protocol,
        /// A route file: one `SERVICE ENDPOINT [PROTOCOL]` or JSON object per line. All
        /// or nothing; the answer comes once the load is committed.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["service", "endpoint"])]
        file: Option<std::path::PathBuf>,
    },
    /// Stop originating a service, or every service of a file as one change.
    Withdraw {
        /// Service name.
        #[arg(required_unless_present = "file")]
        service: Option<String>,
        /// A file of services, one per line (an advertise file works as it is).
        #[arg(long, value_name = "FILE", conflicts_with = "service")]
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Dot,
}

fn peers_table(peers: &[PeerInfo]) -> String {
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.node_id.clone(),
                p.state.clone(),
                p.role.clone(),
                p.address.clone(),
                p.routes_received.to_string(),
                p.rtt_us
                    .map_or_else(|| "-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0)),
                format!("{:.1}%", f64::from(p.loss_ppm) / 10_000.0),
                p.failures.to_string(),
                p.trust.to_string(),
                if p.base_cost == 0 || p.base_cost == p.link_cost {
                    p.link_cost.to_string()
                } else {
                    format!("{} ({})", p.link_cost, p.base_cost)
                },
                rfc3339(p.since),
                p.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render(
        &[
            "PEER",
            "STATE",
            "ROLE",
            "ADDRESS",
            "ROUTES",
            "RTT",
            "LOSS",
            "FAILS",
            "TRUST",
            "COST (CONFIGURED)",
            "SINCE",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// `peers show`: one peer, a line per field.
fn peer_detail(p: &PeerInfo) -> String {
    let rtt = p
        .rtt_us
        .map_or_else(|| "-".into(), |us| format!("{:.2} ms", us as f64 / 1000.0));
    format!(
        "peer:          {}\nstate:         {} since {}\nrole:          {} ({})\naddress:       {}\nroutes:        {}\nrtt:           {rtt} (smoothed)\nloss:          {:.2} % (last 30 s)\nfailures:      {} (last 10 min)\ntrust:         {}\nlink cost:     {} (configured {}, changed {} times)\nsessions:      {}\nlast error:    {}\n",
        p.node_id,
        p.state,
        rfc3339(p.since),
        p.role,
        p.source,
        p.address,
        p.routes_received,
        f64::from(p.loss_ppm) / 10_000.0,
        p.failures,
        p.trust,
        p.link_cost,
        p.base_cost,
        p.cost_changes,
        p.sessions,
        p.last_error.clone().unwrap_or_else(|| "-".into()),
    )
}

pub fn node_status(ctx: &Context, value: serde_json::Value) -> Result<(), Failure> {
    let s: NodeStatus =
        serde_json::from_value(value).map_err(|e| Failure::new(6, format!("bad answer: {e}")))?;
    ctx.print(&s, |s| {
        let counters: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "node:             {}\nlisten:           {}\nuptime:           {} s\npeers:            {} up of {}\nroutes:           {} ({} originated here)\ntrust snapshot:   v{}\ncertificate until {}\ncounters:         {}\n",
            s.node_id,
            s.listen,
            s.uptime_secs,
            s.peers_up,
            s.peers_configured,
            s.routes,
            s.originated,
            s.snapshot_version,
            rfc3339(s.cert_not_after),
            if counters.is_empty() { "-".into() } else { counters.join(" ") }
        ) + &s.selection.as_ref().map_or_else(String::new, |sel| {
            format!(
                "selection:        {} role, {} active (wants {}-{}), {} warm, {} candidates\n",
                sel.role, sel.active, sel.min_active, sel.max_active, sel.warm, sel.candidates
            )
        })
    });
    Ok(())
}

pub fn peers(ctx: &Context, cmd: Peers) -> Result<(), Failure> {
    match cmd {
        Peers::List => {
            let peers: Vec<PeerInfo> = call(ctx, &Request::PeersList)?;
            ctx.print(&peers, |p| peers_table(p));
        }
        Peers::Show { node_id } => {
            let peer: PeerInfo = call(ctx, &Request::PeersShow { node_id })?;
            ctx.print(&peer, peer_detail);
        }
        Peers::Add {
            node_id,
            address,
            link_cost,
        } => {
            let peer: Option<PeerInfo> = call(
                ctx,
                &Request::PeersAdd {
                    node_id,
                    address,
                    link_cost,
                },
            )?;
            ctx.print(&peer, |p| peers_table(p.as_slice()));
        }
        Peers::Remove { node_id } => {
            let done: serde_json::Value = call(
                ctx,
                &Request::PeersRemove {
                    node_id: node_id.clone(),
                },
            )?;
            ctx.print(&done, |_| format!("removed {node_id}\n"));
        }
        Peers::Reset { node_id } => {
            let done: serde_json::Value = call(
                ctx,
                &Request::PeersReset {
                    node_id: node_id.clone(),
                },
            )?;
            ctx.print(&done, |_| format!("reset the session with {node_id}\n"));
        }
    }
    Ok(())
}

fn routes_table(routes: &[RouteInfo]) -> String {
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.service.clone(),
                r.next_hop.clone().unwrap_or_else(|| "local".into()),
                if r.path.is_empty() {
                    "-".into()
                } else {
                    r.path.join(" ")
                },
                r.metric.to_string(),
                r.protocol.clone(),
                r.endpoint.clone().unwrap_or_default(),
                r.origin_check.clone(),
            ]
        })
        .collect();
    render(
        &[
            "SERVICE",
            "NEXT HOP",
            "PATH",
            "METRIC",
            "PROTOCOL",
            "ENDPOINT",
            "ORIGIN CHECK",
        ],
        &rows,
    )
}

pub fn routes(ctx: &Context, cmd: Routes) -> Result<(), Failure> {
    match cmd {
        Routes::List => {
            let routes: Vec<RouteInfo> = call(ctx, &Request::RoutesList)?;
            ctx.print(&routes, |r| routes_table(r));
        }
        Routes::Show { service } => {
            let detail: RouteDetail = call(ctx, &Request::RoutesShow { service })?;
            if detail.paths.is_empty() && !ctx.json {
                return Err(Failure::new(1, format!("no route to {}", detail.service)));
            }
            ctx.print(&detail, |d| {
                let rows: Vec<Vec<String>> = d
                    .paths
                    .iter()
                    .map(|p| {
                        vec![
                            if p.best { "*".into() } else { String::new() },
                            p.from.clone().unwrap_or_else(|| "local".into()),
                            if p.path.is_empty() {
                                "-".into()
                            } else {
                                p.path.join(" ")
                            },
                            p.metric.to_string(),
                            p.origin.clone(),
                            if p.origin_check.is_empty() {
                                if p.valid { "valid" } else { "invalid" }.into()
                            } else {
                                p.origin_check.clone()
                            },
                            if p.stale { "stale" } else { "" }.into(),
                        ]
                    })
                    .collect();
                format!(
                    "{} (table entry {}):\n{}",
                    d.service,
                    d.matched.clone().unwrap_or_default(),
                    render(
                        &[
                            "BEST",
                            "FROM",
                            "PATH",
                            "METRIC",
                            "ORIGIN",
                            "ORIGIN CHECK",
                            "STALE"
                        ],
                        &rows
                    )
                )
            });
        }
        Routes::Advertise {
            file: Some(file), ..
        } => {
            let routes = crate::bulk::advertise_file(&file).map_err(|e| Failure::new(2, e))?;
            let done: trellis_daemon::admin::BulkResult =
                call(ctx, &Request::RoutesAdvertiseBulk { routes })?;
            ctx.print(&done, |d| {
                format!(
                    "advertised {} services ({} new or changed), committed\n",
                    d.requested, d.changed
                )
            });
        }
        Routes::Withdraw {
            file: Some(file), ..
        } => {
            let services = crate::bulk::withdraw_file(&file).map_err(|e| Failure::new(2, e))?;
            let done: trellis_daemon::admin::BulkResult =
                call(ctx, &Request::RoutesWithdrawBulk { services })?;
            ctx.print(&done, |d| {
                format!("withdrew {} services, committed\n", d.changed)
            });
        }
        Routes::Advertise {
            service,
            endpoint,
            protocol,
            file: None,
        } => {
            let (Some(service), Some(endpoint)) = (service, endpoint) else {
                return Err(Failure::new(
                    2,
                    "advertise SERVICE --endpoint HOST:PORT, or --file FILE",
                ));
            };
            let protocol = match protocol {
                Protocol::Tcp => "tcp",
                Protocol::Http => "http",
                Protocol::Grpc => "grpc",
            };
            let route: RouteInfo = call(
                ctx,
                &Request::RoutesAdvertise {
                    service,
                    endpoint,
                    protocol: protocol.into(),
                },
            )?;
            ctx.print(&route, |r| routes_table(std::slice::from_ref(r)));
        }
        Routes::Withdraw {
            service,
            file: None,
        } => {
            let Some(service) = service else {
                return Err(Failure::new(2, "withdraw SERVICE, or --file FILE"));
            };
            let done: serde_json::Value = call(
                ctx,
                &Request::RoutesWithdraw {
                    service: service.clone(),
                },
            )?;
            ctx.print(&done, |_| format!("withdrew {service}\n"));
        }
    }
    Ok(())
}

pub fn topology(ctx: &Context, format: Format) -> Result<(), Failure> {
    let topo: Topology = call(ctx, &Request::Topology)?;
    ctx.print(&topo, |t| match format {
        Format::Text => topology_text(t),
        Format::Dot => topology_dot(t),
    });
    Ok(())
}

/// This node, its sessions, and the best path to every origin it reaches.
fn topology_text(t: &Topology) -> String {
    let mut out = format!("{}\n", t.node_id);
    for p in &t.peers {
        out.push_str(&format!(
            "  ── {} ({}, {}, {} routes)\n",
            p.node_id, p.state, p.role, p.routes_received
        ));
    }
    let remote: Vec<_> = t
        .paths
        .iter()
        .filter(|(_, path)| !path.is_empty())
        .collect();
    if !remote.is_empty() {
        out.push_str("origins reached (best path from here):\n");
        for (origin, path) in remote {
            out.push_str(&format!(
                "  {origin}: {} → {}\n",
                t.node_id,
                path.join(" → ")
            ));
        }
    }
    out
}

/// Graphviz: sessions as solid (up) or dashed edges labelled with the peer's role, best
/// paths beyond them dotted. Built as a petgraph graph (one node per node id, one edge per
/// pair) and printed with its DOT writer.
fn topology_dot(t: &Topology) -> String {
    use petgraph::dot::{Config, Dot};
    use petgraph::graph::{NodeIndex, UnGraph};
    use std::collections::BTreeMap;

    let mut g: UnGraph<String, String> = UnGraph::new_undirected();
    let mut index: BTreeMap<String, NodeIndex> = BTreeMap::new();
    let mut node = |g: &mut UnGraph<String, String>, id: &str| {
        *index
            .entry(id.to_owned())
            .or_insert_with(|| g.add_node(id.to_owned()))
    };
    let me = node(&mut g, &t.node_id);
    for p in &t.peers {
        let style = if p.state == "up" { "solid" } else { "dashed" };
        let peer = node(&mut g, &p.node_id);
        g.update_edge(me, peer, format!("style={style}, label=\"{}\"", p.role));
    }
    for path in t.paths.values() {
        let hops = std::iter::once(&t.node_id).chain(path.iter());
        for (a, b) in hops.clone().zip(hops.skip(1)) {
            let (a, b) = (node(&mut g, a), node(&mut g, b));
            if g.find_edge(a, b).is_none() {
                g.add_edge(a, b, "style=dotted".to_owned());
            }
        }
    }
    let dot = Dot::with_attr_getters(
        &g,
        &[Config::EdgeNoLabel, Config::NodeNoLabel],
        &|_, e| e.weight().clone(),
        &|_, (_, id)| format!("label=\"{id}\""),
    );
    format!("{dot:?}")
}

pub fn reload(ctx: &Context) -> Result<(), Failure> {
    let report: ReloadReport = call(ctx, &Request::Reload)?;
    ctx.print(&report, |r| {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut out = format!(
            "reloaded: added {}; removed {}; changed {}; {} unchanged\n",
            list(&r.added),
            list(&r.removed),
            list(&r.changed),
            r.unchanged
        );
        for e in &r.errors {
            out.push_str(&format!("not applied: {e}\n"));
        }
        if !r.restart_needed.is_empty() {
            out.push_str(&format!(
                "changed but applied only after a restart: {}\n",
                r.restart_needed.join(", ")
            ));
        }
        out
    });
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            1,
            format!("{} peer(s) not applied", report.errors.len()),
        ))
    }
}
