//! `skiff hollow-nodes`: N hollow nodes (skiff_controllers::hollow, as kubemark's) against
//! the API server of a kubeconfig, until SIGTERM or Ctrl-C — which, like killing the
//! process, is a failure of every node (they stop heartbeating; the Node objects stay).
//!
//! One node at a time fails or comes back through standard input: a line
//! `fail NAME` or `recover NAME` (answered on standard output with `failed NAME`,
//! `recovered NAME` or `unknown node NAME`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_controllers::hollow::{HollowConfig, HollowNodes};

#[derive(Debug, clap::Args)]
pub struct HollowArgs {
    /// The kubeconfig to reach the API server with (its current context).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How many nodes to register.
    #[arg(long)]
    count: usize,
    /// Node names are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "hollow-node-")]
    prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// How often each node renews its Lease in kube-node-lease.
    #[arg(long, default_value = "10s", value_parser = crate::server_cmd::parse_duration)]
    node_lease_renew_interval: Duration,
}

pub fn main(args: HollowArgs) -> Result<()> {
    crate::server_cmd::serve_blocking(run(args))
}

fn check_quantity(flag: &str, v: &str) -> Result<()> {
    if skiff_api::quantity::Quantity::parse(v).is_err() {
        bail!("{flag} {v:?} is not a quantity; write e.g. 4, 500m, 16Gi");
    }
    Ok(())
}

async fn run(args: HollowArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    check_quantity("--cpu", &args.cpu)?;
    check_quantity("--memory", &args.memory)?;
    if args.node_lease_renew_interval.is_zero() {
        bail!("--node-lease-renew-interval must be positive");
    }
    let identity = skiff_leader::unique_identity();
    let (client, server) =
        crate::component::kube_client(&args.kubeconfig, "hollow-node", &identity).await?;
    let config = HollowConfig {
        prefix: args.prefix.clone(),
        count: args.count,
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
        renew_interval: args.node_lease_renew_interval,
        ..Default::default()
    };
    let nodes = HollowNodes::start(client, config)
        .await
        .with_context(|| format!("register {} hollow nodes with {server}", args.count))?;
    eprintln!(
        "skiff hollow-nodes: {} nodes registered ({}0 … {}{}) with {server}",
        args.count,
        args.prefix,
        args.prefix,
        args.count - 1
    );
    // Standard input is read on a thread of its own (a blocking read of a terminal or
    // pipe); it ends at EOF.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdin_open = true;
    let signal = crate::server_cmd::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            line = lines.recv(), if stdin_open => match line {
                Some(l) => command(&nodes, l.trim()),
                None => stdin_open = false,
            },
        }
    }
    nodes.stop().await;
    Ok(())
}

/// One line of standard input: `fail NAME` or `recover NAME`.
fn command(nodes: &HollowNodes, line: &str) {
    let reply = match line.split_once(char::is_whitespace) {
        Some(("fail", name)) if nodes.fail(name.trim()) => format!("failed {}", name.trim()),
        Some(("recover", name)) if nodes.recover(name.trim()) => {
            format!("recovered {}", name.trim())
        }
        Some(("fail" | "recover", name)) => format!("unknown node {}", name.trim()),
        _ if line.is_empty() => return,
        _ => format!("unknown command {line:?}; use: fail NAME | recover NAME"),
    };
    // Standard output may be closed (nobody listening): not a reason to stop.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{reply}").and_then(|()| out.flush());
}
