//! One test body that every [`LeaseStore`] backend must pass.
//!
//! Each check returns `Err` with a description instead of panicking, so backends call
//! [`run`] from their own tests and report every failure by name.

use std::sync::Arc;

use crate::{Compare, Entry, LeaseStore, Mutation, Read};

type Check = Result<(), String>;

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn err(e: crate::StoreError) -> String {
    e.to_string()
}

/// Runs every check against `store`, whose keys under `root` must start empty.
/// `root` lets a shared server (etcd) keep runs apart.
pub async fn run<S: LeaseStore + 'static>(store: Arc<S>, root: &str) -> Check {
    create_if_absent(&*store, &format!("{root}/a/")).await?;
    compare_and_delete(&*store, &format!("{root}/b/")).await?;
    atomic_multi_key(&*store, &format!("{root}/c/")).await?;
    ordered_ranges(&*store, &format!("{root}/d/")).await?;
    racing_claims(store.clone(), &format!("{root}/e/")).await?;
    foreign_layout(&*store, &format!("{root}/f/")).await?;
    commit_then_read(&*store, &format!("{root}/g/")).await?;
    snapshot_between_commits(&*store, &format!("{root}/h/")).await?;
    snapshot_beside_a_writer(store.clone(), &format!("{root}/i/")).await?;
    store.ping().await.map_err(err)?;
    Ok(())
}

async fn create_if_absent<S: LeaseStore>(s: &S, p: &str) -> Check {
    let k = format!("{p}k");
    let put = |v: &str| vec![Mutation::Put(k.clone(), v.as_bytes().to_vec())];
    let first = s
        .commit(&[Compare::Absent(k.clone())], &put("one"))
        .await
        .map_err(err)?;
    ensure(first, || {
        "create-if-absent on a missing key was refused".into()
    })?;
    let second = s
        .commit(&[Compare::Absent(k.clone())], &put("two"))
        .await
        .map_err(err)?;
    ensure(!second, || {
        "create-if-absent overwrote an existing key".into()
    })?;
    let e = s
        .get(&k)
        .await
        .map_err(err)?
        .ok_or("committed key is missing")?;
    ensure(e.value == b"one", || {
        format!("value changed to {:?}", e.value)
    })?;
    ensure(e.revision > 0, || "revision of an existing key is 0".into())?;
    ensure(
        s.get(&format!("{p}missing")).await.map_err(err)?.is_none(),
        || "get of a missing key returned an entry".into(),
    )
}

/// Claims also compare keys of the original plugin's layout (`/etcd-cni/networks/<name>/
/// used/<ip>`, IPv6 with colons), which no kube-ipam record shares: a backend must treat
/// them like any other key, absent until written.
async fn foreign_layout<S: LeaseStore>(s: &S, p: &str) -> Check {
    let ours = format!("{p}kube-ipam/n/ip/6/fd000000000000000000000000000005");
    let theirs = format!("{p}etcd-cni/networks/n/used/fd00::5");
    let claim = |v: &str| vec![Mutation::Put(ours.clone(), v.as_bytes().to_vec())];
    let guard = [
        Compare::Absent(ours.clone()),
        Compare::Absent(theirs.clone()),
    ];
    let first = s.commit(&guard, &claim("one")).await.map_err(err)?;
    ensure(first, || {
        "a compare on an absent key of another layout failed".into()
    })?;
    s.commit(&[], &[Mutation::Delete(ours.clone())])
        .await
        .map_err(err)?;
    s.commit(&[], &[Mutation::Put(theirs.clone(), b"c1".to_vec())])
        .await
        .map_err(err)?;
    let second = s.commit(&guard, &claim("two")).await.map_err(err)?;
    ensure(!second, || {
        "a claim committed although the other layout's key exists".into()
    })?;
    ensure(s.get(&ours).await.map_err(err)?.is_none(), || {
        "a refused claim wrote its record".into()
    })
}

