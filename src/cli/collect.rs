//! `kube-ipam gc`: the leak collector run as a loop (Deployment) or once (CronJob).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::NetConf;
use crate::engine::events;
use crate::engine::scan::Restarts;
use crate::engine::Allocator;
use crate::gc::{Collector, Finding, Pass};
use crate::metrics::{figures, server, Figures, Metrics};
use crate::pod::kube::{KubeDirectory, REQUEST_TIMEOUT};
use crate::pod::{self, PodDirectory};
use crate::{stores, Result};

use super::inspect::say_restarts;

pub struct Options {
    pub kubeconfig: Option<PathBuf>,
    pub grace: Duration,
    pub interval: Duration,
    pub once: bool,
    pub dry_run: bool,
    pub metrics_address: Option<SocketAddr>,
}

/// `--kubeconfig`, else the config's `kubeConfig` or the default file, else the service
/// account of the pod this runs in.
async fn directory(conf: &NetConf, o: &Options) -> Result<Arc<dyn PodDirectory>> {
    let chosen = o
        .kubeconfig
        .clone()
        .or_else(|| pod::kubeconfig(conf.ipam.kube_config.as_deref()));
    Ok(match chosen {
        Some(path) => Arc::new(KubeDirectory::connect(&path, REQUEST_TIMEOUT).await?),
        None => Arc::new(KubeDirectory::in_cluster(REQUEST_TIMEOUT)?),
    })
}

pub async fn run(conf: &NetConf, o: &Options) -> Result<i32> {
    let pods = directory(conf, o).await?;
    let store: Arc<dyn kube_ipam_store::LeaseStore> = Arc::from(stores::open_existing(conf).await?);
    let keys = kube_ipam_store::Keys::new(&conf.ipam.key_prefix, &conf.name);
    let alloc =
        super::inspect::settled(conf, Allocator::new(store.clone(), keys, &conf.ipam)).await?;
    let metrics = match o.metrics_address {
        Some(addr) => {
            let m = Arc::new(Metrics::new(&conf.name));
            let bound = server::serve(addr, m.clone(), store).await?;
            println!("serving /metrics and /healthz on {bound}");
            Some(m)
        }
        None => None,
    };
    let mut gc = Collector::new(&alloc, pods.as_ref(), o.grace);
    if o.dry_run {
        let p = gc.pass(Instant::now(), true).await?;
        say_restarts(&p.restarts);
        for f in &p.suspects {
            say("would release", f);
        }
        println!(
            "dry run: {} to release after the grace period",
            p.suspects.len()
        );
        return Ok(super::exit::OK);
    }
    let mut number = 0u64;
    loop {
        number += 1;
        let started = Instant::now();
        let mut outcome = gc.pass(started, false).await;
        let mut fig = Figures::default();
        if outcome.is_ok() {
            // Events are folded every pass, scraped or not, so they never pile up.
            let mut restarts = Restarts::default();
            let read = match events::fold(alloc.store(), alloc.keys()).await {
                Ok(()) if metrics.is_some() => figures::read(&alloc, &mut restarts).await,
                other => other.map(|()| Figures::default()),
            };
            say_restarts(&restarts.notes);
            match read {
                Ok(f) => fig = f,
                // With an endpoint the figures are part of the pass: not reading them fails it.
                Err(e) if metrics.is_some() => outcome = Err(e),
                Err(e) => eprintln!("kube-ipam: pass {number}: cannot fold counter events: {e}"),
            }
        }
        if let Some(m) = &metrics {
            m.pass(started.elapsed(), outcome.as_ref().map(|_| fig));
        }
        // A once-run that could not finish a pass could not do its work (exit 2), whatever
        // failed: the store or the Kubernetes API, each saying so itself.
        let outcome = match outcome {
            Err(e) if o.once => {
                eprintln!("kube-ipam: pass {number} failed");
                return Err(e);
            }
            other => other,
        };
        let wait = match &outcome {
            Ok(p) => {
                report(number, p);
                // A once-run waits just long enough for its suspects to come due.
                if o.once && !p.suspects.is_empty() && number == 1 {
                    Some(o.grace)
                } else if o.once {
                    None
                } else {
                    Some(o.interval)
                }
            }
            Err(e) => {
                // A loop outlives a bad pass: nothing was released, the next pass starts over.
                eprintln!("kube-ipam: pass {number}: {e}");
                Some(o.interval)
            }
        };
        match wait {
            Some(d) => {
                println!("pass {number} done; next pass in {}s", d.as_secs());
                let _ = std::io::stdout().flush();
                tokio::time::sleep(d).await;
            }
            None => return Ok(super::exit::OK),
        }
    }
}

fn report(number: u64, p: &Pass) {
    say_restarts(&p.restarts);
    for f in &p.released {
        say("released", f);
    }
    for f in &p.suspects {
        say("suspect", f);
    }
    println!(
        "pass {number}: {} released, {} suspect",
        p.released.len(),
        p.suspects.len()
    );
}

fn say(verb: &str, f: &Finding) {
    let addrs: Vec<String> = f.addresses.iter().map(|a| a.to_string()).collect();
    println!("{verb} {} [{}]: {}", f.what, addrs.join(", "), f.why);
}

/// `300`, `300s`, `5m`, `1h`.
pub fn duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}
