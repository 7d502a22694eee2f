//! Relays over real UDP sockets on 127.0.0.1, and the control socket.
//! No test asserts on timing: waits are generous upper bounds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::UdpSocket;

use super::control::{self, parse_delay, parse_percent, parse_rate};
use super::*;

const GENEROUS: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn socket() -> UdpSocket {
    UdpSocket::bind(any_port()).await.unwrap()
}

async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// Polls `cond` until it holds or a generous deadline passes.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + GENEROUS;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

fn judged(s: &LinkStats) -> u64 {
    s.forwarded + s.dropped_loss + s.dropped_cut + s.dropped_queue
}

/// An upstream that echoes every datagram to its sender.
async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = socket().await;
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, task)
}

/// Sends `count` numbered datagrams through `relay` in small batches, waiting
/// after each batch until the link has judged them (so no socket buffer
/// overflows), and returns what `sink` received.
async fn send_paced(
    client: &UdpSocket,
    relay: SocketAddr,
    link: &Link,
    sink: &UdpSocket,
    count: u32,
) -> BTreeSet<u32> {
    let mut got = BTreeSet::new();
    let start = judged(&link.stats());
    for batch in (0..count).collect::<Vec<_>>().chunks(20) {
        for i in batch {
            client.send_to(&i.to_be_bytes(), relay).await.unwrap();
        }
        let target = start + u64::from(batch[batch.len() - 1]) + 1;
        assert!(eventually(|| judged(&link.stats()) >= target).await);
        let forwarded_now = link.stats().forwarded;
        while (got.len() as u64) < forwarded_now {
            let Some((data, _)) = recv_within(sink, GENEROUS).await else {
                break;
            };
            got.insert(u32::from_be_bytes(data[..4].try_into().unwrap()));
        }
    }
    got
}

#[tokio::test]
async fn a_relay_forwards_both_ways_between_a_client_and_its_upstream() {
    let (echo, _task) = echo_server().await;
    let link = Link::new("c<->e".into(), 1);
    let relay = relay(any_port(), echo, link.clone()).await.unwrap();
    let client = socket().await;
    for i in 0..10u8 {
        client.send_to(&[i; 3], relay.listen).await.unwrap();
        let (data, from) = recv_within(&client, GENEROUS).await.unwrap();
        assert_eq!(data, vec![i; 3]);
        assert_eq!(from, relay.listen);
    }
    assert_eq!(link.stats().forwarded, 20);
}

