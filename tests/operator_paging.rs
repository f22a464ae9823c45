//! Operator commands over more records than one page: `ls` streams, `check-store` pages,
//! and a reader that stops early (`ls | head`) ends the command quietly.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::records::encode;
use kube_ipam_store::{
    AttachedIp, Attachment, Compare, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation,
};
use serde_json::{json, Value};
use support::Scratch;

/// More than one page of 25,000.
const HELD: u32 = 26_000;

/// Writes `HELD` attachments of one address each, as ADD would have.
fn fill(etcd: &EtcdServer, network: &str, range: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(etcd.options()).await.expect("connect");
        let keys = Keys::new("/kube-ipam", network);
        let mut batch = Vec::new();
        for i in 0..HELD {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0ac5_0000 + 10 + i));
            let holder = Holder {
                container_id: format!("c{i:05}"),
                ifname: "eth0".into(),
                pod: None,
                node: "n1".into(),
            };
            let att = Attachment {
                holder: holder.clone(),
                ips: vec![AttachedIp {
                    address: ip,
                    prefix_len: 16,
                    gateway: None,
                    kind: Kind::Dynamic,
                    range: range.into(),
                }],
                created: 0,
            };
            let rec = IpRecord {
                network: network.into(),
                holder,
                kind: Kind::Dynamic,
                range: range.into(),
                created: 0,
            };
            batch.push(Mutation::Put(keys.ip(ip), encode(&rec)));
            batch.push(Mutation::Put(
                keys.owner(&att.holder.container_id, "eth0"),
                encode(&att),
            ));
            if batch.len() >= 100 {
                let ok = store.commit(&[], &batch).await.expect("fill");
                assert!(ok);
                batch.clear();
            }
        }
        let none: &[Compare] = &[];
        assert!(store.commit(none, &batch).await.expect("fill"));
    });
}

#[test]
fn ls_and_check_store_page_through_the_store_and_a_closed_reader_ends_ls_quietly() {
    let etcd = EtcdServer::start().expect("start etcd");
    let s = Scratch::new();
    let (_, file) = s.etcd_network(
        "paged",
        json!({"etcdURL": etcd.endpoint()}),
        json!({"subnet": "10.197.0.0/16"}),
    );
    let file = file.to_str().expect("utf-8 path");
    fill(&etcd, "paged", "10.197.0.0/16 10.197.0.1-10.197.255.254");

    let (code, out, err) = support::cli(&["ls", "--conf", file, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("ls prints one JSON array");
    let addrs: Vec<IpAddr> = rows
        .iter()
        .map(|r| r["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), HELD as usize);
    assert!(
        addrs.windows(2).all(|w| w[0] < w[1]),
        "not in address order, or twice"
    );
    assert_eq!(addrs.iter().collect::<BTreeSet<_>>().len(), HELD as usize);

    assert_eq!(support::check_store(file.as_ref()), HELD as usize);

    // `kube-ipam ls | head -2`: the reader goes after two lines.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-ipam"))
        .args(["ls", "--conf", file])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ls");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    assert!(header.starts_with("ADDRESS"), "{header}");
    assert!(lines.next().unwrap().unwrap().starts_with("10.197.0.10 "));
    drop(lines);
    let out = child.wait_with_output().expect("wait for ls");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "a closed reader is not an error: {err}");
}
