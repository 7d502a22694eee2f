//! One stream at one hop: read the header (streams from peers), check it, look the
//! service up, and either connect to the local endpoint (origin) or open a stream to the
//! next hop (transit, ingress); then relay until the connection ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use trellis_routing::NodeId;

use super::decide::{self, Leg, Refusal};
use super::relay::{self, Abort, Bounds, End, Meters};
use super::stats::{take_slot, Slot};
use super::wire::{Reset, StreamHeader};
use super::Engine;

/// A stream `peer` opened on its connection to this node.
pub(super) async fn inbound(
    engine: Arc<Engine>,
    peer: NodeId,
    open: Arc<AtomicUsize>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let end = |recv, send| End::Quic(recv, send);
    let Some(peer_slot) = take_slot(&open, engine.settings.max_streams_per_peer as usize) else {
        engine.refuse(
            Reset::PeerLimit,
            "",
            &format!("{peer} has too many streams open"),
        );
        end(recv, send).abort(Reset::PeerLimit);
        return;
    };
    let header = match tokio::time::timeout(
        engine.settings.connect_timeout,
        StreamHeader::read_from(&mut recv),
    )
    .await
    {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            engine.refuse(Reset::BadHeader, "", &format!("from {peer}: {e}"));
            end(recv, send).abort(Reset::BadHeader);
            return;
        }
        Err(_) => {
            engine.refuse(
                Reset::BadHeader,
                "",
                &format!("from {peer}: no header in time"),
            );
            end(recv, send).abort(Reset::BadHeader);
            return;
        }
    };
    if header.hops == 1 && header.requester != peer {
        let why = format!("first hop from {peer} names {}", header.requester);
        engine.refuse(Reset::BadHeader, header.service.as_str(), &why);
        end(recv, send).abort(Reset::BadHeader);
        return;
    }
    if header.hops > engine.settings.max_hops {
        let why = format!(
            "{} hops, the limit is {}",
            header.hops, engine.settings.max_hops
        );
        engine.refuse(Reset::HopLimit, header.service.as_str(), &why);
        end(recv, send).abort(Reset::HopLimit);
        return;
    }
    carry(
        &engine,
        header,
        end(recv, send),
        Some(peer),
        Meters::default(),
        peer_slot,
    )
    .await;
}

/// Sets up the next leg for `header` and relays `upstream` over it. `from` is the peer the
/// stream came from (`None` at the ingress); `meters` are extra counters (the listener's).
/// Each hop is one `dataplane.stream` span, a child of the previous hop's when the header
/// carried its trace context; `reset` says why it ended early.
pub(super) async fn carry(
    engine: &Arc<Engine>,
    header: StreamHeader,
    upstream: End,
    from: Option<NodeId>,
    meters: Meters,
    slot: Slot,
) -> Option<Abort> {
    let span = tracing::info_span!(
        "dataplane.stream",
        service = header.service.as_str(),
        requester = header.requester.as_str(),
        stream = header.stream_id,
        hops = i64::from(header.hops),
        from = from.as_ref().map_or("", NodeId::as_str),
        reset = tracing::field::Empty,
    );
    if let Some(parent) = header.trace {
        parent.adopt(&span);
    }
    let ended = tracing::Instrument::instrument(
        carry_in_span(engine, header, upstream, from, meters, slot),
        span.clone(),
    )
    .await;
    if let Some(abort) = &ended {
        span.record("reset", abort.reset.name());
    }
    ended
}

