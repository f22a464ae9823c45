//! Fixed and sticky addresses with a pod directory: takeover, parking, bindings.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kube_ipam_store::{Holder, Keys, Kind, LeaseStore, MemoryStore, PodRef};
use proptest::prelude::*;

use super::tests::{ip, ipam, range, rt};
use super::{AddRequest, Allocator, Release, Wanted};
use crate::config::RequestedIp;
use crate::pod::{NodeState, PodDirectory, PodId, PodMeta};
use crate::{Error, Result};

/// The API's view of pods (by namespace/name) and nodes; `down` makes every lookup fail.
#[derive(Default)]
pub(crate) struct Pods {
    pods: Mutex<HashMap<(String, String), PodMeta>>,
    nodes: Mutex<HashMap<String, NodeState>>,
    pub(crate) down: Mutex<bool>,
}

impl Pods {
    pub(crate) fn set(&self, name: &str, uid: &str) {
        let meta = PodMeta {
            uid: Some(uid.into()),
            node: Some("n1".into()),
            ..Default::default()
        };
        self.pods
            .lock()
            .unwrap()
            .insert(("ns".into(), name.into()), meta);
    }
    pub(crate) fn remove(&self, name: &str) {
        self.pods
            .lock()
            .unwrap()
            .remove(&("ns".into(), name.into()));
    }
    /// Marks a pod for deletion with its grace period over `ago` seconds ago.
    pub(crate) fn terminating(&self, name: &str, ago: i64) {
        let now = i64::try_from(super::unix_now()).unwrap();
        if let Some(p) = self
            .pods
            .lock()
            .unwrap()
            .get_mut(&("ns".into(), name.into()))
        {
            p.deletion = Some(now - ago);
        }
    }
    pub(crate) fn node(&self, name: &str, state: Option<NodeState>) {
        let mut nodes = self.nodes.lock().unwrap();
        match state {
            Some(s) => nodes.insert(name.into(), s),
            None => nodes.remove(name),
        };
    }
    fn up(&self) -> Result<()> {
        if *self.down.lock().unwrap() {
            return Err(Error::Kubernetes("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl PodDirectory for Pods {
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>> {
        self.up()?;
        let m = self.pods.lock().unwrap();
        Ok(m.get(&(namespace.into(), name.into())).map(|p| PodMeta {
            node: None,
            ..p.clone()
        }))
    }

    async fn holder(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>> {
        self.up()?;
        let m = self.pods.lock().unwrap();
        Ok(m.get(&(namespace.into(), name.into())).cloned())
    }

    async fn node(&self, name: &str) -> Result<Option<NodeState>> {
        self.up()?;
        Ok(self.nodes.lock().unwrap().get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<PodId>> {
        self.up()?;
        let m = self.pods.lock().unwrap();
        Ok(m.iter()
            .map(|((ns, name), p)| PodId {
                namespace: ns.clone(),
                name: name.clone(),
                uid: p.uid.clone(),
            })
            .collect())
    }
}

pub(crate) fn holder(container: &str, pod: &str, uid: &str) -> Holder {
    Holder {
        container_id: container.into(),
        ifname: "eth0".into(),
        pod: Some(PodRef {
            namespace: "ns".into(),
            name: pod.into(),
            uid: Some(uid.into()),
        }),
        node: "n1".into(),
    }
}

pub(crate) fn fixed(
    container: &str,
    pod: &str,
    uid: &str,
    addr: &str,
    gw: Option<&str>,
) -> AddRequest {
    AddRequest {
        holder: holder(container, pod, uid),
        wanted: vec![Wanted {
            source: "pod annotation kube-ipam.ip".into(),
            ip: RequestedIp {
                address: ip(addr),
                prefix_len: Some(16),
            },
            mask_source: Some("pod annotation kube-ipam.netmask".into()),
            gateway: gw.map(|g| ("pod annotation kube-ipam.gateway".into(), ip(g))),
        }],
        sticky: false,
        pool: None,
    }
}

pub(crate) fn sticky(container: &str, pod: &str, uid: &str) -> AddRequest {
    AddRequest {
        holder: holder(container, pod, uid),
        wanted: vec![],
        sticky: true,
        pool: None,
    }
}

/// 10.188.0.0/16 with the dynamic range in 10.188.1.0/24 and fixed addresses below it.
pub(crate) fn setup(pods: &Arc<Pods>) -> Allocator<MemoryStore> {
    let conf = ipam(vec![vec![range(
        "10.188.0.0/16",
        "10.188.1.1",
        "10.188.1.254",
        Some("10.188.0.1"),
        None,
    )]]);
    Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf).with_pods(pods.clone())
}

pub(crate) fn small(pods: &Arc<Pods>, last: &str) -> Allocator<MemoryStore> {
    let conf = ipam(vec![vec![range(
        "10.9.0.0/24",
        "10.9.0.2",
        last,
        Some("10.9.0.1"),
        None,
    )]]);
    Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf).with_pods(pods.clone())
}

#[test]
fn fixed_address_waits_for_a_live_holder_and_is_taken_over_from_a_gone_one() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    pods.set("db-a", "u1");
    pods.set("db-b", "u2");
    rt().block_on(async {
        let first = a
            .add(&fixed("c1", "db-a", "u1", "10.188.0.216", None))
            .await
            .unwrap();
        assert_eq!(first.ips[0].address, ip("10.188.0.216"));
        assert_eq!(first.ips[0].kind, Kind::Fixed);
        // db-a lives: db-b waits, told who holds it.
        let e = a
            .add(&fixed("c2", "db-b", "u2", "10.188.0.216", None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains("pod ns/db-a"), "{e}");
        // The API cannot answer: still no.
        *pods.down.lock().unwrap() = true;
        let e = a
            .add(&fixed("c2", "db-b", "u2", "10.188.0.216", None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        assert!(e.to_string().contains("connection refused"), "{e}");
        *pods.down.lock().unwrap() = false;
        assert!(a.attachment("c1", "eth0").await.unwrap().is_some());
        // db-a's node died and the pod was deleted, no DEL came: db-b takes it over.
        pods.remove("db-a");
        let got = a
            .add(&fixed("c2", "db-b", "u2", "10.188.0.216", None))
            .await
            .unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.216"));
        assert!(a.attachment("c1", "eth0").await.unwrap().is_none());
        assert!(a.verify().await.unwrap().is_empty());
        // The late DEL of the old sandbox frees nothing of db-b's.
        assert!(a.release("c1", "eth0").await.unwrap().is_none());
        assert_eq!(a.attachments().await.unwrap().len(), 1);
    });
}

#[test]
fn same_name_new_uid_is_a_new_pod_but_same_uid_is_a_sandbox_still_held() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    pods.set("db-0", "u1");
    rt().block_on(async {
        a.add(&fixed("c1", "db-0", "u1", "10.188.0.9", None))
            .await
            .unwrap();
        // A new sandbox of the same pod before the old one's DEL: wait for it.
        let e = a
            .add(&fixed("c2", "db-0", "u1", "10.188.0.9", None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 11);
        // The pod was recreated under the same name (StatefulSet on another node).
        pods.set("db-0", "u9");
        let got = a
            .add(&fixed("c3", "db-0", "u9", "10.188.0.9", None))
            .await
            .unwrap();
        assert_eq!(got.ips[0].address, ip("10.188.0.9"));
    });
}

#[test]
fn a_sticky_pod_whose_addresses_are_all_fixed_gets_no_binding() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    rt().block_on(async {
        let req = AddRequest {
            sticky: true,
            ..fixed("c1", "p", "u", "10.188.0.30", None)
        };
        a.add(&req).await.unwrap();
        assert!(a.bindings().await.unwrap().is_empty());
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn a_gateway_asked_for_is_checked_against_the_subnet() {
    let pods = Arc::new(Pods::default());
    let a = setup(&pods);
    rt().block_on(async {
        let got = a
            .add(&fixed("c1", "p", "u", "10.188.0.20", Some("10.188.0.254")))
            .await
            .unwrap();
        assert_eq!(got.ips[0].gateway, Some(ip("10.188.0.254")));
        for (gw, why) in [
            ("10.189.0.1", "outside subnet"),
            ("10.188.0.21", "own address"),
            ("10.188.255.255", "broadcast"),
        ] {
            let e = a
                .add(&fixed("c2", "q", "u", "10.188.0.21", Some(gw)))
                .await
                .unwrap_err();
            assert_eq!(e.code(), 7, "{gw}");
            let t = e.to_string();
            assert!(
                t.contains(gw) && t.contains(why) && t.contains("kube-ipam.gateway"),
                "{t}"
            );
        }
        assert_eq!(a.attachments().await.unwrap().len(), 1);
    });
}

#[test]
fn sticky_address_is_parked_between_lives_and_no_one_else_gets_it() {
    let pods = Arc::new(Pods::default());
    // Two dynamic addresses only: .2 and .3.
    let a = small(&pods, "10.9.0.3");
    pods.set("web-0", "u1");
    rt().block_on(async {
        let first = a.add(&sticky("c1", "web-0", "u1")).await.unwrap();
        let mine = first.ips[0].address;
        assert_eq!(first.ips[0].kind, Kind::Sticky);
        a.release("c1", "eth0").await.unwrap().unwrap();
        assert!(a.verify().await.unwrap().is_empty());
        // Parked: a dynamic pod gets the other address, the next one finds the range full.
        let other = a.add(&sticky("c2", "web-1", "u2")).await.unwrap();
        assert_ne!(other.ips[0].address, mine);
        let e = a
            .add(&AddRequest {
                sticky: false,
                ..sticky("c3", "x", "u3")
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), 101);
        // web-0 comes back with a new uid and container: same address.
        pods.set("web-0", "u5");
        let again = a.add(&sticky("c4", "web-0", "u5")).await.unwrap();
        assert_eq!(again.ips[0].address, mine);
        assert!(a.verify().await.unwrap().is_empty());
        // The pod is gone for good: releasing its binding keeps the live attachment, which
        // then frees the address on DEL.
        let b = a
            .release_binding(&holder("c4", "web-0", "u5").pod.unwrap())
            .await
            .unwrap();
        assert_eq!(b.unwrap().ips[0].address, mine);
        assert!(a.verify().await.unwrap().is_empty());
        a.release("c4", "eth0").await.unwrap().unwrap();
        let newcomer = a
            .add(&AddRequest {
                sticky: false,
                ..sticky("c5", "y", "u6")
            })
            .await
            .unwrap();
        assert_eq!(newcomer.ips[0].address, mine);
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn sticky_pod_recreated_while_its_old_sandbox_lingers_takes_its_address_over() {
    let pods = Arc::new(Pods::default());
    let a = small(&pods, "10.9.0.200");
    pods.set("web-0", "u1");
    rt().block_on(async {
        let first = a.add(&sticky("c1", "web-0", "u1")).await.unwrap();
        // Same uid, new sandbox, old one not yet DEL'd: wait.
        let e = a.add(&sticky("c2", "web-0", "u1")).await.unwrap_err();
        assert_eq!(e.code(), 11);
        // Recreated pod (new uid), old node dead: takes it over.
        pods.set("web-0", "u2");
        let again = a.add(&sticky("c3", "web-0", "u2")).await.unwrap();
        assert_eq!(again.ips[0].address, first.ips[0].address);
        assert!(a.attachment("c1", "eth0").await.unwrap().is_none());
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn operator_release_of_a_sticky_address_ends_its_stickiness() {
    let pods = Arc::new(Pods::default());
    let a = small(&pods, "10.9.0.200");
    pods.set("web-0", "u1");
    rt().block_on(async {
        let first = a.add(&sticky("c1", "web-0", "u1")).await.unwrap();
        let (att, rev) = a.attachment("c1", "eth0").await.unwrap().unwrap();
        assert!(a.release_seen(&att, rev, Release::Free).await.unwrap());
        let pod = holder("c1", "web-0", "u1").pod.unwrap();
        assert!(a.unbind(&pod, first.ips[0].address).await.unwrap());
        assert!(a.binding(&pod).await.unwrap().is_none());
        assert!(a.verify().await.unwrap().is_empty());
        let (f, t) = a.keys().all();
        assert_eq!(a.store().count(&f, &t).await.unwrap(), 0);
    });
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Del(usize),
    Forget(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    // Sticky and plain pods coming and going, and bindings released: no address is ever held
    // twice, a sticky pod always gets back the address it had, and the store stays consistent.
    #[test]
    fn sticky_pods_keep_their_addresses_and_the_store_stays_consistent(
        ops in proptest::collection::vec(prop_oneof![
            3 => (0usize..12).prop_map(Op::Add),
            2 => (0usize..12).prop_map(Op::Del),
            1 => (0usize..12).prop_map(Op::Forget),
        ], 1..80),
    ) {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.9");
        let mut live: HashMap<usize, (u32, IpAddr)> = HashMap::new();
        let mut kept: HashMap<usize, IpAddr> = HashMap::new();
        let mut generation = 0u32;
        rt().block_on(async {
            for op in ops {
                // Even pods are sticky.
                let is_sticky = |i: usize| i.is_multiple_of(2);
                match op {
                    Op::Add(i) => {
                        let gen = live.get(&i).map(|(g, _)| *g).unwrap_or_else(|| { generation += 1; generation });
                        let name = format!("p{i}");
                        pods.set(&name, &format!("u{gen}"));
                        let req = AddRequest { sticky: is_sticky(i), ..sticky(&format!("c{i}-{gen}"), &name, &format!("u{gen}")) };
                        match a.add(&req).await {
                            Ok(att) => {
                                let got = att.ips[0].address;
                                if let Some(want) = kept.get(&i) {
                                    prop_assert_eq!(*want, got, "sticky pod p{} moved", i);
                                }
                                prop_assert!(live.iter().all(|(k, (_, v))| *k == i || *v != got), "{} twice", got);
                                prop_assert!(kept.iter().all(|(k, v)| *k == i || *v != got), "{} was parked for another pod", got);
                                // A repeated ADD of a live attachment changes nothing, not even
                                // a binding released meanwhile.
                                if is_sticky(i) && !live.contains_key(&i) { kept.insert(i, got); }
                                live.insert(i, (gen, got));
                            }
                            Err(e) => {
                                prop_assert_eq!(e.code(), 101, "{}", e);
                                let taken: HashSet<IpAddr> = live.values().map(|(_, v)| *v).chain(kept.values().copied()).collect();
                                prop_assert_eq!(taken.len(), 8, "exhausted while free");
                            }
                        }
                    }
                    Op::Del(i) => {
                        if let Some((gen, _)) = live.remove(&i) {
                            a.release(&format!("c{i}-{gen}"), "eth0").await.unwrap().unwrap();
                        }
                    }
                    Op::Forget(i) => {
                        let pod = PodRef { namespace: "ns".into(), name: format!("p{i}"), uid: None };
                        a.release_binding(&pod).await.unwrap();
                        kept.remove(&i);
                    }
                }
                let problems = a.verify().await.unwrap();
                prop_assert!(problems.is_empty(), "{:?}", problems);
            }
            Ok(())
        })?;
    }
}
