//! Commands against an authority's admin API: status, tokens, joins, nodes, audit.

use clap::Subcommand;
use trellis_daemon::admin::client::{call_as, ClientError};
use trellis_daemon::admin::{
    AuditEvent, AuthorityStatus, ErrorKind, JoinInfo, NodeInfo, Request, Revoked, TokenCreated,
    TokenInfo,
};
use trellis_daemon::util::time::{now_secs, parse_duration, parse_rfc3339, rfc3339};

use crate::table::render;
use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum Tokens {
    /// Create a join token and print its join string (shown once).
    Create {
        /// Lifetime (s, m, h, d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Approve joins with this token without an operator.
        #[arg(long)]
        auto_approve: bool,
        /// Roles a node joining with it may take (comma-separated).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Operator tokens (ES384 JWTs bound to a client certificate) for remote admin.
    #[command(subcommand)]
    Operator(crate::operator::OperatorTokens),
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum Joins {
    /// List join requests.
    List {
        /// Only pending requests.
        #[arg(long)]
        pending: bool,
    },
    /// Approve a pending join request: the node gets its certificate.
    Approve {
        /// Join request id.
        id: String,
    },
    /// Reject a pending join request.
    Reject {
        /// Join request id.
        id: String,
        /// Why (shown to the node).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum Nodes {
    /// List nodes.
    List,
    /// Revoke a node: its certificates, in a new signed trust snapshot.
    Revoke {
        /// Node id ORG/NAME.
        node_id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// Maps a client error to an exit code.
pub fn failure(e: ClientError) -> Failure {
    let code = match &e {
        ClientError::NotRunning { .. } => 3,
        ClientError::Protocol(_) => 6,
        ClientError::Api(api) => match api.kind {
            ErrorKind::BadRequest => 2,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Forbidden => 1,
            ErrorKind::Internal => 6,
        },
    };
    Failure::new(code, e)
}

pub(crate) fn call<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    request: &Request,
) -> Result<T, Failure> {
    if let Some(remote) = &ctx.remote {
        return trellis_daemon::admin::remote_client::call_as(&remote.target()?, request)
            .map_err(failure);
    }
    call_as(&ctx.socket()?, request).map_err(failure)
}

fn opt_time(t: Option<u64>) -> String {
    t.map_or_else(|| "-".into(), rfc3339)
}

pub fn status(ctx: &Context) -> Result<(), Failure> {
    let value: serde_json::Value = call(ctx, &Request::Status)?;
    if value["role"] == "node" {
        return crate::node::node_status(ctx, value);
    }
    let status: AuthorityStatus =
        serde_json::from_value(value).map_err(|e| Failure::new(6, format!("bad answer: {e}")))?;
    ctx.print(&status, |s| {
        format!(
            "org:              {}\nCA fingerprint:   {}\nenrollment:       {}\ntrust snapshot:   v{}\nnodes:            {} active, {} revoked\njoins pending:    {}\ntokens usable:    {}\n",
            s.org, s.ca_fingerprint, s.listen, s.snapshot_version, s.nodes_active, s.nodes_revoked, s.joins_pending, s.tokens_active
        )
    });
    Ok(())
}

fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.state.clone(),
                format!("{}/{}", t.uses, t.max_uses),
                rfc3339(t.expires_at),
                if t.auto_approve { "yes" } else { "no" }.into(),
                t.roles.join(","),
            ]
        })
        .collect();
    render(
        &["ID", "STATE", "USES", "EXPIRES", "AUTO-APPROVE", "ROLES"],
        &rows,
    )
}

pub fn tokens(ctx: &Context, cmd: Tokens) -> Result<(), Failure> {
    match cmd {
        Tokens::Create {
            ttl,
            uses,
            auto_approve,
            roles,
        } => {
            let ttl_secs =
                parse_duration(&ttl).map_err(|e| Failure::new(2, format!("--ttl: {e}")))?;
            let created: TokenCreated = call(
                ctx,
                &Request::TokensCreate {
                    ttl_secs,
                    uses,
                    auto_approve,
                    roles,
                },
            )?;
            if ctx.json {
                ctx.print(&created, |_| String::new());
            } else {
                // The join string alone on stdout, so `$(trellis tokens create)` captures it.
                println!("{}", created.join_string);
                eprintln!(
                    "token {}: {} use(s), expires {}{}; the join string is shown only now",
                    created.id,
                    created.max_uses,
                    rfc3339(created.expires_at),
                    if created.auto_approve {
                        ", auto-approve"
                    } else {
                        ""
                    }
                );
            }
        }
        Tokens::Operator(cmd) => crate::operator::tokens(ctx, cmd)?,
        Tokens::List => {
            let tokens: Vec<TokenInfo> = call(ctx, &Request::TokensList)?;
            ctx.print(&tokens, |t| tokens_table(t));
        }
        Tokens::Revoke { id } => {
            let token: Option<TokenInfo> = call(ctx, &Request::TokensRevoke { id })?;
            ctx.print(&token, |t| tokens_table(t.as_slice()));
        }
    }
    Ok(())
}

