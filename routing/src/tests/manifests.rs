//! Manifest refresh and forwarding: a newer manifest reaches every peer that holds the
//! origin's routes, even when no route changes (certificate renewal re-signs it).

use super::*;
use crate::route::Relationship;

fn manifests_to(out: &[Output], peer: &str) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                peer: p,
                message: Message::Manifest(m),
            } if p.as_str() == peer => Some(m.manifest.version),
            _ => None,
        })
        .collect()
}

#[test]
fn refreshing_the_own_manifest_sends_a_newer_version_to_peers_holding_the_old_one() {
    let mut h = H::new("acme/a");
    h.peer("acme/b", Relationship::Internal);
    h.input(Input::Originate {
        service: svc("books.acme"),
        protocol: crate::route::ProtocolHint::Tcp,
    });
    assert_eq!(manifests_to(&h.take(), "acme/b"), vec![1]);
    h.input(Input::RefreshManifest);
    assert_eq!(
        manifests_to(&h.take(), "acme/b"),
        vec![2],
        "no route changed, yet v2 goes out"
    );
    assert_eq!(
        h.r.manifest(&n("acme/a")).map(|m| m.manifest.version),
        Some(2)
    );
    // The route itself is still valid under the newer manifest.
    assert_eq!(h.best_hop("books.acme").as_deref(), Some("local"));
}

#[test]
fn refreshing_without_originations_sends_nothing() {
    let mut h = H::new("acme/a");
    h.peer("acme/b", Relationship::Internal);
    h.take();
    h.input(Input::RefreshManifest);
    assert!(manifests_to(&h.take(), "acme/b").is_empty());
}

#[test]
fn a_newer_manifest_is_forwarded_to_peers_that_hold_the_older_one_but_not_back() {
    let mut h = H::new("acme/b");
    h.peer("acme/a", Relationship::Internal);
    h.peer("acme/c", Relationship::Internal);
    h.input(Input::Manifest {
        from: Some(n("acme/a")),
        manifest: manifest("acme/a", 1, &["books.acme"]),
    });
    h.announce("acme/a", "books.acme", attrs("acme/a", &["acme/a"], 0));
    assert_eq!(manifests_to(&h.take(), "acme/c"), vec![1]);

    h.input(Input::Manifest {
        from: Some(n("acme/a")),
        manifest: manifest("acme/a", 2, &["books.acme"]),
    });
    let out = h.take();
    assert_eq!(manifests_to(&out, "acme/c"), vec![2]);
    assert!(
        manifests_to(&out, "acme/a").is_empty(),
        "never back to the sender"
    );
    // An equal version is not forwarded again.
    h.input(Input::Manifest {
        from: Some(n("acme/c")),
        manifest: manifest("acme/a", 2, &["books.acme"]),
    });
    assert!(manifests_to(&h.take(), "acme/c").is_empty());
}

#[test]
fn a_bulk_origination_signs_one_manifest_and_shares_one_attribute_set() {
    let mut h = H::new("acme/a");
    h.peer("acme/b", Relationship::Internal);
    h.take();
    let routes: Vec<(ServiceName, crate::route::ProtocolHint)> = (0..5_000)
        .map(|i| (svc(&format!("s{i}.acme")), crate::route::ProtocolHint::Tcp))
        .collect();
    h.input(Input::OriginateMany {
        routes: routes.clone(),
    });
    let out = h.take();
    assert_eq!(
        manifests_to(&out, "acme/b"),
        vec![1],
        "one manifest version"
    );
    let announced: Vec<(String, Arc<Attrs>)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                peer,
                message: Message::Update(b),
            } if peer.as_str() == "acme/b" => Some(b),
            _ => None,
        })
        .flat_map(|b| {
            b.announce
                .iter()
                .map(|(s, i)| (s.as_str().to_owned(), b.attrs[*i as usize].clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(announced.len(), 5_000);
    assert!(
        announced.windows(2).all(|w| w[0].1 == w[1].1),
        "one attribute set"
    );
    assert_eq!(
        h.r.manifest(&n("acme/a"))
            .map(|m| m.manifest.services.len()),
        Some(5_000)
    );
    // Again: nothing changes, nothing is signed.
    h.input(Input::OriginateMany { routes });
    assert!(h.take().is_empty());
    // A bulk withdrawal: one more version, every route withdrawn.
    let gone: Vec<ServiceName> = (0..2_500).map(|i| svc(&format!("s{i}.acme"))).collect();
    h.input(Input::StopOriginatingMany { services: gone });
    let own = h.r.manifest(&n("acme/a")).map(|m| m.manifest.clone());
    assert_eq!(own.as_ref().map(|m| m.version), Some(2), "one more version");
    assert_eq!(own.map(|m| m.services.len()), Some(2_500));
    assert_eq!(h.best_hop("s0.acme"), None);
    assert_eq!(h.best_hop("s4999.acme").as_deref(), Some("local"));
}
