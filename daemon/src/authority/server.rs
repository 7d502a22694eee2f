//! The enrollment server: one task per QUIC connection, one request per stream
//! (`schemas/enrollment.capnp`). Every refusal is an `EnrollError` with a one-line reason;
//! a malformed request never reaches the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use rustls_pki_types::CertificateDer;
use trellis_routing::NodeId;

use super::store::{NewJoin, StoreError};
use super::Shared;
use crate::enroll::{
    decode_request, encode_response, read_frame, write_frame, ErrorCode, IssuedCert, JoinRequest,
    Request, Response,
};
use crate::pki;
use crate::util::time::now_secs;
use crate::util::{hex, sha256};

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one incoming connection.
pub(crate) async fn handle(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let source = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!(%source, error = %e, "enrollment handshake failed");
            return;
        }
    };
    while let Ok((send, recv)) = conn.accept_bi().await {
        let shared = shared.clone();
        let conn = conn.clone();
        tokio::spawn(async move { stream(shared, conn, send, recv).await });
    }
}

async fn stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let source = conn.remote_address();
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut recv)).await {
        Err(_) => Err("no request within 10 s".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(frame)) => decode_request(&frame).map_err(|e| e.to_string()),
    };
    let request = match request {
        Ok(request) => request,
        Err(reason) => {
            tracing::info!(%source, %reason, "malformed enrollment request");
            reply(&mut send, &Response::error(ErrorCode::BadRequest, reason)).await;
            return;
        }
    };
    tracing::debug!(%source, ?request, "enrollment request");
    match request {
        Request::Join(join) => {
            let span = tracing::info_span!(
                "authority.join",
                node = %join.name,
                source = %source,
                outcome = tracing::field::Empty,
            );
            shared.count("authority_join_requests");
            on_join(&shared, &conn, &mut send, join)
                .instrument(span)
                .await;
        }
        Request::Renew { csr } => {
            let response = on_renew(&shared, &conn, &csr);
            reply(&mut send, &response).await;
        }
        Request::Snapshot { have_version } => {
            let response = on_snapshot(&shared, &conn, have_version);
            reply(&mut send, &response).await;
        }
        Request::Subscribe {
            have_version,
            listing,
        } => {
            if let Some(listing) = listing {
                list_node(&shared, &conn, &listing);
            }
            subscribe(&shared, &conn, &mut send, have_version).await;
            return;
        }
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

async fn reply(send: &mut quinn::SendStream, response: &Response) {
    if let Err(e) = write_frame(send, &encode_response(response)).await {
        tracing::info!(error = %e, "cannot send enrollment response");
    }
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "enrollment failed inside the authority");
    Response::error(
        ErrorCode::Internal,
        "the authority failed; nothing was changed, retry later",
    )
}

fn issued_response(shared: &Shared, node_id: &str, der: Vec<u8>) -> Response {
    let snapshot = match shared.store().snapshot_envelope(None) {
        Ok(found) => found.map(|(_, bytes)| bytes).unwrap_or_default(),
        Err(e) => return internal(&e),
    };
    Response::Issued(IssuedCert {
        node_id: node_id.to_owned(),
        certificate: der,
        ca_certificate: shared.ca.der().to_vec(),
        snapshot,
    })
}

