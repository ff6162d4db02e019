//! `pinnersage fleet haproxy`: the load balancer's configuration from the partition map.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use pinnersage_server::haproxy::{HaproxyFleet, Replica};

use crate::args::InputError;

/// Tools for a fleet of replicas (docs/fleet.md).
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Write the HAProxy configuration that routes each user to a replica holding the user's
    /// partition.
    Haproxy(HaproxyArgs),
}

/// Write the HAProxy configuration of a partitioned fleet.
///
/// Users' requests (/v1/users/{user}/...) go to a replica holding partition crc32(user) %
/// --partitions, the first holder of each group of partitions taking the traffic and the others
/// as backups; every other route goes to any ready replica. Every server is checked on /readyz
/// every --check-ms (out after 2 failed checks or its first refused connection, back after 2
/// good checks); a request a dying replica cut off is sent to the next holder. Hold every
/// partition on two replicas: a partition with one holder has no backup (a comment says so).
///
/// Example (8 partitions, each held twice):
///   pinnersage fleet haproxy --partitions 8 --bind :8080 \
///     --replica a@10.0.0.1:8080=0-3 --replica b@10.0.0.2:8080=4-7 \
///     --replica c@10.0.0.3:8080=0,1,4,5 --replica d@10.0.0.4:8080=2,3,6,7 > haproxy.cfg
///   haproxy -f haproxy.cfg
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct HaproxyArgs {
    /// The fleet's partitions (every replica's --partitions).
    #[arg(long)]
    partitions: u32,
    /// A replica: NAME@HOST:PORT=PARTITIONS, partitions as numbers and ranges (its
    /// --consume-partitions), e.g. a@10.0.0.1:8080=0-3,6. Repeat for each replica.
    #[arg(
        long = "replica",
        value_name = "NAME@HOST:PORT=PARTITIONS",
        required = true
    )]
    replicas: Vec<Replica>,
    /// Where HAProxy listens.
    #[arg(long, default_value = ":8080")]
    bind: String,
    /// Milliseconds between health checks of each server.
    #[arg(long, default_value_t = 1_000)]
    check_ms: u32,
    /// Write the configuration to this file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `pinnersage fleet ...`.
pub fn run(command: &FleetCommand) -> Result<()> {
    let FleetCommand::Haproxy(args) = command;
    let config = HaproxyFleet {
        partitions: args.partitions,
        replicas: args.replicas.clone(),
        bind: args.bind.clone(),
        check_ms: args.check_ms.max(100),
    }
    .config()
    .map_err(|e| InputError(e.to_string()))?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, config).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{config}"),
    }
    Ok(())
}
