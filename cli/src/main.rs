//! `trellis`: the operator CLI. A thin client of the daemon's admin API on
//! `DATA_DIR/admin.sock`, plus node-local commands that work on a node's data dir.
//!
//! Tables for people, `--json` for scripts. Exit codes (docs/operations.md): 0 success;
//! 1 refused (not found, conflict, rejected); 2 usage or bad value; 3 the daemon or the
//! authority is not reachable; 4 timed out; 5 security check failed; 6 local failure.

mod authority;
mod bulk;
mod connect;
mod local;
mod names;
mod node;
mod operator;
mod policy;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trellis",
    version,
    about = "Operate Trellis daemons and authorities"
)]
struct Cli {
    /// Admin socket (default: DATA_DIR/admin.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The daemon's data dir (authority or node).
    #[arg(long, global = true, env = "TRELLIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Call a daemon's remote admin instead of a local socket: NODE_ID@HOST:PORT for a
    /// node, ORG@HOST:PORT for an org's authority (needs --token-file, --operator-dir
    /// and --ca).
    #[arg(long, global = true, value_name = "NODE|ORG@HOST:PORT")]
    remote: Option<String>,
    /// The operator token for --remote (from `trellis tokens operator create`).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The operator's operator.crt and operator.key for --remote (`trellis operator cert`).
    #[arg(long, global = true, value_name = "DIR")]
    operator_dir: Option<PathBuf>,
    /// The org CA certificate the remote node's certificate must chain to.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Daemon status (node or authority).
    Status,
    /// Join tokens.
    #[command(subcommand)]
    Tokens(authority::Tokens),
    /// Join requests.
    #[command(subcommand)]
    Joins(authority::Joins),
    /// Enrolled nodes.
    #[command(subcommand)]
    Nodes(authority::Nodes),
    /// Authority: who may originate which of the org's names (scopes, delegations).
    #[command(subcommand)]
    Names(names::Names),
    /// Authority: partner CAs every node of the org trusts, each for its own org.
    #[command(subcommand)]
    Partners(names::Partners),
    /// Token, join, certificate and revocation events.
    Audit {
        /// Only events since this long ago (30m, 2h, 1d) or this time (2026-11-23T10:00:00Z).
        #[arg(long)]
        since: Option<String>,
    },
    /// A node's peers and sessions.
    #[command(subcommand)]
    Peers(node::Peers),
    /// A node's routes.
    #[command(subcommand)]
    Routes(node::Routes),
    /// Carry local TCP connections to a service over the mesh (`connect NAME --listen
    /// ADDR`); `connect list`, `connect remove`.
    Connect(connect::Connect),
    /// A node and its sessions, as text or Graphviz DOT.
    Topology {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: node::Format,
    },
    /// Re-read a node's config and peering files and apply peer changes (as SIGHUP).
    Reload,
    /// Operator credentials: a client certificate that tokens are bound to.
    #[command(subcommand)]
    Operator(operator::Operator),
    /// Cedar policies: explain a decision, reload the policy file.
    #[command(subcommand)]
    Policy(policy::Policy),
    /// Trust snapshots.
    #[command(subcommand)]
    Snapshot(local::Snapshot),
    /// This node's certificate.
    #[command(subcommand)]
    Cert(local::Cert),
}

/// The `--remote` flags, as given.
pub struct RemoteFlags {
    remote: String,
    token_file: Option<PathBuf>,
    operator_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
}

