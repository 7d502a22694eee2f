//! The requests Trellis asks Cedar: who ([`Subject`]), what ([`Act`]) and on what
//! ([`Resource`]), turned into a Cedar request with the entities it needs.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Context, Entities, Entity, EntityUid, Request, RestrictedExpression, Schema};

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A person or a script with the admin socket or a token.
    Operator {
        /// Who (the token's subject; `local` for the admin socket).
        name: String,
        /// The role: `local` for the admin socket, else the token's.
        role: String,
        /// The org whose authority vouches for it.
        org: String,
    },
    /// An automated client of an org.
    ServiceAccount {
        /// Its name.
        name: String,
        /// Its org.
        org: String,
    },
    /// A node (a peer, a requesting node of the data plane).
    Node {
        /// Its id, `org/name`.
        id: String,
    },
}

/// What is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// A peer node opens a session.
    ConnectPeer,
    /// A route is originated here.
    OriginateRoute,
    /// A route is imported from a peer.
    ImportRoute,
    /// A route is exported to a peer.
    ExportRoute,
    /// A data-plane connection to a service.
    ConnectToService,
    /// Admin: read routes.
    ViewRoutes,
    /// Admin: change routes.
    ManageRoutes,
    /// Admin: read peers and status.
    ViewPeers,
    /// Admin: change peers.
    ManagePeers,
    /// Authority: create a join token.
    CreateJoinToken,
    /// Authority: approve or reject a join.
    ApproveJoin,
    /// Authority: revoke a node.
    RevokeNode,
    /// Check or reload policies.
    ManagePolicy,
    /// Read the event log.
    ViewAudit,
}

impl Act {
    /// Every action, in schema order.
    pub const ALL: [Act; 14] = [
        Act::ConnectPeer,
        Act::OriginateRoute,
        Act::ImportRoute,
        Act::ExportRoute,
        Act::ConnectToService,
        Act::ViewRoutes,
        Act::ManageRoutes,
        Act::ViewPeers,
        Act::ManagePeers,
        Act::CreateJoinToken,
        Act::ApproveJoin,
        Act::RevokeNode,
        Act::ManagePolicy,
        Act::ViewAudit,
    ];

    /// Its name in the schema (`Action::"NAME"`).
    pub fn name(self) -> &'static str {
        match self {
            Act::ConnectPeer => "connect_peer",
            Act::OriginateRoute => "originate_route",
            Act::ImportRoute => "import_route",
            Act::ExportRoute => "export_route",
            Act::ConnectToService => "connect_to_service",
            Act::ViewRoutes => "view_routes",
            Act::ManageRoutes => "manage_routes",
            Act::ViewPeers => "view_peers",
            Act::ManagePeers => "manage_peers",
            Act::CreateJoinToken => "create_join_token",
            Act::ApproveJoin => "approve_join",
            Act::RevokeNode => "revoke_node",
            Act::ManagePolicy => "manage_policy",
            Act::ViewAudit => "view_audit",
        }
    }

    /// The action named `name`, with or without `Action::"..."` around it.
    pub fn from_name(name: &str) -> Option<Self> {
        let bare = name.trim().trim_start_matches("Action::").trim_matches('"');
        Self::ALL.into_iter().find(|a| a.name() == bare)
    }
}

/// What it is asked on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The daemon itself (admin actions), of `org`.
    Daemon {
        /// The daemon's org.
        org: String,
    },
    /// A service (data plane).
    Service {
        /// Its name.
        name: String,
        /// Its org (the last label).
        org: String,
    },
    /// A route.
    Route {
        /// The service.
        service: String,
        /// The origin's org.
        origin_org: String,
        /// Its communities.
        communities: Vec<String>,
        /// Hops on its path.
        path_len: u32,
    },
    /// A peering with a node.
    Peer {
        /// The node.
        node: String,
        /// Its org.
        org: String,
        /// `internal`, `customer`, `peer` or `provider`.
        role: String,
        /// Configured trust, 0..=100.
        trust: u32,
    },
}

/// The org of a node id (`org/name`) or a service name (its last label).
fn org_of(id: &str) -> String {
    match id.split_once('/') {
        Some((org, _)) => org.to_owned(),
        None => id.rsplit('.').next().unwrap_or(id).to_owned(),
    }
}

/// `Type::"id"` split into its parts.
fn uid_parts(text: &str) -> Option<(&str, String)> {
    let (ty, id) = text.trim().split_once("::")?;
    let id = id.strip_prefix('"')?.strip_suffix('"')?;
    Some((ty, id.to_owned()))
}

impl Subject {
    /// Parses `Operator::"name"` (with `role`, default `admin`), `ServiceAccount::"org/name"`
    /// or `Node::"org/name"`, as `policy check` takes them.
    pub fn parse(text: &str, role: Option<&str>) -> Result<Self, String> {
        let bad = || {
            format!("principal {text:?}: Operator::\"NAME\", ServiceAccount::\"ORG/NAME\" or Node::\"ORG/NAME\"")
        };
        let (ty, id) = uid_parts(text).ok_or_else(bad)?;
        match ty {
            "Operator" => Ok(Subject::Operator {
                org: String::new(),
                role: role.unwrap_or("admin").to_owned(),
                name: id,
            }),
            "ServiceAccount" => Ok(Subject::ServiceAccount {
                org: org_of(&id),
                name: id,
            }),
            "Node" if id.contains('/') => Ok(Subject::Node { id }),
            _ => Err(bad()),
        }
    }

