//! Which Cedar action each admin request is (docs/adr/0016-cedar-decides.md), and the
//! check both admin servers run before they answer. On the Unix socket the principal is
//! `Operator::"local"` with role `local`: the socket's file mode (0600) is its
//! authentication.

use trellis_policy::cedar::{Act, Resource, Shared, Subject, Verdict};

use super::{ApiError, ErrorKind, Request};

/// The action `request` asks for.
pub fn act(request: &Request) -> Act {
    match request {
        Request::Status
        | Request::PeersList
        | Request::PeersShow { .. }
        | Request::NodesList
        | Request::SnapshotGet { .. } => Act::ViewPeers,
        Request::PeersAdd { .. }
        | Request::PeersRemove { .. }
        | Request::PeersReset { .. }
        | Request::Reload => Act::ManagePeers,
        Request::RoutesList
        | Request::RoutesShow { .. }
        | Request::Topology
        | Request::ConnectList
        | Request::NamesList => Act::ViewRoutes,
        Request::RoutesAdvertise { .. }
        | Request::RoutesWithdraw { .. }
        | Request::RoutesAdvertiseBulk { .. }
        | Request::RoutesWithdrawBulk { .. }
        | Request::ConnectAdd { .. }
        | Request::ConnectRemove { .. } => Act::ManageRoutes,
        Request::TokensCreate { .. }
        | Request::TokensList
        | Request::TokensRevoke { .. }
        | Request::OperatorTokenCreate { .. }
        | Request::OperatorTokensList
        | Request::OperatorTokenRevoke { .. } => Act::CreateJoinToken,
        Request::JoinsList | Request::JoinsApprove { .. } | Request::JoinsReject { .. } => {
            Act::ApproveJoin
        }
        Request::NodesRevoke { .. } => Act::RevokeNode,
        Request::Audit { .. } => Act::ViewAudit,
        Request::NamesScope { .. }
        | Request::NamesDelegate { .. }
        | Request::PartnersCa { .. }
        | Request::PolicyCheck { .. }
        | Request::PolicyReload => Act::ManagePolicy,
    }
}

/// The operator of a daemon's admin socket.
pub fn local_operator(org: &str) -> Subject {
    Subject::Operator {
        name: "local".into(),
        role: "local".into(),
        org: org.to_owned(),
    }
}

/// Whether `who` may make `request` to the daemon of `org`: `Err(Forbidden)` names the
/// action when the policies in force do not allow it.
pub fn authorize(
    policies: &Shared,
    who: &Subject,
    org: &str,
    request: &Request,
) -> Result<(), ApiError> {
    let action = act(request);
    let daemon = Resource::Daemon {
        org: org.to_owned(),
    };
    let verdict = policies.decide(who, action, &daemon);
    if verdict.allowed {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Forbidden,
        format!(
            "{} is not allowed by the policies in force{}",
            action.name(),
            match verdict.policies.as_slice() {
                [] => String::new(),
                names => format!(" (forbidden by {})", names.join(", ")),
            }
        ),
    ))
}

/// The answer to `policy check` as a record.
pub fn verdict_record(verdict: &Verdict, source: &str) -> super::PolicyVerdict {
    super::PolicyVerdict {
        decision: if verdict.allowed { "allow" } else { "deny" }.into(),
        policies: verdict.policies.clone(),
        errors: verdict.errors.clone(),
        source: source.to_owned(),
    }
}

/// `policy check`: parses the request's parts and explains the decision.
pub fn check(
    policies: &Shared,
    own_org: &str,
    principal: &str,
    action: &str,
    resource: &str,
    role: Option<&str>,
) -> Result<super::PolicyVerdict, ApiError> {
    let bad = |m: String| ApiError::new(ErrorKind::BadRequest, m);
    let subject = Subject::parse(principal, role).map_err(bad)?;
    let act = Act::from_name(action).ok_or_else(|| {
        let names: Vec<&str> = Act::ALL.iter().map(|a| a.name()).collect();
        bad(format!(
            "unknown action {action:?}; one of {}",
            names.join(", ")
        ))
    })?;
    let resource = Resource::parse(resource, own_org).map_err(bad)?;
    let current = policies.current();
    Ok(verdict_record(
        &current.evaluate(&subject, act, &resource),
        current.source(),
    ))
}
