//! Commands against an authority for name ownership (docs/adr/0011): which nodes of the
//! org may originate which of its names (scopes), which names another org may originate
//! (delegations), and which partner CAs every node of the org trusts (pins). Each change
//! is published at once in a new signed trust snapshot.

use std::path::PathBuf;

use clap::Subcommand;
use trellis_daemon::admin::{NamesInfo, Request};

use crate::authority::call;
use crate::table::render;
use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum Names {
    /// Let a node of the org (or `*`, every node) originate only these names; once any
    /// scope exists, names outside every scope are refused. No names removes the scope.
    Scope {
        /// Node id ORG/NAME, or `*`.
        node: String,
        /// Names (books.acme) or aggregates ('*.eu.acme').
        names: Vec<String>,
    },
    /// Let another org (or one of its nodes) originate these names of this org. No names
    /// removes the delegation.
    Delegate {
        /// An org id, or a node id of another org.
        grantee: String,
        /// Names or aggregates of this org.
        names: Vec<String>,
    },
    /// Scopes, delegations and partner CA pins.
    List,
}

#[derive(Subcommand)]
pub enum Partners {
    /// Trust a partner org's CA on every node of this org, for that org only.
    Pin {
        /// The partner org.
        org: String,
        /// Its CA certificate (PEM), as given by the partner.
        #[arg(long, value_name = "FILE")]
        ca: PathBuf,
    },
    /// Stop trusting a partner org's CA (peering configs still pin their own).
    Unpin {
        /// The partner org.
        org: String,
    },
}

fn show(ctx: &Context, info: &NamesInfo) {
    ctx.print(info, |info| {
        let rows: Vec<Vec<String>> = info
            .rules
            .iter()
            .map(|r| vec![r.kind.clone(), r.subject.clone(), r.names.join(" ")])
            .chain(
                info.partner_cas
                    .iter()
                    .map(|p| vec!["partner-ca".into(), p.org.clone(), p.fingerprint.clone()]),
            )
            .collect();
        let mut out = if rows.is_empty() {
            "no scopes, delegations or partner CAs: every node of the org may originate every name of the org\n".to_owned()
        } else {
            render(&["KIND", "SUBJECT", "NAMES / CA"], &rows)
        };
        out.push_str(&format!("trust snapshot v{}\n", info.snapshot_version));
        out
    });
}

/// `trellis names ...`.
pub fn names(ctx: &Context, cmd: Names) -> Result<(), Failure> {
    let request = match cmd {
        Names::Scope { node, names } => Request::NamesScope { node, names },
        Names::Delegate { grantee, names } => Request::NamesDelegate { grantee, names },
        Names::List => Request::NamesList,
    };
    let info: NamesInfo = call(ctx, &request)?;
    show(ctx, &info);
    Ok(())
}

/// `trellis partners ...`.
pub fn partners(ctx: &Context, cmd: Partners) -> Result<(), Failure> {
    let request = match cmd {
        Partners::Pin { org, ca } => {
            let pem = std::fs::read_to_string(&ca)
                .map_err(|e| Failure::new(2, format!("{}: {e}", ca.display())))?;
            Request::PartnersCa {
                org,
                ca_pem: Some(pem),
            }
        }
        Partners::Unpin { org } => Request::PartnersCa { org, ca_pem: None },
    };
    let info: NamesInfo = call(ctx, &request)?;
    show(ctx, &info);
    Ok(())
}
