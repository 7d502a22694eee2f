//! Router tests: a harness that drives one router and records its outputs.

mod determinism;
mod manifests;
mod ownership;
mod props;
mod rules;
mod selection_props;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::manifest::{OriginManifest, Signatures, SignedManifest, VerifyError};
use crate::name::{NodeId, OrgId, ServiceName};
use crate::route::{Attrs, PathHop, ProtocolHint, Relationship};
use crate::router::{Input, Output, PeerConfig, Router, RouterConfig};
use crate::update::{Message, UpdateBatch};

/// A stand-in signature: the manifest's content, checked byte for byte.
/// It counts verifications so tests can prove they happen once per manifest.
#[derive(Clone, Default)]
pub(crate) struct FakeSigs {
    pub verifies: Rc<Cell<u32>>,
}

pub(crate) fn fake_signature(m: &OriginManifest) -> Vec<u8> {
    let mut names: Vec<&str> = m.services.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    format!("{}|{}|{}", m.origin, m.version, names.join(",")).into_bytes()
}

impl Signatures for FakeSigs {
    fn sign(&self, m: &OriginManifest) -> Vec<u8> {
        fake_signature(m)
    }
    fn verify(&self, m: &OriginManifest, sig: &[u8]) -> Result<(), VerifyError> {
        self.verifies.set(self.verifies.get() + 1);
        if sig == fake_signature(m).as_slice() {
            Ok(())
        } else {
            Err(VerifyError {
                signer: m.origin.clone(),
                reason: "signature mismatch".into(),
            })
        }
    }
}

pub(crate) fn t0() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

pub(crate) fn n(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub(crate) fn svc(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

/// A signed manifest for `origin` listing `services`.
pub(crate) fn manifest(origin: &str, version: u64, services: &[&str]) -> SignedManifest {
    let m = OriginManifest {
        origin: n(origin),
        version,
        services: services.iter().map(|s| svc(s)).collect(),
    };
    let signature = fake_signature(&m).into();
    SignedManifest {
        manifest: Arc::new(m),
        signature,
    }
}

/// Attributes with a path written as hops: `org/node` is a node hop, `org` an org hop.
pub(crate) fn attrs(origin: &str, path: &[&str], metric: u32) -> Arc<Attrs> {
    let mut a = Attrs::originated(n(origin), 1, ProtocolHint::Tcp);
    a.metric = metric;
    a.path = path
        .iter()
        .map(|h| {
            if h.contains('/') {
                PathHop::Node(n(h))
            } else {
                PathHop::Org(OrgId::new(h).unwrap())
            }
        })
        .collect();
    Arc::new(a)
}

pub(crate) struct H {
    pub r: Router,
    pub now: Instant,
    pub out: Vec<Output>,
    pub sigs: FakeSigs,
}

impl H {
    pub fn new(local: &str) -> Self {
        let mut cfg = RouterConfig::new(n(local));
        cfg.mrai = Duration::ZERO;
        Self::with_config(cfg)
    }

    pub fn with_config(cfg: RouterConfig) -> Self {
        let sigs = FakeSigs::default();
        Self {
            r: Router::new(cfg, Box::new(sigs.clone()), t0()),
            now: t0(),
            out: Vec::new(),
            sigs,
        }
    }

    pub fn input(&mut self, i: Input) {
        self.r.handle(self.now, i);
        while let Some(o) = self.r.poll_output() {
            self.out.push(o);
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.input(Input::Tick);
    }

    /// Adds a peer and brings its session up.
    pub fn peer(&mut self, id: &str, role: Relationship) {
        self.peer_with(PeerConfig::new(n(id), role));
    }

    pub fn peer_with(&mut self, cfg: PeerConfig) {
        let id = cfg.id.clone();
        self.r.add_peer(cfg).unwrap();
        self.input(Input::SessionUp { peer: id });
    }

    pub fn manifest(&mut self, origin: &str, version: u64, services: &[&str]) {
        self.input(Input::Manifest {
            from: None,
            manifest: manifest(origin, version, services),
        });
    }

    pub fn announce(&mut self, peer: &str, service: &str, a: Arc<Attrs>) {
        let batch = UpdateBatch {
            attrs: vec![a],
            announce: vec![(svc(service), 0)],
            withdraw: vec![],
        };
        self.input(Input::Update {
            peer: n(peer),
            batch,
        });
    }

    pub fn withdraw(&mut self, peer: &str, service: &str) {
        let batch = UpdateBatch {
            withdraw: vec![svc(service)],
            ..UpdateBatch::default()
        };
        self.input(Input::Update {
            peer: n(peer),
            batch,
        });
    }

    /// The next hop of the best route (`"local"` for an own route).
    pub fn best_hop(&self, service: &str) -> Option<String> {
        self.r.best(&svc(service)).map(|b| {
            b.next_hop
                .map_or_else(|| "local".to_string(), |h| h.to_string())
        })
    }

    /// Takes the recorded outputs.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Update batches sent to `peer` in the recorded outputs.
    pub fn batches_to(&self, peer: &str) -> Vec<UpdateBatch> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    peer: p,
                    message: Message::Update(b),
                } if p.as_str() == peer => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// `(service, attrs)` announced to `peer` in the recorded outputs.
    pub fn announced_to(&self, peer: &str) -> Vec<(String, Arc<Attrs>)> {
        self.batches_to(peer)
            .into_iter()
            .flat_map(|b| {
                b.announce
                    .iter()
                    .map(|(s, i)| (s.to_string(), b.attrs[*i as usize].clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Services withdrawn towards `peer` in the recorded outputs.
    pub fn withdrawn_to(&self, peer: &str) -> Vec<String> {
        self.batches_to(peer)
            .into_iter()
            .flat_map(|b| b.withdraw.into_iter().map(|s| s.to_string()))
            .collect()
    }
}

pub(crate) fn has_output(out: &[Output], f: impl Fn(&Output) -> bool) -> bool {
    out.iter().any(f)
}
