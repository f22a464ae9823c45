//! Who holds the store's locks, for the message of a wait that ran out.
//!
//! SQLite takes POSIX record locks: in write-ahead-log mode on bytes of the `-shm` index
//! file (the write lock is byte 120), in rollback-journal mode on the database itself. The
//! kernel lists every such lock with its owner's pid in `/proc/locks`; the process's command
//! line and, for a plugin process, its CNI environment say what it is doing.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// First byte of SQLite's lock bytes in the `-shm` file, and how many there are
/// (write, checkpoint, recovery, then the read marks).
const SHM_LOCKS: (u64, u64) = (120, 8);

/// "the write lock (byte 120 of /…/store.db-shm) is held by pid 4242 (…)", or why no one
/// can be named.
pub(crate) fn describe(db: &Path) -> String {
    let shm = sibling(db, "-shm");
    let files: Vec<(PathBuf, Option<String>)> = [shm.clone(), db.to_owned()]
        .into_iter()
        .map(|p| {
            let id = fs::metadata(&p).ok().map(|m| file_id(m.dev(), m.ino()));
            (p, id)
        })
        .collect();
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut held = Vec::new();
    for l in locks.lines().filter_map(Lock::parse) {
        let Some((path, _)) = files.iter().find(|(_, id)| id.as_deref() == Some(&l.file)) else {
            continue;
        };
        // Shared locks are readers and the index's liveness mark: they never stop a writer.
        if !l.exclusive {
            continue;
        }
        let on_shm = path == &shm;
        if on_shm && (l.end < SHM_LOCKS.0 || l.start >= SHM_LOCKS.0 + SHM_LOCKS.1) {
            continue;
        }
        let what = match (on_shm, l.start) {
            (true, 120) => "the write lock".to_owned(),
            (true, 121) => "the checkpoint lock".to_owned(),
            (true, 122) => "the recovery lock".to_owned(),
            (true, b) => format!("lock byte {b}"),
            (false, _) => "a lock of the database file".to_owned(),
        };
        let place = if on_shm {
            format!("byte {} of {}", l.start, path.display())
        } else {
            path.display().to_string()
        };
        let entry = format!("{what} ({place}) is held by {}", process(l.pid));
        if !held.contains(&entry) {
            held.push(entry);
        }
    }
    if held.is_empty() {
        return format!(
            "no process holds a lock of {} or {} now: the writer ahead finished just after \
             the deadline",
            db.display(),
            shm.display()
        );
    }
    held.join("; ")
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// How `/proc/locks` names a file: the device as major:minor in hex, then the inode.
fn file_id(dev: u64, ino: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major:02x}:{minor:02x}:{ino}")
}

/// One line of `/proc/locks`: `1: POSIX  ADVISORY  WRITE 4242 08:01:1234 120 120`.
struct Lock {
    exclusive: bool,
    pid: u32,
    file: String,
    start: u64,
    end: u64,
}

impl Lock {
    fn parse(line: &str) -> Option<Lock> {
        let mut f = line.split_whitespace().skip(1);
        let kind = f.next()?;
        // SQLite takes POSIX locks only; "->" marks a process waiting for one, not holding it.
        if kind != "POSIX" {
            return None;
        }
        let _mode = f.next()?;
        let exclusive = f.next()? == "WRITE";
        let pid = f.next()?.parse().ok()?;
        let file = f.next()?.to_owned();
        let start = f.next()?.parse().ok()?;
        let end = match f.next()? {
            "EOF" => u64::MAX,
            n => n.parse().ok()?,
        };
        Some(Lock {
            exclusive,
            pid,
            file,
            start,
            end,
        })
    }
}

/// "pid 4242 (/opt/cni/bin/kube-ipam, CNI ADD of container 0123abcd/eth0)".
fn process(pid: u32) -> String {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = fs::read(proc.join("cmdline")).unwrap_or_default();
    let mut args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.truncate(4);
    let mut what = clip(args.join(" "), 120);
    // Only readable for our own processes (or as root): that of a plugin says its call.
    let environ = fs::read(proc.join("environ")).unwrap_or_default();
    let var = |name: &str| {
        environ.split(|b| *b == 0).find_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| clip(v.to_owned(), 64))
        })
    };
    if let (Some(cmd), Some(id)) = (var("CNI_COMMAND"), var("CNI_CONTAINERID")) {
        let ifname = var("CNI_IFNAME").unwrap_or_default();
        what.push_str(&format!(", CNI {cmd} of container {id}/{ifname}"));
    }
    if what.is_empty() {
        format!("pid {pid}")
    } else {
        format!("pid {pid} ({what})")
    }
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_proc_locks_are_read_and_waiters_skipped() {
        let l = Lock::parse("3: POSIX  ADVISORY  WRITE 4242 fd:01:917513 120 120").unwrap();
        assert!(l.exclusive);
        assert_eq!(
            (l.pid, l.file.as_str(), l.start, l.end),
            (4242, "fd:01:917513", 120, 120)
        );
        let l = Lock::parse("4: POSIX  ADVISORY  READ 7 08:02:12 128 EOF").unwrap();
        assert!(!l.exclusive && l.end == u64::MAX);
        assert!(Lock::parse("3: -> POSIX  ADVISORY  WRITE 4243 fd:01:917513 120 120").is_none());
        assert!(Lock::parse("1: FLOCK  ADVISORY  WRITE 1 00:19:3 0 EOF").is_none());
    }

    #[test]
    fn devices_are_named_as_the_kernel_lists_them() {
        // st_dev of major 253, minor 1.
        assert_eq!(file_id(0xfd01, 42), "fd:01:42");
        // major 259, minor 300: both split across st_dev's halves.
        let dev = ((259u64 & 0xfff) << 8) | (300 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(file_id(dev, 7), "103:12c:7");
    }
}