async fn compare_and_delete<S: LeaseStore>(s: &S, p: &str) -> Check {
    let k = format!("{p}k");
    s.commit(&[], &[Mutation::Put(k.clone(), b"v1".to_vec())])
        .await
        .map_err(err)?;
    let r1 = s
        .get(&k)
        .await
        .map_err(err)?
        .ok_or("put key missing")?
        .revision;
    s.commit(&[], &[Mutation::Put(k.clone(), b"v2".to_vec())])
        .await
        .map_err(err)?;
    let r2 = s
        .get(&k)
        .await
        .map_err(err)?
        .ok_or("put key missing")?
        .revision;
    ensure(r2 > r1, || {
        format!("revision did not grow on update: {r1} then {r2}")
    })?;
    let stale = s
        .commit(
            &[Compare::Revision(k.clone(), r1)],
            &[Mutation::Delete(k.clone())],
        )
        .await
        .map_err(err)?;
    ensure(!stale, || "delete with a stale revision was applied".into())?;
    ensure(s.get(&k).await.map_err(err)?.is_some(), || {
        "stale delete removed the key".into()
    })?;
    let fresh = s
        .commit(
            &[Compare::Revision(k.clone(), r2)],
            &[Mutation::Delete(k.clone())],
        )
        .await
        .map_err(err)?;
    ensure(fresh, || {
        "delete with the current revision was refused".into()
    })?;
    ensure(s.get(&k).await.map_err(err)?.is_none(), || {
        "deleted key is still there".into()
    })?;
    let gone = s
        .commit(
            &[Compare::Revision(k.clone(), r2)],
            &[Mutation::Delete(k.clone())],
        )
        .await
        .map_err(err)?;
    ensure(!gone, || "revision compare held on a missing key".into())
}

async fn atomic_multi_key<S: LeaseStore>(s: &S, p: &str) -> Check {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    s.commit(&[], &[Mutation::Put(b.clone(), b"taken".to_vec())])
        .await
        .map_err(err)?;
    // One comparison fails: nothing of the batch may land.
    let applied = s
        .commit(
            &[Compare::Absent(a.clone()), Compare::Absent(b.clone())],
            &[
                Mutation::Put(a.clone(), b"x".to_vec()),
                Mutation::Put(b.clone(), b"x".to_vec()),
                Mutation::Put(c.clone(), b"x".to_vec()),
            ],
        )
        .await
        .map_err(err)?;
    ensure(!applied, || {
        "commit applied although a comparison failed".into()
    })?;
    ensure(s.get(&a).await.map_err(err)?.is_none(), || {
        "partial commit wrote a".into()
    })?;
    ensure(s.get(&c).await.map_err(err)?.is_none(), || {
        "partial commit wrote c".into()
    })?;
    let b_now = s.get(&b).await.map_err(err)?.ok_or("b vanished")?;
    ensure(b_now.value == b"taken", || {
        "partial commit overwrote b".into()
    })?;
    // All hold: everything lands with one revision.
    let applied = s
        .commit(
            &[
                Compare::Absent(a.clone()),
                Compare::Revision(b.clone(), b_now.revision),
            ],
            &[
                Mutation::Put(a.clone(), b"y".to_vec()),
                Mutation::Delete(b.clone()),
                Mutation::Put(c.clone(), b"y".to_vec()),
            ],
        )
        .await
        .map_err(err)?;
    ensure(applied, || {
        "commit refused although every comparison held".into()
    })?;
    let ra = s.get(&a).await.map_err(err)?.ok_or("a missing")?.revision;
    let rc = s.get(&c).await.map_err(err)?.ok_or("c missing")?.revision;
    ensure(ra == rc, || {
        format!("one commit gave two revisions: {ra} and {rc}")
    })?;
    ensure(s.get(&b).await.map_err(err)?.is_none(), || {
        "b was not deleted".into()
    })
}

