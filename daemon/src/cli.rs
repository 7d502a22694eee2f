//! The `trellisd` command line (authority role, node enrollment, node daemon), as a
//! library function so that other binaries (the testbed) can run it as a sub-command.
//!
//! Exit codes (docs/operations.md): 0 success; 1 refused by the other side; 2 usage or
//! malformed input; 3 unreachable; 4 timed out; 5 security check failed; 6 local failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::authority::{self, RunOptions};
use crate::enroll::client::{self, JoinOptions};
use crate::enroll::joinstring::JoinString;
use crate::util::time::{parse_duration, rfc3339};
use clap::{Parser, Subcommand};
use trellis_routing::OrgId;

#[derive(Parser)]
#[command(name = "trellisd", version, about = "The Trellis routing daemon")]
struct Cli {
    /// Log lines on stderr as `text` or `json` (JSON carries trace ids while spans are
    /// exported). Also TRELLIS_LOG_FORMAT; TRELLIS_LOG sets the filter (default info).
    #[arg(long, global = true, env = "TRELLIS_LOG_FORMAT", default_value = "text", value_parser = crate::telemetry::LogFormat::parse)]
    log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The org authority: CA, join approvals, certificates, trust snapshots.
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// This node: join an org.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
enum AuthorityCommand {
    /// Create the org CA (P-384), the authority key and the store; print the CA fingerprint.
    Init {
        /// Org id (a lowercase DNS label).
        #[arg(long)]
        org: String,
        /// Data dir (created with mode 0700).
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve joins and renewals over QUIC and the admin API on DATA_DIR/admin.sock.
    Run {
        /// Data dir made by `authority init`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Enrollment address (UDP), e.g. 127.0.0.1:7100.
        #[arg(long)]
        listen: SocketAddr,
        /// Address written into join strings (default: the bound listen address).
        #[arg(long)]
        advertise: Option<SocketAddr>,
        /// Lifetime of node certificates (s, m, h, d).
        #[arg(long, default_value = "24h")]
        cert_lifetime: String,
        /// Lifetime of the authority's own TLS certificate, re-issued while running once
        /// two thirds of it have passed (at least 1m).
        #[arg(long, default_value = "30d")]
        tls_cert_lifetime: String,
        /// How long a join request waits for an operator.
        #[arg(long, default_value = "15m")]
        join_wait: String,
        /// Failed join attempts allowed per source address per minute.
        #[arg(long, default_value_t = 5)]
        max_failures: u32,
        /// Also serve the admin API over QUIC to operators with a token (UDP address).
        #[arg(long)]
        remote_listen: Option<SocketAddr>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run the node: peer over QUIC/mTLS, exchange routes, serve DATA_DIR/admin.sock.
    Run {
        /// Node data dir (made by `node join`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Node config (TOML); TRELLIS_* variables and flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// QUIC listen address (overrides the config).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Join an org with a join string from `trellis tokens create`.
    Join {
        /// Node data dir (created with mode 0700).
        #[arg(long)]
        data_dir: PathBuf,
        /// Node name (a DNS label); the node id becomes ORG/NAME.
        #[arg(long)]
        name: String,
        /// Roles to ask for (comma-separated; default: the token's roles).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// How long to wait for an operator's approval.
        #[arg(long, default_value = "10m")]
        timeout: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Read the join string from this file (keeps it out of the process list).
        #[arg(long, value_name = "FILE", conflicts_with = "join_string")]
        join_string_file: Option<PathBuf>,
        /// trellis-join:ORG@HOST:PORT/sha256:HEX/ID.SECRET, or `-` to read it from stdin.
        /// Without it: --join-string-file, else the TRELLIS_JOIN_STRING variable. The
        /// command line is visible to every local user: prefer stdin, a file or the variable.
        join_string: Option<String>,
    },
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn duration(flag: &str, text: &str) -> Result<u64, ExitCode> {
    parse_duration(text).map_err(|e| fail(2, format!("--{flag}: {e}")))
}

/// A runtime whose drop waits at most [`RUNTIME_STOP`] for its remaining tasks and
/// blocking calls: `trellisd` exits when its work is done, not when the last straggler is.
struct BoundedRuntime(Option<tokio::runtime::Runtime>);

/// How long dropping the runtime waits for what is still running on it.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

impl std::ops::Deref for BoundedRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the runtime is present until drop")
    }
}

impl Drop for BoundedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_timeout(RUNTIME_STOP);
        }
    }
}