#[tokio::test]
async fn loss_of_one_drops_everything_and_counts_it() {
    let link = Link::new("c<->s".into(), 2);
    link.set(Impairment {
        loss: 1.0,
        ..Impairment::default()
    });
    let sink = socket().await;
    let relay = relay(any_port(), sink.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    let client = socket().await;
    let got = send_paced(&client, relay.listen, &link, &sink, 50).await;
    assert!(got.is_empty());
    assert_eq!(link.stats().dropped_loss, 50);
    assert_eq!(link.stats().forwarded, 0);
    assert!(recv_within(&sink, Duration::from_millis(100))
        .await
        .is_none());
}

#[tokio::test]
async fn loss_of_zero_delivers_every_datagram() {
    let link = Link::new("c<->s".into(), 3);
    link.set(Impairment {
        delay_ms: 2.0,
        jitter_ms: 1.0,
        ..Impairment::default()
    });
    let sink = socket().await;
    let relay = relay(any_port(), sink.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    let client = socket().await;
    let got = send_paced(&client, relay.listen, &link, &sink, 200).await;
    assert_eq!(got, (0..200).collect::<BTreeSet<u32>>());
    assert_eq!(link.stats().forwarded, 200);
}

/// Sends one datagram from `from` to `via`, and tells whether `to` got it.
async fn crosses(from: &UdpSocket, via: SocketAddr, to: &UdpSocket, tag: u8) -> bool {
    from.send_to(&[tag], via).await.unwrap();
    matches!(recv_within(to, GENEROUS).await, Some((data, _)) if data == [tag])
}

#[tokio::test]
async fn a_cut_drops_both_directions_of_both_relays_and_heal_restores_them() {
    let (a, b) = (socket().await, socket().await);
    let link = Link::new("a<->b".into(), 4);
    let ab = relay(any_port(), b.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    let ba = relay(any_port(), a.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    // The replies go back to the relay's upstream socket, as a listener answers its dialer.
    let round_trips = |tag: u8| {
        let (a, b, ab, ba) = (&a, &b, &ab, &ba);
        async move {
            let mut ok = Vec::new();
            ok.push(crosses(a, ab.listen, b, tag).await);
            ok.push(crosses(b, ab.upstream_local, a, tag + 1).await);
            ok.push(crosses(b, ba.listen, a, tag + 2).await);
            ok.push(crosses(a, ba.upstream_local, b, tag + 3).await);
            ok
        }
    };
    assert_eq!(round_trips(10).await, vec![true; 4]);

    link.cut();
    assert!(link.is_cut());
    for (from, via) in [
        (&a, ab.listen),
        (&b, ab.upstream_local),
        (&b, ba.listen),
        (&a, ba.upstream_local),
    ] {
        from.send_to(&[99], via).await.unwrap();
    }
    assert!(eventually(|| link.stats().dropped_cut == 4).await);
    assert!(recv_within(&a, Duration::from_millis(50)).await.is_none());
    assert!(recv_within(&b, Duration::from_millis(50)).await.is_none());

    link.heal();
    assert!(!link.is_cut());
    assert_eq!(round_trips(20).await, vec![true; 4]);
    assert_eq!(link.stats().forwarded, 8);
}

async fn loss_run(seed: u64) -> LinkStats {
    let link = Link::new("c<->s".into(), seed);
    link.set(Impairment {
        loss: 0.3,
        ..Impairment::default()
    });
    let sink = socket().await;
    let relay = relay(any_port(), sink.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    let client = socket().await;
    send_paced(&client, relay.listen, &link, &sink, 1000).await;
    link.stats()
}

#[tokio::test]
async fn a_seeded_loss_drops_a_deterministic_count_within_the_expected_band() {
    let first = loss_run(42).await;
    let second = loss_run(42).await;
    assert_eq!(first.forwarded + first.dropped_loss, 1000);
    assert!((200..400).contains(&first.dropped_loss), "{first:?}");
    assert_eq!(first.dropped_loss, second.dropped_loss);
}

#[tokio::test]
async fn a_rate_cap_drops_what_overflows_its_queue() {
    let link = Link::new("c<->s".into(), 5);
    link.set(Impairment {
        rate_kbps: Some(8),
        ..Impairment::default()
    });
    let sink = socket().await;
    let relay = relay(any_port(), sink.local_addr().unwrap(), link.clone())
        .await
        .unwrap();
    let client = socket().await;
    for _ in 0..300 {
        client.send_to(&[7; 1200], relay.listen).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert!(eventually(|| link.stats().dropped_queue > 0).await);
}

#[test]
fn a_permanent_bad_state_loses_everything_and_the_same_seed_decides_the_same() {
    let decide = |seed: u64, burst: Option<Burst>| {
        let link = Link::new("x<->y".into(), seed);
        link.set(Impairment {
            loss: 0.1,
            jitter_ms: 3.0,
            burst,
            ..Impairment::default()
        });
        (0..200)
            .map(|_| link.judge().map(|v| v.delay))
            .collect::<Vec<_>>()
    };
    assert_eq!(decide(9, None), decide(9, None));
    assert_ne!(decide(9, None), decide(10, None));
    let stuck = Burst {
        p_good_to_bad: 1.0,
        p_bad_to_good: 0.0,
        loss_in_bad: 1.0,
    };
    assert!(decide(9, Some(stuck)).iter().all(Option::is_none));
}

#[tokio::test]
async fn flap_toggles_the_cut_state_until_stopped() {
    let link = Link::new("a<->b".into(), 6);
    flap(&link, Some(Duration::from_millis(100))).unwrap();
    assert!(link.is_cut());
    assert!(eventually(|| !link.is_cut()).await);
    assert!(eventually(|| link.is_cut()).await);
    flap(&link, None).unwrap();
    link.heal();
    assert!(!link.is_cut());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!link.is_cut());

    flap(&link, Some(Duration::from_millis(100))).unwrap();
    link.set(Impairment::default());
    assert!(!link.is_cut());
}

#[test]
fn a_flap_outside_a_runtime_fails_closed_and_leaves_the_link_up() {
    let link = Link::new("a<->b".into(), 6);
    let err = flap(&link, Some(Duration::from_millis(100))).unwrap_err();
    assert!(err.contains("a<->b"), "{err}");
    assert!(!link.is_cut());
    assert_eq!(link.stats().errors, 1);
    assert!(flap(&link, None).is_ok());
}

#[test]
fn the_hub_finds_links_in_either_order() {
    let mut hub = Hub::new();
    hub.add("b", "a", Link::new("a<->b".into(), 0));
    assert_eq!(hub.get("a", "b").unwrap().name(), "a<->b");
    assert!(hub.get("b", "a").is_some());
    assert!(hub.get("a", "c").is_none());
    assert_eq!(hub.links()[0].0, "a");
}

fn temp_socket(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("trellis-emu-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

async fn ask(path: &std::path::Path, req: serde_json::Value) -> Result<serde_json::Value, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || control::request(&path, &req))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_control_socket_sets_cuts_heals_flaps_and_lists_links() {
    let link = Link::new("acme/n0<->acme/n1".into(), 7);
    let mut hub = Hub::new();
    hub.add("acme/n0", "acme/n1", link.clone());
    let hub = Arc::new(Mutex::new(hub));
    let path = temp_socket("control.sock");
    let server = control::serve(&path, hub.clone()).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let set = json!({"op":"set","a":"acme/n1","b":"acme/n0",
        "impairment":{"delay_ms":50,"jitter_ms":5,"loss":0.05}});
    let ok = ask(&path, set).await.unwrap();
    assert_eq!(ok["impairment"]["delay_ms"], 50.0);
    assert_eq!(link.impairment().loss, 0.05);

    // `update` changes only the fields it names.
    let update = json!({"op":"update","a":"acme/n0","b":"acme/n1",
        "impairment":{"loss":0.01,"burst":{"p_good_to_bad":0.1,"p_bad_to_good":0.5,"loss_in_bad":0.9}}});
    let ok = ask(&path, update).await.unwrap();
    assert_eq!(ok["impairment"]["delay_ms"], 50.0);
    assert_eq!(ok["impairment"]["jitter_ms"], 5.0);
    assert_eq!(link.impairment().loss, 0.01);
    assert_eq!(link.impairment().burst.map(|b| b.loss_in_bad), Some(0.9));
    let clear = json!({"op":"update","a":"acme/n0","b":"acme/n1","impairment":{"burst":null}});
    ask(&path, clear).await.unwrap();
    assert_eq!(link.impairment().burst, None);
    assert_eq!(link.impairment().delay_ms, 50.0);
    let typo = json!({"op":"update","a":"acme/n0","b":"acme/n1","impairment":{"los":0.1}});
    assert!(ask(&path, typo).await.unwrap_err().contains("los"));

    ask(&path, json!({"op":"cut","a":"acme/n0","b":"acme/n1"}))
        .await
        .unwrap();
    assert!(link.is_cut());
    let list = ask(&path, json!({"op":"list"})).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["cut"], true);
    assert_eq!(list[0]["a"], "acme/n0");
    assert_eq!(list[0]["stats"]["forwarded"], 0);

    ask(&path, json!({"op":"heal","a":"acme/n0","b":"acme/n1"}))
        .await
        .unwrap();
    assert!(!link.is_cut());
    ask(
        &path,
        json!({"op":"flap","a":"acme/n0","b":"acme/n1","period_ms":60000}),
    )
    .await
    .unwrap();
    assert!(link.is_cut());
    ask(&path, json!({"op":"flap","a":"acme/n0","b":"acme/n1"}))
        .await
        .unwrap();
    assert!(!link.is_cut());

    let unknown = ask(&path, json!({"op":"cut","a":"acme/n0","b":"acme/n9"}))
        .await
        .unwrap_err();
    assert!(unknown.contains("acme/n9"), "{unknown}");
    let bad = json!({"op":"set","a":"acme/n0","b":"acme/n1","impairment":{"loss":2}});
    assert!(ask(&path, bad).await.unwrap_err().contains("loss"));
    assert!(ask(&path, json!({"op":"explode"})).await.is_err());

    // A stopped server leaves a stale socket, which the next one replaces.
    server.abort();
    let _ = server.await;
    let again = control::serve(&path, hub).await.unwrap();
    assert!(ask(&path, json!({"op":"list"})).await.is_ok());
    again.abort();
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn a_client_without_a_server_says_the_testbed_is_not_running() {
    let path = std::env::temp_dir().join("trellis-emu-nobody-here.sock");
    let err = control::request(&path, &json!({"op":"list"})).unwrap_err();
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn the_parse_helpers_accept_units_and_reject_the_rest() {
    assert_eq!(parse_delay("50ms"), Ok(50.0));
    assert_eq!(parse_delay("1s"), Ok(1000.0));
    assert_eq!(parse_delay("0"), Ok(0.0));
    assert_eq!(parse_delay("250us"), Ok(0.25));
    for bad in ["50", "-5ms", "ms", "fast", "nanms", "infs", ""] {
        assert!(parse_delay(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_percent("5%"), Ok(0.05));
    assert_eq!(parse_percent("0.05"), Ok(0.05));
    assert_eq!(parse_percent("100%"), Ok(1.0));
    for bad in ["5", "101%", "-1%", "%", "half"] {
        assert!(parse_percent(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_rate("1mbit"), Ok(1000));
    assert_eq!(parse_rate("500kbit"), Ok(500));
    assert_eq!(parse_rate("10mbps"), Ok(10_000));
    assert_eq!(parse_rate("1Gbit"), Ok(1_000_000));
    for bad in ["1000", "0kbit", "0.1kbit", "fast", "mbit", "-1mbit"] {
        assert!(parse_rate(bad).is_err(), "{bad}");
    }
}
