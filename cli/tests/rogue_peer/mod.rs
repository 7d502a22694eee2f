//! A rogue Trellis node played by the test process: it loads a joined node's real key and
//! certificate (so the TLS handshake succeeds), dials a real daemon with the daemon's own
//! transport, runs a real Cap'n Proto `PeerSession` over the stream, and then sends
//! whatever the test asks — forged manifests, lying updates, malformed batches.
//!
//! The session lives on its own thread (a current-thread tokio runtime with a `LocalSet`,
//! since capnp-rpc is `!Send`), so it keeps answering the daemon's calls and QUIC keeps
//! acknowledging packets while the test blocks on the `trellis` CLI. The test hands it
//! jobs over a channel and waits for each answer.

#![allow(dead_code)]

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
use trellis_daemon::codec::{self, NodeSignatures};
use trellis_daemon::node::trust::TrustStore;
use trellis_daemon::node::Paths;
use trellis_daemon::transport::{self, Admit, Identity, Limits};
use trellis_daemon::{pki, tls};
use trellis_routing::{
    Attrs, NodeId, OriginManifest, PathHop, ProtocolHint, Relationship, ServiceName, Signatures,
    SignedManifest, UpdateBatch,
};
use trellis_schemas::peering_capnp::{peer_session, session_open, update_batch, CloseReason};

/// How long any one step may take before the rogue gives up (a hung daemon fails the test
/// instead of hanging it).
const STEP: Duration = Duration::from_secs(30);

/// What the daemon called on the rogue's `PeerSession`.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// The node id in the daemon's `open`.
    pub opened_by: Option<String>,
    /// `update` calls received.
    pub updates: usize,
    /// `signed` calls received.
    pub signed: usize,
    /// `endOfTable` received.
    pub end_of_table: bool,
    /// The daemon's `close`: reason number and message.
    pub close: Option<(u16, String)>,
}

/// How the QUIC connection ended, as the rogue saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The daemon closed it with an application error code (a `CloseReason`) and text.
    ByPeer { code: u64, reason: String },
    /// Anything else (timeout, reset, closed locally), as text.
    Other(String),
}

impl Closed {
    /// Whether the daemon closed the connection with `reason`.
    pub fn is(&self, reason: CloseReason) -> bool {
        matches!(self, Closed::ByPeer { code, .. } if *code == reason as u64)
    }
}

/// The live session, owned by the rogue's thread.
struct Session {
    conn: quinn::Connection,
    remote: peer_session::Client,
    inbox: Rc<RefCell<Inbox>>,
}

