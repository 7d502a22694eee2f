//! OTLP/HTTP with protobuf bodies: `POST /v1/traces`, `/v1/metrics` and
//! `/v1/logs`.
//!
//! A request with content type `application/x-protobuf` and an uncompressed
//! body that decodes as the signal's `Export*ServiceRequest` is stored and
//! answered `200` with an encoded empty `Export*ServiceResponse`. Anything
//! else is refused without touching the store's records: an unknown path gets
//! `404`, another method `405`, JSON or a compressed body `415`, an oversized
//! body `413` and a body that does not decode `400`. As the OTLP specification
//! asks, refusals on the signal paths carry a protobuf `google.rpc.Status`.
//! Nothing a client sends can make this module panic.

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::body::Body as ResponseBody;
use tonic::codegen::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tonic::codegen::{Body, Bytes, StdError};

use crate::records;
use crate::store::{Signal, Store, Transport};

/// The protobuf content type of OTLP/HTTP.
const PROTOBUF: &str = "application/x-protobuf";

/// `google.rpc.Status`, the error body that OTLP/HTTP specifies.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

// gRPC status codes used in the error bodies.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNIMPLEMENTED: i32 = 12;

/// The signal served at `path`, if any.
pub(crate) fn signal_for_path(path: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| s.http_path() == path)
}

/// Answers one OTLP/HTTP request, storing its records if it is a valid export.
pub(crate) async fn handle<B>(
    store: &Store,
    max_body_bytes: usize,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    let response = answer(store, max_body_bytes, request).await;
    if response.status() != StatusCode::OK {
        store.reject();
    }
    response
}

async fn answer<B>(
    store: &Store,
    max_body_bytes: usize,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    let Some(signal) = signal_for_path(request.uri().path()) else {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: OTLP/HTTP serves /v1/traces, /v1/metrics and /v1/logs\n",
        );
    };
    if request.method() != Method::POST {
        let mut response = refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            UNIMPLEMENTED,
            "only POST is allowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if let Err(why) = check_headers(&request) {
        return refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, UNIMPLEMENTED, &why);
    }
    let body = match Limited::new(request.into_body(), max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            let why = format!("body larger than {max_body_bytes} bytes");
            return refusal(StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED, &why);
        }
        Err(error) => {
            let why = format!("reading the body failed: {error}");
            return refusal(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, &why);
        }
    };
    let size = body.len();
    let decoded = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(body).map(|request| {
            store.add_spans(Transport::Http, size, records::spans(request));
            ExportTraceServiceResponse::default().encode_to_vec()
        }),
        Signal::Metrics => ExportMetricsServiceRequest::decode(body).map(|request| {
            store.add_metrics(Transport::Http, size, records::metric_points(request));
            ExportMetricsServiceResponse::default().encode_to_vec()
        }),
        Signal::Logs => ExportLogsServiceRequest::decode(body).map(|request| {
            store.add_logs(Transport::Http, size, records::logs(request));
            ExportLogsServiceResponse::default().encode_to_vec()
        }),
    };
    match decoded {
        Ok(encoded) => protobuf(StatusCode::OK, encoded),
        Err(error) => {
            let why = format!("the body is not a valid {signal} export request: {error}");
            refusal(StatusCode::BAD_REQUEST, INVALID_ARGUMENT, &why)
        }
    }
}

/// Accepts only an uncompressed protobuf body.
fn check_headers<B>(request: &Request<B>) -> Result<(), String> {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    let is_protobuf = media_type.eq_ignore_ascii_case(PROTOBUF)
        || media_type.eq_ignore_ascii_case("application/protobuf");
    if !is_protobuf {
        return Err(format!(
            "content type {content_type:?} is not supported; send {PROTOBUF}"
        ));
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("(not text)").trim();
        if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
            return Err(format!("content encoding {encoding:?} is not supported"));
        }
    }
    Ok(())
}

fn refusal(status: StatusCode, code: i32, message: &str) -> Response<ResponseBody> {
    let body = RpcStatus {
        code,
        message: message.to_owned(),
    };
    protobuf(status, body.encode_to_vec())
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    with_body(status, PROTOBUF, body)
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    with_body(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
    )
}

fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::new(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().expect("test uri");
        if let Ok(value) = HeaderValue::from_str(content_type) {
            request.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        request
    }

    async fn status_of(store: &Store, request: Request<Full<Bytes>>) -> StatusCode {
        handle(store, 1024, request).await.status()
    }

    #[tokio::test]
    async fn each_refusal_has_its_status_and_is_counted() {
        let store = Store::new(10);
        let valid = ExportLogsServiceRequest::default().encode_to_vec();
        let cases = [
            (
                Method::POST,
                "/v1/nope",
                PROTOBUF,
                valid.clone(),
                StatusCode::NOT_FOUND,
            ),
            (
                Method::GET,
                "/v1/logs",
                PROTOBUF,
                vec![],
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Method::POST,
                "/v1/logs",
                "application/json",
                b"{}".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Method::POST,
                "/v1/logs",
                PROTOBUF,
                vec![0xff; 2048],
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                Method::POST,
                "/v1/logs",
                PROTOBUF,
                vec![0xff, 0xff, 0xff],
                StatusCode::BAD_REQUEST,
            ),
            (
                Method::POST,
                "/v1/logs",
                "application/x-protobuf; charset=binary",
                valid,
                StatusCode::OK,
            ),
        ];
        for (method, path, content_type, body, expected) in cases {
            let got = status_of(&store, request(method, path, content_type, body)).await;
            assert_eq!(got, expected, "{path} {content_type}");
        }
        let counters = store.snapshot().counters;
        assert_eq!(counters.rejected, 5);
        assert_eq!(counters.logs.http.requests, 1);
    }

    #[tokio::test]
    async fn a_compressed_body_is_refused() {
        let store = Store::new(10);
        let mut gzip = request(Method::POST, "/v1/traces", PROTOBUF, vec![]);
        gzip.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            status_of(&store, gzip).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
