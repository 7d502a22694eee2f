//! Operator credentials for remote admin (docs/adr/0017-operator-tokens.md):
//! `trellis operator cert` makes an operator's own client certificate and key, and
//! `trellis tokens operator create|list|revoke` (at the authority) issues ES384 tokens
//! bound to that certificate.

use std::path::PathBuf;

use clap::Subcommand;
use trellis_daemon::admin::{OperatorTokenCreated, OperatorTokenInfo, Request};
use trellis_daemon::util::time::{now_secs, parse_duration, rfc3339};

use crate::authority::call;
use crate::table::render;
use crate::{Context, Failure};

#[derive(Subcommand)]
pub enum OperatorTokens {
    /// Issue a token bound to an operator's client certificate; written to --out (0600).
    Create {
        /// The operator's name.
        #[arg(long)]
        name: String,
        /// Its role, as Cedar policies see it (the defaults know admin and viewer).
        #[arg(long)]
        role: String,
        /// Lifetime (s, m, h, d); at most 30 days.
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// The operator's client certificate (PEM, from `trellis operator cert`).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Where to write the token (mode 0600; refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Every operator token the authority issued (never the tokens).
    List,
    /// Revoke a token; the next trust snapshot names it.
    Revoke {
        /// Token id.
        jti: String,
    },
}

#[derive(Subcommand)]
pub enum Operator {
    /// Make an operator's client certificate and key (operator.crt, operator.key 0600)
    /// in a directory; the authority binds tokens to this certificate.
    Cert {
        /// The operator's name.
        #[arg(long)]
        name: String,
        /// The directory to write them to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn local(e: impl std::fmt::Display) -> Failure {
    Failure::new(6, e)
}

fn write_secret(path: &std::path::Path, text: &str) -> Result<(), Failure> {
    trellis_daemon::util::files::write_secret_new(path, text.as_bytes()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::new(2, e) // The message names the file.
        } else {
            Failure::new(6, format!("{}: {e}", path.display()))
        }
    })
}

pub fn operator(ctx: &Context, cmd: Operator) -> Result<(), Failure> {
    match cmd {
        Operator::Cert { name, out } => {
            std::fs::create_dir_all(&out).map_err(|e| local(format!("{}: {e}", out.display())))?;
            let (cert, key) =
                trellis_daemon::pki::operator_certificate(&name, now_secs()).map_err(local)?;
            let (cert_path, key_path) = (out.join("operator.crt"), out.join("operator.key"));
            write_secret(&key_path, &key)?;
            std::fs::write(&cert_path, cert.as_bytes())
                .map_err(|e| local(format!("{}: {e}", cert_path.display())))?;
            let thumbprint = trellis_daemon::pki::pem_to_der(cert.as_bytes())
                .map(|der| trellis_policy::jwt::thumbprint(&der))
                .map_err(local)?;
            let value = serde_json::json!({
                "certificate": cert_path,
                "key": key_path,
                "thumbprint": thumbprint,
            });
            ctx.print(&value, |_| {
                format!(
                    "wrote {} and {} (x5t#S256 {thumbprint})\n",
                    cert_path.display(),
                    key_path.display()
                )
            });
            Ok(())
        }
    }
}

pub fn tokens(ctx: &Context, cmd: OperatorTokens) -> Result<(), Failure> {
    match cmd {
        OperatorTokens::Create {
            name,
            role,
            ttl,
            cert,
            out,
        } => {
            let ttl_secs =
                parse_duration(&ttl).map_err(|e| Failure::new(2, format!("--ttl: {e}")))?;
            let cert_pem = std::fs::read_to_string(&cert)
                .map_err(|e| Failure::new(2, format!("--cert {}: {e}", cert.display())))?;
            if out.exists() {
                return Err(Failure::new(
                    2,
                    format!("--out {} exists; refusing to overwrite", out.display()),
                ));
            }
            let created: OperatorTokenCreated = call(
                ctx,
                &Request::OperatorTokenCreate {
                    name,
                    role,
                    ttl_secs,
                    cert_pem,
                },
            )?;
            write_secret(&out, &created.token)?;
            // The token itself never goes to stdout: only its record.
            let info = created.info;
            ctx.print(&info, |i| {
                format!(
                    "operator token {} for {} ({}) until {}, written to {}\n",
                    i.jti,
                    i.name,
                    i.role,
                    rfc3339(i.expires_at),
                    out.display()
                )
            });
        }
        OperatorTokens::List => {
            let tokens: Vec<OperatorTokenInfo> = call(ctx, &Request::OperatorTokensList)?;
            ctx.print(&tokens, |t| {
                let rows: Vec<Vec<String>> = t
                    .iter()
                    .map(|i| {
                        vec![
                            i.jti.clone(),
                            i.name.clone(),
                            i.role.clone(),
                            rfc3339(i.expires_at),
                            i.revoked_at.map_or_else(|| "-".into(), rfc3339),
                        ]
                    })
                    .collect();
                render(&["ID", "NAME", "ROLE", "EXPIRES", "REVOKED"], &rows)
            });
        }
        OperatorTokens::Revoke { jti } => {
            let revoked: serde_json::Value = call(ctx, &Request::OperatorTokenRevoke { jti })?;
            ctx.print(&revoked, |r| {
                format!(
                    "revoked operator token {}; trust snapshot v{} published\n",
                    r["jti"].as_str().unwrap_or_default(),
                    r["snapshot_version"]
                )
            });
        }
    }
    Ok(())
}
