//! Reloading the config file and the peering files without a restart (`trellis reload`
//! or SIGHUP), as BIRD's `configure`: peers named by the files are added, removed, or
//! re-established where their settings changed; partner CAs follow the peering files;
//! peers added with `trellis peers add` are left alone. The listen address, timers and
//! limits take effect only after a restart; the report names any that changed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use trellis_routing::OrgId;

use super::config::NodeConfig;
use super::routing_loop::Command;
use super::run::peer_specs;
use super::trust::TrustStore;
use crate::admin::{ApiError, ErrorKind, ReloadReport};

/// Reads the node config again (the file, `TRELLIS_*` variables, flags).
pub type Loader = Arc<dyn Fn() -> Result<NodeConfig, String> + Send + Sync>;

/// Applies reloads, one at a time.
pub struct Reloader {
    loader: Loader,
    org: OrgId,
    trust: Arc<TrustStore>,
    commands: mpsc::Sender<Command>,
    state: tokio::sync::Mutex<Applied>,
}

/// What the running node was last configured with.
struct Applied {
    config: NodeConfig,
    partner_orgs: HashSet<OrgId>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

impl Reloader {
    /// A reloader for a node of `org` started with `config` and partners `partner_orgs`.
    pub fn new(
        loader: Loader,
        org: OrgId,
        trust: Arc<TrustStore>,
        commands: mpsc::Sender<Command>,
        config: NodeConfig,
        partner_orgs: HashSet<OrgId>,
    ) -> Self {
        Self {
            loader,
            org,
            trust,
            commands,
            state: tokio::sync::Mutex::new(Applied {
                config,
                partner_orgs,
            }),
        }
    }

    /// Reads the files and applies them; a file with an error changes nothing.
    pub async fn reload(&self) -> Result<ReloadReport, ApiError> {
        let mut applied = self.state.lock().await;
        let config = (self.loader)().map_err(bad)?;
        config.validate().map_err(|e| bad(e.to_string()))?;
        let peerings = match &config.peering_dir {
            Some(dir) => {
                super::peering::load_dir(dir, &self.org).map_err(|e| bad(e.to_string()))?
            }
            None => Vec::new(),
        };
        let specs = peer_specs(&config, &peerings, &[]);

        // Partner CAs: replaced for every partner named now, dropped for partners gone.
        let orgs: HashSet<OrgId> = peerings.iter().map(|p| p.org.clone()).collect();
        for gone in applied.partner_orgs.difference(&orgs) {
            self.trust.forget_org(gone);
        }
        for p in &peerings {
            self.trust.forget_org(&p.org);
            for ca in &p.ca_ders {
                self.trust.trust_ca(&p.org, ca.clone());
            }
        }

        let (tx, rx) = oneshot::channel();
        let busy = || ApiError::new(ErrorKind::Internal, "the routing loop did not answer");
        tokio::time::timeout(
            Duration::from_secs(10),
            self.commands
                .send(Command::ReplacePeers { specs, reply: tx }),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
        let mut report = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        report.restart_needed = restart_needed(&applied.config, &config);
        applied.config = config;
        applied.partner_orgs = orgs;
        Ok(report)
    }
}

/// Settings that differ between `old` and `new` and apply only at start.
fn restart_needed(old: &NodeConfig, new: &NodeConfig) -> Vec<String> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push(format!("listen ({} → {})", old.listen, new.listen));
    }
    if old.timers != new.timers {
        out.push("timers".into());
    }
    if old.limits != new.limits {
        out.push("limits".into());
    }
    if old.dataplane != new.dataplane {
        out.push("dataplane".into());
    }
    if old.scoring != new.scoring {
        out.push("scoring".into());
    }
    out
}

/// Reloads on every SIGHUP until the task is aborted.
pub async fn on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with `trellis reload`");
        return;
    };
    while hup.recv().await.is_some() {
        match reloader.reload().await {
            Ok(r) => tracing::info!(
                added = r.added.len(),
                removed = r.removed.len(),
                changed = r.changed.len(),
                unchanged = r.unchanged,
                errors = r.errors.len(),
                restart_needed = ?r.restart_needed,
                "config reloaded"
            ),
            Err(e) => tracing::error!(error = %e, "config reload refused; nothing changed"),
        }
    }
}