async fn ordered_ranges<S: LeaseStore>(s: &S, p: &str) -> Check {
    let keys: Vec<String> = [7u32, 1, 30, 12, 255, 3]
        .iter()
        .map(|n| format!("{p}{n:08x}"))
        .collect();
    for k in &keys {
        s.commit(
            &[Compare::Absent(k.clone())],
            &[Mutation::Put(k.clone(), k.as_bytes().to_vec())],
        )
        .await
        .map_err(err)?;
    }
    let mut sorted = keys.clone();
    sorted.sort();
    let all = s.range(p, &format!("{p}~"), 0).await.map_err(err)?;
    let got: Vec<&str> = all.iter().map(|e| e.key.as_str()).collect();
    ensure(
        got == sorted.iter().map(String::as_str).collect::<Vec<_>>(),
        || format!("range returned {got:?}, want {sorted:?}"),
    )?;
    ensure(all.iter().all(|e| e.value == e.key.as_bytes()), || {
        "range values differ".into()
    })?;
    let limited = s.range(p, &format!("{p}~"), 2).await.map_err(err)?;
    ensure(
        limited.len() == 2 && limited[0].key == sorted[0] && limited[1].key == sorted[1],
        || format!("limit 2 returned {limited:?}"),
    )?;
    // Half-open: `from` included, `to` excluded.
    let mid = s.range(&sorted[1], &sorted[3], 0).await.map_err(err)?;
    ensure(
        mid.len() == 2 && mid[0].key == sorted[1] && mid[1].key == sorted[2],
        || format!("half-open range returned {mid:?}"),
    )?;
    let n = s.count(&sorted[1], &sorted[5]).await.map_err(err)?;
    ensure(n == 4, || format!("count returned {n}, want 4"))?;
    // Several counts at once, in the order asked, an empty and a reversed range among them.
    let asked = [
        (sorted[0].clone(), sorted[2].clone()),
        (sorted[3].clone(), sorted[3].clone()),
        (sorted[4].clone(), sorted[1].clone()),
        (sorted[1].clone(), format!("{p}~")),
    ];
    let counts = s.counts(&asked).await.map_err(err)?;
    ensure(counts == [2, 0, 0, sorted.len() as u64 - 1], || {
        format!("counts returned {counts:?}")
    })?;
    // A batch of reads, answered in order: ranges with and without values, counts, and
    // empty or reversed ones among them.
    let range = |from: &String, to: String, limit, keys_only| Read::Range {
        from: from.clone(),
        to,
        limit,
        keys_only,
    };
    let counts = |ranges: &[(&String, String)], skip: &[String]| Read::Counts {
        ranges: ranges
            .iter()
            .map(|(f, t)| ((*f).clone(), t.clone()))
            .collect(),
        skip_if_present: skip.to_vec(),
    };
    let end = format!("{p}~");
    let two = [
        (&sorted[0], sorted[2].clone()),
        (&sorted[4], sorted[1].clone()),
    ];
    let batch = [
        range(&sorted[1], end.clone(), 2, false),
        counts(
            &[(&sorted[4], sorted[1].clone()), (&sorted[0], end.clone())],
            &[],
        ),
        range(&sorted[2], sorted[2].clone(), 0, false),
        range(&sorted[0], sorted[3].clone(), 0, true),
        // May be left out: both keys exist.
        counts(&two, &[sorted[0].clone(), sorted[5].clone()]),
        // May not: one is missing.
        counts(&two, &[sorted[0].clone(), format!("{p}missing")]),
    ];
    let mut answers = s.reads(&batch).await.map_err(err)?.into_iter();
    ensure(answers.len() == batch.len(), || {
        format!("reads answered {} of {}", answers.len(), batch.len())
    })?;
    let mut next = || answers.next().ok_or_else(|| "reads ran short".to_owned());
    let names = |es: &[Entry]| es.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    let first = next()?.into_entries().map_err(err)?;
    ensure(
        names(&first) == sorted[1..3] && first.iter().all(|e| e.value == e.key.as_bytes()),
        || format!("a batched range with limit 2 returned {first:?}"),
    )?;
    let n = sorted.len() as u64;
    let plain = next()?.into_counts().map_err(err)?;
    ensure(plain == Some(vec![0, n]), || {
        format!("batched counts (one reversed) returned {plain:?}")
    })?;
    let empty = next()?.into_entries().map_err(err)?;
    ensure(empty.is_empty(), || {
        format!("an empty range returned {empty:?}")
    })?;
    let keys_only = next()?.into_entries().map_err(err)?;
    ensure(names(&keys_only) == sorted[0..3], || {
        format!("a batched keys-only range returned {keys_only:?}")
    })?;
    let skippable = next()?.into_counts().map_err(err)?;
    ensure(skippable.as_ref().is_none_or(|v| v == &[2, 0]), || {
        format!("counts that may be left out returned {skippable:?}")
    })?;
    let due = next()?.into_counts().map_err(err)?;
    ensure(due == Some(vec![2, 0]), || {
        format!("counts with a key of skip_if_present missing returned {due:?}")
    })?;
    // More reads than one etcd transaction takes.
    let many: Vec<(String, String)> = (0..300)
        .map(|i| (sorted[i % 3].clone(), sorted[3].clone()))
        .collect();
    let got = s.counts(&many).await.map_err(err)?;
    let want: Vec<u64> = (0..300).map(|i| 3 - (i % 3) as u64).collect();
    ensure(got == want, || format!("300 counts returned {got:?}"))?;
    let empty = s.range(&sorted[3], &sorted[3], 0).await.map_err(err)?;
    ensure(empty.is_empty(), || "empty range returned entries".into())
}

