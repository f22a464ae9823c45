//! A check or a count of the whole store whose etcd revision is compacted away while it
//! reads: it starts over at a newer revision, says so, and answers as if nothing happened;
//! only compactions that come every time make it give up, as "could not check", never as
//! a problem of the store.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use kube_ipam::engine::scan::{Restarts, RESTARTS};
use kube_ipam::engine::Allocator;
use kube_ipam::metrics::figures;
use kube_ipam::Error;
use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::{
    Answer, Committed, Compare, Entry, Keys, LeaseStore, Mutation, Read, Snapshot, StoreError,
};
use serde_json::json;
use support::Scratch;

/// etcd behind a store whose snapshots, after their first read, get etcd compacted past
/// their revision: the next read of the same snapshot finds it gone.
struct CompactsAfterFirstPage<'e> {
    inner: EtcdStore,
    etcd: &'e EtcdServer,
    /// Snapshots still to be compacted under; then they are left alone.
    left: AtomicU32,
    compactions: AtomicU32,
}

struct Compacted<'a, 'e> {
    inner: Box<dyn Snapshot + 'a>,
    store: &'a CompactsAfterFirstPage<'e>,
    armed: AtomicU32,
}

#[async_trait]
impl Snapshot for Compacted<'_, '_> {
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let page = self.inner.range(from, to, limit).await?;
        if self.armed.swap(0, Ordering::SeqCst) == 1 {
            // A revision past the snapshot's, then everything before it compacted away.
            let s = &self.store.inner;
            s.commit(&[], &[Mutation::Put("/elsewhere".into(), vec![])])
                .await?;
            let at = self.store.etcd.compact().expect("etcdctl compact");
            assert!(at > self.inner.revision());
            self.store.compactions.fetch_add(1, Ordering::SeqCst);
        }
        Ok(page)
    }

    fn revision(&self) -> u64 {
        self.inner.revision()
    }
}

#[async_trait]
impl LeaseStore for CompactsAfterFirstPage<'_> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.range(from, to, limit).await
    }
    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        let left = self.left.load(Ordering::SeqCst);
        let armed = u32::from(left > 0);
        self.left.store(left.saturating_sub(1), Ordering::SeqCst);
        Ok(Box::new(Compacted {
            inner: self.inner.snapshot().await?,
            store: self,
            armed: AtomicU32::new(armed),
        }))
    }
    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.inner.count(from, to).await
    }
    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        self.inner.reads(reads).await
    }
    async fn commit(&self, c: &[Compare], m: &[Mutation]) -> Result<bool, StoreError> {
        self.inner.commit(c, m).await
    }
    async fn commit_and_read(
        &self,
        c: &[Compare],
        m: &[Mutation],
        r: &[Read],
    ) -> Result<Committed, StoreError> {
        self.inner.commit_and_read(c, m, r).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[test]
fn a_check_and_the_figures_start_over_when_their_revision_is_compacted() {
    let etcd = EtcdServer::start().expect("start etcd");
    let s = Scratch::new();
    let conf = json!({
        "cniVersion": "1.0.0", "name": "compacted", "type": "bridge",
        "ipam": {
            "type": "kube-ipam",
            "subnet": "10.201.0.0/24",
            "stickyIPs": true,
            "etcdConfig": {"etcdURL": etcd.endpoint()},
            "logFile": s.log_file(),
        }
    })
    .to_string();
    // Five attachments and a sticky address parked for its pod: every kind of record.
    for i in 0..5 {
        support::call("ADD", &format!("c{i}"), "eth0", &[], &conf).ip();
    }
    let pod = [("CNI_ARGS", "K8S_POD_NAMESPACE=db;K8S_POD_NAME=db-0")];
    support::call("ADD", "sticky", "eth0", &pod, &conf).ip();
    support::call("DEL", "sticky", "eth0", &pod, &conf).quiet();

    let net = kube_ipam::config::parse(conf.as_bytes()).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = CompactsAfterFirstPage {
            inner: EtcdStore::connect(etcd.options()).await.expect("connect"),
            etcd: &etcd,
            left: AtomicU32::new(1),
            compactions: AtomicU32::new(0),
        };
        let alloc = Allocator::new(store, Keys::new("/kube-ipam", "compacted"), &net.ipam);

        let checked = alloc.verify_store().await.expect("the check answers");
        assert_eq!(alloc.store().compactions.load(Ordering::SeqCst), 1);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert_eq!((checked.attachments, checked.addresses), (5, 6));
        assert_eq!(checked.restarts.len(), 1, "{:?}", checked.restarts);
        let note = &checked.restarts[0];
        assert!(
            note.contains("the check") && note.contains("compacted") && note.contains("1 of 3"),
            "{note}"
        );

        alloc.store().left.store(1, Ordering::SeqCst);
        let mut restarts = Restarts::default();
        let fig = figures::read(&alloc, &mut restarts)
            .await
            .expect("the figures");
        assert_eq!(restarts.notes.len(), 1, "{:?}", restarts.notes);
        let r = &fig.ranges[0];
        assert_eq!((r.dynamic, r.parked, r.attachments), (5, 1, 5), "{r:?}");

        // Compacted under every snapshot: after a few new starts it gives up, saying so,
        // as a store that could not be read rather than one that is wrong.
        alloc.store().left.store(u32::MAX, Ordering::SeqCst);
        let e = alloc
            .verify_store()
            .await
            .expect_err("compacted every time");
        assert!(matches!(e, Error::Store(StoreError::Compacted(_))), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("started over {RESTARTS} times")),
            "{e}"
        );
        assert_eq!(
            alloc.store().compactions.load(Ordering::SeqCst),
            2 + 1 + RESTARTS
        );
    });
}
