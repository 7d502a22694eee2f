//! One test per rule of import, decision, export and session handling.

use std::time::Duration;

use super::*;
use crate::router::DisconnectReason;
use crate::update::UpdateError;
use Relationship::*;

/// `a/r` with two internal peers that both carry `books.z` from origin `z/o`.
fn two_paths() -> H {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    h.manifest("z/o", 1, &["books.z"]);
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    h.announce("a/p2", "books.z", attrs("z/o", &["a/p2", "z"], 50));
    h
}

#[test]
fn withdrawing_a_non_best_path_leaves_the_best_in_place() {
    let mut h = two_paths();
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    h.take();
    h.withdraw("a/p2", "books.z");
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    let out = h.take();
    assert!(!has_output(&out, |o| matches!(
        o,
        Output::BestChanged { .. }
    )));
    assert_eq!(h.r.paths(&svc("books.z")).len(), 1);
}

#[test]
fn withdrawing_the_best_path_promotes_the_next_at_once_without_asking_peers() {
    let mut h = two_paths();
    h.take();
    h.withdraw("a/p1", "books.z");
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p2"));
    let out = h.take();
    assert!(has_output(&out, |o| matches!(o,
        Output::BestChanged { best: Some(b), .. } if b.next_hop == Some(n("a/p2")))));
    // Nothing is asked of any peer: p1 is offered the new best path, and p2
    // only loses the path it had via p1 (split horizon), never a request.
    h.out = out;
    assert_eq!(h.announced_to("a/p1").len(), 1);
    assert!(h.announced_to("a/p2").is_empty());
    assert_eq!(h.withdrawn_to("a/p2"), ["books.z"]);
}

#[test]
fn a_withdrawal_removes_only_the_senders_path() {
    let mut h = two_paths();
    h.withdraw("a/p2", "books.z");
    h.withdraw("a/p2", "books.z");
    assert_eq!(h.r.paths(&svc("books.z")).len(), 1);
    assert_eq!(h.r.peer_routes(&n("a/p1")), 1);
    assert_eq!(h.r.peer_routes(&n("a/p2")), 0);
    assert_eq!(h.r.adj_rib_in(&n("a/p1")).len(), 1);
    assert!(h.r.adj_rib_in(&n("a/p2")).is_empty());
}

#[test]
fn a_path_through_this_node_is_dropped_as_a_loop() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.manifest("z/o", 1, &["books.z"]);
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "a/r", "z"], 5));
    assert_eq!(h.best_hop("books.z"), None);
    assert_eq!(h.r.stats().routes_rejected_loop, 1);
}

#[test]
fn a_route_that_left_the_org_and_comes_back_is_a_loop() {
    let mut h = H::new("a/r");
    h.peer("b/x", Customer);
    h.manifest("z/o", 1, &["books.z"]);
    h.announce("b/x", "books.z", attrs("z/o", &["b", "a", "z"], 5));
    assert_eq!(h.best_hop("books.z"), None);
    assert_eq!(h.r.stats().routes_rejected_loop, 1);
}

#[test]
fn an_over_long_path_is_treated_as_a_withdrawal() {
    let mut cfg = RouterConfig::new(n("a/r"));
    cfg.mrai = Duration::ZERO;
    cfg.max_path_len = 2;
    let mut h = H::with_config(cfg);
    h.peer("b/x", Customer);
    h.manifest("z/o", 1, &["books.z"]);
    h.announce("b/x", "books.z", attrs("z/o", &["b", "z"], 5));
    assert!(h.best_hop("books.z").is_some());
    h.announce("b/x", "books.z", attrs("z/o", &["b", "y", "z"], 5));
    assert_eq!(h.best_hop("books.z"), None);
    assert_eq!(h.r.stats().routes_rejected_malformed, 1);
}

#[test]
fn an_oversized_batch_closes_the_session_with_a_typed_reason() {
    let mut cfg = RouterConfig::new(n("a/r"));
    cfg.batch_limits.max_entries = 2;
    let mut h = H::with_config(cfg);
    h.peer("a/p1", Internal);
    let batch = UpdateBatch {
        withdraw: vec![svc("a.z"), svc("b.z"), svc("c.z")],
        ..UpdateBatch::default()
    };
    h.input(Input::Update {
        peer: n("a/p1"),
        batch,
    });
    assert!(has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::Malformed(UpdateError::BatchTooLarge { len: 3, max: 2 }),
            ..
        }
    )));
    assert!(!h.r.peer_up(&n("a/p1")));
}