async fn commit_then_read<S: LeaseStore>(s: &S, p: &str) -> Check {
    let key = |n: u32| format!("{p}{n:04}");
    let end = format!("{p}~");
    let seed: Vec<Mutation> = (0..10).map(|n| Mutation::Put(key(n), vec![])).collect();
    s.commit(&[], &seed).await.map_err(err)?;
    let read = |ranges: Vec<(String, String)>| Read::Counts {
        ranges,
        skip_if_present: Vec::new(),
    };
    // Two puts and a delete under two conditions, then counts and a range: the reads see
    // the commit, and the puts carry the revision it reports.
    let compares = [Compare::Absent(key(20)), Compare::Absent(key(21))];
    let mutations = [
        Mutation::Put(key(20), b"x".to_vec()),
        Mutation::Put(key(21), b"y".to_vec()),
        Mutation::Delete(key(3)),
    ];
    let reads = [
        read(vec![(key(0), key(10)), (key(20), end.clone())]),
        Read::Range {
            from: key(19),
            to: end.clone(),
            limit: 0,
            keys_only: false,
        },
    ];
    let done = s
        .commit_and_read(&compares, &mutations, &reads)
        .await
        .map_err(err)?;
    let revision = done
        .revision
        .ok_or("commit_and_read refused a commit that held")?;
    let mut answers = done.answers.into_iter();
    let counts = answers
        .next()
        .ok_or("no counts")?
        .into_counts()
        .map_err(err)?;
    ensure(counts == Some(vec![9, 2]), || {
        format!("counts after the commit returned {counts:?}")
    })?;
    let put = answers
        .next()
        .ok_or("no range")?
        .into_entries()
        .map_err(err)?;
    ensure(
        put.len() == 2 && put.iter().all(|e| e.revision == revision),
        || format!("the commit reported revision {revision}, its keys read {put:?}"),
    )?;
    // Its conditions fail: nothing applied, the reads still answered.
    let done = s
        .commit_and_read(
            &[
                Compare::Revision(key(20), revision),
                Compare::Absent(key(0)),
            ],
            &[Mutation::Delete(key(20))],
            &[read(vec![(key(20), end.clone())])],
        )
        .await
        .map_err(err)?;
    ensure(done.revision.is_none(), || {
        "commit_and_read applied a commit whose condition failed".into()
    })?;
    let counts = done.answers.into_iter().next().ok_or("no counts")?;
    ensure(counts.into_counts().map_err(err)? == Some(vec![2]), || {
        "a refused commit changed the store".into()
    })?;
    // More reads than one etcd transaction takes along with the commit.
    let many: Vec<(String, String)> = (0..200).map(|_| (key(0), key(10))).collect();
    let done = s
        .commit_and_read(
            &[Compare::Revision(key(20), revision)],
            &[Mutation::Put(key(20), b"z".to_vec())],
            &[read(many)],
        )
        .await
        .map_err(err)?;
    ensure(done.revision.is_some_and(|r| r > revision), || {
        format!("a later commit reported {:?}", done.revision)
    })?;
    let counts = done.answers.into_iter().next().ok_or("no counts")?;
    ensure(
        counts.into_counts().map_err(err)? == Some(vec![9; 200]),
        || "200 counts after a commit came back wrong".into(),
    )
}