async fn on_join(
    shared: &Shared,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    join: JoinRequest,
) {
    let source = conn.remote_address();
    let now = now_secs();
    if !shared.limiter().allowed(source.ip(), now) {
        let wait = shared.limiter().retry_after(source.ip(), now);
        tracing::warn!(%source, "join refused: too many failed attempts");
        refused(shared, "rate_limited");
        let message = format!(
            "too many failed join attempts from {}; retry in {wait} s",
            source.ip()
        );
        reply(send, &Response::error(ErrorCode::RateLimited, message)).await;
        return;
    }
    let node = match NodeId::from_parts(shared.ca.org(), &join.name) {
        Ok(node) => node,
        Err(e) => {
            let message = format!("bad node name {:?}: {e}", join.name);
            refused(shared, "bad_request");
            reply(send, &Response::error(ErrorCode::BadRequest, message)).await;
            return;
        }
    };
    let key_sha256 = match pki::parse_csr(&join.csr) {
        Ok(csr) => hex(&sha256(rcgen::PublicKeyData::der_bytes(&csr.public_key))),
        Err(e) => {
            refused(shared, "bad_request");
            reply(send, &Response::error(ErrorCode::BadRequest, e.to_string())).await;
            return;
        }
    };
    let request = NewJoin {
        token: join.token,
        node_id: node.clone(),
        csr: join.csr,
        key_sha256,
        facts: join.facts.into_iter().collect::<BTreeMap<_, _>>(),
        capabilities: join.capabilities,
        roles: join.roles,
        source: source.to_string(),
    };
    // A retry after a lost reply (same token, same key as an enrolled node) gets the
    // certificate it was already issued.
    let redelivered = shared.store().redeliver(&request, now);
    match redelivered {
        Err(e) => return reply(send, &internal(&e)).await,
        Ok(Some(cert)) => {
            tracing::info!(%source, node = node.as_str(), serial = %cert.serial, "certificate sent again to a retried join");
            return reply(send, &issued_response(shared, node.as_str(), cert.der)).await;
        }
        Ok(None) => {}
    }
    let admitted = shared.store().begin_join(&request, now);
    let admission = match admitted {
        Err(e) => return reply(send, &internal(&e)).await,
        Ok(Err(refusal)) => {
            if refusal.counts_as_failure() {
                shared.limiter().failed(source.ip(), now);
            }
            tracing::info!(%source, node = node.as_str(), reason = %refusal.message, "join refused");
            refused(shared, "refused");
            let detail = format!("{:?}: {}", refusal.code, refusal.message);
            let actor = format!("source:{source}");
            if let Err(e) = shared
                .store()
                .audit(now, &actor, "join.refuse", node.as_str(), &detail)
            {
                tracing::warn!(error = %e, "cannot audit a refused join");
            }
            return reply(send, &Response::error(refusal.code, refusal.message)).await;
        }
        Ok(Ok(admission)) => admission,
    };
    tracing::info!(%source, node = node.as_str(), join = %admission.join_id, "join request admitted");
    if admission.auto_approve {
        let actor = format!("token:{} (auto-approve)", admission.token_id);
        let approved = shared.store().approve_join(
            &admission.join_id,
            &shared.ca,
            &actor,
            now,
            shared.options.cert_lifetime,
        );
        let response = match approved {
            Ok((_, issued)) => {
                shared.count("authority_joins_approved");
                outcome("approved");
                issued_response(shared, node.as_str(), issued.der)
            }
            Err(e) => auto_approval_failed(shared, &admission.join_id, node.as_str(), &e, now),
        };
        return reply(send, &response).await;
    }
    let pending = Response::Pending {
        request_id: admission.join_id.clone(),
        node_id: node.as_str().to_owned(),
    };
    reply(send, &pending).await;
    outcome("pending");
    let response = wait_for_decision(shared, conn, &admission.join_id, node.as_str()).await;
    outcome(match &response {
        Some(Response::Issued(_)) => "approved",
        Some(_) => "not_approved",
        None => "abandoned",
    });
    if let Some(response) = response {
        reply(send, &response).await;
    }
}

/// Records the join span's outcome.
fn outcome(what: &'static str) {
    tracing::Span::current().record("outcome", what);
}

/// A join refused before it was admitted.
fn refused(shared: &Shared, why: &'static str) {
    shared.count("authority_joins_refused");
    outcome(why);
}

/// An automatic approval failed: the request is rejected and its token use given back,
/// so nothing is left half-done and the node may retry with the same join string
/// (docs/security.md, "Enrollment threat model").
fn auto_approval_failed(
    shared: &Shared,
    join_id: &str,
    node: &str,
    error: &StoreError,
    now: u64,
) -> Response {
    let reason = format!("automatic approval failed: {error}");
    tracing::warn!(join = join_id, node, %error, "automatic approval failed; withdrawing the request, giving the token use back");
    let withdrawn = shared.store().fail_auto_approval(join_id, &reason, now);
    if let Err(StoreError::Api(e)) = &withdrawn {
        // Already decided meanwhile (its token revoked): nothing is left pending.
        tracing::debug!(join = join_id, error = %e, "join request already decided");
    } else if let Err(e) = withdrawn {
        tracing::error!(
            join = join_id,
            error = %e,
            "cannot withdraw the join request; if it is still pending, an operator must decide it"
        );
    }
    match error {
        StoreError::Api(api) => Response::error(ErrorCode::Rejected, api.message.clone()),
        other => internal(other),
    }
}

/// Waits until an operator decides, the node goes away, or the wait ends. `None` when the
/// node went away (the request is expired and its token use given back).
async fn wait_for_decision(
    shared: &Shared,
    conn: &quinn::Connection,
    join_id: &str,
    node: &str,
) -> Option<Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(shared.options.join_wait);
    loop {
        let notified = shared.decided.notified();
        let state = shared.store().join(join_id);
        match state {
            Err(e) => return Some(internal(&e)),
            Ok(None) => return Some(internal(&"join request vanished")),
            Ok(Some(info)) => match info.state.as_str() {
                "approved" => {
                    let cert = shared.store().join_certificate(join_id);
                    return Some(match cert {
                        Ok(Some(der)) => issued_response(shared, node, der),
                        Ok(None) => internal(&"approved join without certificate"),
                        Err(e) => internal(&e),
                    });
                }
                "rejected" => {
                    let reason = info.reason.unwrap_or_default();
                    return Some(Response::error(
                        ErrorCode::Rejected,
                        format!("join request {join_id} was rejected: {reason}"),
                    ));
                }
                "expired" => {
                    return Some(Response::error(
                        ErrorCode::TimedOut,
                        format!("join request {join_id} expired"),
                    ))
                }
                _ => {}
            },
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = conn.closed() => {
                expire(shared, join_id);
                return None;
            }
            () = tokio::time::sleep_until(deadline) => {
                expire(shared, join_id);
                return Some(Response::error(
                    ErrorCode::TimedOut,
                    format!(
                        "nobody approved join request {join_id} within {} s; it expired and the \
                         token use was given back (retry with the same join string)",
                        shared.options.join_wait
                    ),
                ));
            }
        }
    }
}

