//! The authority's admin API server on `admin.sock` (see [`crate::admin`]).

use std::path::Path;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::net::UnixListener;
use trellis_routing::{NodeId, OrgId};

use super::store::{tokens_spec, RuleKind};
use super::{AuthorityError, Shared};
use crate::admin::{authz, ApiError, AuthorityStatus, ErrorKind, Request, TokenCreated};
use crate::enroll::joinstring::JoinString;
use crate::util::time::now_secs;
use crate::util::unhex;

/// Longest token lifetime, seconds (30 days).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Most uses of one token.
const MAX_USES: u32 = 10_000;
/// Longest reason text (`joins reject`, `nodes revoke`), characters.
pub(crate) const MAX_REASON_CHARS: usize = 200;

/// Binds the admin socket.
pub(super) fn bind(path: &Path) -> Result<UnixListener, AuthorityError> {
    crate::admin::server::bind(path).map_err(|e| AuthorityError::Listen {
        addr: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Accepts admin connections until aborted.
pub(super) async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    crate::admin::server::serve(listener, move |request| {
        let who = authz::local_operator(shared.ca.org().as_str());
        let result = dispatch(&shared, &who, request);
        shared.announce_snapshot();
        async move { result }
    })
    .await;
}

/// Remote admin at the authority: the token must verify against its own token key and
/// the revocations it keeps, bound to the TLS client certificate (docs/adr/0017).
pub(super) fn remote_handler(shared: Arc<Shared>) -> crate::admin::remote_server::Handler {
    Arc::new(move |r, cert| {
        let shared = shared.clone();
        Box::pin(async move {
            let org = shared.ca.org().as_str().to_owned();
            let keys = vec![shared.token_signer.public().clone()];
            let revoked = shared
                .store()
                .revoked_operator_tokens(now_secs())
                .map_err(|e| e.to_api())?;
            let who =
                crate::admin::remote_server::operator(&r.token, &org, &keys, &revoked, &cert)?;
            let result = dispatch(&shared, &who, r.request);
            shared.announce_snapshot();
            result
        })
    })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

/// Encodes an answer's result as the JSON text the server sends.
fn json<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
}

const OPERATOR: &str = "operator";

/// Checks an operator's reason text: it is shown to nodes, in tables and in the audit log,
/// so it must be one line of at most [`MAX_REASON_CHARS`] characters with no control or
/// bidirectional-override characters (which could forge lines or reorder table text).
/// Returns it trimmed; the error never echoes the text.
fn check_reason(text: &str, needed_for: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad(format!("{needed_for} needs a reason")));
    }
    let count = text.chars().count();
    if count > MAX_REASON_CHARS {
        return Err(bad(format!(
            "the reason has {count} characters; at most {MAX_REASON_CHARS}"
        )));
    }
    let forbidden =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if let Some((at, c)) = text.chars().enumerate().find(|&(_, c)| forbidden(c)) {
        return Err(bad(format!(
            "the reason must be one line of plain text: character {} is U+{:04X}",
            at + 1,
            u32::from(c)
        )));
    }
    Ok(text.to_owned())
}

/// The authority's status record (also read by the metrics at each export).
pub(super) fn status(shared: &Shared) -> Result<AuthorityStatus, super::store::StoreError> {
    let now = now_secs();
    let (nodes_active, nodes_revoked, joins_pending, tokens_active) = shared.store().counts(now)?;
    let snapshot_version = shared
        .store()
        .snapshot_envelope(None)?
        .map_or(0, |(v, _)| v);
    Ok(AuthorityStatus {
        role: "authority".into(),
        org: shared.ca.org().as_str().to_owned(),
        ca_fingerprint: shared.fingerprint.clone(),
        listen: shared.advertise.to_string(),
        snapshot_version,
        nodes_active,
        nodes_revoked,
        joins_pending,
        tokens_active,
        counters: {
            let mut counters = shared
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let failed = crate::telemetry::export_failures();
            let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
            if failed > 0 {
                counters.insert("telemetry_export_failures".into(), failed);
            }
            counters
        },
    })
}

