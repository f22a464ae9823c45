//! The collector's endpoint as operators use it: scraped by Debian's real Prometheus, with
//! the store on a real etcd and pods on the stand-in Kubernetes API; its health following
//! etcd; the alert rules loaded and tested by `promtool`.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube_ipam::testing::{ApiMode, KubeApi};
use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::{call, cli, Out, Scratch};

const NS: &str = "shop";
const RANGE: &str = "10.193.0.0/24 10.193.0.10-10.193.0.29";

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A plain HTTP/1.0 GET (no chunking to undo): status and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

/// Retries `f` until it returns `Some`, or fails the test after `limit` naming `what`.
fn await_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn network(s: &Scratch, etcd: &EtcdServer, api: &KubeApi) -> String {
    s.conf(
        "1.1.0",
        json!({
            "subnet": "10.193.0.0/24", "rangeStart": "10.193.0.10", "rangeEnd": "10.193.0.29",
            "fixedStart": "10.193.0.200", "fixedEnd": "10.193.0.220",
            "etcdConfig": {"etcdURL": etcd.endpoint(), "requestTimeout": 2, "dialTimeout": 2},
            "kubeConfig": api.kubeconfig(),
        }),
    )
}

fn pod_call(cmd: &str, container: &str, name: &str, uid: &str, conf: &str) -> Out {
    support::pods::pod_call(cmd, container, (NS, name), uid, "node-1", conf)
}

/// `kube-ipam gc` as a loop with an endpoint on a free loopback port; returns it and the
/// address it serves on, read from its first line.
fn collector(conf: &Path, dir: &Path) -> (Running, SocketAddr) {
    let mut child = Command::new(support::BIN)
        .env_remove("CNI_COMMAND")
        .args(["gc", "--conf"])
        .arg(conf)
        .args(["--interval", "1s", "--grace", "0s"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("collector.err")).expect("stderr file"))
        .spawn()
        .expect("spawn collector");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    // Keeps reading so the collector never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let err = std::fs::read_to_string(dir.join("collector.err")).unwrap_or_default();
                panic!("collector never said where it serves: {err}")
            });
        if let Some(a) = line.strip_prefix("serving /metrics and /healthz on ") {
            break a.parse().expect("served address");
        }
    };
    (running, addr)
}

fn usage(conf: &Path) -> Value {
    let (code, out, err) = cli(&[
        "usage",
        "--conf",
        conf.to_str().expect("utf-8"),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "usage failed: {err}");
    let v: Value = serde_json::from_str(&out).expect("usage json");
    v[0].clone()
}

struct Prometheus {
    _process: Running,
    addr: SocketAddr,
}

impl Prometheus {
    /// Debian's prometheus scraping `target` every second, on a free port, data in `dir`.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: kube-ipam\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("start prometheus (Debian package prometheus; scripts/install-deps.sh)");
        let p = Prometheus {
            _process: Running(child),
            addr,
        };
        await_until("prometheus to be ready", Duration::from_secs(60), || {
            get(addr, "/-/ready").ok().filter(|(c, _)| *c == 200)
        });
        p
    }

    /// The value of a query with exactly one series, if Prometheus has one yet.
    fn value(&self, query: &str) -> Option<f64> {
        let (code, body) =
            get(self.addr, &format!("/api/v1/query?query={}", encode(query))).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().expect("number as string"),
        other => other.as_f64().expect("number"),
    }
}

