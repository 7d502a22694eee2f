//! The node's admin API on `DATA_DIR/admin.sock` (JSON lines, see [`crate::admin`]).
//!
//! Reads (`status`, `peers list|show`, `routes list`, `topology`) come from the read model
//! and never wait on the routing loop; `audit` reads the event log from `node.db`;
//! changes and `routes show` go to the loop as commands with a reply.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use trellis_routing::{NodeId, Relationship, ServiceName};

use super::policy::NodePolicy;
use super::reload::Reloader;
use super::route_store::parse_protocol;
use super::routing_loop::{Command, PeerSpec};
use super::view::View;
use super::{NodeStore, Paths};
use crate::admin::{authz, ApiError, AuditEvent, ErrorKind, Request, SnapshotInfo, Topology};
use crate::dataplane::Dataplane;
use crate::util::hex;

/// How long a command may wait for the routing loop.
const LOOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin socket (mode 0600), replacing a stale one.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    crate::admin::server::bind(path)
}

/// What an admin request may touch.
pub struct AdminCtx {
    /// The read model.
    pub view: Arc<View>,
    /// The routing loop.
    pub commands: mpsc::Sender<Command>,
    /// The data dir.
    pub paths: Paths,
    /// Config reloads.
    pub reloader: Arc<Reloader>,
    /// The data plane.
    pub dataplane: Arc<Dataplane>,
    /// The policies in force.
    pub policy: Arc<NodePolicy>,
}

/// Answers `request` from `who` (the local operator on the socket, a token's operator
/// remotely), after Cedar allowed it.
pub async fn handle(
    ctx: &AdminCtx,
    who: &trellis_policy::cedar::Subject,
    request: Request,
) -> Result<Box<RawValue>, ApiError> {
    let org = ctx.policy.org();
    authz::authorize(&ctx.policy.shared(), who, org, &request)?;
    match request {
        Request::PolicyReload => {
            return json(&ctx.policy.reload().map_err(|e| bad(e.to_string()))?)
        }
        Request::PolicyCheck {
            principal,
            action,
            resource,
            role,
        } => {
            return json(&authz::check(
                &ctx.policy.shared(),
                org,
                &principal,
                &action,
                &resource,
                role.as_deref(),
            )?)
        }
        Request::Reload => return json(&ctx.reloader.reload().await?),
        Request::ConnectAdd { .. } | Request::ConnectList | Request::ConnectRemove { .. } => {
            return connect(request, &ctx.dataplane).await
        }
        _ => {}
    }
    dispatch(request, &ctx.view, &ctx.commands, &ctx.paths).await
}

/// Serves admin connections until aborted; the socket's operator is the local one.
pub async fn serve(listener: UnixListener, ctx: Arc<AdminCtx>) {
    crate::admin::server::serve(listener, move |request| {
        let ctx = ctx.clone();
        async move {
            let who = authz::local_operator(ctx.policy.org());
            handle(&ctx, &who, request).await
        }
    })
    .await;
}

