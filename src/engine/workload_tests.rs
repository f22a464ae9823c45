//! Workloads of several pods: address pools on the template, and holders on lost nodes.

use std::sync::Arc;

use kube_ipam_store::{Kind, MemoryStore};

use super::pod_tests::{holder, Pods};
use super::tests::{ip, rt};
use super::{AddRequest, Allocator, PoolRequest};
use crate::config::PoolSpan;
use crate::pod::lost::OUT_OF_SERVICE;
use crate::pod::NodeState;

/// 10.188.0.0/16, dynamic 10.188.1.1-254, gateway .1: the pools lie below the dynamic range.
fn setup(pods: &Arc<Pods>) -> Allocator<MemoryStore> {
    super::pod_tests::setup(pods)
}

fn span(first: &str, last: &str) -> PoolSpan {
    PoolSpan {
        first: ip(first),
        last: ip(last),
        prefix_len: None,
        gateway: None,
    }
}

fn pooled(
    container: &str,
    pod: &str,
    uid: &str,
    spans: &[PoolSpan],
    ordinal: Option<u64>,
) -> AddRequest {
    AddRequest {
        holder: holder(container, pod, uid),
        wanted: vec![],
        sticky: false,
        pool: Some(PoolRequest {
            source: "pod annotation kube-ipam.ip-pool".into(),
            mask_source: "pod annotation kube-ipam.netmask".into(),
            gateway_source: "pod annotation kube-ipam.gateway".into(),
            spans: spans.to_vec(),
            ordinal,
        }),
    }
}