/// Runs `trellisd` with `args` (the first one is the program name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => BoundedRuntime(Some(rt)),
        Err(e) => return fail(6, format!("cannot start the runtime: {e}")),
    };
    let _entered = runtime.enter();
    run_command(&runtime, cli.log_format, cli.command)
}

/// Installs logging and, for the long-running roles, the telemetry their settings ask
/// for; `Err` is the exit code of a bad setting.
fn start_telemetry(
    format: crate::telemetry::LogFormat,
    settings: &crate::telemetry::Settings,
) -> Result<Option<crate::telemetry::Telemetry>, ExitCode> {
    match crate::telemetry::start(format, settings) {
        Ok(telemetry) => {
            if let Some(summary) = &telemetry.summary {
                tracing::info!(export = %summary, "telemetry on");
            }
            Ok(Some(telemetry))
        }
        Err(e) => Err(fail(2, e)),
    }
}

fn run_command(
    runtime: &BoundedRuntime,
    log_format: crate::telemetry::LogFormat,
    command: Command,
) -> ExitCode {
    // Commands that end by themselves log, but export nothing.
    let mut telemetry = None;
    let off = crate::telemetry::Settings::off("trellisd");
    if !matches!(
        command,
        Command::Authority(AuthorityCommand::Run { .. }) | Command::Node(NodeCommand::Run { .. })
    ) {
        telemetry = match start_telemetry(log_format, &off) {
            Ok(t) => t,
            Err(code) => return code,
        };
    }
    let code = run_role(runtime, log_format, command, &mut telemetry);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

fn run_role(
    runtime: &BoundedRuntime,
    log_format: crate::telemetry::LogFormat,
    command: Command,
    telemetry: &mut Option<crate::telemetry::Telemetry>,
) -> ExitCode {
    match command {
        Command::Authority(AuthorityCommand::Init {
            org,
            data_dir,
            json,
        }) => {
            let org = match OrgId::new(&org) {
                Ok(org) => org,
                Err(e) => return fail(2, format!("--org: {e}")),
            };
            match authority::init(&data_dir, &org) {
                Ok(done) if json => {
                    println!("{}", serde_json::to_string_pretty(&done).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(done) => {
                    println!("initialised authority for org {} in {}", done.org, data_dir.display());
                    println!("CA certificate: {}", done.ca_cert);
                    println!("CA fingerprint: {}", done.ca_fingerprint);
                    ExitCode::SUCCESS
                }
                Err(e @ authority::AuthorityError::WrongDir(_)) => fail(2, e),
                Err(authority::AuthorityError::AlreadyInitialised(dir)) => {
                    fail(1, format!("{dir} already holds an authority (ca.key exists); refusing to overwrite it"))
                }
                Err(e) => fail(6, e),
            }
        }
        Command::Authority(AuthorityCommand::Run {
            data_dir,
            listen,
            advertise,
            cert_lifetime,
            tls_cert_lifetime,
            join_wait,
            max_failures,
            remote_listen,
        }) => {
            let mut options = RunOptions::new(listen);
            options.advertise = advertise;
            options.remote_listen = remote_listen;
            options.max_failures = max_failures;
            options.cert_lifetime = match duration("cert-lifetime", &cert_lifetime) {
                Ok(v) => v,
                Err(code) => return code,
            };
            options.join_wait = match duration("join-wait", &join_wait) {
                Ok(v) => v,
                Err(code) => return code,
            };
            options.tls_cert_lifetime = match duration("tls-cert-lifetime", &tls_cert_lifetime) {
                Ok(v) if v >= 60 => v,
                Ok(_) => return fail(2, "--tls-cert-lifetime: at least 1m"),
                Err(code) => return code,
            };
            let org = authority::org_of(&data_dir).unwrap_or_else(|| "unknown".into());
            let mut settings = crate::telemetry::Settings::off(&format!("authority.{org}"));
            if let Err(e) = settings.apply_env(|k| std::env::var(k).ok()) {
                return fail(2, e);
            }
            *telemetry = match start_telemetry(log_format, &settings) {
                Ok(t) => t,
                Err(code) => return code,
            };
            match runtime.block_on(authority::run(&data_dir, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(
                    e @ (authority::AuthorityError::NotInitialised(_)
                    | authority::AuthorityError::WrongDir(_)),
                ) => fail(2, e),
                Err(e @ authority::AuthorityError::Listen { .. }) => fail(3, e),
                Err(e) => fail(6, e),
            }
        }
        Command::Node(NodeCommand::Run {
            data_dir,
            config,
            listen,
        }) => {
            let loaded = match load_node_config(&data_dir, config.as_deref(), listen) {
                Ok(loaded) => loaded,
                Err((code, message)) => {
                    let _ = start_telemetry(log_format, &crate::telemetry::Settings::off(""));
                    return fail(code, message);
                }
            };
            *telemetry = match start_telemetry(log_format, &loaded.telemetry) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (dir, file) = (data_dir.clone(), config.clone());
            let loader: crate::node::reload::Loader = std::sync::Arc::new(move || {
                load_node_config(&dir, file.as_deref(), listen).map_err(|(_, message)| message)
            });
            match runtime.block_on(crate::node::run::run(&data_dir, loaded, loader)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ crate::node::run::NodeError::Config(_)) => fail(2, e),
                Err(e @ crate::node::run::NodeError::Listen { .. }) => fail(3, e),
                Err(e) => fail(6, e),
            }
        }
        Command::Node(NodeCommand::Join {
            data_dir,
            name,
            roles,
            timeout,
            json,
            join_string_file,
            join_string,
        }) => {
            let text = crate::enroll::joinstring::read_source(
                join_string.as_deref(),
                join_string_file.as_deref(),
                std::env::var(crate::enroll::joinstring::ENV).ok(),
                std::io::stdin().lock(),
            );
            let join = match text.and_then(|t| JoinString::parse(&t).map_err(|e| e.to_string())) {
                Ok(join) => join,
                Err(e) => return fail(2, e),
            };
            let timeout = match duration("timeout", &timeout) {
                Ok(v) => v,
                Err(code) => return code,
            };
            if !json {
                println!(
                    "joining org {} at {} (pinned CA sha256:{}) as {}/{name}",
                    join.org.as_str(),
                    join.addr,
                    crate::util::hex(&join.ca_sha256),
                    join.org.as_str()
                );
            }
            let options = JoinOptions {
                data_dir: &data_dir,
                name: &name,
                join: &join,
                roles,
                timeout: Duration::from_secs(timeout),
            };
            let result = runtime.block_on(client::join(options, |request, node| {
                if json {
                    eprintln!(
                        "{{\"pending\":{{\"request_id\":\"{request}\",\"node_id\":\"{node}\"}}}}"
                    );
                } else {
                    println!("join request {request} for {node} is waiting for approval");
                    println!("  (on the authority: trellis joins approve {request})");
                }
            }));
            match result {
                Ok(done) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&done).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(done) => {
                    println!(
                        "joined as {}: certificate {} valid until {}; trust snapshot v{}",
                        done.node_id,
                        done.serial,
                        rfc3339(done.not_after),
                        done.snapshot_version
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.exit_code(), e),
            }
        }
    }
}

/// The node config: the file (or defaults), then `TRELLIS_*` variables, then flags.
/// `Err` carries the exit code and the one-line reason. Also used to reload.
fn load_node_config(
    data_dir: &std::path::Path,
    file: Option<&std::path::Path>,
    listen: Option<SocketAddr>,
) -> Result<crate::node::config::NodeConfig, (u8, String)> {
    use crate::node::config::NodeConfig;
    crate::util::datadir::ensure_role(data_dir, crate::util::datadir::Role::Node)
        .map_err(|e| (2, e))?;
    let store = crate::node::NodeStore::open(&crate::node::Paths::new(data_dir).db())
        .map_err(|e| (6, e.to_string()))?;
    let enrollment = store.enrollment().map_err(|e| (2, e.to_string()))?;
    let org = OrgId::new(&enrollment.org).map_err(|e| (6, e.to_string()))?;
    let mut config = match file {
        Some(path) => NodeConfig::load(path, &org).map_err(|e| (2, e.to_string()))?,
        None => {
            NodeConfig::minimal(listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7201))))
        }
    };
    config
        .apply_env(|k| std::env::var(k).ok())
        .map_err(|e| (2, e.to_string()))?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    config.telemetry.instance = enrollment.node_id.clone();
    Ok(config)
}