#[test]
fn an_attribute_index_out_of_range_closes_the_session() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    let batch = UpdateBatch {
        attrs: vec![],
        announce: vec![(svc("books.z"), 0)],
        withdraw: vec![],
    };
    h.input(Input::Update {
        peer: n("a/p1"),
        batch,
    });
    assert!(has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::Malformed(UpdateError::BadAttrIndex { .. }),
            ..
        }
    )));
}

#[test]
fn exceeding_max_routes_disconnects_and_drops_the_peers_paths() {
    let mut h = H::new("a/r");
    let mut cfg = PeerConfig::new(n("b/x"), Customer);
    cfg.max_routes = Some(2);
    h.peer_with(cfg);
    h.manifest("z/o", 1, &["s1.z", "s2.z", "s3.z"]);
    for s in ["s1.z", "s2.z"] {
        h.announce("b/x", s, attrs("z/o", &["b", "z"], 1));
    }
    assert!(!has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect { .. }
    )));
    h.announce("b/x", "s3.z", attrs("z/o", &["b", "z"], 1));
    assert!(has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::MaxRoutes { limit: 2 },
            ..
        }
    )));
    assert_eq!(h.r.services_known(), 0);
}

#[test]
fn a_batch_over_max_routes_is_refused_before_anything_is_applied_or_sent() {
    let mut h = H::new("a/r");
    let mut cfg = PeerConfig::new(n("b/x"), Customer);
    cfg.max_routes = Some(2);
    h.peer_with(cfg);
    h.peer("c/y", Customer);
    h.manifest("z/o", 1, &["s1.z", "s2.z", "s3.z", "s4.z"]);
    for s in ["s1.z", "s2.z"] {
        h.announce("b/x", s, attrs("z/o", &["b", "z"], 1));
    }
    h.take();
    // Two new services on top of the two held: over the limit of 2.
    let batch = UpdateBatch {
        attrs: vec![attrs("z/o", &["b", "z"], 1)],
        announce: vec![(svc("s3.z"), 0), (svc("s4.z"), 0)],
        withdraw: vec![],
    };
    h.input(Input::Update {
        peer: n("b/x"),
        batch,
    });
    // 1. The session is closed with the reason.
    assert!(has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect {
            reason: DisconnectReason::MaxRoutes { limit: 2 },
            ..
        }
    )));
    assert_eq!(h.r.stats().max_routes_exceeded, 1);
    // 2. Nothing of the refused batch was installed, reported or exported.
    for s in ["s3.z", "s4.z"] {
        assert!(
            !has_output(&h.out, |o| matches!(
                o,
                Output::BestChanged { service, .. } if service.as_str() == s
            )),
            "{s} reported"
        );
        assert!(!h.announced_to("c/y").iter().any(|(x, _)| x == s));
        assert!(!h.withdrawn_to("c/y").iter().any(|x| x == s));
    }
    // 3. The paths held before go with the session, as on any session loss.
    for s in ["s1.z", "s2.z"] {
        assert!(has_output(&h.out, |o| matches!(
            o,
            Output::BestChanged { service, best: None } if service.as_str() == s
        )));
    }
    assert_eq!(h.r.services_known(), 0);
    assert_eq!(h.r.peer_routes(&n("b/x")), 0);
}

#[test]
fn a_batch_that_replaces_paths_within_max_routes_is_accepted() {
    let mut h = H::new("a/r");
    let mut cfg = PeerConfig::new(n("b/x"), Customer);
    cfg.max_routes = Some(2);
    h.peer_with(cfg);
    h.manifest("z/o", 1, &["s1.z", "s2.z", "s3.z"]);
    for s in ["s1.z", "s2.z"] {
        h.announce("b/x", s, attrs("z/o", &["b", "z"], 1));
    }
    // Withdraws one and announces one (plus a re-announcement): still 2 paths.
    let batch = UpdateBatch {
        attrs: vec![attrs("z/o", &["b", "z"], 1)],
        announce: vec![(svc("s3.z"), 0), (svc("s2.z"), 0)],
        withdraw: vec![svc("s1.z")],
    };
    h.input(Input::Update {
        peer: n("b/x"),
        batch,
    });
    assert!(!has_output(&h.out, |o| matches!(
        o,
        Output::Disconnect { .. }
    )));
    assert_eq!(h.r.peer_routes(&n("b/x")), 2);
    assert_eq!(h.best_hop("s3.z").as_deref(), Some("b/x"));
    assert_eq!(h.best_hop("s1.z"), None);
}