async fn racing_claims<S: LeaseStore + 'static>(s: Arc<S>, p: &str) -> Check {
    // Many writers race for the same five keys: each key is won exactly once.
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let s = s.clone();
        let p = p.to_owned();
        tasks.push(tokio::spawn(async move {
            let k = format!("{p}{}", i % 5);
            s.commit(
                &[Compare::Absent(k.clone())],
                &[Mutation::Put(k, i.to_be_bytes().to_vec())],
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(true)) => won += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => return Err(format!("racing commit failed: {e}")),
            Err(e) => return Err(format!("racing task died: {e}")),
        }
    }
    ensure(won == 5, || format!("{won} writers won 5 keys"))?;
    let n = s.count(p, &format!("{p}~")).await.map_err(err)?;
    ensure(n == 5, || format!("{n} keys after the race, want 5"))
}

/// A snapshot read in pages with commits between them sees none of the commits: neither in
/// the pages still to come nor in point reads, while the store itself has them all.
async fn snapshot_between_commits<S: LeaseStore>(s: &S, p: &str) -> Check {
    let key = |n: u32| format!("{p}{n:02}");
    let end = format!("{p}~");
    let seed: Vec<Mutation> = (0..10)
        .map(|n| Mutation::Put(key(n), b"before".to_vec()))
        .collect();
    s.commit(&[], &seed).await.map_err(err)?;
    let seeded = s.get(&key(0)).await.map_err(err)?.ok_or("seed missing")?;
    let snap = s.snapshot().await.map_err(err)?;
    let at = snap.revision();
    ensure(at >= seeded.revision, || {
        format!(
            "a snapshot taken after revision {} reads at {at}",
            seeded.revision
        )
    })?;
    let first = snap.range(p, &end, 4).await.map_err(err)?;
    let names = |es: &[Entry]| es.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    ensure(names(&first) == (0..4).map(key).collect::<Vec<_>>(), || {
        format!("the first page read {first:?}")
    })?;
    // Between the pages: a change and a delete in the part still to read, a new key in it
    // and one past its end, a delete in the part read, each its own commit.
    let commits = [
        Mutation::Put(key(5), b"after".to_vec()),
        Mutation::Delete(key(7)),
        Mutation::Put(format!("{}5", key(5)), b"after".to_vec()),
        Mutation::Put(key(10), b"after".to_vec()),
        Mutation::Delete(key(1)),
    ];
    for m in commits {
        let applied = s.commit(&[], &[m]).await.map_err(err)?;
        ensure(applied, || {
            "a commit beside an open snapshot was refused".into()
        })?;
    }
    let rest = snap
        .range(&format!("{}\0", key(3)), &end, 0)
        .await
        .map_err(err)?;
    ensure(names(&rest) == (4..10).map(key).collect::<Vec<_>>(), || {
        format!("the page after commits read {:?}", names(&rest))
    })?;
    ensure(
        rest.iter()
            .all(|e| e.value == b"before" && e.revision == seeded.revision),
        || format!("the page after commits read changed records: {rest:?}"),
    )?;
    let deleted = snap.get(&key(7)).await.map_err(err)?;
    ensure(deleted.is_some_and(|e| e.value == b"before"), || {
        "a key deleted after the snapshot is gone from it".into()
    })?;
    let added = snap.get(&format!("{}5", key(5))).await.map_err(err)?;
    ensure(added.is_none(), || {
        "a key written after the snapshot is in it".into()
    })?;
    ensure(snap.revision() == at, || {
        format!(
            "the snapshot moved from revision {at} to {}",
            snap.revision()
        )
    })?;
    drop(snap);
    let now = s.range(p, &end, 0).await.map_err(err)?;
    let want: Vec<String> = [0, 2, 3, 4, 5]
        .into_iter()
        .map(key)
        .chain([format!("{}5", key(5))])
        .chain([6, 8, 9, 10].into_iter().map(key))
        .collect();
    ensure(names(&now) == want, || {
        format!("the store after the commits holds {:?}", names(&now))
    })?;
    let later = s.snapshot().await.map_err(err)?;
    ensure(later.revision() > at, || {
        format!(
            "a snapshot after five commits reads at {}, as before them",
            later.revision()
        )
    })?;
    let changed = later.get(&key(5)).await.map_err(err)?;
    ensure(changed.is_some_and(|e| e.value == b"after"), || {
        "a new snapshot misses a commit made before it".into()
    })
}