#[test]
fn statefulset_replicas_take_the_addresses_of_their_ordinals_and_keep_them() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    let pool = [span("10.188.0.216", "10.188.0.218")];
    rt().block_on(async {
        // Started out of order, each still gets the address of its ordinal.
        for n in [2u64, 0, 1] {
            let name = format!("mysql-{n}");
            pods.set(&name, &format!("u{n}"));
            let got = a
                .add(&pooled(
                    &format!("c{n}"),
                    &name,
                    &format!("u{n}"),
                    &pool,
                    Some(n),
                ))
                .await
                .unwrap();
            assert_eq!(got.ips[0].address, ip(&format!("10.188.0.{}", 216 + n)));
            assert_eq!(got.ips[0].kind, Kind::Pool);
        }
        // A fourth replica: nothing free, told who holds the pool.
        pods.set("mysql-3", "u3");
        let e = a
            .add(&pooled("c3", "mysql-3", "u3", &pool, Some(3)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        for n in 0..3 {
            assert!(e.to_string().contains(&format!("pod ns/mysql-{n}")), "{e}");
        }
        // mysql-1 goes (DEL): its address is parked for it, not given to mysql-3.
        a.release("c1", "eth0").await.unwrap();
        let e = a
            .add(&pooled("c3", "mysql-3", "u3", &pool, Some(3)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains("binding of pod ns/mysql-1"), "{e}");
        // Recreated with a new uid (on another node): its address again.
        pods.set("mysql-1", "u1b");
        let got = a
            .add(&pooled("c1b", "mysql-1", "u1b", &pool, Some(1)))
            .await
            .unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.217"));
        assert!(a.verify().await.unwrap().is_empty());
        // Scaled down for good: the binding goes, and mysql-3 gets the address.
        a.release("c1b", "eth0").await.unwrap();
        let pod = holder("c1b", "mysql-1", "u1b").pod.unwrap();
        assert!(a.release_binding(&pod).await.unwrap().is_some());
        let got = a
            .add(&pooled("c3", "mysql-3", "u3", &pool, Some(3)))
            .await
            .unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.217"));
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn a_replica_whose_ordinal_address_is_taken_gets_the_lowest_free_one() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    let pool = [span("10.188.0.216", "10.188.0.219")];
    rt().block_on(async {
        pods.set("web-x", "ux");
        let other = a
            .add(&pooled(
                "cx",
                "web-x",
                "ux",
                &[span("10.188.0.217", "10.188.0.217")],
                None,
            ))
            .await
            .unwrap();
        assert_eq!(other.ips[0].address, ip("10.188.0.217"));
        pods.set("db-1", "u1");
        let got = a
            .add(&pooled("c1", "db-1", "u1", &pool, Some(1)))
            .await
            .unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.216"));
    });
}

#[test]
fn deployment_replicas_share_a_pool_and_release_on_del() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    let pool = [
        span("10.188.0.230", "10.188.0.230"),
        span("10.188.0.240", "10.188.0.240"),
    ];
    rt().block_on(async {
        pods.set("web-7f9-aaaaa", "ua");
        pods.set("web-7f9-bbbbb", "ub");
        pods.set("web-7f9-ccccc", "uc");
        let x = a
            .add(&pooled("ca", "web-7f9-aaaaa", "ua", &pool, None))
            .await
            .unwrap();
        let y = a
            .add(&pooled("cb", "web-7f9-bbbbb", "ub", &pool, None))
            .await
            .unwrap();
        let mut got = vec![x.ips[0].address, y.ips[0].address];
        got.sort();
        assert_eq!(got, [ip("10.188.0.230"), ip("10.188.0.240")]);
        let e = a
            .add(&pooled("cc", "web-7f9-ccccc", "uc", &pool, None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        // No binding for a Deployment's pods: DEL gives the address back to the pool.
        a.release("ca", "eth0").await.unwrap();
        assert!(a.bindings().await.unwrap().is_empty());
        let z = a
            .add(&pooled("cc", "web-7f9-ccccc", "uc", &pool, None))
            .await
            .unwrap();
        assert_eq!(z.ips[0].address, x.ips[0].address);
        // A replica of a pod that is gone without a DEL yields its address.
        pods.remove("web-7f9-bbbbb");
        let w = a
            .add(&pooled("ca2", "web-7f9-aaaaa", "ua", &pool, None))
            .await
            .unwrap();
        assert_eq!(w.ips[0].address, y.ips[0].address);
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn pool_addresses_follow_the_rules_of_addresses_asked_for_by_name() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    rt().block_on(async {
        // The gateway inside a pool: error 7 naming it, nothing held.
        let e = a
            .add(&pooled(
                "c1",
                "p",
                "u",
                &[span("10.188.0.1", "10.188.0.3")],
                None,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(
            e.to_string().contains("kube-ipam.ip-pool") && e.to_string().contains("10.188.0.1"),
            "{e}"
        );
        // A netmask that is not the subnet's.
        let mut bad = span("10.188.0.20", "10.188.0.21");
        bad.prefix_len = Some(24);
        let e = a
            .add(&pooled("c1", "p", "u", &[bad], None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("kube-ipam.netmask"), "{e}");
        assert!(a.attachments().await.unwrap().is_empty());
        // Addresses outside every subnet belong to other networks: a dynamic address here.
        let got = a
            .add(&pooled(
                "c1",
                "p",
                "u",
                &[span("10.99.0.1", "10.99.0.9")],
                None,
            ))
            .await
            .unwrap();
        assert_eq!(got.ips[0].kind, Kind::Dynamic);
        // The gateway given for the pool comes back with the address.
        let mut gw = span("10.188.0.50", "10.188.0.50");
        gw.gateway = Some(ip("10.188.0.254"));
        let got = a.add(&pooled("c2", "q", "u", &[gw], None)).await.unwrap();
        assert_eq!(got.ips[0].gateway, Some(ip("10.188.0.254")));
    });
}

fn ready(status: &str, ago: i64) -> NodeState {
    let now = i64::try_from(super::unix_now()).unwrap();
    NodeState {
        ready: Some((status.into(), Some(now - ago))),
        taints: vec![],
    }
}

#[test]
fn a_terminating_holder_yields_only_when_its_node_is_lost() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    let fixed =
        |c: &str, pod: &str, uid: &str| super::pod_tests::fixed(c, pod, uid, "10.188.0.216", None);
    rt().block_on(async {
        pods.set("old", "u1");
        pods.set("new", "u2");
        a.add(&fixed("c1", "old", "u1")).await.unwrap();
        // Marked for deletion, grace period over; where the pod runs (n1) decides.
        pods.terminating("old", 10);
        let waits = |why: &'static str| {
            let a = &a;
            async move {
                let e = a.add(&fixed("c2", "new", "u2")).await.unwrap_err();
                assert_eq!(e.code(), 11, "{why}: {e}");
                assert!(e.to_string().contains("pod ns/old"), "{why}: {e}");
            }
        };
        pods.node("n1", Some(ready("True", 3600)));
        waits("Ready node: its kubelet tears the pod down").await;
        pods.node("n1", Some(ready("Unknown", 299)));
        waits("not Ready for less than 300 s").await;
        *pods.down.lock().unwrap() = true;
        let e = a.add(&fixed("c2", "new", "u2")).await.unwrap_err();
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains("connection refused"), "{e}");
        *pods.down.lock().unwrap() = false;
        pods.node("n1", Some(ready("Unknown", 301)));
        let got = a.add(&fixed("c2", "new", "u2")).await.unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.216"));
        assert!(a.attachment("c1", "eth0").await.unwrap().is_none());
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn a_node_gone_or_out_of_service_is_lost_at_once_unless_takeovers_are_off() {
    for how in ["gone", "out-of-service", "off"] {
        let pods = Arc::new(Pods::default());
        let mut a = setup(&pods);
        if how == "off" {
            a.lost.not_ready_for = None;
        }
        rt().block_on(async {
            pods.set("old", "u1");
            pods.set("new", "u2");
            let fixed = |c: &str, pod: &str, uid: &str| {
                super::pod_tests::fixed(c, pod, uid, "10.188.0.216", None)
            };
            a.add(&fixed("c1", "old", "u1")).await.unwrap();
            pods.terminating("old", 1);
            match how {
                "gone" => pods.node("n1", None),
                "out-of-service" => pods.node(
                    "n1",
                    Some(NodeState {
                        taints: vec![(OUT_OF_SERVICE.into(), "NoExecute".into())],
                        ..ready("True", 0)
                    }),
                ),
                _ => pods.node("n1", Some(ready("False", 86_400))),
            }
            let r = a.add(&fixed("c2", "new", "u2")).await;
            match how {
                "off" => assert_eq!(r.unwrap_err().code(), 11, "{how}"),
                _ => assert_eq!(r.unwrap().ips[0].address, ip("10.188.0.216"), "{how}"),
            }
            assert!(a.verify().await.unwrap().is_empty());
        });
    }
}