#[test]
fn a_route_is_valid_only_once_its_origins_manifest_lists_it() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    assert_eq!(h.best_hop("books.z"), None, "no manifest yet");
    h.manifest("z/o", 1, &["other.z"]);
    assert_eq!(h.best_hop("books.z"), None, "manifest does not list it");
    h.manifest("z/o", 2, &["other.z", "books.z"]);
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    h.manifest("z/o", 3, &["other.z"]);
    assert_eq!(h.best_hop("books.z"), None, "dropped from the manifest");
}

#[test]
fn manifests_are_verified_once_not_per_route() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    let services: Vec<String> = (0..100).map(|i| format!("s{i}.z")).collect();
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    for from in ["a/p1", "a/p2", "a/p1"] {
        h.input(Input::Manifest {
            from: Some(n(from)),
            manifest: manifest("z/o", 1, &names),
        });
    }
    for s in &names {
        h.announce("a/p1", s, attrs("z/o", &["a/p1", "z"], 5));
    }
    assert_eq!(h.sigs.verifies.get(), 1);
    assert_eq!(h.r.loc_rib().len(), 100);
}

#[test]
fn a_forged_or_replayed_manifest_is_refused() {
    let mut h = H::new("a/r");
    h.manifest("z/o", 2, &["books.z"]);
    let mut forged = manifest("z/o", 3, &["books.z", "stolen.z"]);
    forged.signature = b"not a signature".to_vec().into();
    for _ in 0..2 {
        h.input(Input::Manifest {
            from: Some(n("a/p1")),
            manifest: forged.clone(),
        });
    }
    assert_eq!(h.r.manifest(&n("z/o")).unwrap().manifest.version, 2);
    assert_eq!(h.r.stats().manifests_rejected, 2);
    // The second copy of the forgery was answered from the rejection cache.
    assert_eq!(h.sigs.verifies.get(), 2);
    h.manifest("z/o", 1, &["old.z"]);
    assert_eq!(h.r.stats().manifests_not_newer, 1);
    assert_eq!(h.r.manifest(&n("z/o")).unwrap().manifest.version, 2);
}

#[test]
fn routes_from_a_provider_go_only_to_customers_and_inside_the_org() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("b/cust", Customer);
    h.peer("c/prov", Provider);
    h.peer("d/peer", Peer);
    h.peer("e/prov2", Provider);
    h.manifest("z/o", 1, &["books.z"]);
    h.take();
    h.announce("c/prov", "books.z", attrs("z/o", &["c", "z"], 5));
    assert_eq!(h.announced_to("b/cust").len(), 1);
    assert_eq!(h.announced_to("a/p1").len(), 1);
    assert!(h.announced_to("d/peer").is_empty());
    assert!(h.announced_to("e/prov2").is_empty());
    assert!(h.announced_to("c/prov").is_empty(), "split horizon");
    // Inside the org the route remembers it came from a provider.
    assert_eq!(h.announced_to("a/p1")[0].1.learned_from, Provider);
    // The computed Adj-RIB-Out agrees with what was sent.
    assert!(h.r.adj_rib_out(&n("d/peer")).is_empty());
    let out = h.r.adj_rib_out(&n("b/cust"));
    assert_eq!(out.len(), 1);
    let orgs: Vec<PathHop> = ["a", "c", "z"]
        .iter()
        .map(|o| PathHop::Org(OrgId::new(o).unwrap()))
        .collect();
    assert_eq!(out[0].1.path, orgs);
}

#[test]
fn a_route_learned_internally_from_a_provider_is_not_leaked_to_a_peer() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("d/peer", Peer);
    h.peer("b/cust", Customer);
    h.manifest("z/o", 1, &["books.z"]);
    h.take();
    let mut a = Attrs::clone(&attrs("z/o", &["a/p1", "c", "z"], 5));
    a.learned_from = Provider;
    h.announce("a/p1", "books.z", Arc::new(a));
    assert!(h.announced_to("d/peer").is_empty());
    assert_eq!(h.announced_to("b/cust").len(), 1);
}

