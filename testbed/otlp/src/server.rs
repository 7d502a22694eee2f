//! The network side: one TCP listener serving OTLP/gRPC and OTLP/HTTP.
//!
//! Each accepted connection is served by hyper-util's `auto` builder, which
//! speaks HTTP/1.1 or HTTP/2 (prior knowledge, i.e. h2c, as gRPC clients use)
//! depending on what the client sends first. Every request is dispatched by
//! content type and path: `application/grpc…` requests go to the generated
//! tonic server of the service named in the path (a gRPC `UNIMPLEMENTED`
//! answer for any other service), everything else to the OTLP/HTTP handler.
//!
//! Shutdown is signalled through a watch channel: the accept loop stops and
//! drops the listener at once, open connections are asked to finish
//! gracefully (HTTP/2 `GOAWAY`, HTTP/1 close after the current response) and
//! are cut after a short grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body as ResponseBody;
use tonic::codegen::http::{header, Request, Response};
use tonic::codegen::{Body, Bytes, Service as _, StdError};

use crate::grpc::GrpcServices;
use crate::otlp_http;
use crate::store::Store;

/// How long open connections get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long to back off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// What every connection needs to answer requests.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) grpc: GrpcServices,
    pub(crate) max_message_bytes: usize,
}

/// Serves `listener` until `shutdown` turns true or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    // Whatever is still open after the grace is aborted when the set drops.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
}

/// Resolves once shutdown is asked for (or the receiver handle is gone).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which also means stop.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small unary exports: do not let Nagle delay the responses.
    let _ = stream.set_nodelay(true);
    let builder = auto::Builder::new(TokioExecutor::new());
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        dispatch(shared.clone(), request)
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        // A connection error (a client that hangs up or sends garbage) only
        // ends this connection.
        _ = connection.as_mut() => {}
        () = stop_requested(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Sends one request to the gRPC service it names or to the OTLP/HTTP handler.
async fn dispatch<B>(
    shared: Arc<Shared>,
    request: Request<B>,
) -> Result<Response<ResponseBody>, Infallible>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    if !is_grpc(&request) {
        let store = &shared.store;
        return Ok(otlp_http::handle(store, shared.max_message_bytes, request).await);
    }
    let path = request.uri().path();
    let mut grpc = shared.grpc.clone();
    if in_service(path, trace_service_server::SERVICE_NAME) {
        grpc.traces.call(request).await
    } else if in_service(path, metrics_service_server::SERVICE_NAME) {
        grpc.metrics.call(request).await
    } else if in_service(path, logs_service_server::SERVICE_NAME) {
        grpc.logs.call(request).await
    } else {
        shared.store.reject();
        let status = tonic::Status::unimplemented(format!("no such service: {path}"));
        Ok(status.into_http())
    }
}

/// Whether `path` is `/SERVICE/Method`.
fn in_service(path: &str, service: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(service))
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether the request is gRPC (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .get(.."application/grpc".len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("application/grpc"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    fn shared() -> Arc<Shared> {
        let store = Arc::new(Store::new(10));
        Arc::new(Shared {
            grpc: GrpcServices::new(store.clone(), 1024),
            store,
            max_message_bytes: 1024,
        })
    }

    fn grpc_request(path: &str, frame: Vec<u8>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(frame)));
        *request.method_mut() = tonic::codegen::http::Method::POST;
        *request.uri_mut() = path.parse().expect("test uri");
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/grpc"),
        );
        request
    }

    /// A gRPC length-prefixed, uncompressed message frame.
    fn frame(message: &[u8]) -> Vec<u8> {
        let length = u32::try_from(message.len()).expect("small message");
        let mut out = vec![0];
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// The gRPC status of a response, from its headers or trailers.
    async fn grpc_status(response: Response<ResponseBody>) -> Option<String> {
        if let Some(status) = response.headers().get("grpc-status") {
            return status.to_str().ok().map(str::to_owned);
        }
        let collected = response.into_body().collect().await.ok()?;
        let trailers = collected.trailers()?;
        trailers
            .get("grpc-status")?
            .to_str()
            .ok()
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn grpc_requests_go_to_the_named_service() {
        let shared = shared();
        let export = ExportTraceServiceRequest::default().encode_to_vec();
        let path = format!("/{}/Export", trace_service_server::SERVICE_NAME);
        let response = dispatch(shared.clone(), grpc_request(&path, frame(&export))).await;
        let response = response.expect("infallible");
        assert_eq!(grpc_status(response).await.as_deref(), Some("0"));
        assert_eq!(shared.store.snapshot().counters.traces.grpc.requests, 1);

        let unknown = grpc_request("/no.such.Service/Export", frame(&export));
        let response = dispatch(shared.clone(), unknown).await.expect("infallible");
        assert_eq!(grpc_status(response).await.as_deref(), Some("12"));
        assert_eq!(shared.store.snapshot().counters.rejected, 1);

        // A frame that is not a valid message: tonic answers with an error status.
        let garbage = grpc_request(&path, frame(&[0xff, 0xff, 0xff]));
        let response = dispatch(shared.clone(), garbage).await.expect("infallible");
        let status = grpc_status(response).await;
        assert!(status.is_some_and(|code| code != "0"));
        assert_eq!(shared.store.snapshot().counters.traces.grpc.requests, 1);
    }

    #[test]
    fn paths_are_matched_to_whole_service_names() {
        let service = trace_service_server::SERVICE_NAME;
        assert!(in_service(&format!("/{service}/Export"), service));
        assert!(!in_service(&format!("/{service}X/Export"), service));
        assert!(!in_service(&format!("/{service}"), service));
        assert!(!in_service("/v1/traces", service));
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        let with = |content_type: &'static str| {
            let mut request = Request::new(());
            request.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            is_grpc(&request)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(!with("application/x-protobuf"));
        assert!(!with("text"));
        assert!(!is_grpc(&Request::new(())));
    }
}
