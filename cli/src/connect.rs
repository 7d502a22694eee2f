//! `trellis connect`: local TCP listeners whose connections a node carries to a service
//! over the mesh, hop by hop (docs/operations.md, "Data plane").

use clap::{Args, Subcommand};

use trellis_daemon::admin::{ConnectInfo, Request};

use crate::authority::call;
use crate::table::render;
use crate::{Context, Failure};

/// `trellis connect NAME --listen ADDR`, or `connect list|remove`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Connect {
    #[command(subcommand)]
    command: Option<ConnectCommand>,
    /// The service to reach, e.g. web.acme.
    #[arg(required = true)]
    service: Option<String>,
    /// Local address to accept connections on, HOST:PORT (kept across restarts).
    #[arg(long, required = true)]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum ConnectCommand {
    /// The listeners with their connections, bytes and current next hop.
    List,
    /// Close the listeners on an address or for a service (open connections go on).
    Remove {
        /// A listen address HOST:PORT, or a service name.
        target: String,
    },
}

fn table(list: &[ConnectInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.listen.clone(),
                c.service.clone(),
                if c.listening {
                    "listening"
                } else {
                    "not bound"
                }
                .into(),
                c.next_hop.clone().unwrap_or_else(|| "no route".into()),
                c.active.to_string(),
                c.connections.to_string(),
                c.refused.to_string(),
                c.bytes_sent.to_string(),
                c.bytes_received.to_string(),
                c.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render(
        &[
            "LISTEN",
            "SERVICE",
            "STATE",
            "NEXT HOP",
            "ACTIVE",
            "CONNS",
            "REFUSED",
            "SENT",
            "RECEIVED",
            "LAST ERROR",
        ],
        &rows,
    )
}

pub fn connect(ctx: &Context, cmd: Connect) -> Result<(), Failure> {
    match (cmd.command, cmd.service, cmd.listen) {
        (Some(ConnectCommand::List), ..) => {
            let list: Vec<ConnectInfo> = call(ctx, &Request::ConnectList)?;
            ctx.print(&list, |l| table(l));
        }
        (Some(ConnectCommand::Remove { target }), ..) => {
            let removed: Vec<ConnectInfo> =
                call(ctx, &Request::ConnectRemove { target })?;
            ctx.print(&removed, |r| {
                r.iter()
                    .map(|c| format!("closed {} ({})\n", c.listen, c.service))
                    .collect()
            });
        }
        (None, Some(service), Some(listen)) => {
            let info: ConnectInfo =
                call(ctx, &Request::ConnectAdd { service, listen })?;
            ctx.print(&info, |c| {
                let route = match &c.next_hop {
                    Some(hop) => format!("next hop {hop}"),
                    None => "no route yet: connections are refused until one appears".into(),
                };
                format!("listening on {} for {} ({route})\n", c.listen, c.service)
            });
        }
        _ => {
            return Err(Failure::new(
                2,
                "usage: trellis connect SERVICE --listen HOST:PORT | connect list | connect remove TARGET",
            ))
        }
    }
    Ok(())
}