#[test]
fn export_to_another_org_collapses_internal_hops_into_one_org_hop() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("b/x", Provider);
    h.manifest("a/o", 1, &["books.a"]);
    h.take();
    h.announce("a/p1", "books.a", attrs("a/o", &["a/p1", "a/o"], 5));
    let sent = h.announced_to("b/x");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.path, vec![PathHop::Org(OrgId::new("a").unwrap())]);
    assert!(has_output(&h.out, |o| matches!(o,
        Output::Send { peer, message: Message::Manifest(m) } if peer.as_str() == "b/x" && m.manifest.origin == n("a/o"))));
}

#[test]
fn export_inside_the_org_prepends_this_node_and_adds_the_link_cost() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    h.manifest("z/o", 1, &["books.z"]);
    h.take();
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    let sent = h.announced_to("a/p2");
    assert_eq!(sent[0].1.path[0], PathHop::Node(n("a/r")));
    assert_eq!(sent[0].1.metric, 15);
}

#[test]
fn the_manifest_goes_before_the_first_route_that_needs_it() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.take();
    h.input(Input::Originate {
        service: svc("books.a"),
        protocol: ProtocolHint::Http,
    });
    let sends: Vec<&Message> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::Send { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(matches!(sends[0], Message::Manifest(m) if m.manifest.version == 1));
    assert!(matches!(sends[1], Message::Update(b) if b.announce.len() == 1));
    assert_eq!(h.best_hop("books.a").as_deref(), Some("local"));
}

#[test]
fn session_up_sends_the_full_table_then_end_of_table() {
    let mut h = two_paths();
    h.input(Input::Originate {
        service: svc("own.a"),
        protocol: ProtocolHint::Tcp,
    });
    h.take();
    h.r.add_peer(PeerConfig::new(n("a/p3"), Internal)).unwrap();
    h.input(Input::SessionUp { peer: n("a/p3") });
    assert_eq!(h.announced_to("a/p3").len(), 2);
    assert!(matches!(
        h.out.last(),
        Some(Output::Send {
            message: Message::EndOfTable,
            ..
        })
    ));
}

#[test]
fn session_loss_withdraws_the_peers_paths() {
    let mut h = two_paths();
    h.input(Input::SessionDown {
        peer: n("a/p1"),
        graceful: false,
    });
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p2"));
    assert_eq!(h.r.peer_routes(&n("a/p1")), 0);
}

fn graceful_pair() -> H {
    let mut h = H::new("a/r");
    for p in ["a/p1", "a/p2"] {
        let mut cfg = PeerConfig::new(n(p), Internal);
        cfg.graceful_restart = true;
        h.peer_with(cfg);
    }
    h.manifest("z/o", 1, &["books.z", "cds.z"]);
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    h.announce("a/p1", "cds.z", attrs("z/o", &["a/p1", "z"], 5));
    h.input(Input::SessionDown {
        peer: n("a/p1"),
        graceful: true,
    });
    h
}

#[test]
fn a_graceful_restart_keeps_paths_as_stale_until_end_of_table() {
    let mut h = graceful_pair();
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    assert!(h.r.paths(&svc("books.z"))[0].stale);
    h.input(Input::SessionUp { peer: n("a/p1") });
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    assert!(!h.r.paths(&svc("books.z"))[0].stale);
    h.input(Input::EndOfTable { peer: n("a/p1") });
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    assert_eq!(h.best_hop("cds.z"), None, "not refreshed: purged");
}

#[test]
fn stale_paths_go_when_the_graceful_restart_window_ends() {
    let mut h = graceful_pair();
    assert!(h.r.poll_timeout().is_some());
    h.advance(Duration::from_secs(121));
    assert_eq!(h.best_hop("books.z"), None);
    assert_eq!(h.r.stats().graceful_restart_expired, 1);
}

#[test]
fn a_fresh_path_is_preferred_over_a_stale_one() {
    let mut h = graceful_pair();
    h.announce("a/p2", "books.z", attrs("z/o", &["a/p2", "z"], 500));
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p2"));
}

