//! The contract of lib.rs: the same inputs at the same instants give the same
//! outputs, in the same order. The table is a hash map with a random seed per
//! instance, so two routers in one process iterate it in different orders; any
//! output order that leaked from it would show up here.

use std::time::Duration;

use super::*;
use crate::route::Relationship::*;

const SERVICES: usize = 300;

fn names() -> Vec<String> {
    (0..SERVICES).map(|i| format!("s{i:03}.z")).collect()
}

/// Runs one script of inputs on a fresh router and returns every output.
fn script() -> Vec<Output> {
    let names = names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut h = H::new("a/r");
    for p in ["a/p1", "a/p2", "a/p3"] {
        let mut cfg = PeerConfig::new(n(p), Internal);
        cfg.graceful_restart = true;
        h.peer_with(cfg);
    }
    let batch = |peer: &str, metric: u32| UpdateBatch {
        attrs: vec![attrs("z/o", &[peer, "z"], metric)],
        announce: names.iter().map(|s| (svc(s), 0)).collect(),
        withdraw: vec![],
    };
    // 1. Routes arrive before their manifest (invalid), then the manifest
    //    validates them all at once.
    h.input(Input::Update {
        peer: n("a/p1"),
        batch: batch("a/p1", 5),
    });
    h.manifest("z/o", 1, &refs);
    h.input(Input::Update {
        peer: n("a/p2"),
        batch: batch("a/p2", 50),
    });
    // 2. A link-cost change moves every best path to p2, and back.
    h.input(Input::LinkCost {
        peer: n("a/p1"),
        cost: 1000,
    });
    h.input(Input::LinkCost {
        peer: n("a/p1"),
        cost: 10,
    });
    // 3. A session loss moves every best path to p2.
    h.input(Input::SessionDown {
        peer: n("a/p1"),
        graceful: false,
    });
    // 4. A graceful restart of p2: stale, then purged when the window ends.
    h.input(Input::SessionDown {
        peer: n("a/p2"),
        graceful: true,
    });
    h.advance(Duration::from_secs(121));
    // 5. The manifest drops half of the services.
    h.manifest("z/o", 2, &refs[..SERVICES / 2]);
    h.take()
}

fn best_changed_services(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::BestChanged { service, .. } => Some(service.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_routers_fed_the_same_inputs_give_the_same_outputs_in_the_same_order() {
    let a = script();
    let b = script();
    assert!(
        best_changed_services(&a).len() >= 4 * SERVICES,
        "the script moves every best path several times"
    );
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "output {i} differs");
    }
}

#[test]
fn a_session_loss_reports_best_path_changes_in_service_order() {
    let names = names();
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    h.manifest("z/o", 1, &refs);
    for (p, metric) in [("a/p1", 5), ("a/p2", 50)] {
        h.input(Input::Update {
            peer: n(p),
            batch: UpdateBatch {
                attrs: vec![attrs("z/o", &[p, "z"], metric)],
                announce: names.iter().map(|s| (svc(s), 0)).collect(),
                withdraw: vec![],
            },
        });
    }
    h.take();
    h.input(Input::SessionDown {
        peer: n("a/p1"),
        graceful: false,
    });
    let changed = best_changed_services(&h.take());
    assert_eq!(changed, names, "every service, sorted by name");
}
