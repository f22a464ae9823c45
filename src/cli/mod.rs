//! The operator CLI: what holds which address, how full each range is, and repairs.
//! It reads the same network config files as the runtime and talks to the same store.

mod collect;
mod examples;
mod import;
mod inspect;
mod install;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::config::{self, NetConf};
use crate::{Error, Result};

/// Exit codes of the operator commands: a script or an alert tells "the store is wrong"
/// from "the store could not be read" by the code alone.
pub mod exit {
    /// Done; `check-store`: the store is consistent.
    pub const OK: i32 = 0;
    /// Done, and something is wrong, each printed: problems in the store (`check-store`),
    /// an unreadable record (`show`), a release that lost a race, conflicts of an import,
    /// mistakes in a config (`config check`).
    pub const FOUND: i32 = 1;
    /// Could not be done: the store unreachable, busy or its snapshot lost too often, a
    /// file unreadable, an argument wrong. The reason is on stderr.
    pub const FAILED: i32 = 2;
}

const EXIT_CODES: &str = "\
Exit codes: 0 done (check-store: consistent); 1 done and something is wrong, each printed \
(check-store: problems in the store; show: an unreadable record; release: the address changed \
hands meanwhile; import: conflicts; config check: mistakes); 2 could not be done (store \
unreachable or busy, unreadable file, bad argument), the reason on stderr. An address nobody \
holds is no error: show prints \"free\", release \"nothing to release\", both exit 0.";

#[derive(Debug, Parser)]
#[command(
    name = "kube-ipam",
    version,
    about = "Inspect and repair kube-ipam allocations. Run with CNI_COMMAND set, it is the CNI plugin.",
    after_help = EXIT_CODES
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
    /// Who holds an address, or "free" (exit 0 either way).
    Show {
        #[arg(long)]
        conf: PathBuf,
        ip: std::net::IpAddr,
    },
    /// Frees the attachment holding an address, only if it is still the holder just shown;
    /// exits 1 if it changed hands meanwhile, 0 if nobody held it.
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
        /// Serve OpenMetrics at /metrics and liveness at /healthz on this address,
        /// e.g. 0.0.0.0:9464.
        #[arg(long)]
        metrics_address: Option<std::net::SocketAddr>,
    },
    /// Checks that address records and owner records agree, in one snapshot of the store.
    ///
    /// ADDs and DELs may go on meanwhile: they are seen whole or not at all. Exit codes: 0
    /// consistent; 1 problems found, each printed on stdout; 2 could not check (store
    /// unreachable or busy, config unreadable), the reason on stderr. On etcd, a check whose
    /// revision is compacted away meanwhile starts over at a newer one, up to 3 times, and
    /// says so on stderr.
    CheckStore {
        #[arg(long)]
        conf: PathBuf,
    },
    /// Turns the allocations of the original plugin or of host-local into kube-ipam records,
    /// leaving its source untouched; exits 1 on conflicts and refused addresses.
    Import {
        #[arg(long)]
        conf: PathBuf,
        #[arg(long, value_enum)]
        from: import::Source,
        /// host-local's dataDir; its files of this network are in <dir>/<network name>.
        #[arg(long, default_value = import::HOST_LOCAL_DIR)]
        dir: PathBuf,
        /// Print what would be imported, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also record addresses outside every configured subnet (as /32 or /128).
        #[arg(long)]
        take_outside: bool,
    },
    /// Puts kube-ipam on this node: the command of the DaemonSet's container.
    #[command(group(
        clap::ArgGroup::new("work")
            .required(true)
            .multiple(true)
            .args(["bin_dir", "kubeconfig", "confs"])
    ))]
    Install {
        /// Copy this executable to DIR/kube-ipam (mode 0755), unless it is there already.
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Write a kubeconfig for the pod's service account to FILE (mode 0600).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Where the service account's `token` and `ca.crt` are mounted.
        #[arg(long, value_name = "DIR", default_value = install::SERVICE_ACCOUNT_DIR)]
        service_account_dir: PathBuf,
        /// Copy the network config files given to DIR, each under its own name.
        #[arg(long, value_name = "DIR", requires = "confs")]
        conf_dir: Option<PathBuf>,
        /// Keep running: rewrite the kubeconfig when the token changes and the configs when
        /// they change; exit 0 on SIGTERM.
        #[arg(long)]
        watch: bool,
        /// Network config files to copy to --conf-dir.
        #[arg(value_name = "CONF", requires = "conf_dir")]
        confs: Vec<PathBuf>,
    },
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
    // Synchronous, and its signal handling wants the process to have no other thread.
    let command = match cli.command {
        Cmd::Install {
            bin_dir,
            kubeconfig,
            service_account_dir,
            conf_dir,
            watch,
            confs,
        } => {
            let o = install::Options {
                bin_dir,
                kubeconfig,
                service_account_dir,
                conf_dir,
                confs,
                watch,
            };
            return match install::run(&o) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("kube-ipam install: {e}");
                    1
                }
            };
        }
        other => other,
    };
    // A scrape or a health probe must not wait for a pass busy reading a large store.
    let serving = matches!(
        command,
        Cmd::Gc {
            metrics_address: Some(_),
            ..
        }
    );
    let mut builder = match serving {
        true => tokio::runtime::Builder::new_multi_thread(),
        false => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-ipam: cannot start runtime: {e}");
            return exit::FAILED;
        }
    };
    match rt.block_on(run(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kube-ipam: {e}");
            exit::FAILED
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
            metrics_address,
        } => {
            let o = collect::Options {
                kubeconfig,
                grace,
                interval,
                once,
                dry_run,
                metrics_address,
            };
            collect::run(&load(&conf)?, &o).await
        }
        Cmd::Import {
            conf,
            from,
            dir,
            dry_run,
            take_outside,
        } => {
            let o = import::Options {
                from,
                dir,
                dry_run,
                take_outside,
            };
            import::run(&load(&conf)?, &o).await
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
        Cmd::Install { .. } => Err(Error::Internal("install runs before the runtime".into())),
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

/// The files a valid config names must be there and readable by this user, or the first ADD
/// fails on the node.
fn unreadable_files(conf: &NetConf) -> Vec<Error> {
    let ipam = &conf.ipam;
    let mut named: Vec<(&str, &Path)> = Vec::new();
    if let Some(p) = &ipam.resolv_conf {
        named.push(("ipam.resolvConf", p));
    }
    if let Some(p) = &ipam.kube_config {
        named.push(("ipam.kubeConfig", p));
    }
    if let Some(e) = &ipam.etcd {
        let tls = [
            ("ipam.etcdConfig.etcdCertFile", &e.cert_file),
            ("ipam.etcdConfig.etcdKeyFile", &e.key_file),
            ("ipam.etcdConfig.etcdTrustedCAFileFile", &e.ca_file),
        ];
        for (field, p) in tls {
            if let Some(p) = p {
                named.push((field, p));
            }
        }
    }
    named
        .into_iter()
        .filter_map(|(field, p)| {
            std::fs::File::open(p)
                .err()
                .map(|e| Error::config(field, p.display(), format!("cannot be read: {e}")))
        })
        .collect()
}

fn load(path: &Path) -> Result<NetConf> {
    config::parse(&locate_in(path)?)
}

fn check(path: &Path) -> i32 {
    let problems = match locate_in(path) {
        Ok(bytes) => match config::parse(&bytes) {
            Ok(conf) => unreadable_files(&conf),
            Err(_) => config::check(&bytes),
        },
        Err(e) => vec![e],
    };
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return exit::OK;
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    exit::FOUND
}
