//! `kube-ipam gc`: frees what pods that no longer exist left behind.
//!
//! A DEL that never came (node lost, runtime crash) leaves an attachment holding addresses,
//! and a StatefulSet scaled down leaves a sticky binding. Both are found against the pod
//! list, but a list is a snapshot: a pod may be created right after it was taken. So a
//! record is released only when it has been a suspect in two passes at least `grace` apart,
//! unchanged in between (same revision), the pod is looked up once more on its own, and the
//! release itself is a compare-and-delete of the record as last read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube_ipam_store::records::decode;
use kube_ipam_store::{Attachment, Binding, LeaseStore, PodRef, Revision};

use crate::engine::scan::Scan;
use crate::engine::{Allocator, Release};
use crate::metrics::counts::{self, Counter};
use crate::pod::PodDirectory;
use crate::Result;

/// The pods the API listed at the start of a pass: (namespace, name) -> uid.
type Listed = HashMap<(String, String), Option<String>>;

/// A record that looks left behind, as it was when first seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Suspect {
    Attachment {
        container_id: String,
        ifname: String,
        revision: Revision,
    },
    Binding {
        namespace: String,
        name: String,
        revision: Revision,
    },
}

/// One finding of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `attachment <container>/<ifname> of pod <ns>/<name>` or `binding of pod <ns>/<name>`.
    pub what: String,
    pub addresses: Vec<IpAddr>,
    pub why: String,
}

/// What one pass saw and did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Suspects not (yet) released.
    pub suspects: Vec<Finding>,
    pub released: Vec<Finding>,
}

pub struct Collector<'a, S> {
    alloc: &'a Allocator<S>,
    pods: &'a dyn PodDirectory,
    grace: Duration,
    seen: HashMap<Suspect, Instant>,
}

impl<'a, S: LeaseStore> Collector<'a, S> {
    pub fn new(alloc: &'a Allocator<S>, pods: &'a dyn PodDirectory, grace: Duration) -> Self {
        Collector {
            alloc,
            pods,
            grace,
            seen: HashMap::new(),
        }
    }

    /// One pass at time `now`. With `dry_run` nothing is released, and every suspect is
    /// reported as one.
    pub async fn pass(&mut self, now: Instant, dry_run: bool) -> Result<Pass> {
        // A failed or partial list would make live pods look gone: no list, no pass.
        let listed: Listed = self
            .pods
            .list()
            .await?
            .into_iter()
            .map(|p| ((p.namespace, p.name), p.uid))
            .collect();
        let mut out = Pass::default();
        let mut still = HashMap::new();

        // Page by page, so that memory follows the page size and the suspects, never the
        // number of attachments: a million of them decoded at once is gigabytes. The pages
        // are not pinned to one revision: every release is a compare-and-delete against the
        // revision read in its own page, and a pass that takes minutes must not fail when a
        // compaction overtakes the revision it started at.
        let mut scan = Scan::new(self.alloc.store(), self.alloc.keys().owners());
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let att: Attachment = decode(&e.key, &e.value)?;
                self.attachment(att, e.revision, &listed, now, dry_run, &mut still, &mut out)
                    .await?;
            }
        }
        let mut scan = Scan::new(self.alloc.store(), self.alloc.keys().bindings());
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let b: Binding = decode(&e.key, &e.value)?;
                self.binding(b, e.revision, &listed, now, dry_run, &mut still, &mut out)
                    .await?;
            }
        }
        // Suspects that changed or came back to life are forgotten: they start over.
        self.seen = still;
        Ok(out)
    }

    /// One attachment of a pass: a suspect, released, or nothing to do.
    #[allow(clippy::too_many_arguments)]
    async fn attachment(
        &self,
        att: Attachment,
        rev: Revision,
        listed: &Listed,
        now: Instant,
        dry_run: bool,
        still: &mut HashMap<Suspect, Instant>,
        out: &mut Pass,
    ) -> Result<()> {
        let Some(pod) = &att.holder.pod else {
            // Nothing to check it against; the CNI GC verb covers such attachments.
            return Ok(());
        };
        let Some(why) =
            attachment_gone(pod, listed.get(&(pod.namespace.clone(), pod.name.clone())))
        else {
            return Ok(());
        };
        let s = Suspect::Attachment {
            container_id: att.holder.container_id.clone(),
            ifname: att.holder.ifname.clone(),
            revision: rev,
        };
        let finding = describe_attachment(&att, why);
        match self.due(&s, now, dry_run) {
            Some(first) => {
                still.insert(s, first);
                out.suspects.push(finding);
            }
            None => {
                let ranges = att.ips.iter().map(|i| i.range.as_str());
                let counted = counts::event(self.alloc.keys(), Counter::LeaksGc, ranges);
                if self.recheck_attachment(pod).await?.is_some()
                    && self
                        .alloc
                        .release_seen_with(&att, rev, Release::Park, vec![counted])
                        .await?
                {
                    out.released.push(finding);
                }
            }
        }
        Ok(())
    }

    /// One sticky binding of a pass.
    #[allow(clippy::too_many_arguments)]
    async fn binding(
        &self,
        b: Binding,
        rev: Revision,
        listed: &Listed,
        now: Instant,
        dry_run: bool,
        still: &mut HashMap<Suspect, Instant>,
        out: &mut Pass,
    ) -> Result<()> {
        let p = &b.pod;
        if listed.contains_key(&(p.namespace.clone(), p.name.clone())) {
            return Ok(());
        }
        let s = Suspect::Binding {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            revision: rev,
        };
        let finding = describe_binding(&b);
        match self.due(&s, now, dry_run) {
            Some(first) => {
                still.insert(s, first);
                out.suspects.push(finding);
            }
            None => {
                let ranges = b.ips.iter().map(|i| i.range.as_str());
                let counted = counts::event(self.alloc.keys(), Counter::LeaksGc, ranges);
                if self.pods.pod(&p.namespace, &p.name).await?.is_none()
                    && self
                        .alloc
                        .release_binding_seen_with(&b, rev, vec![counted])
                        .await?
                {
                    out.released.push(finding);
                }
            }
        }
        Ok(())
    }

    /// `None` when the suspect may be released now; else when it was first seen.
    fn due(&self, s: &Suspect, now: Instant, dry_run: bool) -> Option<Instant> {
        match self.seen.get(s) {
            Some(first) if !dry_run && now.duration_since(*first) >= self.grace => None,
            Some(first) => Some(*first),
            None => Some(now),
        }
    }

    /// The pod of a suspect attachment, looked up alone at the moment of release.
    async fn recheck_attachment(&self, pod: &PodRef) -> Result<Option<String>> {
        let now = self.pods.pod(&pod.namespace, &pod.name).await?;
        Ok(attachment_gone(pod, now.as_ref().map(|m| &m.uid)).map(str::to_owned))
    }
}

