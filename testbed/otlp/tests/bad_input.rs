//! Robustness and lifecycle tests over raw TCP: garbage bodies and garbage
//! connections are refused without harming the receiver, valid hand-made
//! exports still work afterwards, the record bound holds, and stopping or
//! dropping the receiver closes its port.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use trellis_otlp_receiver::{Receiver, ReceiverConfig, Transport};

/// Bounds every network wait; a healthy run takes milliseconds.
const TIMEOUT: Duration = Duration::from_secs(30);
const PROTOBUF: &str = "application/x-protobuf";

/// A raw HTTP/1.1 response: status code and body.
struct RawResponse {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends one raw HTTP/1.1 request with `Connection: close` and reads the whole answer.
async fn post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<RawResponse> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let raw = exchange(addr, &request).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            anyhow::anyhow!("no end of headers in {:?}", String::from_utf8_lossy(&raw))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(RawResponse {
        status,
        content_type,
        body: raw[split + 4..].to_vec(),
    })
}

/// Writes `bytes` on a new connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer)).await??;
    Ok(answer)
}

/// A trace export with one root span per name, from instance `n1`.
fn trace_export(names: &[&str]) -> ExportTraceServiceRequest {
    let string = |text: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(text.to_owned())),
        })
    };
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: string(value),
        ..KeyValue::default()
    };
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![u8::try_from(i).unwrap_or(u8::MAX) + 1; 8],
            name: (*name).to_owned(),
            kind: 3,
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "raw"),
                    attribute("service.instance.id", "n1"),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

#[tokio::test]
async fn garbage_is_refused_and_the_receiver_keeps_serving() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0".parse()?).await?;
    let addr = receiver.addr();

    // Bodies that are not protobuf (0xff starts a field with an invalid wire type).
    let garbage = [0xff_u8, 0xff, 0xff, 0xff, 0x00, 0x13, 0x37];
    for path in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        let response = post(addr, path, PROTOBUF, &garbage).await?;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(
            response.content_type, PROTOBUF,
            "errors carry a google.rpc.Status"
        );
        assert!(!response.body.is_empty());
    }
    // A truncated but otherwise valid export.
    let valid = trace_export(&["cut"]).encode_to_vec();
    let truncated = post(addr, "/v1/traces", PROTOBUF, &valid[..valid.len() - 3]).await?;
    assert_eq!(truncated.status, 400);
    // Unknown paths, JSON, wrong methods.
    assert_eq!(
        post(addr, "/v1/profiles", PROTOBUF, &valid).await?.status,
        404
    );
    assert_eq!(post(addr, "/", "text/plain", b"hello").await?.status, 404);
    let json = post(addr, "/v1/traces", "application/json", b"{}").await?;
    assert_eq!(json.status, 415);
    let get = exchange(
        addr,
        b"GET /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(
        get.starts_with(b"HTTP/1.1 405"),
        "{:?}",
        String::from_utf8_lossy(&get)
    );
    // Connections that are not HTTP at all, or a broken HTTP/2 preface: the
    // server may answer or just close; it must not stop serving.
    exchange(addr, b"\x00\x01\x02 definitely not http\r\n\r\n").await?;
    exchange(
        addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .await?;
    // A client that hangs up in the middle of a body.
    {
        let mut stream = TcpStream::connect(addr).await?;
        let head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nabc";
        stream.write_all(head.as_bytes()).await?;
    }

    // Nothing was stored; every refusal was counted.
    let after_garbage = receiver.snapshot();
    assert!(
        after_garbage.spans.is_empty()
            && after_garbage.metrics.is_empty()
            && after_garbage.logs.is_empty()
    );
    assert_eq!(after_garbage.counters.traces.requests(), 0);
    assert!(
        after_garbage.counters.rejected >= 8,
        "{:?}",
        after_garbage.counters
    );

    // A valid export over HTTP still works, and the answer is an encoded
    // ExportTraceServiceResponse.
    let ok = post(
        addr,
        "/v1/traces",
        PROTOBUF,
        &trace_export(&["a", "b"]).encode_to_vec(),
    )
    .await?;
    assert_eq!((ok.status, ok.content_type.as_str()), (200, PROTOBUF));
    let answer = ExportTraceServiceResponse::decode(ok.body.as_slice())?;
    assert_eq!(answer.partial_success, None);
    let got = receiver
        .wait_until(TIMEOUT, |got| got.spans.len() == 2)
        .await
        .map_err(|got| anyhow::anyhow!("spans missing: {got:#?}"))?;
    let first = &got.spans[0];
    assert_eq!(
        (first.service.as_str(), first.instance.as_str()),
        ("raw", "n1")
    );
    assert_eq!((first.name.as_str(), first.kind), ("a", 3));
    assert_eq!(first.trace_id, "ab".repeat(16));
    assert_eq!(first.span_id, "01".repeat(8));
    assert_eq!(first.parent_span_id, "");
    let counters = got.counters.traces;
    assert_eq!(counters.http.requests, 1);
    assert_eq!(
        counters.http.bytes,
        u64::try_from(trace_export(&["a", "b"]).encoded_len())?
    );
    assert_eq!(counters.transport(Transport::Grpc).requests, 0);
    receiver.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_record_bound_drops_the_oldest() -> anyhow::Result<()> {
    let config = ReceiverConfig {
        max_records_per_signal: 2,
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::start_with("127.0.0.1:0".parse()?, config).await?;
    let body = trace_export(&["s1", "s2", "s3"]).encode_to_vec();
    assert_eq!(
        post(receiver.addr(), "/v1/traces", PROTOBUF, &body)
            .await?
            .status,
        200
    );
    let got = receiver.snapshot();
    let names: Vec<&str> = got.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s2", "s3"]);
    assert_eq!(
        (got.counters.traces.records, got.counters.traces.dropped),
        (3, 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_large_body_is_refused_with_413() -> anyhow::Result<()> {
    let config = ReceiverConfig {
        max_message_bytes: 16,
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::start_with("127.0.0.1:0".parse()?, config).await?;
    let body = trace_export(&["a-span-with-a-long-enough-name"]).encode_to_vec();
    let response = post(receiver.addr(), "/v1/traces", PROTOBUF, &body).await?;
    assert_eq!(response.status, 413);
    assert!(receiver.snapshot().spans.is_empty());
    Ok(())
}

#[tokio::test]
async fn stopping_or_dropping_closes_the_port() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0".parse()?).await?;
    let addr = receiver.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(receiver.grpc_endpoint(), format!("http://{addr}"));
    assert_eq!(
        receiver.http_url(trellis_otlp_receiver::Signal::Logs),
        format!("http://{addr}/v1/logs")
    );
    // An idle keep-alive connection does not hold the stop up.
    let idle = TcpStream::connect(addr).await?;
    tokio::time::timeout(TIMEOUT, receiver.stop()).await?;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed after stop"
    );
    drop(idle);

    let dropped = Receiver::start("127.0.0.1:0".parse()?).await?;
    let addr = dropped.addr();
    drop(dropped);
    // The server task notices the drop asynchronously; wait (bounded) for the close.
    let closed = tokio::time::timeout(TIMEOUT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the port is closed after drop");
    Ok(())
}

#[tokio::test]
async fn non_loopback_addresses_need_an_explicit_opt_in() -> anyhow::Result<()> {
    let refused = Receiver::start("0.0.0.0:0".parse()?).await;
    assert!(refused.is_err());
    Ok(())
}
