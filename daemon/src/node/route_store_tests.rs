//! Tests of the route store: durable acknowledgements, session epochs across runs, the
//! event log.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use trellis_routing::{
    Attrs, NodeId, PathHop, ProtocolHint, Relationship, ServiceName, UpdateBatch,
};

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trellis-rs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join("node.db")
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn service(s: &str) -> ServiceName {
    ServiceName::new(s).expect("service")
}

fn batch(origin: &str, services: &[&str]) -> UpdateBatch {
    let attrs = Arc::new(Attrs {
        origin: node(origin),
        origin_seq: 1,
        path: vec![PathHop::Node(node(origin))],
        metric: 10,
        communities: vec![],
        protocol: ProtocolHint::Tcp,
        learned_from: Relationship::Internal,
    });
    UpdateBatch {
        attrs: vec![attrs],
        announce: services.iter().map(|s| (service(s), 0)).collect(),
        withdraw: vec![],
    }
}

/// Sends `ops` and waits until they are committed.
fn commit_all(tx: &SyncSender<StoreOp>, ops: Vec<StoreOp>) {
    for op in ops {
        tx.send(op).expect("writer running");
    }
    let (ack, done) = tokio::sync::oneshot::channel();
    tx.send(StoreOp::Barrier(ack)).expect("writer running");
    done.blocking_recv()
        .expect("barrier answered")
        .expect("committed");
}

#[test]
fn a_barrier_is_answered_only_after_the_ops_before_it_are_committed() {
    let path = scratch("barrier");
    let (tx, writer) = spawn_writer(path.clone(), 16, Arc::new(AtomicU64::new(0))).expect("writer");
    commit_all(
        &tx,
        vec![StoreOp::Originate {
            service: service("books.acme"),
            protocol: ProtocolHint::Http,
            endpoint: "127.0.0.1:8080".into(),
        }],
    );
    // Read on another connection while the writer is still running.
    let (restored, skipped) = restore(&path).expect("restore");
    assert_eq!(skipped, 0);
    assert_eq!(restored.originated.len(), 1);
    assert_eq!(restored.originated[0].0.as_str(), "books.acme");
    drop(tx);
    writer.join().expect("writer stops");
}

#[test]
fn epochs_of_a_new_run_start_above_the_stored_ones_so_end_of_table_purges_old_rows() {
    let path = scratch("epochs");
    let a = node("acme/a");
    let (tx, writer) = spawn_writer(path.clone(), 16, Arc::new(AtomicU64::new(0))).expect("writer");
    commit_all(
        &tx,
        vec![StoreOp::PeerBatch {
            peer: a.clone(),
            epoch: 3,
            batch: batch("acme/a", &["old.acme", "kept.acme"]),
        }],
    );
    drop(tx);
    writer.join().expect("writer stops");

    let (restored, _) = restore(&path).expect("restore");
    assert_eq!(restored.max_epoch, 3);
    assert_eq!(restored.peer_routes[0].1.announce.len(), 2);

    // The next run: the peer re-sends one route in epoch max+1, then end-of-table.
    let next = restored.max_epoch + 1;
    let (tx, writer) = spawn_writer(path.clone(), 16, Arc::new(AtomicU64::new(0))).expect("writer");
    commit_all(
        &tx,
        vec![
            StoreOp::PeerBatch {
                peer: a.clone(),
                epoch: next,
                batch: batch("acme/a", &["kept.acme"]),
            },
            StoreOp::PurgeStale {
                peer: a,
                epoch: next,
            },
        ],
    );
    drop(tx);
    writer.join().expect("writer stops");
    let (restored, _) = restore(&path).expect("restore");
    let services: Vec<&str> = restored.peer_routes[0]
        .1
        .announce
        .iter()
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(services, ["kept.acme"]);
}

#[test]
fn events_are_read_back_in_order_and_filtered_by_time() {
    let path = scratch("events");
    let (tx, writer) = spawn_writer(path.clone(), 16, Arc::new(AtomicU64::new(0))).expect("writer");
    commit_all(
        &tx,
        ["session.up", "route.advertise"]
            .into_iter()
            .map(|kind| StoreOp::Event {
                kind: kind.into(),
                subject: "acme/a".into(),
                detail: String::new(),
            })
            .collect(),
    );
    drop(tx);
    writer.join().expect("writer stops");
    let all = events(&path, 0).expect("events");
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["session.up", "route.advertise"]);
    assert!(all[0].seq < all[1].seq);
    assert!(events(&path, u64::from(u32::MAX) * 4)
        .expect("events")
        .is_empty());
}