type Job = Box<dyn FnOnce(Rc<Session>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A connected rogue node. Dropping it closes the connection and ends its thread.
pub struct Rogue {
    /// The node it is (from its certificate).
    pub node: NodeId,
    signer: NodeSignatures,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The rogue's own `PeerSession`: answers `open` with a valid hello, accepts everything
/// else, and records what it got.
struct RogueServer {
    local: NodeId,
    inbox: Rc<RefCell<Inbox>>,
    opened: RefCell<Option<oneshot::Sender<()>>>,
}

fn write_hello(local: &NodeId, mut b: session_open::Builder<'_>) {
    b.set_protocol_version(trellis_schemas::PROTOCOL_VERSION);
    b.set_node_id(local.as_str());
    b.set_org_id(local.org_str());
    b.set_hold_time_secs(0);
    b.set_graceful_restart_secs(0);
    let _ = b.init_capabilities(0);
}

impl peer_session::Server for RogueServer {
    async fn open(
        self: Rc<Self>,
        params: peer_session::OpenParams,
        mut results: peer_session::OpenResults,
    ) -> Result<(), capnp::Error> {
        let node = params.get()?.get_hello()?.get_node_id()?.to_string()?;
        self.inbox.borrow_mut().opened_by = Some(node);
        write_hello(&self.local, results.get().init_hello());
        if let Some(tx) = self.opened.borrow_mut().take() {
            let _ = tx.send(());
        }
        Ok(())
    }

    async fn update(
        self: Rc<Self>,
        _: peer_session::UpdateParams,
        _: peer_session::UpdateResults,
    ) -> Result<(), capnp::Error> {
        self.inbox.borrow_mut().updates += 1;
        Ok(())
    }

    async fn end_of_table(
        self: Rc<Self>,
        _: peer_session::EndOfTableParams,
        _: peer_session::EndOfTableResults,
    ) -> Result<(), capnp::Error> {
        self.inbox.borrow_mut().end_of_table = true;
        Ok(())
    }

    async fn keepalive(
        self: Rc<Self>,
        params: peer_session::KeepaliveParams,
        mut results: peer_session::KeepaliveResults,
    ) -> Result<(), capnp::Error> {
        let sent = params.get()?.get_ka()?.get_sent_at_ms();
        results.get().init_ka().set_sent_at_ms(sent);
        Ok(())
    }

    async fn signed(
        self: Rc<Self>,
        _: peer_session::SignedParams,
        _: peer_session::SignedResults,
    ) -> Result<(), capnp::Error> {
        self.inbox.borrow_mut().signed += 1;
        Ok(())
    }

    async fn close(
        self: Rc<Self>,
        params: peer_session::CloseParams,
        _: peer_session::CloseResults,
    ) -> Result<(), capnp::Error> {
        let close = params.get()?.get_close()?;
        // Raw number: an unknown reason is still recorded.
        let reason = match close.get_reason() {
            Ok(r) => r as u16,
            Err(capnp::NotInSchema(n)) => n,
        };
        let message = close.get_message()?.to_string().unwrap_or_default();
        self.inbox.borrow_mut().close = Some((reason, message));
        Ok(())
    }
}

/// What the rogue needs from a joined node's data dir.
struct Loaded {
    identity: Identity,
    trust: Arc<TrustStore>,
    signer: NodeSignatures,
}

fn load(data_dir: &Path) -> Result<Loaded, String> {
    let paths = Paths::new(data_dir);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let ca_der = pki::pem_to_der(&read(&paths.ca_cert())?).map_err(|e| e.to_string())?;
    let cert_der = pki::pem_to_der(&read(&paths.cert())?).map_err(|e| e.to_string())?;
    let key = pki::load_key(&read(&paths.key())?).map_err(|e| e.to_string())?;
    let cert = pki::parse_node_cert(&cert_der).map_err(|e| e.to_string())?;
    let trust = Arc::new(TrustStore::new());
    trust.trust_ca(&cert.node.org(), ca_der);
    let signer = NodeSignatures::new(cert.node.clone(), &key, cert_der.clone(), trust.clone())
        .map_err(|e| e.to_string())?;
    let identity = Identity {
        node: cert.node,
        chain: vec![cert_der.into()],
        key: tls::private_key(key.serialize_der()),
    };
    Ok(Loaded {
        identity,
        trust,
        signer,
    })
}

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Dials `peer` at `addr`, opens the RPC session and exchanges both `open`s.
async fn establish(
    identity: Identity,
    trust: Arc<TrustStore>,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(quinn::Endpoint, Session), String> {
    let limits = Limits::default();
    // The rogue never accepts: its listener admits nobody.
    let admit: Admit = Arc::new(|_: &NodeId| false);
    let server = transport::server_config(&identity, trust.clone(), admit, &limits)
        .map_err(|e| err("server config")(&e))?;
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let endpoint =
        transport::endpoint(listen, server, &identity).map_err(|e| err("endpoint")(&e))?;
    let conn = transport::dial(&endpoint, addr, &identity, trust, peer.clone(), &limits)
        .await
        .map_err(|e| err("dial")(&e))?;
    let (send, recv) = conn.open_bi().await.map_err(|e| err("open_bi")(&e))?;

    let inbox = Rc::new(RefCell::new(Inbox::default()));
    let (opened_tx, opened_rx) = oneshot::channel();
    let local = RogueServer {
        local: identity.node.clone(),
        inbox: inbox.clone(),
        opened: RefCell::new(Some(opened_tx)),
    };
    let network = twoparty::VatNetwork::new(
        recv.compat(),
        send.compat_write(),
        Side::Client,
        trellis_schemas::reader_options(),
    );
    let mut rpc = RpcSystem::new(
        Box::new(network),
        Some(capnp_rpc::new_client::<peer_session::Client, _>(local).client),
    );
    let remote: peer_session::Client = rpc.bootstrap(Side::Server);
    tokio::task::spawn_local(async move {
        let _ = rpc.await;
    });

    let mut open = remote.open_request();
    write_hello(&identity.node, open.get().init_hello());
    let reply = tokio::time::timeout(STEP, open.send().promise)
        .await
        .map_err(|_| "no answer to open".to_owned())?
        .map_err(|e| err("open")(&e))?;
    let theirs = reply
        .get()
        .and_then(|r| r.get_hello())
        .and_then(|h| Ok(h.get_node_id()?.to_string()?))
        .map_err(|e| err("open reply")(&e))?;
    if theirs != peer.as_str() {
        return Err(format!("open reply names {theirs}, expected {peer}"));
    }
    tokio::time::timeout(STEP, opened_rx)
        .await
        .map_err(|_| "the daemon never called open".to_owned())?
        .map_err(|_| "the session ended before the daemon's open".to_owned())?;
    Ok((
        endpoint,
        Session {
            conn,
            remote,
            inbox,
        },
    ))
}

impl Rogue {
    /// Connects as the node whose data dir is `data_dir` to `peer` (a node id) listening
    /// on 127.0.0.1:`port`, and completes the `open` exchange.
    pub fn connect(data_dir: &Path, peer: &str, port: u16) -> Result<Self, String> {
        let Loaded {
            identity,
            trust,
            signer,
        } = load(data_dir)?;
        let node = identity.node.clone();
        let peer = NodeId::new(peer).map_err(|e| err("peer id")(&e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rogue runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let (endpoint, session) = match establish(identity, trust, peer, addr).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let session = Rc::new(session);
                while let Some(job) = jobs_rx.recv().await {
                    job(session.clone()).await;
                }
                session.conn.close(0u32.into(), b"rogue done");
                let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                node,
                signer,
                jobs: Some(jobs_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the rogue thread died".into())
            }
        }
    }

    /// Runs `job` on the session thread and waits for its result.
    fn run<T, F, Fut>(&self, job: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Rc<Session>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let boxed: Job = Box::new(move |session| {
            Box::pin(async move {
                let _ = tx.send(job(session).await);
            })
        });
        self.jobs
            .as_ref()
            .expect("jobs")
            .send(boxed)
            .expect("the rogue thread is gone");
        rx.recv().expect("the rogue thread dropped a job")
    }

    /// Signs `manifest` with this node's key and certificate, whatever origin it claims.
    pub fn sign(&self, manifest: OriginManifest) -> SignedManifest {
        let signature = self.signer.sign(&manifest);
        SignedManifest {
            manifest: Arc::new(manifest),
            signature: signature.into(),
        }
    }

    /// Sends `manifest` in a `signed` call; `Ok` once the daemon acknowledged it.
    pub fn send_manifest(&self, manifest: SignedManifest) -> Result<(), String> {
        self.run(move |s| async move {
            let mut req = s.remote.signed_request();
            codec::manifest::write_manifest(&manifest, req.get().init_envelope())
                .map_err(|e| err("write manifest")(&e))?;
            answer(req.send().promise).await
        })
    }

    /// Sends `batch` in an `update` call; `Ok` once the daemon acknowledged it.
    pub fn send_update(&self, batch: UpdateBatch) -> Result<(), String> {
        self.run(move |s| async move {
            let mut req = s.remote.update_request();
            codec::update::write_batch(&batch, req.get().init_batch());
            answer(req.send().promise).await
        })
    }

    /// Sends an `update` whose batch `build` writes with the raw capnp builders (anything,
    /// including what the codec would never write).
    pub fn send_raw_update<F>(&self, build: F) -> Result<(), String>
    where
        F: for<'a> FnOnce(update_batch::Builder<'a>) -> capnp::Result<()> + Send + 'static,
    {
        self.run(move |s| async move {
            let mut req = s.remote.update_request();
            build(req.get().init_batch()).map_err(|e| err("build batch")(&e))?;
            answer(req.send().promise).await
        })
    }

    /// Opens a data-plane stream, writes `bytes` (a stream header, or not) and returns the
    /// reset code the daemon answers with (an error if it answers anything else).
    pub fn data_stream(&self, bytes: Vec<u8>) -> Result<u64, String> {
        self.run(move |s| async move {
            let (mut send, mut recv) = s.conn.open_bi().await.map_err(|e| err("open_bi")(&e))?;
            send.write_all(&bytes)
                .await
                .map_err(|e| err("write the stream")(&e))?;
            let mut buf = [0u8; 1];
            match tokio::time::timeout(STEP, recv.read(&mut buf)).await {
                Ok(Err(quinn::ReadError::Reset(code))) => Ok(code.into_inner()),
                other => Err(format!("expected a reset, got {other:?}")),
            }
        })
    }

    /// Waits (up to 30 s) until the connection is closed, and says how.
    pub fn closed(&self) -> Closed {
        self.run(|s| async move {
            match tokio::time::timeout(STEP, s.conn.closed()).await {
                Ok(quinn::ConnectionError::ApplicationClosed(close)) => Closed::ByPeer {
                    code: close.error_code.into_inner(),
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                },
                Ok(other) => Closed::Other(other.to_string()),
                Err(_) => Closed::Other("still open after 30 s".into()),
            }
        })
    }

    /// What the daemon has called on the rogue so far.
    pub fn inbox(&self) -> Inbox {
        self.run(|s| async move { s.inbox.borrow().clone() })
    }
}

/// Waits for a call's answer; the error text if it failed.
async fn answer<T>(promise: capnp::capability::Promise<T, capnp::Error>) -> Result<(), String> {
    match tokio::time::timeout(STEP, promise).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in 30 s".into()),
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A node id (panics on an invalid one: test input).
pub fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

/// A service name (panics on an invalid one: test input).
pub fn service(s: &str) -> ServiceName {
    ServiceName::new(s).expect("service name")
}

/// A manifest of `origin` at `version` listing `services`.
pub fn manifest(origin: &str, version: u64, services: &[&str]) -> OriginManifest {
    OriginManifest {
        origin: node(origin),
        version,
        services: services.iter().map(|s| service(s)).collect(),
    }
}

/// A batch announcing `services` with one attribute set: `origin` at `origin_seq`, the
/// node hops `path` (nearest first), metric 0, HTTP, learned internally.
pub fn announce(services: &[&str], origin: &str, origin_seq: u64, path: &[&str]) -> UpdateBatch {
    let attrs = Attrs {
        origin: node(origin),
        origin_seq,
        path: path.iter().map(|h| PathHop::Node(node(h))).collect(),
        metric: 0,
        communities: Vec::new(),
        protocol: ProtocolHint::Http,
        learned_from: Relationship::Internal,
    };
    UpdateBatch {
        attrs: vec![Arc::new(attrs)],
        announce: services.iter().map(|s| (service(s), 0)).collect(),
        withdraw: Vec::new(),
    }
}