#[test]
fn announcements_inside_one_mrai_interval_leave_as_one_batch_but_a_withdrawal_goes_at_once() {
    let mut cfg = RouterConfig::new(n("a/r"));
    cfg.mrai = Duration::from_secs(1);
    let mut h = H::with_config(cfg);
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    h.manifest("z/o", 1, &["s1.z", "s2.z", "s3.z"]);
    // The full table went out at session up; the next batch may leave 1 s later.
    h.advance(Duration::from_secs(1));
    h.take();
    h.announce("a/p1", "s1.z", attrs("z/o", &["a/p1", "z"], 1));
    assert_eq!(h.batches_to("a/p2").len(), 1, "first change goes at once");
    h.advance(Duration::from_millis(100));
    h.announce("a/p1", "s2.z", attrs("z/o", &["a/p1", "z"], 1));
    h.announce("a/p1", "s3.z", attrs("z/o", &["a/p1", "z"], 1));
    assert_eq!(
        h.batches_to("a/p2").len(),
        1,
        "announcements held back by MRAI"
    );
    assert_eq!(h.r.poll_timeout(), Some(t0() + Duration::from_secs(2)));
    // A withdrawal is not paced (RFC 4271 9.2.1.1): it leaves now, with what was queued.
    h.withdraw("a/p1", "s1.z");
    let batches = h.batches_to("a/p2");
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].announce.len(), 2);
    assert_eq!(batches[1].withdraw, vec![svc("s1.z")]);
}

#[test]
fn a_higher_link_cost_moves_traffic_to_the_other_path() {
    let mut h = two_paths();
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p1"));
    h.input(Input::LinkCost {
        peer: n("a/p1"),
        cost: 1000,
    });
    assert_eq!(h.best_hop("books.z").as_deref(), Some("a/p2"));
}

