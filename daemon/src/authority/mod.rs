//! The authority role: `trellisd authority init` and `trellisd authority run`.
//!
//! An org's authority approves joins and issues certificates; nothing on a routing path
//! depends on it (docs/security.md). It listens for enrollment over QUIC
//! ([`crate::enroll::ALPN`], server-authenticated by a certificate from the org CA) and
//! serves the admin API on `DATA_DIR/admin.sock`. Its TLS certificate is re-issued while
//! it runs ([`tls_cert`]), and the trust snapshot re-signed, by one periodic refresh task.
//!
//! Data dir (mode 0700): `ca.key` and `authority.key` (0600), `ca.crt`, `authority.db`
//! (SQLite, WAL), `admin.sock` (0600).

mod admin_server;
pub mod limiter;
mod operator_tokens;
mod server;
pub mod store;
mod tls_cert;
pub mod tokens;

use crate::util::datadir::{ensure_role, Role};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis_routing::OrgId;

use crate::pki::{self, Ca, PkiError};
use crate::util::files::{private_dir, read_secret, write_atomic, write_secret_new};
use crate::util::time::now_secs;
use limiter::FailureLimiter;
use store::{Store, StoreError};
use tls_cert::AuthorityCert;

/// Why the authority could not start or initialise.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The data dir already holds an authority.
    #[error("{0} already holds an authority (ca.key exists); refusing to overwrite it")]
    AlreadyInitialised(String),
    /// The data dir belongs to a node, or holds a CA certificate without its key.
    #[error("{0}")]
    WrongDir(String),
    /// The data dir holds no authority.
    #[error("{0} holds no authority; run `trellisd authority init` first")]
    NotInitialised(String),
    /// Key or certificate handling failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener could not be set up.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Bad option value.
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |e| AuthorityError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The files of an authority's data dir.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The data dir.
    pub dir: PathBuf,
}

impl Paths {
    /// The CA private key (0600).
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The CA certificate, PEM.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The operator-token signing key, PKCS#8 (0600).
    pub fn token_key(&self) -> PathBuf {
        self.dir.join("token.key")
    }
    /// The authority's TLS key (0600).
    pub fn authority_key(&self) -> PathBuf {
        self.dir.join("authority.key")
    }
    /// The SQLite store.
    pub fn db(&self) -> PathBuf {
        self.dir.join("authority.db")
    }
    /// The admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
}

/// What `authority init` made.
#[derive(Debug, serde::Serialize)]
pub struct Initialised {
    /// The org.
    pub org: String,
    /// CA fingerprint, `sha256:HEX`.
    pub ca_fingerprint: String,
    /// Path of the CA certificate.
    pub ca_cert: String,
    /// First trust snapshot version.
    pub snapshot_version: u64,
}

/// Creates the org CA, the authority key and the store in `dir`.
pub fn init(dir: &Path, org: &OrgId) -> Result<Initialised, AuthorityError> {
    let paths = Paths {
        dir: dir.to_owned(),
    };
    ensure_role(dir, Role::Authority).map_err(AuthorityError::WrongDir)?;
    if paths.ca_key().exists() {
        return Err(AuthorityError::AlreadyInitialised(
            dir.display().to_string(),
        ));
    }
    if paths.ca_cert().exists() {
        return Err(AuthorityError::WrongDir(format!(
            "{} holds a CA certificate but no ca.key; refusing to overwrite it: give the \
             authority an empty data dir",
            dir.display()
        )));
    }
    private_dir(dir).map_err(file_err(dir))?;
    let now = now_secs();
    let ca_key = pki::generate_key()?;
    let ca_der = pki::ca_certificate(org, &ca_key, now)?;
    let authority_key = pki::generate_key()?;
    let ca_path = paths.ca_key();
    write_secret_new(&ca_path, ca_key.serialize_pem().as_bytes()).map_err(file_err(&ca_path))?;
    let key_path = paths.authority_key();
    write_secret_new(&key_path, authority_key.serialize_pem().as_bytes())
        .map_err(file_err(&key_path))?;
    let cert_path = paths.ca_cert();
    write_atomic(&cert_path, pki::der_to_pem(&ca_der).as_bytes(), 0o644)
        .map_err(file_err(&cert_path))?;
    let fingerprint = pki::fingerprint(&ca_der);
    let ca = Ca::load(org.clone(), ca_der, ca_key)?;
    let mut store = Store::open(&paths.db())?;
    store.set_meta("org", org.as_str())?;
    store.audit(
        now,
        "operator",
        "authority.init",
        org.as_str(),
        &format!("ca={fingerprint}"),
    )?;
    let snapshot_version = store.refresh_snapshot(&ca, now)?;
    Ok(Initialised {
        org: org.as_str().to_owned(),
        ca_fingerprint: fingerprint,
        ca_cert: cert_path.display().to_string(),
        snapshot_version,
    })
}