fn joins_table(joins: &[JoinInfo]) -> String {
    let rows: Vec<Vec<String>> = joins
        .iter()
        .map(|j| {
            let fact = |k: &str| j.facts.get(k).cloned().unwrap_or_else(|| "-".into());
            vec![
                j.id.clone(),
                j.node_id.clone(),
                j.state.clone(),
                j.source.clone(),
                format!("{} {}/{}", fact("hostname"), fact("os"), fact("arch")),
                j.key_sha256.chars().take(16).collect(),
                rfc3339(j.created_at),
                j.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "NODE",
            "STATE",
            "SOURCE",
            "HOST",
            "KEY-SHA256",
            "REQUESTED",
            "REASON",
        ],
        &rows,
    )
}

pub fn joins(ctx: &Context, cmd: Joins) -> Result<(), Failure> {
    match cmd {
        Joins::List { pending } => {
            let mut joins: Vec<JoinInfo> = call(ctx, &Request::JoinsList)?;
            if pending {
                joins.retain(|j| j.state == "pending");
            }
            ctx.print(&joins, |j| joins_table(j));
        }
        Joins::Approve { id } => {
            let join: JoinInfo = call(ctx, &Request::JoinsApprove { id })?;
            ctx.print(&join, |j| {
                format!("approved {}: {} gets its certificate\n", j.id, j.node_id)
            });
        }
        Joins::Reject { id, reason } => {
            let join: JoinInfo = call(ctx, &Request::JoinsReject { id, reason })?;
            ctx.print(&join, |j| format!("rejected {} ({})\n", j.id, j.node_id));
        }
    }
    Ok(())
}

pub fn nodes(ctx: &Context, cmd: Nodes) -> Result<(), Failure> {
    match cmd {
        Nodes::List => {
            let nodes: Vec<NodeInfo> = call(ctx, &Request::NodesList)?;
            ctx.print(&nodes, |nodes| {
                let rows: Vec<Vec<String>> = nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.node_id.clone(),
                            n.state.clone(),
                            n.roles.join(","),
                            rfc3339(n.joined_at),
                            n.cert_serial.clone().unwrap_or_default(),
                            opt_time(n.cert_not_after),
                            n.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                render(
                    &[
                        "NODE",
                        "STATE",
                        "ROLES",
                        "JOINED",
                        "CERT-SERIAL",
                        "CERT-EXPIRES",
                        "REASON",
                    ],
                    &rows,
                )
            });
        }
        Nodes::Revoke { node_id, reason } => {
            let revoked: Revoked = call(ctx, &Request::NodesRevoke { node_id, reason })?;
            ctx.print(&revoked, |r| {
                format!(
                    "revoked {} ({} certificate(s)); trust snapshot v{} published\n",
                    r.node_id,
                    r.serials.len(),
                    r.snapshot_version
                )
            });
        }
    }
    Ok(())
}

fn since(text: &str) -> Result<u64, Failure> {
    if let Some(at) = parse_rfc3339(text) {
        return Ok(at);
    }
    parse_duration(text)
        .map(|ago| now_secs().saturating_sub(ago))
        .map_err(|e| {
            Failure::new(
                2,
                format!("--since: {e}; or give a time like 2026-11-23T10:00:00Z"),
            )
        })
}

pub fn audit(ctx: &Context, since_text: Option<&str>) -> Result<(), Failure> {
    let since = since_text.map(since).transpose()?;
    let events: Vec<AuditEvent> = call(ctx, &Request::Audit { since })?;
    ctx.print(&events, |events| {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    rfc3339(e.at),
                    e.actor.clone(),
                    e.action.clone(),
                    e.subject.clone(),
                    e.detail.clone(),
                ]
            })
            .collect();
        render(
            &["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT", "DETAIL"],
            &rows,
        )
    });
    Ok(())
}
