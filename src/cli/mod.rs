//! The operator CLI: what holds which address, how full each range is, and repairs.
//! It reads the same network config files as the runtime and talks to the same store.

mod collect;
mod examples;
mod inspect;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::{self, NetConf};
use crate::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    name = "kube-ipam",
    version,
    about = "Inspect and repair kube-ipam allocations. Run with CNI_COMMAND set, it is the CNI plugin."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExampleType {
    Macvlan,
    Ipvlan,
    Bridge,
    Multus,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every held address: kind, pod, container, interface, node, age.
    Ls {
        /// Network config: a .conf, a .conflist or a Multus config holding a kube-ipam block.
        #[arg(long)]
        conf: PathBuf,
        /// Only this pod, as namespace/name.
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        node: Option<String>,
        /// Only addresses of the range whose subnet is this CIDR.
        #[arg(long)]
        range: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Per range: size, used, free.
    Usage {
        #[arg(long)]
        conf: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Who holds an address, or "free".
    Show {
        #[arg(long)]
        conf: PathBuf,
        ip: std::net::IpAddr,
    },
    /// Frees the attachment holding an address, only if it is still the holder just shown.
    Release {
        #[arg(long)]
        conf: PathBuf,
        ip: std::net::IpAddr,
    },
    /// Frees what pods that no longer exist left behind, checked against the Kubernetes pod
    /// list in two passes a grace period apart.
    Gc {
        #[arg(long)]
        conf: PathBuf,
        /// Kubeconfig to list pods with; default: the config's kubeConfig, then the pod's
        /// service account.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// How long a record must stay a suspect before it is released.
        #[arg(long, default_value = "5m", value_parser = collect::duration)]
        grace: std::time::Duration,
        /// Time between passes when running as a loop.
        #[arg(long, default_value = "1m", value_parser = collect::duration)]
        interval: std::time::Duration,
        /// Two passes (one grace period apart if there are suspects), then exit.
        #[arg(long)]
        once: bool,
        /// One pass; print what would be released, release nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Checks that address records and owner records agree; exits 1 on any problem.
    CheckStore {
        #[arg(long)]
        conf: PathBuf,
    },
    /// Converts the store an earlier release kept in DIR (`<dataDir>/<network>`, sled) into
    /// the current one, keeping every record; the plugin refuses that directory until then.
    ConvertStore { dir: PathBuf },
    /// Network config tools.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Validates a config file and prints every problem.
    Check { file: PathBuf },
    /// Prints a working config for a main plugin.
    Example {
        #[arg(long = "type", value_enum)]
        kind: ExampleType,
    },
}

/// Runs the CLI; returns the process exit code. Output goes to stdout, problems to stderr.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-ipam: cannot start runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kube-ipam: {e}");
            1
        }
    }
}

async fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Ls {
            conf,
            pod,
            node,
            range,
            output,
        } => {
            let filter = inspect::Filter { pod, node, range };
            inspect::ls(&load(&conf)?, &filter, output).await
        }
        Cmd::Usage { conf, output } => inspect::usage(&load(&conf)?, output).await,
        Cmd::Show { conf, ip } => inspect::show(&load(&conf)?, ip).await,
        Cmd::Release { conf, ip } => inspect::release(&load(&conf)?, ip).await,
        Cmd::CheckStore { conf } => inspect::check_store(&load(&conf)?).await,
        Cmd::Gc {
            conf,
            kubeconfig,
            grace,
            interval,
            once,
            dry_run,
        } => {
            let o = collect::Options {
                kubeconfig,
                grace,
                interval,
                once,
                dry_run,
            };
            collect::run(&load(&conf)?, &o).await
        }
        Cmd::ConvertStore { dir } => {
            let copied = kube_ipam_sqlite::legacy::convert(&dir)?;
            println!("{}: converted, {copied} records", dir.display());
            Ok(0)
        }
        Cmd::Config {
            command: ConfigCmd::Check { file },
        } => Ok(check(&file)),
        Cmd::Config {
            command: ConfigCmd::Example { kind },
        } => {
            println!("{}", examples::example(kind));
            Ok(0)
        }
    }
}

/// The kube-ipam network config inside a config file of any of the usual shapes.
fn locate_in(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let doc: Value = serde_json::from_slice(&text).map_err(|e| Error::Decode {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let found = config::locate(&doc).ok_or_else(|| Error::Decode {
        what: path.display().to_string(),
        reason: "holds no network config with an ipam block of type kube-ipam".into(),
    })?;
    Ok(found.to_string().into_bytes())
}

fn load(path: &Path) -> Result<NetConf> {
    config::parse(&locate_in(path)?)
}

fn check(path: &Path) -> i32 {
    let problems = match locate_in(path) {
        Ok(bytes) => config::check(&bytes),
        Err(e) => vec![e],
    };
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return 0;
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    1
}