fn expire(shared: &Shared, join_id: &str) {
    if let Err(e) = shared.store().expire_join(join_id, now_secs()) {
        tracing::debug!(join = join_id, error = %e, "join request not expired");
    }
}

/// The node certificate the client presented (the TLS layer verified its chain).
fn client_cert(shared: &Shared, conn: &quinn::Connection) -> Result<pki::NodeCert, Response> {
    let unauthenticated = |why: String| Response::error(ErrorCode::Unauthenticated, why);
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| {
            unauthenticated("this request needs the node's current certificate".into())
        })?;
    let leaf = chain
        .first()
        .ok_or_else(|| unauthenticated("empty certificate chain".into()))?;
    let cert = pki::parse_node_cert(leaf).map_err(|e| unauthenticated(e.to_string()))?;
    if !cert.node.in_org(shared.ca.org()) {
        return Err(unauthenticated(format!(
            "{} is not in this org",
            cert.node.as_str()
        )));
    }
    Ok(cert)
}

fn on_renew(shared: &Shared, conn: &quinn::Connection, csr: &[u8]) -> Response {
    let cert = match client_cert(shared, conn) {
        Ok(cert) => cert,
        Err(response) => return response,
    };
    let request = match pki::parse_csr(csr) {
        Ok(request) => request,
        Err(e) => return Response::error(ErrorCode::BadRequest, e.to_string()),
    };
    let now = now_secs();
    let renewed = shared.store().renew(
        &cert.node,
        &cert.serial,
        &request.public_key,
        &shared.ca,
        now,
        shared.options.cert_lifetime,
    );
    match renewed {
        Ok(Ok(issued)) => {
            shared.count("authority_renewals");
            tracing::info!(node = cert.node.as_str(), "certificate renewed");
            issued_response(shared, cert.node.as_str(), issued.der)
        }
        Ok(Err(refusal)) => {
            tracing::info!(node = cert.node.as_str(), reason = %refusal.message, "renewal refused");
            Response::error(refusal.code, refusal.message)
        }
        Err(e) => internal(&e),
    }
}

/// Records where the certificate's node listens (the org's node directory); a changed
/// listing publishes a snapshot. A refused listing is logged; the subscription goes on.
fn list_node(shared: &Shared, conn: &quinn::Connection, listing: &crate::enroll::Listing) {
    let Ok(cert) = client_cert(shared, conn) else {
        return; // `subscribe` answers the refusal.
    };
    let listed = shared.store().list_node(
        &shared.ca,
        &cert.node,
        &listing.address,
        &listing.role,
        now_secs(),
    );
    match listed {
        Ok(super::store::Listed::Published(version)) => {
            tracing::info!(node = cert.node.as_str(), address = %listing.address, version, "node listed in the directory");
            shared.announce_snapshot();
        }
        Ok(super::store::Listed::Unchanged) => {}
        Ok(super::store::Listed::Refused(why)) => {
            tracing::info!(node = cert.node.as_str(), %why, "directory listing refused");
        }
        Err(e) => {
            tracing::warn!(node = cert.node.as_str(), error = %e, "directory listing not stored")
        }
    }
}

/// Pushes every snapshot newer than `have` to a subscribed node as soon as it is
/// published, until the node closes the stream or the connection.
async fn subscribe(
    shared: &Shared,
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    mut have: u64,
) {
    if let Err(response) = client_cert(shared, conn) {
        reply(send, &response).await;
        return;
    }
    let mut published = shared.published.subscribe();
    loop {
        let newest = shared.store().snapshot_envelope(None);
        match newest {
            Ok(Some((version, bytes))) if version > have => {
                if write_frame(send, &encode_response(&Response::Snapshot(bytes)))
                    .await
                    .is_err()
                {
                    return;
                }
                have = version;
            }
            Ok(_) => {}
            Err(e) => {
                reply(send, &internal(&e)).await;
                return;
            }
        }
        tokio::select! {
            changed = published.changed() => if changed.is_err() { return },
            _ = conn.closed() => return,
            _ = send.stopped() => return,
        }
    }
}

fn on_snapshot(shared: &Shared, conn: &quinn::Connection, have: u64) -> Response {
    if let Err(response) = client_cert(shared, conn) {
        return response;
    }
    match shared.store().snapshot_envelope(None) {
        Ok(Some((version, bytes))) if version > have => Response::Snapshot(bytes),
        Ok(_) => Response::Snapshot(Vec::new()),
        Err(e) => internal(&e),
    }
}