#[test]
fn a_link_cost_change_re_announces_only_services_whose_best_path_is_affected() {
    let mut h = H::new("a/r");
    for p in ["a/p1", "a/p2", "a/p3"] {
        h.peer(p, Internal);
    }
    h.manifest("z/o", 1, &["s1.z", "s2.z"]);
    // s1 is best via p1; s2 is best via p2, and p1 has a worse path for it.
    h.announce("a/p1", "s1.z", attrs("z/o", &["a/p1", "z"], 5));
    h.announce("a/p2", "s1.z", attrs("z/o", &["a/p2", "z"], 50));
    h.announce("a/p2", "s2.z", attrs("z/o", &["a/p2", "z"], 5));
    h.announce("a/p1", "s2.z", attrs("z/o", &["a/p1", "z"], 50));
    h.take();

    // 1. A small change: both bests stay; only s1 (via p1) carries a new metric.
    h.input(Input::LinkCost {
        peer: n("a/p1"),
        cost: 20,
    });
    assert_eq!(h.best_hop("s1.z").as_deref(), Some("a/p1"));
    assert_eq!(h.best_hop("s2.z").as_deref(), Some("a/p2"));
    for p in ["a/p2", "a/p3"] {
        let sent = h.announced_to(p);
        assert_eq!(sent.len(), 1, "to {p}: {sent:?}");
        assert_eq!(sent[0].0, "s1.z");
        assert_eq!(sent[0].1.metric, 25, "5 announced + link cost 20");
    }
    assert!(
        h.batches_to("a/p1").is_empty(),
        "split horizon for s1, s2 untouched"
    );
    // The owner of the table learns s1's new metric; s2 is not reported.
    let reported: Vec<(String, Option<u64>)> = h
        .out
        .iter()
        .filter_map(|o| match o {
            Output::BestChanged { service, best } => {
                Some((service.as_str().to_owned(), best.as_ref().map(|b| b.metric)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(reported, [("s1.z".to_owned(), Some(25))]);
    h.take();

    // 2. A large change moves s1 to p2; s2 is still not re-announced to anyone.
    h.input(Input::LinkCost {
        peer: n("a/p1"),
        cost: 1000,
    });
    assert_eq!(h.best_hop("s1.z").as_deref(), Some("a/p2"));
    for p in ["a/p1", "a/p2", "a/p3"] {
        assert!(
            !h.announced_to(p).iter().any(|(s, _)| s == "s2.z"),
            "s2 re-announced to {p}"
        );
        assert!(!h.withdrawn_to(p).iter().any(|s| s == "s2.z"));
    }
    assert!(h.announced_to("a/p3").iter().any(|(s, _)| s == "s1.z"));
    assert!(h.announced_to("a/p1").iter().any(|(s, _)| s == "s1.z"));
    assert_eq!(h.withdrawn_to("a/p2"), vec!["s1.z".to_string()]);
}

#[test]
fn duration_max_timers_do_not_overflow() {
    let mut cfg = RouterConfig::new(n("a/r"));
    cfg.mrai = Duration::MAX;
    cfg.graceful_restart = Duration::MAX;
    let mut h = H::with_config(cfg);
    let mut gr = PeerConfig::new(n("a/p1"), Internal);
    gr.graceful_restart = true;
    h.peer_with(gr);
    h.peer("a/p2", Internal);
    h.manifest("z/o", 1, &["s1.z"]);
    h.take();
    // 1. An announcement after the full-table dump waits for an MRAI that never ends.
    h.announce("a/p1", "s1.z", attrs("z/o", &["a/p1", "z"], 5));
    assert!(h.batches_to("a/p2").is_empty());
    let wake = h.r.poll_timeout().unwrap();
    assert!(wake > h.now + Duration::from_secs(365 * 24 * 3600));
    // 2. A graceful session loss keeps the path as stale with a window that never ends.
    h.input(Input::SessionDown {
        peer: n("a/p1"),
        graceful: true,
    });
    assert!(h.r.paths(&svc("s1.z"))[0].stale);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.best_hop("s1.z").as_deref(), Some("a/p1"));
    assert_eq!(h.r.stats().graceful_restart_expired, 0);
    // 3. End-of-table purges it; the withdrawal is not paced, so it leaves now.
    h.input(Input::SessionUp { peer: n("a/p1") });
    h.input(Input::EndOfTable { peer: n("a/p1") });
    assert_eq!(h.best_hop("s1.z"), None);
    assert_eq!(h.withdrawn_to("a/p2"), vec!["s1.z".to_string()]);
}

#[test]
fn re_announcing_the_same_route_changes_nothing() {
    let mut h = two_paths();
    let before = h.r.paths(&svc("books.z"));
    h.take();
    h.now += Duration::from_secs(5);
    h.announce("a/p1", "books.z", attrs("z/o", &["a/p1", "z"], 5));
    assert!(h.take().is_empty());
    assert_eq!(h.r.paths(&svc("books.z")), before);
}

#[test]
fn aggregates_resolve_by_longest_suffix() {
    let mut h = H::new("a/r");
    h.peer("a/p1", Internal);
    h.peer("a/p2", Internal);
    h.manifest("z/o", 1, &["*.z"]);
    h.manifest("z/q", 1, &["*.eu.z"]);
    h.announce("a/p1", "*.z", attrs("z/o", &["a/p1", "z"], 1));
    h.announce("a/p2", "*.eu.z", attrs("z/q", &["a/p2", "z"], 1));
    let hop = |name: &str| {
        h.r.resolve(&svc(name))
            .map(|(k, b)| (k.to_string(), b.next_hop))
    };
    assert_eq!(hop("api.eu.z"), Some(("*.eu.z".into(), Some(n("a/p2")))));
    assert_eq!(hop("api.us.z"), Some(("*.z".into(), Some(n("a/p1")))));
    assert_eq!(hop("api.y"), None);
}

#[test]
fn peer_roles_must_match_org_membership() {
    let mut h = H::new("a/r");
    assert!(h.r.add_peer(PeerConfig::new(n("b/x"), Internal)).is_err());
    assert!(h.r.add_peer(PeerConfig::new(n("a/x"), Customer)).is_err());
    assert!(h.r.add_peer(PeerConfig::new(n("a/r"), Internal)).is_err());
    assert!(h.r.add_peer(PeerConfig::new(n("a/x"), Internal)).is_ok());
    assert!(h.r.add_peer(PeerConfig::new(n("a/x"), Internal)).is_err());
}

#[test]
fn an_external_peer_cannot_show_internal_hops_or_originate_for_our_org() {
    let mut h = H::new("a/r");
    h.peer("b/x", Customer);
    h.manifest("z/o", 1, &["books.z"]);
    h.manifest("a/o", 1, &["books.a"]);
    h.announce("b/x", "books.z", attrs("z/o", &["b/x", "z"], 1));
    h.announce("b/x", "books.a", attrs("a/o", &["b", "a/o"], 1));
    assert_eq!(h.r.services_known(), 0);
    assert_eq!(h.r.stats().routes_rejected_malformed, 2);
}
