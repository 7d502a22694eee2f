//! `trellis policy check|reload`: explain a Cedar decision of the daemon's policies in
//! force, and re-read its policy file (docs/adr/0016-cedar-decides.md).

use clap::Subcommand;
use trellis_daemon::admin::{PolicyLoaded, PolicyVerdict, Request};

use crate::authority::call;
use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum Policy {
    /// Explain the decision for one request: which policies permitted or forbade it.
    /// Exits 0 when allowed, 1 when denied.
    Check {
        /// Operator::"NAME", ServiceAccount::"ORG/NAME" or Node::"ORG/NAME".
        #[arg(long)]
        principal: String,
        /// An action: connect_peer, originate_route, import_route, export_route,
        /// connect_to_service, view_routes, manage_routes, view_peers, manage_peers,
        /// create_join_token, approve_join, revoke_node, manage_policy, view_audit.
        #[arg(long)]
        action: String,
        /// Daemon::"ORG", Service::"NAME", Route::"SERVICE" or Peer::"ORG/NAME".
        #[arg(long)]
        resource: String,
        /// An operator's role (default admin).
        #[arg(long)]
        role: Option<String>,
    },
    /// Re-read the policy file; a bad file is refused (FILE:LINE:COL) and the policies
    /// in force stay.
    Reload,
}

pub fn policy(ctx: &Context, cmd: Policy) -> Result<(), Failure> {
    match cmd {
        Policy::Check {
            principal,
            action,
            resource,
            role,
        } => {
            let verdict: PolicyVerdict = call(
                ctx,
                &Request::PolicyCheck {
                    principal,
                    action,
                    resource,
                    role,
                },
            )?;
            ctx.print(&verdict, |v| {
                let mut out = format!(
                    "{}: {}\n",
                    v.decision,
                    match (v.decision.as_str(), v.policies.as_slice()) {
                        (_, []) => "no policy permits it (Cedar denies by default)".to_owned(),
                        ("allow", names) => format!("permitted by {}", names.join(", ")),
                        (_, names) => format!("forbidden by {}", names.join(", ")),
                    }
                );
                for e in &v.errors {
                    out.push_str(&format!("  error: {e}\n"));
                }
                out.push_str(&format!("  policies from {}\n", v.source));
                out
            });
            if verdict.decision == "allow" {
                Ok(())
            } else {
                Err(Failure::new(1, "denied"))
            }
        }
        Policy::Reload => {
            let loaded: PolicyLoaded = call(ctx, &Request::PolicyReload)?;
            ctx.print(&loaded, |l| {
                format!("{} policies in force from {}\n", l.policies, l.source)
            });
            Ok(())
        }
    }
}
