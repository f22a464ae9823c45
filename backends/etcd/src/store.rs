use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
use kube_ipam_store::{
    Answer, Committed, Compare, Entry, LeaseStore, Mutation, Read, Revision, Snapshot, StoreError,
};
use tokio::time::{sleep, timeout_at, Instant};

use crate::errors::{classify, with_causes, Failed};
use crate::options::{EtcdOptions, TlsFiles};
use crate::txn::{self, entry, in_key_order};

/// Read by [`LeaseStore::ping`]; it need not exist, the linearizable read is the point.
const PING_KEY: &str = "/kube-ipam-ping";

/// A range over a large, nearly full pool can exceed tonic's 4 MiB default; etcd itself
/// sends responses of any size.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// First pause between attempts; grows linearly so a restarting member has time to answer.
const BACKOFF: Duration = Duration::from_millis(25);

/// A [`LeaseStore`] on an etcd v3 cluster.
///
/// Cheap to share behind an `Arc`: requests from many tasks multiplex over the same
/// connections.
pub struct EtcdStore {
    kv: KvClient,
    /// For error messages: which etcd could not be reached.
    endpoints: String,
    /// For error messages: which file a certificate etcd or we refused came from.
    tls: TlsFiles,
    request_timeout: Duration,
    /// Enough attempts for a request to find a live member when some are down.
    attempts: u32,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Whether a request may run twice if the first outcome is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Read,
    Write,
}

impl EtcdStore {
    /// Connects and proves the cluster answers a linearizable read within
    /// `connect_timeout`, so a bad certificate or an unreachable cluster is reported here,
    /// with its cause, rather than as a timeout of the first real request.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let prepared = opts.prepare()?;
        let endpoints = prepared.endpoints.join(",");
        let (tls, client_identity) = (prepared.tls.is_some(), prepared.client_identity);
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            // Without a leader a member queues requests; failing them lets another member
            // (or the caller's retry) take over.
            .with_require_leader(true);
        if let Some(tls) = prepared.tls {
            connect = connect.with_tls(tls);
        }
        let deadline = Instant::now() + opts.connect_timeout;
        let client = match timeout_at(
            deadline,
            Client::connect(&prepared.endpoints, Some(connect)),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(connect_error(&endpoints, e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd {endpoints}: no connection within {:?}",
                    opts.connect_timeout
                )))
            }
        };
        let attempts = u32::try_from(prepared.endpoints.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(2)
            .max(3);
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            endpoints,
            tls: opts.tls.clone(),
            request_timeout: opts.request_timeout,
            attempts,
        };
        match store.probe("connect", deadline, opts.connect_timeout).await {
            Ok(()) => Ok(store),
            // Under TLS 1.3 a server refuses a client certificate (or its absence) only after
            // the handshake, by closing the connection: the client sees that, not the reason.
            Err(StoreError::Unavailable(m)) if tls && closed(&m) => {
                Err(StoreError::Unavailable(format!(
                    "{m} ({})",
                    closed_after_handshake(&opts.tls, client_identity)
                )))
            }
            Err(e) => Err(e),
        }
    }

    async fn probe(
        &self,
        what: &str,
        deadline: Instant,
        budget: Duration,
    ) -> Result<(), StoreError> {
        self.run(what, Repeat::Read, deadline, budget, |mut kv| async move {
            kv.get(PING_KEY, Some(GetOptions::new().with_count_only()))
                .await
                .map(|_| ())
        })
        .await
    }

    /// A request bounded by the request timeout.
    async fn request<T, F, Fut>(&self, what: &str, repeat: Repeat, op: F) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let budget = self.request_timeout;
        self.run(what, repeat, Instant::now() + budget, budget, op)
            .await
    }

    /// Sends a request until it succeeds, fails for good, or the deadline passes (`budget`
    /// names the limit in messages). Each attempt may land on a different member, which is
    /// what lets a multi-endpoint store ride out a dead member.
    async fn run<T, F, Fut>(
        &self,
        what: &str,
        repeat: Repeat,
        deadline: Instant,
        budget: Duration,
        mut op: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last: Option<Failed> = None;
        for attempt in 1..=self.attempts {
            let failed = match timeout_at(deadline, op(self.kv.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => classify(&e),
                Err(_) => return Err(self.timed_out(what, repeat, budget, last)),
            };
            let again = failed.kind.may_repeat(repeat == Repeat::Read);
            let pause = BACKOFF * attempt;
            if !again || attempt == self.attempts || Instant::now() + pause >= deadline {
                return Err(failed.into_store_error(&self.endpoints, &self.tls, what));
            }
            last = Some(failed);
            sleep(pause).await;
        }
        Err(self.timed_out(what, repeat, budget, last))
    }

    fn timed_out(
        &self,
        what: &str,
        repeat: Repeat,
        budget: Duration,
        last: Option<Failed>,
    ) -> StoreError {
        let mut msg = format!(
            "etcd {}: {what} got no answer within {budget:?}",
            self.endpoints
        );
        if let Some(last) = last {
            msg.push_str(&format!(" (last error: {})", last.reason));
        }
        if repeat == Repeat::Write {
            msg.push_str("; it may or may not have been applied");
        }
        StoreError::Unavailable(msg)
    }
}

/// Whether a failed request ended on a connection the server closed.
fn closed(message: &str) -> bool {
    ["connection closed", "connection reset", "broken pipe"]
        .iter()
        .any(|w| message.contains(w))
}