impl RemoteFlags {
    /// Reads the files and parses the target.
    pub fn target(&self) -> Result<trellis_daemon::admin::remote_client::RemoteTarget, Failure> {
        let usage = |m: String| Failure::new(2, m);
        let (node, addr) = self.remote.split_once('@').ok_or_else(|| {
            usage(format!(
                "--remote {:?}: NODE_ID@HOST:PORT or ORG@HOST:PORT",
                self.remote
            ))
        })?;
        use trellis_daemon::admin::remote_client::RemoteDaemon;
        let daemon = if node.contains('/') {
            trellis_routing::NodeId::new(node).map(RemoteDaemon::Node)
        } else {
            trellis_routing::OrgId::new(node).map(RemoteDaemon::Authority)
        }
        .map_err(|e| usage(format!("--remote: {e}")))?;
        let addr = addr
            .parse()
            .map_err(|_| usage(format!("--remote: {addr:?} is not HOST:PORT")))?;
        let need = |v: &Option<PathBuf>, flag: &str| {
            v.clone()
                .ok_or_else(|| usage(format!("--remote needs {flag}")))
        };
        let read = |p: PathBuf| {
            std::fs::read(&p).map_err(|e| Failure::new(2, format!("{}: {e}", p.display())))
        };
        let dir = need(&self.operator_dir, "--operator-dir DIR")?;
        let ca_pem = read(need(&self.ca, "--ca FILE")?)?;
        let ca_der = trellis_daemon::pki::pem_to_der(&ca_pem)
            .map_err(|e| Failure::new(2, format!("--ca: {e}")))?;
        let token = String::from_utf8(read(need(&self.token_file, "--token-file FILE")?)?)
            .map_err(|_| Failure::new(2, "--token-file is not text"))?;
        Ok(trellis_daemon::admin::remote_client::RemoteTarget {
            daemon,
            addr,
            ca_der,
            cert_pem: read(dir.join("operator.crt"))?,
            key_pem: read(dir.join("operator.key"))?,
            token: token.trim().to_owned(),
        })
    }
}

/// A failure: exit code and one line.
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl std::fmt::Display) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }
}

/// Where the CLI looks for things.
pub struct Context {
    socket: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    json: bool,
    /// `--remote`: call a node's remote admin instead of a socket.
    remote: Option<RemoteFlags>,
}

impl Context {
    /// The admin socket path.
    pub fn socket(&self) -> Result<PathBuf, Failure> {
        match (&self.socket, &self.data_dir) {
            (Some(socket), _) => Ok(socket.clone()),
            (None, Some(dir)) => Ok(dir.join("admin.sock")),
            (None, None) => Err(Failure::new(
                2,
                "say which daemon: --data-dir DIR or --socket PATH",
            )),
        }
    }

    /// The data dir (node-local commands).
    pub fn data_dir(&self) -> Result<PathBuf, Failure> {
        self.data_dir
            .clone()
            .ok_or_else(|| Failure::new(2, "this command needs the node's --data-dir DIR"))
    }

    /// Prints `value` as JSON, or `human` otherwise.
    pub fn print<T: serde::Serialize>(&self, value: &T, human: impl FnOnce(&T) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            print!("{}", human(value));
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Context {
        socket: cli.socket,
        data_dir: cli.data_dir,
        json: cli.json,
        remote: cli.remote.map(|remote| RemoteFlags {
            remote,
            token_file: cli.token_file,
            operator_dir: cli.operator_dir,
            ca: cli.ca,
        }),
    };
    let result = match cli.command {
        Command::Status => authority::status(&ctx),
        Command::Tokens(cmd) => authority::tokens(&ctx, cmd),
        Command::Joins(cmd) => authority::joins(&ctx, cmd),
        Command::Nodes(cmd) => authority::nodes(&ctx, cmd),
        Command::Names(cmd) => names::names(&ctx, cmd),
        Command::Partners(cmd) => names::partners(&ctx, cmd),
        Command::Audit { since } => authority::audit(&ctx, since.as_deref()),
        Command::Snapshot(cmd) => local::snapshot(&ctx, cmd),
        Command::Cert(cmd) => local::cert(&ctx, cmd),
        Command::Peers(cmd) => node::peers(&ctx, cmd),
        Command::Routes(cmd) => node::routes(&ctx, cmd),
        Command::Connect(cmd) => connect::connect(&ctx, cmd),
        Command::Topology { format } => node::topology(&ctx, format),
        Command::Reload => node::reload(&ctx),
        Command::Policy(cmd) => policy::policy(&ctx, cmd),
        Command::Operator(cmd) => operator::operator(&ctx, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