    fn uid(&self) -> (&'static str, &str) {
        match self {
            Subject::Operator { name, .. } => ("Operator", name),
            Subject::ServiceAccount { name, .. } => ("ServiceAccount", name),
            Subject::Node { id } => ("Node", id),
        }
    }

    fn attrs(&self) -> Vec<(&'static str, Value)> {
        match self {
            Subject::Operator { role, org, .. } => {
                vec![
                    ("role", Value::S(role.clone())),
                    ("org", Value::S(org.clone())),
                ]
            }
            Subject::ServiceAccount { org, .. } => vec![("org", Value::S(org.clone()))],
            Subject::Node { id } => vec![("org", Value::S(org_of(id)))],
        }
    }
}

impl Resource {
    /// Parses `Daemon::"org"`, `Service::"name"`, `Route::"service"` (path length 1, no
    /// communities) or `Peer::"org/name"` (role `internal` in the own org `own`, else
    /// `peer`; trust 100), as `policy check` takes them.
    pub fn parse(text: &str, own: &str) -> Result<Self, String> {
        let bad = || {
            format!("resource {text:?}: Daemon::\"ORG\", Service::\"NAME\", Route::\"SERVICE\" or Peer::\"ORG/NAME\"")
        };
        let (ty, id) = uid_parts(text).ok_or_else(bad)?;
        match ty {
            "Daemon" => Ok(Resource::Daemon { org: id }),
            "Service" => Ok(Resource::Service {
                org: org_of(&id),
                name: id,
            }),
            "Route" => Ok(Resource::Route {
                origin_org: org_of(&id),
                service: id,
                communities: Vec::new(),
                path_len: 1,
            }),
            "Peer" if id.contains('/') => {
                let org = org_of(&id);
                let role = if org == own { "internal" } else { "peer" };
                Ok(Resource::Peer {
                    role: role.to_owned(),
                    org,
                    node: id,
                    trust: 100,
                })
            }
            _ => Err(bad()),
        }
    }

    fn uid(&self) -> (&'static str, &str) {
        match self {
            Resource::Daemon { org } => ("Daemon", org),
            Resource::Service { name, .. } => ("Service", name),
            Resource::Route { service, .. } => ("Route", service),
            Resource::Peer { node, .. } => ("Peer", node),
        }
    }

    fn attrs(&self) -> Vec<(&'static str, Value)> {
        match self {
            Resource::Daemon { org } => vec![("org", Value::S(org.clone()))],
            Resource::Service { name, org } => {
                vec![
                    ("name", Value::S(name.clone())),
                    ("org", Value::S(org.clone())),
                ]
            }
            Resource::Route {
                service,
                origin_org,
                communities,
                path_len,
            } => vec![
                ("service", Value::S(service.clone())),
                ("origin_org", Value::S(origin_org.clone())),
                ("communities", Value::Set(communities.clone())),
                ("path_len", Value::L(i64::from(*path_len))),
            ],
            Resource::Peer {
                org, role, trust, ..
            } => vec![
                ("org", Value::S(org.clone())),
                ("role", Value::S(role.clone())),
                ("trust", Value::L(i64::from(*trust))),
            ],
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone)]
enum Value {
    S(String),
    L(i64),
    Set(Vec<String>),
}

impl Value {
    fn expr(&self) -> RestrictedExpression {
        match self {
            Value::S(s) => RestrictedExpression::new_string(s.clone()),
            Value::L(n) => RestrictedExpression::new_long(*n),
            Value::Set(items) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(|s| RestrictedExpression::new_string(s.clone())),
            ),
        }
    }
}

/// The cache key of a request: every part that can change the answer.
pub(super) fn cache_key(subject: &Subject, act: Act, resource: &Resource) -> String {
    format!("{subject:?}\u{1}{}\u{1}{resource:?}", act.name())
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let quoted = serde_like_quote(id);
    EntityUid::from_str(&format!("{ty}::{quoted}")).map_err(|e| format!("{ty} {id:?}: {e}"))
}

/// `id` as a Cedar string literal.
fn serde_like_quote(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 2);
    out.push('"');
    for c in id.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn entity(uid: EntityUid, attrs: Vec<(&'static str, Value)>) -> Result<Entity, String> {
    let attrs: HashMap<String, RestrictedExpression> = attrs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.expr()))
        .collect();
    Entity::new(uid, attrs, HashSet::new()).map_err(|e| e.to_string())
}

/// The Cedar request and entities of one question, checked against `schema`.
pub(super) fn build(
    subject: &Subject,
    act: Act,
    resource: &Resource,
    schema: &Schema,
) -> Result<(Request, Entities), String> {
    let (pt, pid) = subject.uid();
    let (rt, rid) = resource.uid();
    let principal = uid(pt, pid)?;
    let target = uid(rt, rid)?;
    let action = uid("Action", act.name())?;
    let entities = [
        entity(principal.clone(), subject.attrs())?,
        entity(target.clone(), resource.attrs())?,
    ];
    let entities = Entities::from_entities(entities, Some(schema)).map_err(|e| e.to_string())?;
    let request = Request::new(principal, action, target, Context::empty(), Some(schema))
        .map_err(|e| e.to_string())?;
    Ok((request, entities))
}