/// What a connection closed right after the TLS handshake means: etcd refused the client
/// certificate, or the lack of one. Its files are named, since they are what to change.
fn closed_after_handshake(tls: &TlsFiles, client_identity: bool) -> String {
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_deref()
            .map_or_else(|| "(not set)".to_owned(), |p| p.display().to_string())
    };
    if client_identity {
        format!(
            "etcd closed the connection after the TLS handshake, which is how it refuses a \
             client certificate: the one of etcdCertFile {} (key etcdKeyFile {}) must be signed \
             by a CA of etcd's --trusted-ca-file, be within its validity period and allow \
             client authentication",
            path(&tls.cert),
            path(&tls.key)
        )
    } else {
        "no client certificate is configured: if etcd runs with --client-cert-auth, set \
         etcdCertFile and etcdKeyFile"
            .to_owned()
    }
}

fn connect_error(endpoints: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        // Raised while building endpoints and TLS settings: nothing was sent yet.
        // Building the TLS settings is the only transport work done before the first request.
        E::TransportError(t) => StoreError::Config(format!(
            "etcd {endpoints}: cannot use the TLS files (etcdTrustedCAFileFile, etcdCertFile, \
             etcdKeyFile): {}",
            with_causes(String::new(), &t).trim_start_matches(": ")
        )),
        E::InvalidArgs(_) | E::InvalidUri(_) => {
            StoreError::Config(format!("etcd {endpoints}: {e}"))
        }
        other => StoreError::Unavailable(format!("etcd {endpoints}: connect failed: {other}")),
    }
}

impl EtcdStore {
    /// `from <= key < to` in key order, at most `limit` (0: all); without values when
    /// `keys_only`, which spares etcd sending them when only presence matters.
    async fn sorted_range(
        &self,
        from: &str,
        to: &str,
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let mut resp = self
            .request("range", Repeat::Read, |mut kv| async move {
                let mut opts = in_key_order(to, limit);
                if keys_only {
                    opts = opts.with_keys_only();
                }
                kv.get(from, Some(opts)).await
            })
            .await?;
        resp.take_kvs().into_iter().map(entry).collect()
    }
}

#[async_trait]
impl LeaseStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut resp = self
            .request("get", Repeat::Read, |mut kv| async move {
                kv.get(key, None).await
            })
            .await?;
        resp.take_kvs().into_iter().next().map(entry).transpose()
    }

    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.sorted_range(from, to, limit, false).await
    }

    async fn range_keys(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.sorted_range(from, to, limit, true).await
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        // A linearizable read's header carries the newest revision, which every read of
        // the snapshot then asks for.
        let resp = self
            .request("snapshot", Repeat::Read, |mut kv| async move {
                kv.get(PING_KEY, Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await?;
        let at = resp.header().map_or(0, |h| h.revision());
        let revision =
            u64::try_from(at)
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| StoreError::Corrupt {
                    key: PING_KEY.to_owned(),
                    reason: format!("etcd answered at revision {at}"),
                })?;
        Ok(Box::new(Pinned {
            store: self,
            revision,
        }))
    }

    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        let plan = txn::Reads::new(reads);
        let mut responses = Vec::with_capacity(plan.txns.len());
        for t in &plan.txns {
            let resp = self
                .request("read", Repeat::Read, |mut kv| {
                    let t = t.clone();
                    async move { kv.txn(t).await }
                })
                .await?;
            responses.push(resp);
        }
        plan.answers(responses)
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let resp = self
            .request("count", Repeat::Read, |mut kv| async move {
                let opts = GetOptions::new().with_range(to).with_count_only();
                kv.get(from, Some(opts)).await
            })
            .await?;
        u64::try_from(resp.count()).map_err(|_| StoreError::Corrupt {
            key: from.to_owned(),
            reason: format!("negative count {}", resp.count()),
        })
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        let Some(t) = txn::commit(compares, mutations) else {
            return Ok(false);
        };
        self.request("commit", Repeat::Write, |mut kv| {
            let t = t.clone();
            async move { kv.txn(t).await.map(|r| r.succeeded()) }
        })
        .await
    }

    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        let Some(plan) = txn::CommitAndRead::new(compares, mutations, reads) else {
            return Ok(Committed {
                revision: None,
                answers: self.reads(reads).await?,
            });
        };
        let resp = self
            .request("commit", Repeat::Write, |mut kv| {
                let t = plan.txn.clone();
                async move { kv.txn(t).await }
            })
            .await?;
        let (revision, answers) = plan.outcome(resp)?;
        let answers = match answers {
            Some(a) => a,
            None => self.reads(reads).await?,
        };
        Ok(Committed { revision, answers })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let budget = self.request_timeout;
        self.probe("ping", Instant::now() + budget, budget).await
    }
}

/// A snapshot of etcd: every read asks for one revision, which etcd keeps until a
/// compaction passes it.
struct Pinned<'a> {
    store: &'a EtcdStore,
    revision: Revision,
}

#[async_trait]
impl Snapshot for Pinned<'_> {
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let at = i64::try_from(self.revision).map_err(|_| StoreError::Corrupt {
            key: from.to_owned(),
            reason: format!("revision {} is out of etcd's range", self.revision),
        })?;
        let what = format!("range at revision {at}");
        let mut resp = self
            .store
            .request(&what, Repeat::Read, |mut kv| async move {
                kv.get(from, Some(in_key_order(to, limit).with_revision(at)))
                    .await
            })
            .await?;
        resp.take_kvs().into_iter().map(entry).collect()
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}
