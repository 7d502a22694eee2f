//! `trellis-testbed demo`: three orgs, nine nodes, a service in each org; show the tables,
//! cut a link and show the reroute, revoke a node and show it cut off, clean up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use trellis_daemon::admin::{client, ConnectInfo, Request, RouteInfo};

use super::cluster::{wait_until, Cluster, NetOptions};
use super::observe;
use super::state::{stop_recorded, NodeState, State};
use super::traffic::{free_tcp_port, get_once, http_backend, Client};
use crate::topology_file::parse;

/// The demo's network (also `testbed/topologies/three-orgs.toml`).
const THREE_ORGS: &str = include_str!("../../topologies/three-orgs.toml");

struct Progress {
    start: Instant,
}

impl Progress {
    fn say(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.start.elapsed().as_secs_f64());
    }
}

fn table(routes: &[RouteInfo]) -> String {
    let mut out = String::new();
    for r in routes {
        out.push_str(&format!(
            "      {:<22} via {:<16} path {}\n",
            r.service,
            r.next_hop.clone().unwrap_or_else(|| "(local)".into()),
            if r.path.is_empty() {
                "-".into()
            } else {
                r.path.join(" ")
            }
        ));
    }
    out
}

/// On Ctrl-C: stops every process recorded in `dir`'s state.json, removes `dir` and
/// exits with 130. Runs on its own thread with its own small runtime.
fn clean_up_on_ctrl_c(dir: PathBuf) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_err() {
            return;
        }
        eprintln!(
            "interrupted: stopping every daemon, removing {}",
            dir.display()
        );
        if let Ok(state) = State::load(&dir) {
            stop_recorded(&state);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(130);
    });
}

fn connect_list(node: &NodeState) -> Option<Vec<ConnectInfo>> {
    client::call_as(&observe::socket(node), &Request::ConnectList).ok()
}

/// `trellis connect SERVICE --listen 127.0.0.1:PORT` at `node`, one request through it,
/// and a connection left open; returns the port and the open connection.
fn first_traffic(p: &Progress, node: &NodeState, service: &str) -> Result<(u16, Client), String> {
    let listen = free_tcp_port()?;
    let _: ConnectInfo = client::call_as(
        &observe::socket(node),
        &Request::ConnectAdd {
            service: service.to_owned(),
            listen: format!("127.0.0.1:{listen}"),
        },
    )
    .map_err(|e| format!("connect {service}: {e}"))?;
    p.say(&format!(
        "trellis connect {service} --listen 127.0.0.1:{listen} at {}",
        node.id
    ));
    let mut held = Client::connect(listen)?;
    let body = held
        .get()
        .map_err(|e| format!("GET through the connect listener: {e}"))?;
    let hop = connect_list(node)
        .and_then(|l| l.into_iter().next())
        .and_then(|c| c.next_hop)
        .unwrap_or_default();
    p.say(&format!(
        "GET http://127.0.0.1:{listen}/ → {body:?} (hop by hop over QUIC, first hop {hop}); the connection stays open"
    ));
    Ok((listen, held))
}

/// One request on a new connection through `listen`, with the next hop it took.
fn traffic(
    p: &Progress,
    node: &NodeState,
    service: &str,
    listen: u16,
    what: &str,
) -> Result<(), String> {
    let body = get_once(listen).map_err(|e| format!("{what} to {service} failed: {e}"))?;
    let hop = connect_list(node)
        .and_then(|l| l.into_iter().next())
        .and_then(|c| c.next_hop)
        .unwrap_or_default();
    p.say(&format!("{what} reaches {service} via {hop}: {body:?}"));
    Ok(())
}

/// Revokes `id` at its org's authority; returns the org.
fn revoke(state: &State, id: &str) -> Result<String, String> {
    let org = id.split('/').next().unwrap_or_default().to_owned();
    let auth = state
        .authorities
        .iter()
        .find(|a| a.org == org)
        .ok_or_else(|| format!("no authority for {org}"))?;
    let _: serde_json::Value = client::call(
        &auth.dir.join("admin.sock"),
        &Request::NodesRevoke {
            node_id: id.to_owned(),
            reason: "demo".into(),
        },
    )
    .map_err(|e| format!("revoke {id}: {e}"))?;
    Ok(org)
}

