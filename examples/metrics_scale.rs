//! How long a scrape of the collector takes when a /12 holds 150,000 addresses, and how long
//! the pass that reads the figures takes. A measurement, not a test: `scripts/bench-metrics.sh`.
//!
//! Starts its own etcd and stand-in Kubernetes API, fills the store through the same
//! `LeaseStore` the plugin uses, runs the release binary as `kube-ipam gc --metrics-address`,
//! and times whole HTTP GETs of /metrics from connect to last byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_ipam::testing::KubeApi;
use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::records::encode;
use kube_ipam_store::{AttachedIp, Attachment, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation};

const HELD: u32 = 150_000;
/// Records per commit: two puts each, under etcd's default 128 operations.
const BATCH: u32 = 60;
const SCRAPES: usize = 50;

fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let held: u32 = std::env::var("HELD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(HELD);
    let etcd = EtcdServer::start()?;
    let api = KubeApi::start()?;
    let dir = tempfile::tempdir()?;
    let range = "10.32.0.0/12 10.32.0.1-10.47.255.254";
    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    rt.block_on(async {
        let store = Arc::new(EtcdStore::connect(etcd.options()).await?);
        let keys = Arc::new(Keys::new("/kube-ipam", "big"));
        let mut tasks = Vec::new();
        for worker in 0..8u32 {
            let (store, keys) = (store.clone(), keys.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = worker * BATCH;
                while n < held {
                    let mut m = Vec::new();
                    for i in n..(n + BATCH).min(held) {
                        // Spread over the whole /12, as random picks would be.
                        let addr = std::net::Ipv4Addr::from(0x0a20_0002 + i * 6);
                        let holder = Holder {
                            container_id: format!("c{i:07}"),
                            ifname: "eth0".into(),
                            pod: None,
                            node: format!("node-{}", i % 500),
                        };
                        let kind = if i % 50 == 0 {
                            Kind::Sticky
                        } else {
                            Kind::Dynamic
                        };
                        let rec = IpRecord {
                            network: "big".into(),
                            holder: holder.clone(),
                            kind,
                            range: range.into(),
                            created: 1,
                        };
                        let att = Attachment {
                            holder,
                            ips: vec![AttachedIp {
                                address: addr.into(),
                                prefix_len: 12,
                                gateway: None,
                                kind,
                                range: range.into(),
                            }],
                            created: 1,
                        };
                        m.push(Mutation::Put(keys.ip(addr.into()), encode(&rec)));
                        m.push(Mutation::Put(
                            keys.owner(&format!("c{i:07}"), "eth0"),
                            encode(&att),
                        ));
                    }
                    store.commit(&[], &m).await?;
                    n += 8 * BATCH;
                }
                Ok::<_, kube_ipam_store::StoreError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    eprintln!(
        "filled {held} addresses in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let conf = dir.path().join("net.conf");
    std::fs::write(
        &conf,
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "big", "type": "bridge",
            "ipam": {
                "type": "kube-ipam", "subnet": "10.32.0.0/12",
                "etcdConfig": {"etcdURL": etcd.endpoint(), "requestTimeout": 30},
                "kubeConfig": api.kubeconfig(), "logFile": dir.path().join("log"),
            }
        })
        .to_string(),
    )?;
    let bin = std::env::var("KUBE_IPAM_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap_or_default();
        let dir = exe
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(std::path::Path::new("."));
        dir.join("kube-ipam").display().to_string()
    });
    // Once with passes an hour apart (scrapes meet an idle collector), once with passes back
    // to back (scrapes meet a pass reading every record).
    for (interval, label) in [("1h", "idle"), ("1s", "during passes")] {
        scrape(&bin, &conf, interval, label, held)?;
    }
    Ok(())
}

fn scrape(
    bin: &str,
    conf: &std::path::Path,
    interval: &str,
    label: &str,
    held: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new(bin)
        .args(["gc", "--conf"])
        .arg(conf)
        .args(["--interval", interval, "--metrics-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().ok_or("collector ended")??;
        if let Some(a) = line.strip_prefix("serving /metrics and /healthz on ") {
            break a.parse()?;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pass_started = Instant::now();
    let body = loop {
        let b = get(addr, "/metrics")?;
        if b.contains("kube_ipam_range_addresses") {
            break b;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = pass_started.elapsed();
    let duration = body
        .lines()
        .find(|l| l.starts_with("kube_ipam_gc_pass_duration_seconds_sum"))
        .unwrap_or("?");
    let dynamic = body
        .lines()
        .find(|l| l.contains("kind=\"dynamic\""))
        .unwrap_or("?");
    eprintln!(
        "first pass visible after {:.2} s; {duration}; {dynamic}",
        first.as_secs_f64()
    );

    let mut times = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        // Spread over several passes when they run back to back.
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        let b = get(addr, "/metrics")?;
        times.push(t.elapsed());
        if !b.ends_with("# EOF\n") {
            return Err(format!("a scrape ended early: {b:?}").into());
        }
    }
    times.sort();
    println!(
        "scrape of /metrics, {} held in a /12, {label}, {SCRAPES} GETs: min {:.2} ms, median {:.2} ms, max {:.2} ms ({} bytes)",
        held,
        times[0].as_secs_f64() * 1e3,
        times[SCRAPES / 2].as_secs_f64() * 1e3,
        times[SCRAPES - 1].as_secs_f64() * 1e3,
        body.len()
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