/// Why an attachment of `pod` is left behind, given what the API has under its name.
fn attachment_gone(pod: &PodRef, listed: Option<&Option<String>>) -> Option<&'static str> {
    match listed {
        None => Some("pod no longer exists"),
        Some(Some(uid)) if pod.uid.as_ref().is_some_and(|u| u != uid) => {
            Some("pod was recreated under the same name (new uid)")
        }
        Some(_) => None,
    }
}

fn describe_attachment(att: &Attachment, why: &str) -> Finding {
    let pod = att
        .holder
        .pod
        .as_ref()
        .map(|p| format!(" of pod {}/{}", p.namespace, p.name))
        .unwrap_or_default();
    Finding {
        what: format!(
            "attachment {}/{}{pod}",
            att.holder.container_id, att.holder.ifname
        ),
        addresses: att.ips.iter().map(|i| i.address).collect(),
        why: why.to_owned(),
    }
}

fn describe_binding(b: &Binding) -> Finding {
    Finding {
        what: format!("binding of pod {}/{}", b.pod.namespace, b.pod.name),
        addresses: b.ips.iter().map(|i| i.address).collect(),
        why: "pod no longer exists".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::pod_tests::{small, sticky, Pods};
    use crate::engine::AddRequest;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    fn plain(container: &str, pod: &str, uid: &str) -> AddRequest {
        AddRequest {
            sticky: false,
            ..sticky(container, pod, uid)
        }
    }

    const GRACE: Duration = Duration::from_secs(300);

    #[test]
    fn released_only_after_two_passes_a_grace_period_apart() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("live", "u1");
        pods.set("gone", "u2");
        rt().block_on(async {
            a.add(&plain("c1", "live", "u1")).await.unwrap();
            let lost = a.add(&plain("c2", "gone", "u2")).await.unwrap();
            pods.remove("gone");
            let mut gc = Collector::new(&a, pods.as_ref(), GRACE);
            let t0 = Instant::now();
            let p = gc.pass(t0, false).await.unwrap();
            assert_eq!(p.suspects.len(), 1);
            assert!(p.suspects[0].what.contains("c2/eth0 of pod ns/gone"));
            assert!(p.released.is_empty());
            let p = gc.pass(t0 + GRACE / 2, false).await.unwrap();
            assert!(p.released.is_empty(), "released before the grace period");
            // Dry runs never release.
            let p = gc.pass(t0 + GRACE, true).await.unwrap();
            assert!(p.released.is_empty() && p.suspects.len() == 1);
            let p = gc.pass(t0 + GRACE, false).await.unwrap();
            assert_eq!(p.released.len(), 1);
            assert_eq!(p.released[0].addresses, vec![lost.ips[0].address]);
            assert!(a.attachment("c2", "eth0").await.unwrap().is_none());
            assert!(a.attachment("c1", "eth0").await.unwrap().is_some());
            assert!(a.verify().await.unwrap().is_empty());
        });
    }

    #[test]
    fn a_pod_recreated_under_the_same_name_between_passes_keeps_its_address() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("web-0", "u1");
        rt().block_on(async {
            let old = a.add(&plain("c1", "web-0", "u1")).await.unwrap();
            pods.remove("web-0");
            let mut gc = Collector::new(&a, pods.as_ref(), GRACE);
            let t0 = Instant::now();
            assert_eq!(gc.pass(t0, false).await.unwrap().suspects.len(), 1);
            // Recreated with the same name before the second pass; the old DEL never came.
            pods.set("web-0", "u2");
            let new = a.add(&plain("c2", "web-0", "u2")).await.unwrap();
            let p = gc.pass(t0 + GRACE, false).await.unwrap();
            // The old sandbox's attachment goes (its uid is not the pod's); the new stays.
            assert_eq!(p.released.len(), 1);
            assert_eq!(p.released[0].addresses, vec![old.ips[0].address]);
            assert_eq!(
                a.attachment("c2", "eth0").await.unwrap().unwrap().0.ips,
                new.ips
            );
        });
    }

    #[test]
    fn sticky_binding_goes_only_when_the_pod_is_gone_for_good() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("db-0", "u1");
        pods.set("db-1", "u2");
        rt().block_on(async {
            a.add(&sticky("c1", "db-0", "u1")).await.unwrap();
            a.add(&sticky("c2", "db-1", "u2")).await.unwrap();
            a.release("c1", "eth0").await.unwrap();
            a.release("c2", "eth0").await.unwrap();
            // db-0 is being recreated (exists), db-1 was scaled away.
            pods.remove("db-1");
            let mut gc = Collector::new(&a, pods.as_ref(), GRACE);
            let t0 = Instant::now();
            gc.pass(t0, false).await.unwrap();
            let p = gc.pass(t0 + GRACE, false).await.unwrap();
            assert_eq!(p.released.len(), 1);
            assert!(p.released[0].what.contains("ns/db-1"), "{:?}", p.released);
            assert_eq!(a.bindings().await.unwrap().len(), 1);
            assert!(a.verify().await.unwrap().is_empty());
        });
    }

    #[test]
    fn a_suspect_that_changes_between_passes_starts_over() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("p", "u1");
        rt().block_on(async {
            a.add(&plain("c1", "p", "u1")).await.unwrap();
            pods.remove("p");
            let mut gc = Collector::new(&a, pods.as_ref(), GRACE);
            let t0 = Instant::now();
            gc.pass(t0, false).await.unwrap();
            // The attachment was released and claimed again in between: a new record.
            a.release("c1", "eth0").await.unwrap();
            a.add(&plain("c1", "p", "u1")).await.unwrap();
            let p = gc.pass(t0 + GRACE, false).await.unwrap();
            assert!(p.released.is_empty());
            assert_eq!(p.suspects.len(), 1);
            let p = gc.pass(t0 + 2 * GRACE, false).await.unwrap();
            assert_eq!(p.released.len(), 1);
        });
    }

    #[test]
    fn no_pod_list_no_pass() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("p", "u1");
        rt().block_on(async {
            a.add(&plain("c1", "p", "u1")).await.unwrap();
            pods.remove("p");
            let mut gc = Collector::new(&a, pods.as_ref(), Duration::ZERO);
            let t0 = Instant::now();
            gc.pass(t0, false).await.unwrap();
            *pods.down.lock().unwrap() = true;
            let e = gc.pass(t0, false).await.unwrap_err();
            assert_eq!(e.code(), 11);
            assert!(a.attachment("c1", "eth0").await.unwrap().is_some());
        });
    }

    #[test]
    fn a_pass_sees_every_attachment_across_pages() {
        use crate::engine::scan::PAGE;
        use kube_ipam_store::records::encode;
        use kube_ipam_store::{AttachedIp, Holder, Kind, Mutation};

        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.200");
        pods.set("live", "u1");
        // More owner records than one page holds, written straight into the store (the
        // small range could not hold them as real claims): all of gone pods but one.
        let n = PAGE + 7;
        rt().block_on(async {
            let mut batch = Vec::new();
            for i in 0..n {
                let pod = if i == PAGE / 2 { "live" } else { "gone" };
                let holder = Holder {
                    container_id: format!("c{i:06}"),
                    ifname: "eth0".into(),
                    pod: Some(PodRef {
                        namespace: "ns".into(),
                        name: pod.into(),
                        uid: Some("u1".into()),
                    }),
                    node: "n".into(),
                };
                let att = Attachment {
                    holder: holder.clone(),
                    ips: vec![AttachedIp {
                        address: "10.9.0.9".parse().unwrap(),
                        prefix_len: 24,
                        gateway: None,
                        kind: Kind::Dynamic,
                        range: "r".into(),
                    }],
                    created: 0,
                };
                batch.push(Mutation::Put(
                    a.keys().owner(&holder.container_id, "eth0"),
                    encode(&att),
                ));
            }
            assert!(a.store().commit(&[], &batch).await.unwrap());
            let mut gc = Collector::new(&a, pods.as_ref(), GRACE);
            let p = gc.pass(Instant::now(), true).await.unwrap();
            assert_eq!(p.suspects.len(), n - 1);
            let mut whats: Vec<&str> = p.suspects.iter().map(|f| f.what.as_str()).collect();
            whats.sort_unstable();
            whats.dedup();
            assert_eq!(whats.len(), n - 1, "an attachment was seen twice");
            assert!(!whats
                .iter()
                .any(|w| w.contains(&format!("c{:06}/", PAGE / 2))));
        });
    }
}