/// Options of `authority run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Enrollment listen address.
    pub listen: SocketAddr,
    /// Address put in join strings (defaults to `listen`).
    pub advertise: Option<SocketAddr>,
    /// Lifetime of issued node certificates, seconds.
    pub cert_lifetime: u64,
    /// Lifetime of the authority's own TLS certificate, seconds; re-issued while running
    /// once two thirds of it have passed.
    pub tls_cert_lifetime: u64,
    /// How long a join request waits for an operator, seconds.
    pub join_wait: u64,
    /// Failed join attempts allowed per source per window.
    pub max_failures: u32,
    /// Rate-limit window, seconds.
    pub failure_window: u64,
    /// Where to serve the admin API remotely (docs/adr/0017), if anywhere.
    pub remote_listen: Option<SocketAddr>,
}

impl RunOptions {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            advertise: None,
            cert_lifetime: pki::NODE_CERT_LIFETIME_SECS,
            tls_cert_lifetime: pki::AUTHORITY_CERT_LIFETIME_SECS,
            join_wait: 15 * 60,
            max_failures: 5,
            failure_window: 60,
            remote_listen: None,
        }
    }
}

/// State shared by the enrollment server and the admin API.
pub(crate) struct Shared {
    store: Mutex<Store>,
    ca: Ca,
    tls_cert: AuthorityCert,
    limiter: Mutex<FailureLimiter>,
    decided: tokio::sync::Notify,
    options: RunOptions,
    advertise: SocketAddr,
    fingerprint: String,
    /// The newest trust snapshot version; subscribed nodes wait on it.
    published: tokio::sync::watch::Sender<u64>,
    /// The Cedar policies deciding admin calls (the built-in defaults).
    policies: trellis_policy::cedar::Shared,
    /// Signs operator tokens.
    token_signer: operator_tokens::TokenSigner,
    /// Counters since start (status, and the metrics read from it).
    counters: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Shared {
    /// Tells subscribed nodes when a newer snapshot was published (after any change that
    /// may publish one: revocation, name rules, partner CAs, the periodic refresh).
    fn announce_snapshot(&self) {
        let newest = match self.store().snapshot_envelope(None) {
            Ok(Some((version, _))) => version,
            _ => return,
        };
        self.published.send_if_modified(|v| {
            let newer = newest > *v;
            if newer {
                *v = newest;
            }
            newer
        });
    }

    /// Adds one to a counter.
    fn count(&self, name: &str) {
        *self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default() += 1;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back), so a poisoned lock is still usable.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The org of the authority in `dir`, if it is one (names its telemetry before it runs).
pub fn org_of(dir: &Path) -> Option<String> {
    let paths = Paths {
        dir: dir.to_owned(),
    };
    if !paths.db().exists() {
        return None;
    }
    Store::open(&paths.db()).ok()?.meta("org").ok()?
}

fn load(paths: &Paths, options: RunOptions, now: u64) -> Result<Shared, AuthorityError> {
    ensure_role(&paths.dir, Role::Authority).map_err(AuthorityError::WrongDir)?;
    if !paths.ca_key().exists() {
        return Err(AuthorityError::NotInitialised(
            paths.dir.display().to_string(),
        ));
    }
    let store = Store::open(&paths.db())?;
    let org = store
        .meta("org")?
        .ok_or_else(|| AuthorityError::NotInitialised(paths.dir.display().to_string()))?;
    let org = OrgId::new(&org).map_err(|e| AuthorityError::Config(format!("stored org: {e}")))?;
    let ca_key_path = paths.ca_key();
    let ca_key = pki::load_key(&read_secret(&ca_key_path).map_err(file_err(&ca_key_path))?)?;
    let ca_cert_path = paths.ca_cert();
    let ca_der = pki::pem_to_der(&std::fs::read(&ca_cert_path).map_err(file_err(&ca_cert_path))?)?;
    let key_path = paths.authority_key();
    let authority_key = pki::load_key(&read_secret(&key_path).map_err(file_err(&key_path))?)?;
    let fingerprint = pki::fingerprint(&ca_der);
    let policies = trellis_policy::cedar::Policies::defaults("");
    let token_signer = operator_tokens::TokenSigner::load_or_create(&paths.token_key())
        .map_err(AuthorityError::Config)?;
    let ca = Ca::load(org, ca_der, ca_key)?;
    let mut store = store;
    store.set_token_key(&ca, token_signer.public(), now)?;
    let tls_cert = AuthorityCert::issue(&ca, authority_key, options.tls_cert_lifetime, now)?;
    let advertise = options.advertise.unwrap_or(options.listen);
    let limiter = FailureLimiter::new(options.max_failures, options.failure_window);
    Ok(Shared {
        store: Mutex::new(store),
        ca,
        tls_cert,
        limiter: Mutex::new(limiter),
        decided: tokio::sync::Notify::new(),
        options,
        advertise,
        fingerprint,
        published: tokio::sync::watch::channel(0).0,
        policies: trellis_policy::cedar::Shared::new(
            policies.map_err(|e| AuthorityError::Config(e.to_string()))?,
        ),
        token_signer,
        counters: Mutex::default(),
    })
}

/// Runs the authority until SIGINT or SIGTERM.
pub async fn run(dir: &Path, options: RunOptions) -> Result<(), AuthorityError> {
    let paths = Paths {
        dir: dir.to_owned(),
    };
    let now = now_secs();
    let shared = load(&paths, options, now)?;
    let version = shared.store().refresh_snapshot(&shared.ca, now)?;
    let config = crate::tls::authority_server(
        shared.tls_cert.resolver(),
        shared.ca.der(),
        crate::enroll::ALPN,
    )
    .map_err(|e| AuthorityError::Config(e.to_string()))?;
    let listen = shared.options.listen;
    let endpoint = quinn::Endpoint::server(config, listen).map_err(|e| AuthorityError::Listen {
        addr: listen.to_string(),
        reason: e.to_string(),
    })?;
    let bound = endpoint.local_addr().map_err(|e| AuthorityError::Listen {
        addr: listen.to_string(),
        reason: e.to_string(),
    })?;
    let admin = admin_server::bind(&paths.admin_socket())?;
    let shared = Arc::new(Shared {
        advertise: if shared.options.advertise.is_none() {
            bound
        } else {
            shared.advertise
        },
        ..shared
    });
    let tls_cert = shared.tls_cert.in_use();
    tracing::info!(
        org = shared.ca.org().as_str(),
        listen = %bound,
        ca = %shared.fingerprint,
        snapshot = version,
        tls_serial = %crate::util::hex(&tls_cert.serial),
        tls_not_after = tls_cert.not_after,
        "authority running"
    );
    println!(
        "authority {} listening on {bound} (CA {}); admin socket {}",
        shared.ca.org().as_str(),
        shared.fingerprint,
        paths.admin_socket().display()
    );

    let observed = shared.clone();
    crate::telemetry::metrics::observe(move || {
        admin_server::status(&observed)
            .map(|s| crate::telemetry::metrics::authority_points(&s))
            .unwrap_or_default()
    });
    let refresher = tokio::spawn(refresh_loop(shared.clone()));
    let admin_task = tokio::spawn(admin_server::serve(admin, shared.clone()));
    let remote_task = match shared.options.remote_listen {
        None => None,
        Some(addr) => {
            let limits = crate::transport::Limits::default();
            let config = crate::transport::admin::admin_server_config_with(
                shared.tls_cert.resolver(),
                &limits,
            )
            .map_err(|e| AuthorityError::Config(e.to_string()))?;
            let remote =
                quinn::Endpoint::server(config, addr).map_err(|e| AuthorityError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
            tracing::info!(listen = %addr, "remote admin listening");
            Some(tokio::spawn(crate::admin::remote_server::serve(
                remote,
                admin_server::remote_handler(shared.clone()),
            )))
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AuthorityError::Config(format!("cannot watch SIGTERM: {e}")))?;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => { tokio::spawn(server::handle(shared.clone(), incoming)); }
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    tracing::info!("authority stopping");
    refresher.abort();
    admin_task.abort();
    if let Some(remote) = remote_task {
        remote.abort();
    }
    endpoint.close(0u32.into(), b"authority stopping");
    let _ = std::fs::remove_file(paths.admin_socket());
    tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle())
        .await
        .ok();
    Ok(())
}

/// How often the refresh task runs: hourly, or often enough to catch two thirds of a
/// short TLS certificate lifetime (at least every tenth of it).
fn refresh_period(tls_cert_lifetime: u64) -> Duration {
    Duration::from_secs((tls_cert_lifetime / 10).clamp(1, 3600))
}

/// Re-signs the trust snapshot before it expires and re-issues the authority's TLS
/// certificate once two thirds of its life have passed. A failure is logged and retried
/// at the next tick.
async fn refresh_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(refresh_period(shared.options.tls_cert_lifetime));
    loop {
        tick.tick().await;
        let now = now_secs();
        let result = shared.store().refresh_snapshot(&shared.ca, now);
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot refresh the trust snapshot");
        }
        shared.announce_snapshot();
        rotate_tls_cert(&shared, now);
    }
}

fn rotate_tls_cert(shared: &Shared, now: u64) {
    match shared.tls_cert.rotate_if_due(&shared.ca, now) {
        Ok(None) => {}
        Ok(Some(cert)) => {
            let serial = crate::util::hex(&cert.serial);
            tracing::info!(%serial, not_after = cert.not_after, "authority TLS certificate re-issued");
            let detail = format!("serial={serial} not_after={}", cert.not_after);
            let audited =
                shared
                    .store()
                    .audit(now, "authority", "authority.tls_cert", "authority", &detail);
            if let Err(e) = audited {
                tracing::warn!(error = %e, "cannot audit the TLS certificate re-issue");
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            "cannot re-issue the authority TLS certificate; retrying at the next tick"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_task_runs_hourly_or_often_enough_for_a_short_tls_lifetime() {
        assert_eq!(
            refresh_period(pki::AUTHORITY_CERT_LIFETIME_SECS),
            Duration::from_secs(3600)
        );
        assert_eq!(refresh_period(600), Duration::from_secs(60));
        assert_eq!(refresh_period(5), Duration::from_secs(1));
    }
}