fn dispatch(
    shared: &Shared,
    who: &trellis_policy::cedar::Subject,
    request: Request,
) -> Result<Box<RawValue>, ApiError> {
    let now = now_secs();
    let api = |e: super::store::StoreError| e.to_api();
    let org = shared.ca.org().as_str();
    authz::authorize(&shared.policies, who, org, &request)?;
    match request {
        Request::PolicyCheck {
            principal,
            action,
            resource,
            role,
        } => json(&authz::check(
            &shared.policies,
            org,
            &principal,
            &action,
            &resource,
            role.as_deref(),
        )?),
        Request::PolicyReload => Err(bad(
            "this authority runs the built-in policies (docs/adr/0016); there is no file to reload",
        )),
        Request::Status => json(&status(shared).map_err(api)?),
        Request::TokensCreate {
            ttl_secs,
            uses,
            auto_approve,
            roles,
        } => {
            if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
                return Err(bad(format!("ttl must be between 1 s and {MAX_TTL_SECS} s")));
            }
            if uses == 0 || uses > MAX_USES {
                return Err(bad(format!("uses must be between 1 and {MAX_USES}")));
            }
            for role in &roles {
                trellis_routing::OrgId::new(role)
                    .map_err(|e| bad(format!("role {role:?}: {e}")))?;
            }
            let token = super::tokens::new_token().map_err(|_| {
                ApiError::new(ErrorKind::Internal, "the system random generator failed")
            })?;
            let spec = tokens_spec(ttl_secs, uses, auto_approve, roles);
            let info = shared
                .store()
                .create_token(&token, &spec, OPERATOR, now)
                .map_err(api)?;
            let ca_sha256 = unhex(shared.fingerprint.trim_start_matches("sha256:"))
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| ApiError::new(ErrorKind::Internal, "bad CA fingerprint"))?;
            let join_string = JoinString {
                org: shared.ca.org().clone(),
                addr: shared.advertise,
                ca_sha256,
                token: format!("{}.{}", token.id, token.secret),
            }
            .encode();
            tracing::info!(token = %info.id, uses, auto_approve, "join token created");
            json(&TokenCreated {
                id: info.id,
                expires_at: info.expires_at,
                max_uses: info.max_uses,
                auto_approve: info.auto_approve,
                roles: info.roles,
                join_string,
            })
        }
        Request::TokensList => json(&shared.store().list_tokens(now).map_err(api)?),
        Request::TokensRevoke { id } => {
            let rejected = shared
                .store()
                .revoke_token(&id, OPERATOR, now)
                .map_err(api)?;
            if !rejected.is_empty() {
                shared.decided.notify_waiters();
            }
            tracing::info!(token = %id, rejected_joins = ?rejected, "join token revoked");
            let tokens = shared.store().list_tokens(now).map_err(api)?;
            json(&tokens.into_iter().find(|t| t.id == id))
        }
        Request::OperatorTokenCreate {
            name,
            role,
            ttl_secs,
            cert_pem,
        } => operator_token(shared, &name, &role, ttl_secs, &cert_pem, now),
        Request::OperatorTokensList => json(&shared.store().list_operator_tokens().map_err(api)?),
        Request::OperatorTokenRevoke { jti } => {
            let version = shared
                .store()
                .revoke_operator_token(&shared.ca, &jti, OPERATOR, now)
                .map_err(api)?;
            tracing::info!(token = %jti, version, "operator token revoked");
            json(&serde_json::json!({ "jti": jti, "snapshot_version": version }))
        }
        Request::JoinsList => json(&shared.store().list_joins().map_err(api)?),
        Request::JoinsApprove { id } => {
            let approved = shared
                .store()
                .approve_join(&id, &shared.ca, OPERATOR, now, shared.options.cert_lifetime)
                .map_err(api)?;
            shared.decided.notify_waiters();
            shared.count("authority_joins_approved");
            tracing::info!(join = %id, node = %approved.0.node_id, "join approved");
            json(&approved.0)
        }
        Request::JoinsReject { id, reason: text } => {
            let reason = check_reason(&text, "a rejection")?;
            let info = shared
                .store()
                .reject_join(&id, &reason, OPERATOR, now)
                .map_err(api)?;
            shared.decided.notify_waiters();
            shared.count("authority_joins_denied");
            json(&info)
        }
        Request::NodesList => json(&shared.store().list_nodes().map_err(api)?),
        Request::NodesRevoke { node_id, reason } => {
            let node =
                NodeId::new(&node_id).map_err(|e| bad(format!("node id {node_id:?}: {e}")))?;
            if !node.in_org(shared.ca.org()) {
                return Err(bad(format!(
                    "{node_id} is not in org {}",
                    shared.ca.org().as_str()
                )));
            }
            let reason = check_reason(&reason, "a revocation")?;
            let revoked = shared
                .store()
                .revoke_node(&node_id, &reason, &shared.ca, OPERATOR, now)
                .map_err(api)?;
            shared.count("authority_revocations");
            tracing::info!(node = %node_id, snapshot = revoked.snapshot_version, "node revoked");
            json(&revoked)
        }
        Request::Audit { since } => {
            json(&shared.store().list_audit(since.unwrap_or(0)).map_err(api)?)
        }
        Request::SnapshotGet { version } => {
            json(&shared.store().snapshot_info(version).map_err(api)?)
        }
        Request::NamesScope { node, names } => json(
            &shared
                .store()
                .set_name_rule(&shared.ca, RuleKind::Scope, &node, &names, OPERATOR, now)
                .map_err(api)?,
        ),
        Request::NamesDelegate { grantee, names } => json(
            &shared
                .store()
                .set_name_rule(
                    &shared.ca,
                    RuleKind::Delegation,
                    &grantee,
                    &names,
                    OPERATOR,
                    now,
                )
                .map_err(api)?,
        ),
        Request::NamesList => json(&shared.store().list_names().map_err(api)?),
        Request::PartnersCa { org, ca_pem } => {
            let org = OrgId::new(&org).map_err(|e| bad(format!("org {org:?}: {e}")))?;
            let der = match ca_pem {
                Some(pem) => {
                    let der = crate::pki::pem_to_der(pem.as_bytes())
                        .map_err(|e| bad(format!("the CA certificate: {e}")))?;
                    trellis_policy::snapshot::certificate_public_key(&der)
                        .map_err(|e| bad(format!("the CA certificate does not parse: {e}")))?;
                    Some(der)
                }
                None => None,
            };
            json(
                &shared
                    .store()
                    .set_partner_ca(&shared.ca, &org, der.as_deref(), OPERATOR, now)
                    .map_err(api)?,
            )
        }
        other => Err(bad(format!(
            "{other:?} is a node command; this is an authority"
        ))),
    }
}