async fn carry_in_span(
    engine: &Arc<Engine>,
    header: StreamHeader,
    upstream: End,
    from: Option<NodeId>,
    mut meters: Meters,
    slot: Slot,
) -> Option<Abort> {
    let service = header.service.as_str().to_owned();
    let Some(service_slot) = engine
        .services
        .take(&service, engine.settings.max_streams_per_service as usize)
    else {
        let why = format!(
            "{service} has {} streams here",
            engine.settings.max_streams_per_service
        );
        engine.refuse(Reset::ServiceLimit, &service, &why);
        upstream.abort(Reset::ServiceLimit);
        return Some(Abort::new(Reset::ServiceLimit, why));
    };
    let downstream = match next_leg(engine, &header, from.as_ref()).await {
        Ok(leg) => leg,
        Err((reset, why)) => {
            engine.refuse(reset, &service, &why);
            upstream.abort(reset);
            return Some(Abort::new(reset, why));
        }
    };
    let stats = &engine.stats;
    stats.opened.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    meters.forward.push(stats.bytes.clone());
    meters.backward.push(stats.bytes.clone());
    let bounds = Bounds {
        idle: engine.settings.idle_timeout,
        shutdown: &engine.shutdown,
    };
    let result = relay::relay(upstream, downstream, &meters, bounds).await;
    stats.active.fetch_sub(1, Ordering::Relaxed);
    drop((service_slot, slot));
    match result {
        Ok(_) => None,
        Err(abort) => {
            stats.reset.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                service,
                stream = header.stream_id,
                reason = abort.reset.name(),
                detail = abort.detail,
                "data-plane stream reset"
            );
            Some(abort)
        }
    }
}

/// The leg after this node: the endpoint's socket at the origin, a stream to the next
/// hop elsewhere.
async fn next_leg(
    engine: &Engine,
    header: &StreamHeader,
    from: Option<&NodeId>,
) -> Result<End, Refusal> {
    if engine.shutdown.is_cancelled() {
        return Err((Reset::ShuttingDown, "node shutting down".into()));
    }
    let from = match from {
        Some(peer) => {
            let role = engine.table.relationship(peer).ok_or_else(|| {
                (
                    Reset::NoTransit,
                    format!("{peer} is no longer a configured peer"),
                )
            })?;
            Some((peer, role))
        }
        None => None,
    };
    let route = engine.table.resolve(&header.service);
    match decide::next_leg(header, from, route, engine.settings.max_hops)? {
        Leg::Endpoint(endpoint) => {
            if from.is_some() {
                authorize_origin(engine, header)?;
            }
            let service = &header.service;
            let connect = TcpStream::connect(endpoint);
            match tokio::time::timeout(engine.settings.connect_timeout, connect).await {
                Ok(Ok(socket)) => Ok(End::tcp(socket)),
                Ok(Err(e)) => Err((
                    Reset::EndpointRefused,
                    format!("endpoint {endpoint} of {service}: {e}"),
                )),
                Err(_) => Err((
                    Reset::EndpointRefused,
                    format!("endpoint {endpoint} of {service}: no answer in time"),
                )),
            }
        }
        Leg::Forward { next, hops } => open_stream(engine, header, &next, hops).await,
    }
}

/// The origin's check: the requester may reach the service and is not revoked.
fn authorize_origin(engine: &Engine, header: &StreamHeader) -> Result<(), Refusal> {
    let requester = &header.requester;
    if engine.table.revoked(requester) {
        return Err((Reset::Unauthorized, format!("{requester} is revoked")));
    }
    engine
        .may_connect(requester, &header.service)
        .map_err(|why| (Reset::Unauthorized, why))?;
    Ok(())
}

/// Opens a stream to `next` and sends the header on.
async fn open_stream(
    engine: &Engine,
    header: &StreamHeader,
    next: &NodeId,
    hops: u8,
) -> Result<End, Refusal> {
    let unreachable = |why: String| (Reset::NextHopUnreachable, why);
    let (conn, traced) = engine
        .links
        .get_traced(next)
        .ok_or_else(|| unreachable(format!("no session with next hop {next}")))?;
    let opened = tokio::time::timeout(engine.settings.connect_timeout, conn.open_bi())
        .await
        .map_err(|_| unreachable(format!("{next} gave no stream credit in time")))?
        .map_err(|e| unreachable(format!("stream to {next}: {e}")))?;
    let (mut send, recv) = opened;
    let onward = StreamHeader {
        hops,
        trace: if traced {
            crate::telemetry::TraceParent::current()
        } else {
            None
        },
        ..header.clone()
    };
    send.write_all(&onward.encode())
        .await
        .map_err(|e| unreachable(format!("stream to {next}: {e}")))?;
    Ok(End::Quic(recv, send))
}