/// Snapshots read a page at a time while another task keeps committing one value to the
/// first and the last key together: every snapshot sees both keys from the same commit,
/// though a commit lands between its two pages every time.
async fn snapshot_beside_a_writer<S: LeaseStore + 'static>(s: Arc<S>, p: &str) -> Check {
    let (first, last) = (format!("{p}a"), format!("{p}z"));
    let end = format!("{p}~");
    let pair = {
        let (first, middle, last) = (first.clone(), format!("{p}m"), last.clone());
        move |n: u32| {
            let v = n.to_be_bytes().to_vec();
            vec![
                Mutation::Put(first.clone(), v.clone()),
                Mutation::Put(middle.clone(), Vec::new()),
                Mutation::Put(last.clone(), v),
            ]
        }
    };
    s.commit(&[], &pair(0)).await.map_err(err)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The writer's count of commits, which the reader waits on between its pages.
    let (wrote, mut written) = tokio::sync::watch::channel(0u32);
    let writer = {
        let (s, stop, pair) = (s.clone(), stop.clone(), pair.clone());
        tokio::spawn(async move {
            let mut n = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.commit(&[], &pair(n)).await?;
                wrote.send_replace(n);
                n += 1;
                tokio::task::yield_now().await;
            }
            Ok::<u32, crate::StoreError>(n)
        })
    };
    let mut outcome = Ok(());
    for _ in 0..20 {
        let read = async {
            let snap = s.snapshot().await.map_err(err)?;
            let head = snap.range(p, &end, 1).await.map_err(err)?;
            let seen = *written.borrow_and_update();
            written
                .wait_for(|n| *n > seen)
                .await
                .map_err(|_| "the writer stopped".to_owned())?;
            let tail = snap
                .range(&format!("{first}\0"), &end, 0)
                .await
                .map_err(err)?;
            let value = |es: &[Entry], k: &str| {
                es.iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
                    .ok_or(format!("{k} missing from a snapshot"))
            };
            let (a, z) = (value(&head, &first)?, value(&tail, &last)?);
            ensure(a == z, || {
                format!("one snapshot read {first} = {a:?} and {last} = {z:?}")
            })
        };
        if let Err(e) = read.await {
            outcome = Err(e);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    match writer.await {
        Ok(Ok(_)) => outcome,
        Ok(Err(e)) => Err(format!("the writer beside the snapshots failed: {e}")),
        Err(e) => Err(format!("the writer beside the snapshots died: {e}")),
    }
}
