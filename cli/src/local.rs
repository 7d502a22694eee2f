//! Node-local commands (a node's data dir) and snapshot files: `cert renew|show`,
//! `snapshot export|verify|apply`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use trellis_daemon::admin::{Request, SnapshotInfo};
use trellis_daemon::enroll::client;
use trellis_daemon::node::{NodeStore, Paths};
use trellis_daemon::pki;
use trellis_daemon::util::time::{now_secs, rfc3339};
use trellis_daemon::util::{hex, unhex};
use trellis_policy::TrustSnapshot;

use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum Snapshot {
    /// Write an authority's trust snapshot (newest, or --version) to FILE.
    Export {
        /// Output file.
        file: PathBuf,
        /// Snapshot version (default: newest).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Verify a snapshot file: against the node's CA and stored version (--data-dir), or
    /// offline against a CA certificate (--ca).
    Verify {
        /// Snapshot file.
        file: PathBuf,
        /// CA certificate (PEM) to verify against instead of a node's data dir.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Verify a snapshot file and store it in the node's data dir (anti-rollback).
    Apply {
        /// Snapshot file.
        file: PathBuf,
    },
    /// Fetch the newest snapshot from the node's authority and store it.
    Fetch,
}

#[derive(Subcommand)]
pub enum Cert {
    /// Renew the node certificate at its authority (same key), and fetch the newest snapshot.
    Renew,
    /// Show the node certificate.
    Show,
}

fn local(e: impl std::fmt::Display) -> Failure {
    Failure::new(6, e)
}

#[derive(serde::Serialize)]
struct SnapshotView {
    org: String,
    version: u64,
    issued_at: u64,
    expires_at: u64,
    revoked_nodes: Vec<String>,
    revoked_serials: Vec<String>,
    /// The org's node directory: node id, address, selection role.
    directory: Vec<DirectoryView>,
    stored: bool,
}

#[derive(serde::Serialize)]
struct DirectoryView {
    node_id: String,
    address: String,
    role: String,
}

fn view(s: &TrustSnapshot, stored: bool) -> SnapshotView {
    SnapshotView {
        org: s.org.clone(),
        version: s.version,
        issued_at: s.issued_at,
        expires_at: s.expires_at,
        revoked_nodes: s.revoked_nodes.clone(),
        revoked_serials: s.revoked_serials.iter().map(|x| hex(x)).collect(),
        directory: s
            .directory
            .iter()
            .map(|d| DirectoryView {
                node_id: d.node.clone(),
                address: d.address.clone(),
                role: d.role.clone(),
            })
            .collect(),
        stored,
    }
}

fn human(v: &SnapshotView) -> String {
    format!(
        "trust snapshot {} v{}: valid, issued {}, expires {}; revoked nodes [{}], {} revoked serial(s), {} node(s) in the directory{}\n{}",
        v.org,
        v.version,
        rfc3339(v.issued_at),
        rfc3339(v.expires_at),
        v.revoked_nodes.join(", "),
        v.revoked_serials.len(),
        v.directory.len(),
        if v.stored { "; stored" } else { "" },
        v.directory
            .iter()
            .map(|d| format!("  {} {} {}\n", d.node_id, d.address, d.role))
            .collect::<String>()
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(local)
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::new(6, format!("{}: {e}", path.display())))
}

fn node_trust(dir: &Path) -> Result<(NodeStore, String, Vec<u8>), Failure> {
    let paths = Paths::new(dir);
    let store = NodeStore::open(&paths.db()).map_err(local)?;
    let org = store.enrollment().map_err(local)?.org;
    let ca = pki::pem_to_der(&read(&paths.ca_cert())?).map_err(local)?;
    Ok((store, org, ca))
}

fn refused(e: impl std::fmt::Display) -> Failure {
    Failure::new(1, e)
}

pub fn snapshot(ctx: &Context, cmd: Snapshot) -> Result<(), Failure> {
    match cmd {
        Snapshot::Export { file, version } => {
            let info: SnapshotInfo =
                crate::authority::call(ctx, &Request::SnapshotGet { version })?;
            let bytes =
                unhex(&info.envelope_hex).ok_or_else(|| local("the daemon sent a bad snapshot"))?;
            std::fs::write(&file, bytes)
                .map_err(|e| Failure::new(6, format!("{}: {e}", file.display())))?;
            ctx.print(&info, |i| {
                format!(
                    "wrote trust snapshot {} v{} to {}\n",
                    i.org,
                    i.version,
                    file.display()
                )
            });
        }
        Snapshot::Verify { file, ca } => {
            let bytes = read(&file)?;
            let snapshot = match ca {
                Some(ca) => {
                    let ca = pki::pem_to_der(&read(&ca)?).map_err(local)?;
                    let signer = trellis_policy::Envelope::decode(
                        &bytes,
                        trellis_policy::Kind::TrustSnapshot,
                    )
                    .map_err(refused)?
                    .signer;
                    trellis_policy::snapshot::verify(&bytes, &signer, &ca, None, now_secs())
                        .map_err(refused)?
                }
                None => {
                    let (store, org, ca) = node_trust(&ctx.data_dir()?)?;
                    store
                        .check_snapshot(&org, &ca, &bytes, now_secs())
                        .map_err(refused)?
                }
            };
            ctx.print(&view(&snapshot, false), human);
        }
        Snapshot::Apply { file } => {
            let bytes = read(&file)?;
            let (mut store, org, ca) = node_trust(&ctx.data_dir()?)?;
            let snapshot = store
                .apply_snapshot(&org, &ca, &bytes, now_secs())
                .map_err(refused)?;
            ctx.print(&view(&snapshot, true), human);
        }
        Snapshot::Fetch => {
            let dir = ctx.data_dir()?;
            let version = runtime()?
                .block_on(client::fetch_snapshot(&dir))
                .map_err(|e| Failure::new(e.exit_code(), e))?;
            ctx.print(&serde_json::json!({ "snapshot_version": version }), |_| {
                format!("trust snapshot v{version} stored\n")
            });
        }
    }
    Ok(())
}

pub fn cert(ctx: &Context, cmd: Cert) -> Result<(), Failure> {
    let dir = ctx.data_dir()?;
    match cmd {
        Cert::Renew => {
            let renewed = runtime()?
                .block_on(client::renew(&dir))
                .map_err(|e| Failure::new(e.exit_code(), e))?;
            ctx.print(&renewed, |r| {
                format!(
                    "renewed {}: certificate {} valid until {}; trust snapshot v{}\n",
                    r.node_id,
                    r.serial,
                    rfc3339(r.not_after),
                    r.snapshot_version
                )
            });
        }
        Cert::Show => {
            let der = pki::pem_to_der(&read(&Paths::new(&dir).cert())?).map_err(local)?;
            let cert = pki::parse_node_cert(&der).map_err(local)?;
            let value = serde_json::json!({
                "node_id": cert.node.as_str(),
                "serial": hex(&cert.serial),
                "not_after": cert.not_after,
                "expired": cert.not_after <= now_secs(),
            });
            ctx.print(&value, |_| {
                format!(
                    "{}: certificate {} valid until {}\n",
                    cert.node.as_str(),
                    hex(&cert.serial),
                    rfc3339(cert.not_after)
                )
            });
        }
    }
    Ok(())
}