#[test]
fn prometheus_sees_what_usage_says() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, &api);
    let path = s.path().join("net.conf");
    std::fs::write(&path, &conf).expect("write conf");

    // Five pods live, one with a fixed address; one sticky pod parked between two lives.
    for i in 0..5 {
        let name = format!("web-{i}");
        let uid = api.add_pod(NS, &name, &[]);
        pod_call("ADD", &format!("ctr-web-{i}"), &name, &uid, &conf).ok();
    }
    let uid = api.add_pod(NS, "db-0", &[("kube-ipam.ip", "10.193.0.201")]);
    pod_call("ADD", "ctr-db-0", "db-0", &uid, &conf).ok();
    let uid = api.add_pod(NS, "cache-0", &[("kube-ipam.sticky", "true")]);
    pod_call("ADD", "ctr-cache-0", "cache-0", &uid, &conf).ok();
    pod_call("DEL", "ctr-cache-0", "cache-0", &uid, &conf).quiet();
    // db-0 recreated elsewhere before its old sandbox's DEL: its fixed address moves over.
    api.remove_pod(NS, "db-0");
    let uid = api.add_pod(NS, "db-0", &[("kube-ipam.ip", "10.193.0.201")]);
    let moved = pod_call("ADD", "ctr-db-0b", "db-0", &uid, &conf).ip();
    assert_eq!(moved, "10.193.0.201");
    // One DEL, and a sandbox the runtime forgot: the CNI GC verb releases it.
    pod_call("DEL", "ctr-web-4", "web-4", "x", &conf).quiet();
    api.remove_pod(NS, "web-4");
    let uid = api.add_pod(NS, "orphan", &[]);
    pod_call("ADD", "ctr-orphan", "orphan", &uid, &conf).ok();
    // A pod whose node died: still in the store, gone from the API; the collector releases it.
    let uid = api.add_pod(NS, "lost", &[]);
    pod_call("ADD", "ctr-lost", "lost", &uid, &conf).ok();
    api.remove_pod(NS, "lost");

    let mut gc: Value = serde_json::from_str(&conf).expect("conf json");
    let valid: Vec<Value> = [
        "ctr-web-0",
        "ctr-web-1",
        "ctr-web-2",
        "ctr-web-3",
        "ctr-db-0b",
        "ctr-lost",
    ]
    .iter()
    .map(|c| json!({"containerID": c, "ifname": "eth0"}))
    .collect();
    gc["cni.dev/valid-attachments"] = json!(valid);
    call("GC", "", "eth0", &[], &gc.to_string()).quiet();

    let (_collector, endpoint) = collector(&path, s.path());
    await_until(
        "the collector to release the lost pod",
        Duration::from_secs(60),
        || {
            let u = usage(&path);
            (u["leaksReleased"]["gc"] == 1).then_some(())
        },
    );
    let u = usage(&path);
    assert_eq!(u["range"], RANGE);
    // web-0..3 dynamic, cache-0 parked, db-0 fixed; orphan and lost released.
    assert_eq!(
        (&u["dynamic"], &u["sticky"], &u["parked"], &u["fixed"]),
        (&json!(4), &json!(0), &json!(1), &json!(1)),
        "{u}"
    );
    assert_eq!(u["used"], "5");
    assert_eq!(u["free"], "15");
    assert_eq!(u["attachments"], 5, "{u}");
    assert_eq!(u["leaksReleased"]["cniGc"], 1, "{u}");
    assert_eq!(u["takeovers"], 1, "{u}");

    let (code, text) = get(endpoint, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");

    let prom = Prometheus::start(s.path(), endpoint);
    let r = format!(r#"network="testnet",range="{RANGE}""#);
    let want = [
        (format!("kube_ipam_range_addresses{{{r}}}"), &u["size"]),
        (format!("kube_ipam_range_free_addresses{{{r}}}"), &u["free"]),
        (
            format!("kube_ipam_range_attachments{{{r}}}"),
            &u["attachments"],
        ),
        (
            format!(r#"kube_ipam_range_held_addresses{{{r},kind="dynamic"}}"#),
            &u["dynamic"],
        ),
        (
            format!(r#"kube_ipam_range_held_addresses{{{r},kind="sticky"}}"#),
            &u["sticky"],
        ),
        (
            format!(r#"kube_ipam_range_held_addresses{{{r},kind="parked"}}"#),
            &u["parked"],
        ),
        (
            format!(r#"kube_ipam_range_held_addresses{{{r},kind="fixed"}}"#),
            &u["fixed"],
        ),
        (
            format!(r#"kube_ipam_leaks_released_total{{{r},by="gc"}}"#),
            &u["leaksReleased"]["gc"],
        ),
        (
            format!(r#"kube_ipam_leaks_released_total{{{r},by="cni-gc"}}"#),
            &u["leaksReleased"]["cniGc"],
        ),
        (
            format!("kube_ipam_fixed_takeovers_total{{{r}}}"),
            &u["takeovers"],
        ),
    ];
    for (query, expected) in &want {
        let expected = as_f64(expected);
        let got = await_until(query, Duration::from_secs(60), || {
            prom.value(query).filter(|v| *v == expected)
        });
        assert_eq!(got, expected, "{query}");
    }
    // Every query of the dashboard is one Prometheus accepts; its usage figure is usage's.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json"),
        )
        .expect("read dashboard"),
    )
    .expect("dashboard json");
    let panels = dashboard["panels"].as_array().expect("panels");
    for t in panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
    {
        let q = t["expr"].as_str().expect("expr").replace("$network", ".*");
        let (code, body) = get(prom.addr, &format!("/api/v1/query?query={}", encode(&q)))
            .expect("query prometheus");
        assert_eq!(code, 200, "{q}: {body}");
    }
    let used = panels[0]["targets"][0]["expr"].as_str().expect("expr");
    let percent = as_f64(&u["percent"]);
    await_until("the dashboard's usage", Duration::from_secs(30), || {
        prom.value(&used.replace("$network", ".*"))
            .filter(|v| (v - percent).abs() < 1e-9)
    });
    let passes = prom.value(r#"kube_ipam_gc_passes_total{network="testnet"}"#);
    assert!(passes.is_some_and(|p| p >= 2.0), "{passes:?}");
    assert_eq!(
        prom.value(r#"kube_ipam_gc_pass_failures_total{network="testnet"}"#),
        Some(0.0)
    );
}

#[test]
fn healthz_follows_etcd() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let path = s.path().join("net.conf");
    std::fs::write(&path, network(&s, &etcd, &api)).expect("write conf");
    let (_collector, endpoint) = collector(&path, s.path());
    let health = || get(endpoint, "/healthz").map(|(c, _)| c).unwrap_or(0);
    await_until("a first pass, healthy", Duration::from_secs(30), || {
        let (_, text) = get(endpoint, "/metrics").ok()?;
        (text.contains("kube_ipam_range_addresses") && health() == 200).then_some(())
    });

    etcd.freeze().expect("SIGSTOP etcd");
    let why = await_until(
        "unhealthy with etcd stopped",
        Duration::from_secs(30),
        || get(endpoint, "/healthz").ok().filter(|(c, _)| *c == 503),
    );
    assert!(
        why.1.contains("store") || why.1.contains("etcd"),
        "names the store: {why:?}"
    );
    // Scrapes still answer while etcd is stopped: they never touch the store.
    let (code, text) = get(endpoint, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    assert!(text.contains("kube_ipam_range_addresses"), "{text}");

    etcd.thaw().expect("SIGCONT etcd");
    await_until("healthy again", Duration::from_secs(60), || {
        (health() == 200).then_some(())
    });
    let (_, text) = get(endpoint, "/metrics").expect("scrape");
    assert!(
        text.contains(r#"kube_ipam_store_errors_total{network="testnet",kind="unavailable"}"#),
        "{text}"
    );

    // A pass that fails for want of the pod list is unhealthy too, with the store fine.
    api.set_mode(ApiMode::Unavailable);
    let why = await_until(
        "unhealthy with the API down",
        Duration::from_secs(30),
        || get(endpoint, "/healthz").ok().filter(|(c, _)| *c == 503),
    );
    assert!(why.1.contains("last pass failed"), "{why:?}");
    api.set_mode(ApiMode::Serve);
    await_until("healthy with the API back", Duration::from_secs(30), || {
        (health() == 200).then_some(())
    });
}

#[test]
fn a_taken_metrics_address_is_an_error_of_the_command() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let path = s.path().join("net.conf");
    std::fs::write(&path, network(&s, &etcd, &api)).expect("write conf");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let p = path.to_str().expect("utf-8");
    let (code, _, err) = cli(&["gc", "--conf", p, "--metrics-address", &addr]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("--metrics-address {addr}")), "{err}");
    let (code, _, err) = cli(&["gc", "--conf", p, "--metrics-address", "localhost:x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--metrics-address"), "{err}");
}

#[test]
fn alert_rules_load_and_the_full_range_rule_fires() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("deploy/alerts.yaml"))
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The cases: a range 95 % full fires after 5 minutes, one 90 % full never does.
    let out = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(root.join("tests/fixtures"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