/// `connect add|list|remove`.
async fn connect(request: Request, dataplane: &Dataplane) -> Result<Box<RawValue>, ApiError> {
    match request {
        Request::ConnectAdd {
            service: name,
            listen,
        } => {
            let service = service(&name)?;
            let listen: std::net::SocketAddr = listen
                .parse()
                .map_err(|_| bad(format!("listen address {listen:?} is not HOST:PORT")))?;
            json(&dataplane.connect(service, listen).await.map_err(|e| {
                let kind = if e.starts_with("not kept") {
                    ErrorKind::Internal
                } else if e.contains("already") {
                    ErrorKind::Conflict
                } else {
                    ErrorKind::BadRequest
                };
                ApiError::new(kind, e)
            })?)
        }
        Request::ConnectRemove { target } => json(
            &dataplane
                .remove(&target)
                .await
                .map_err(|e| ApiError::new(ErrorKind::NotFound, e))?,
        ),
        _ => json(&dataplane.list()),
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

/// Encodes an answer's result as the JSON text the server sends.
fn json<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    ask_within(commands, LOOP_TIMEOUT, make).await
}

/// As [`ask`], waiting up to `answer` for the reply (bulk loads answer once committed).
async fn ask_within<T>(
    commands: &mpsc::Sender<Command>,
    answer: std::time::Duration,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    let busy = || {
        ApiError::new(
            ErrorKind::Internal,
            "the routing loop did not answer in time",
        )
    };
    tokio::time::timeout(LOOP_TIMEOUT, commands.send(make(tx)))
        .await
        .map_err(|_| busy())?
        .map_err(|_| ApiError::new(ErrorKind::Internal, "the node is shutting down"))?;
    tokio::time::timeout(answer, rx)
        .await
        .map_err(|_| busy())?
        .map_err(|_| ApiError::new(ErrorKind::Internal, "the node is shutting down"))
}

/// A node event as an audit record; the actor follows from the kind: operator changes
/// (`route.*`, `peer.add|remove|reset`), what a peer did (`session.*`, `peer.bad_input`),
/// and the node's own actions (`cert.*`, `trust.*`).
fn audit_event(e: super::route_store::StoredEvent) -> AuditEvent {
    let actor = match e.kind.as_str() {
        k if k.starts_with("route.") || matches!(k, "peer.add" | "peer.remove" | "peer.reset") => {
            "operator".to_owned()
        }
        k if k.starts_with("session.") || k == "peer.bad_input" => format!("node:{}", e.subject),
        _ => "node".to_owned(),
    };
    AuditEvent {
        seq: e.seq,
        at: e.at,
        actor,
        action: e.kind,
        subject: e.subject,
        detail: e.detail,
    }
}

fn node_id(text: &str) -> Result<NodeId, ApiError> {
    NodeId::new(text).map_err(|e| bad(format!("node id {text:?}: {e}")))
}

/// How long a bulk change may take to answer: the loop's own wait, plus 100 µs a route
/// for the checks (Cedar, name ownership) and the commit. Bounds a hang only.
fn bulk_wait(routes: usize) -> std::time::Duration {
    LOOP_TIMEOUT + std::time::Duration::from_micros(100 * routes as u64)
}

/// Checks every route of a bulk load (the first bad one refuses the load, by its place
/// in the request); a service listed twice keeps its last entry.
fn bulk_routes(
    routes: Vec<crate::admin::BulkRoute>,
) -> Result<Vec<(ServiceName, trellis_routing::ProtocolHint, String)>, ApiError> {
    let mut out = Vec::with_capacity(routes.len());
    let mut index = std::collections::HashMap::with_capacity(routes.len());
    for (i, r) in routes.into_iter().enumerate() {
        let at = |why: String| bad(format!("route {} ({}): {why}", i + 1, r.service));
        let service = service(&r.service).map_err(|e| at(e.message))?;
        if service.as_str().starts_with("*.") {
            return Err(at("advertise a concrete service, not an aggregate".into()));
        }
        r.endpoint
            .parse::<std::net::SocketAddr>()
            .map_err(|_| at(format!("endpoint {:?} is not IP:PORT", r.endpoint)))?;
        let protocol = parse_protocol(&r.protocol)
            .ok_or_else(|| at(format!("protocol {:?}: tcp, http or grpc", r.protocol)))?;
        match index.get(&service) {
            Some(&k) => out[k] = (service, protocol, r.endpoint),
            None => {
                index.insert(service.clone(), out.len());
                out.push((service, protocol, r.endpoint));
            }
        }
    }
    if out.is_empty() {
        return Err(bad("no routes in the load"));
    }
    Ok(out)
}

fn service(text: &str) -> Result<ServiceName, ApiError> {
    ServiceName::new(text).map_err(|e| bad(format!("service {text:?}: {e}")))
}

async fn dispatch(
    request: Request,
    view: &View,
    commands: &mpsc::Sender<Command>,
    paths: &Paths,
) -> Result<Box<RawValue>, ApiError> {
    match request {
        Request::Status => json(&view.status()),
        Request::PeersList => json(&view.read().peers.values().cloned().collect::<Vec<_>>()),
        Request::PeersShow { node_id } => {
            let peer = view.read().peers.get(&node_id).cloned();
            json(
                &peer.ok_or_else(|| {
                    ApiError::new(ErrorKind::NotFound, format!("no peer {node_id}"))
                })?,
            )
        }
        Request::RoutesList => {
            // Copied a slice at a time and encoded off the runtime's workers: a large
            // table polled often must not hold up the routing loop (docs/performance.md).
            let routes = view.routes_listing();
            tokio::task::spawn_blocking(move || json(&routes))
                .await
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
        }
        Request::Topology => {
            let state = view.read();
            json(&Topology {
                node_id: state.node_id.clone(),
                peers: state.peers.values().cloned().collect(),
                origins: state
                    .routes
                    .values()
                    .map(|r| {
                        let next = r.next_hop.as_ref().map(|n| n.as_str().to_owned());
                        (r.attrs.origin.as_str().to_owned(), next)
                    })
                    .collect(),
                paths: state
                    .routes
                    .values()
                    .map(|r| {
                        let hops = crate::node::view_route::hop_names(&r.attrs);
                        (r.attrs.origin.as_str().to_owned(), hops)
                    })
                    .collect(),
            })
        }
        Request::RoutesShow { service: name } => {
            let service = service(&name)?;
            json(&ask(commands, |reply| Command::ShowRoute { service, reply }).await?)
        }
        Request::RoutesAdvertise {
            service: name,
            endpoint,
            protocol,
        } => {
            let service = service(&name)?;
            if service.as_str().starts_with("*.") {
                return Err(bad("advertise a concrete service, not an aggregate"));
            }
            endpoint
                .parse::<std::net::SocketAddr>()
                .map_err(|_| bad(format!("endpoint {endpoint:?} is not HOST:PORT")))?;
            let protocol = parse_protocol(&protocol)
                .ok_or_else(|| bad(format!("protocol {protocol:?}: tcp, http or grpc")))?;
            json(
                &ask(commands, |reply| Command::Advertise {
                    service,
                    protocol,
                    endpoint,
                    reply,
                })
                .await??,
            )
        }
        Request::RoutesAdvertiseBulk { routes } => {
            let routes = bulk_routes(routes)?;
            let wait = bulk_wait(routes.len());
            json(
                &ask_within(commands, wait, |reply| Command::AdvertiseMany {
                    routes,
                    reply,
                })
                .await??,
            )
        }
        Request::RoutesWithdrawBulk { services } => {
            let mut names = Vec::with_capacity(services.len());
            let mut seen = std::collections::HashSet::with_capacity(services.len());
            for (i, name) in services.iter().enumerate() {
                let service =
                    service(name).map_err(|e| bad(format!("service {}: {}", i + 1, e.message)))?;
                if seen.insert(service.clone()) {
                    names.push(service);
                }
            }
            let wait = bulk_wait(names.len());
            json(
                &ask_within(commands, wait, |reply| Command::WithdrawMany {
                    services: names,
                    reply,
                })
                .await??,
            )
        }
        Request::RoutesWithdraw { service: name } => {
            let service = service(&name)?;
            ask(commands, |reply| Command::Withdraw { service, reply }).await??;
            json(&serde_json::json!({ "withdrawn": name }))
        }
        Request::PeersAdd {
            node_id: id,
            address,
            link_cost,
        } => {
            let node = node_id(&id)?;
            let own = NodeId::new(&view.read().node_id).map_err(|e| bad(e.to_string()))?;
            if !node.in_org(&own.org()) {
                return Err(bad(format!(
                    "{id} is not in this node's org; partners are peered by a peering config"
                )));
            }
            let address = address
                .parse()
                .map_err(|_| bad(format!("address {address:?} is not HOST:PORT")))?;
            let spec = PeerSpec {
                node,
                address: Some(address),
                role: Relationship::Internal,
                link_cost: link_cost.unwrap_or(10).clamp(1, 65_535),
                trust: 100,
                local_pref: 100,
                // 0: the node's `limits.max_routes_per_peer`, as after a restart.
                max_routes: 0,
                source: "admin".into(),
                detection: None,
            };
            ask(commands, |reply| Command::AddPeer {
                spec,
                persist: true,
                reply,
            })
            .await??;
            json(&view.read().peers.get(&id).cloned())
        }
        Request::PeersRemove { node_id: id } => {
            let node = node_id(&id)?;
            ask(commands, |reply| Command::RemovePeer { node, reply }).await??;
            json(&serde_json::json!({ "removed": id }))
        }
        Request::PeersReset { node_id: id } => {
            let node = node_id(&id)?;
            ask(commands, |reply| Command::ResetPeer { node, reply }).await??;
            json(&serde_json::json!({ "reset": id }))
        }
        Request::SnapshotGet { version } => {
            let own = NodeId::new(&view.read().node_id).map_err(|e| bad(e.to_string()))?;
            let store = NodeStore::open(&paths.db())
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            let envelope = store
                .snapshot_envelope(own.org_str())
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
                .ok_or_else(|| {
                    ApiError::new(ErrorKind::NotFound, "this node holds no trust snapshot")
                })?;
            let decoded =
                trellis_policy::Envelope::decode(&envelope, trellis_policy::Kind::TrustSnapshot)
                    .and_then(|e| trellis_policy::TrustSnapshot::from_payload(&e.payload))
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
            if version.is_some_and(|v| v != decoded.version) {
                return Err(ApiError::new(
                    ErrorKind::NotFound,
                    format!("this node holds only v{}", decoded.version),
                ));
            }
            json(&SnapshotInfo {
                org: decoded.org,
                version: decoded.version,
                issued_at: decoded.issued_at,
                expires_at: decoded.expires_at,
                revoked_nodes: decoded.revoked_nodes,
                revoked_serials: decoded.revoked_serials.iter().map(|s| hex(s)).collect(),
                envelope_hex: hex(&envelope),
            })
        }
        Request::Audit { since } => {
            let path = paths.db();
            let events = tokio::task::spawn_blocking(move || {
                super::route_store::events(&path, since.unwrap_or(0))
            })
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("node.db: {e}")))?;
            json(&events.into_iter().map(audit_event).collect::<Vec<_>>())
        }
        other => Err(bad(format!(
            "{other:?} is an authority command; this is a node"
        ))),
    }
}