/// Waits until no node keeps a session with `id`.
fn wait_cut_off(state: &State, id: &str) -> Result<(), String> {
    let isolated = wait_until(Duration::from_secs(30), || {
        state.nodes.iter().filter(|n| n.id != id).all(|n| {
            observe::peers(n)
                .is_some_and(|ps| ps.iter().all(|p| p.node_id != id || p.state != "up"))
        })
    });
    if isolated {
        Ok(())
    } else {
        Err(format!("{id} was not cut off within 30 s"))
    }
}

/// Runs the demo; `Err` with a one-line reason when something did not happen.
pub fn run() -> Result<(), String> {
    let p = Progress {
        start: Instant::now(),
    };
    let topo = parse(THREE_ORGS)?;
    let dir = std::env::temp_dir().join(format!("trellis-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    clean_up_on_ctrl_c(dir.clone());
    let result = demo(&p, &topo, &dir);
    p.say("cleaning up: stopping every daemon, removing the demo dir");
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(
    p: &Progress,
    topo: &crate::topology_file::TopologyFile,
    dir: &std::path::Path,
) -> Result<(), String> {
    p.say(&format!(
        "creating {} orgs with an authority each, joining {} nodes (certificates from each org's CA)",
        topo.orgs.len(),
        topo.topology.nodes.len()
    ));
    // The daemons' default timers: what a real node does.
    let mut cluster = Cluster::create(dir, topo, NetOptions::default(), 1, false)?;
    cluster.start_emulator(1)?;
    p.say("starting the link emulator and the daemons (QUIC + mutual TLS, Cap'n Proto sessions)");
    cluster.start_all()?;
    let state = cluster.state.clone();
    // One service in each org, at the org's first node.
    let mut services = Vec::new();
    for org in &topo.orgs {
        let Some(i) = state
            .nodes
            .iter()
            .position(|n| n.id.starts_with(&format!("{org}/")))
        else {
            continue;
        };
        let service = format!("web.{org}");
        let backend = http_backend(format!("hello from {service} at {}", state.nodes[i].id))?;
        client::call(
            &observe::socket(&state.nodes[i]),
            &Request::RoutesAdvertise {
                service: service.clone(),
                endpoint: format!("127.0.0.1:{backend}"),
                protocol: "http".into(),
            },
        )
        .map_err(|e| format!("advertise {service}: {e}"))?;
        p.say(&format!(
            "{} advertises {service} (an HTTP backend on 127.0.0.1:{backend})",
            state.nodes[i].id
        ));
        services.push(service);
    }
    p.say(
        "waiting for every node to learn every service it may reach (valley-free between orgs)...",
    );
    let converged = wait_until(Duration::from_secs(60), || {
        state.nodes.iter().all(|n| {
            observe::routes(n)
                .is_some_and(|rs| services.iter().all(|s| rs.iter().any(|r| &r.service == s)))
        })
    });
    if !converged {
        return Err("the network did not converge within 60 s".into());
    }
    p.say("converged. Two of the tables:");
    let watch = state.nodes.len() - 1;
    for &i in &[0, watch] {
        let routes = observe::routes(&state.nodes[i]).unwrap_or_default();
        println!("    {}:\n{}", state.nodes[i].id, table(&routes));
    }

    // Cut the first link of the watched node's path to a remote service, show the reroute.
    let target = services.first().cloned().unwrap_or_default();
    let before = observe::routes(&state.nodes[watch])
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.service == target);
    let next = before
        .as_ref()
        .and_then(|r| r.next_hop.clone())
        .ok_or("no route to cut")?;
    let (listen, mut held) = first_traffic(p, &state.nodes[watch], &target)?;
    p.say(&format!(
        "cutting the link {} — {next} in the emulator",
        state.nodes[watch].id
    ));
    cluster
        .link(&state.nodes[watch].id, &next)
        .ok_or("no such link")?
        .cut();
    let rerouted = wait_until(Duration::from_secs(30), || {
        observe::routes(&state.nodes[watch])
            .and_then(|rs| rs.into_iter().find(|r| r.service == target))
            .is_some_and(|r| r.next_hop.as_deref() != Some(next.as_str()))
    });
    let after = observe::routes(&state.nodes[watch])
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.service == target);
    match (rerouted, after) {
        (true, Some(r)) => p.say(&format!(
            "rerouted: {} now reaches {target} via {} (path {})",
            state.nodes[watch].id,
            r.next_hop.unwrap_or_default(),
            r.path.join(" ")
        )),
        _ => {
            return Err(format!(
                "{} did not reroute to {target} within 30 s of the cut (see {}/logs)",
                state.nodes[watch].id,
                dir.display()
            ))
        }
    }
    match held.get() {
        Err(e) => p.say(&format!(
            "the connection that was open through {next} was reset ({e})"
        )),
        Ok(body) => p.say(&format!("the open connection still answered: {body:?}")),
    }
    held.close();
    traffic(p, &state.nodes[watch], &target, listen, "a new connection")?;
    cluster
        .link(&state.nodes[watch].id, &next)
        .ok_or("no such link")?
        .heal();
    p.say("healed the link");

    // Revoke a node at its authority; its peers learn it through the mesh and cut it off.
    let victim = state.nodes.iter().position(|n| n.id == next).unwrap_or(1);
    let id = state.nodes[victim].id.clone();
    let org = revoke(&state, &id)?;
    p.say(&format!(
        "revoked {id} at the {org} authority; waiting for its peers to close their sessions..."
    ));
    wait_cut_off(&state, &id)?;
    p.say(&format!("{id} is cut off: no node keeps a session with it"));
    // No best path may still lead through it: no next hop, no path hop.
    let mut through = Vec::new();
    let clear = wait_until(Duration::from_secs(30), || {
        through.clear();
        for n in state.nodes.iter().filter(|n| n.id != id) {
            let Some(routes) = observe::routes(n) else {
                through.push(format!("{} does not answer", n.id));
                continue;
            };
            for r in routes {
                if r.next_hop.as_deref() == Some(id.as_str()) || r.path.contains(&id) {
                    through.push(format!("{} → {}", n.id, r.service));
                }
            }
        }
        through.is_empty()
    });
    if !clear {
        return Err(format!(
            "30 s after the revocation some best paths still lead through {id}: {}",
            through.join(", ")
        ));
    }
    p.say(&format!("no best path leads through {id} any more"));
    let routes = observe::routes(&state.nodes[watch]).unwrap_or_default();
    println!(
        "    {} after the revocation:\n{}",
        state.nodes[watch].id,
        table(&routes)
    );
    traffic(
        p,
        &state.nodes[watch],
        &target,
        listen,
        "traffic around the revoked node",
    )?;

    // Revoke the client's own node: its peers cut it off and its connections are refused.
    let client_id = state.nodes[watch].id.clone();
    let client_org = revoke(&state, &client_id)?;
    p.say(&format!(
        "revoked {client_id}, the node the client connects through, at the {client_org} authority"
    ));
    wait_cut_off(&state, &client_id)?;
    let unrouted = wait_until(Duration::from_secs(30), || {
        observe::routes(&state.nodes[watch])
            .is_some_and(|rs| rs.iter().all(|r| r.service != target))
    });
    if !unrouted {
        return Err(format!(
            "{client_id} kept a route to {target} after its revocation"
        ));
    }
    let mut last = String::new();
    let refused = wait_until(Duration::from_secs(30), || match get_once(listen) {
        Ok(body) => {
            last = body;
            false
        }
        Err(e) => {
            last = e;
            true
        }
    });
    if !refused {
        return Err(format!(
            "{client_id} still carried a connection 30 s after its revocation: {last:?}"
        ));
    }
    p.say(&format!(
        "a new connection through {client_id} is refused ({last}); its connect list says: {}",
        connect_list(&state.nodes[watch])
            .and_then(|l| l.into_iter().next())
            .and_then(|c| c.last_error)
            .unwrap_or_default()
    ));
    p.say("stopping every daemon with SIGTERM");
    let hung = cluster.stop_all(super::state::TERM_GRACE).killed;
    if !hung.is_empty() {
        return Err(format!(
            "{} ignored SIGTERM and needed SIGKILL: {}",
            hung.len(),
            hung.join(", ")
        ));
    }
    p.say("demo complete");
    Ok(())
}