/// `tokens operator create`: signs a token bound to the certificate in `cert_pem`.
fn operator_token(
    shared: &Shared,
    name: &str,
    role: &str,
    ttl_secs: u64,
    cert_pem: &str,
    now: u64,
) -> Result<Box<RawValue>, ApiError> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    };
    if !label(name) || !label(role) {
        return Err(bad(
            "name and role: 1-64 characters of letters, digits, - _ . @",
        ));
    }
    if ttl_secs == 0 || ttl_secs > trellis_policy::jwt::MAX_TTL_SECS {
        return Err(bad(format!(
            "ttl must be between 1 s and {} days",
            trellis_policy::jwt::MAX_TTL_SECS / 86_400
        )));
    }
    let cert = crate::pki::pem_to_der(cert_pem.as_bytes())
        .map_err(|e| bad(format!("client certificate: {e}")))?;
    let jti = crate::util::hex(
        &crate::util::random_bytes::<12>()
            .map_err(|_| ApiError::new(ErrorKind::Internal, "no randomness"))?,
    );
    let org = shared.ca.org().as_str();
    let signer = &shared.token_signer;
    let claims = signer.claims(org, name, role, &cert, &jti, now, ttl_secs);
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::new(ErrorKind::Internal, e))?;
    let info = shared
        .store()
        .record_operator_token(&claims, &trellis_policy::jwt::thumbprint(&cert), OPERATOR)
        .map_err(|e| e.to_api())?;
    tracing::info!(token = %info.jti, operator = name, role, "operator token issued");
    json(&crate::admin::OperatorTokenCreated { token, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_one_bounded_line_of_plain_text() {
        assert_eq!(
            check_reason("  key leaked ", "a revocation").as_deref(),
            Ok("key leaked")
        );
        assert_eq!(
            check_reason(&"é".repeat(200), "x").map(|r| r.len()),
            Ok(400)
        );
        let refused = [
            ("   ", "needs a reason"),
            (&"a".repeat(201), "at most 200"),
            ("line one\nforged line", "U+000A"),
            ("bell\u{7}", "U+0007"),
            ("tab\there", "U+0009"),
            ("esc \u{1b}[31mred", "U+001B"),
            ("spoof \u{202E}txt.exe", "U+202E"),
        ];
        for (text, why) in refused {
            let e = check_reason(text, "a rejection").expect_err(text);
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.contains(why), "{}", e.message);
            assert!(!e.message.contains('\n'), "one line: {}", e.message);
            assert!(!e.message.contains("forged"), "the text is not echoed");
        }
    }
}
