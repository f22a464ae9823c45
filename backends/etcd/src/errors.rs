use std::path::PathBuf;

use etcd_client::Error;
use kube_ipam_store::StoreError;
use tonic::Code;

use crate::TlsFiles;

/// What a failed request tells about retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The request never reached an etcd member (no connection, no leader): safe to send
    /// again, even a commit, because nothing can have been applied.
    NotSent,
    /// The TLS handshake failed on a certificate. Nothing was sent, and waiting will not
    /// fix it: the files or the server's certificate need changing.
    Tls,
    /// It may or may not have been applied; only reads can be repeated blindly.
    Unknown,
    /// etcd refused it; asking again gets the same answer.
    Rejected,
    /// A read of a revision etcd has compacted away; a newer revision can be read.
    Compacted,
    /// A sound request whose answer cannot be had: a response over the client's size cap.
    /// Not a configuration problem.
    Unanswerable,
    /// etcd's database reached its space quota (the NOSPACE alarm): it takes reads and
    /// deletes, and no write until an operator frees space and disarms the alarm.
    NoSpace,
}

impl Failure {
    /// Whether sending the request again is harmless: always for reads, and for writes
    /// only when the first attempt cannot have been applied.
    pub fn may_repeat(self, read: bool) -> bool {
        match self {
            Failure::NotSent | Failure::Tls => true,
            Failure::Unknown => read,
            Failure::Rejected | Failure::Compacted | Failure::Unanswerable | Failure::NoSpace => {
                false
            }
        }
    }
}

/// Why a request failed, and whether sending it again is safe.
#[derive(Debug)]
pub(crate) struct Failed {
    pub kind: Failure,
    pub reason: String,
}

pub(crate) fn classify(e: &Error) -> Failed {
    match e {
        Error::GRpcStatus(s) => {
            let msg = s.message();
            let top = if msg.is_empty() {
                format!("{:?}", s.code())
            } else {
                msg.to_owned()
            };
            let reason = with_causes(top, s);
            let kind = match s.code() {
                _ if reason.contains(COMPACTED) => Failure::Compacted,
                _ if reason.contains(NO_SPACE) => Failure::NoSpace,
                _ if reason.contains(TOO_LARGE) => Failure::Unanswerable,
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::PermissionDenied
                | Code::Unauthenticated => Failure::Rejected,
                _ if certificate_problem(&reason) => Failure::Tls,
                Code::Unavailable if never_sent(msg) => Failure::NotSent,
                _ => Failure::Unknown,
            };
            Failed { kind, reason }
        }
        Error::TransportError(t) => {
            let reason = with_causes(e.to_string(), t);
            let kind = if certificate_problem(&reason) {
                Failure::Tls
            } else {
                Failure::Unknown
            };
            Failed { kind, reason }
        }
        Error::InvalidArgs(_) | Error::InvalidUri(_) | Error::InvalidMetadataValue(_) => Failed {
            kind: Failure::Rejected,
            reason: e.to_string(),
        },
        _ => Failed {
            kind: Failure::Unknown,
            reason: e.to_string(),
        },
    }
}

/// Messages that tonic and etcd give only before a request is handed to a member: the
/// connection could not be set up, or the member had no leader to propose to (requests
/// carry `require_leader`).
fn never_sent(msg: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "tcp connect error",
        "error trying to connect",
        "etcdserver: no leader",
    ];
    PREFIXES.iter().any(|p| msg.starts_with(p))
}

/// etcd's wording for a read of a compacted revision.
const COMPACTED: &str = "required revision has been compacted";
/// etcd's wording for a write refused under the NOSPACE alarm.
const NO_SPACE: &str = "database space exceeded";
/// tonic's wording for a response over the cap.
const TOO_LARGE: &str = "message length too large";

/// rustls's wording for a certificate it refused, or an alert by which the server refused
/// ours.
fn certificate_problem(reason: &str) -> bool {
    reason.contains("invalid peer certificate") || reason.contains("received fatal alert")
}

/// Transport errors say little at the top ("transport error", "operation was canceled");
/// the cause that names the problem (a TLS alert, a refused connection) sits deeper.
pub(crate) fn with_causes(mut text: String, e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        // tonic's wrapper adds this line at several depths without saying anything.
        if t != "transport error" && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

impl Failed {
    /// The store's error for this failure of `what` against `endpoints`, naming the
    /// configured TLS files where one of them is the problem.
    pub fn into_store_error(self, endpoints: &str, tls: &TlsFiles, what: &str) -> StoreError {
        match self.kind {
            Failure::Rejected => {
                StoreError::Config(format!("etcd {endpoints} refused {what}: {}", self.reason))
            }
            Failure::Tls => StoreError::Config(format!(
                "etcd {endpoints}: {what} failed in the TLS handshake: {}: {}",
                tls_culprit(&self.reason, tls),
                self.reason
            )),
            Failure::Compacted => {
                StoreError::Compacted(format!("etcd {endpoints}: {what}: {}", self.reason))
            }
            Failure::NoSpace => StoreError::Full(format!(
                "etcd {endpoints}: {what}: {}: etcd's database reached its space quota \
                 (--quota-backend-bytes) and raised the NOSPACE alarm: it serves reads and \
                 deletes (DEL works) but takes no write until space is freed and the alarm \
                 disarmed. Run `etcdctl compact <revision>` with the current revision \
                 (`etcdctl endpoint status --write-out=json`), `etcdctl defrag` against each \
                 member, then `etcdctl alarm disarm`; or restart etcd with a larger \
                 --quota-backend-bytes",
                self.reason
            )),
            Failure::Unanswerable => {
                StoreError::Unavailable(format!("etcd {endpoints}: {what}: {}", self.reason))
            }
            Failure::NotSent | Failure::Unknown => {
                StoreError::Unavailable(format!("etcd {endpoints}: {what} failed: {}", self.reason))
            }
        }
    }
}

/// Which configured file (or which certificate of etcd's) a handshake failure points at,
/// from rustls's words: its own verdict on etcd's certificate, or the alert by which etcd
/// refused ours.
pub(crate) fn tls_culprit(reason: &str, tls: &TlsFiles) -> String {
    let shown = |p: &Option<PathBuf>, field: &str| match p {
        Some(p) if !p.as_os_str().is_empty() => format!("{field} {}", p.display()),
        _ => format!("{field} (not set)"),
    };
    let (ca, cert) = (
        shown(&tls.ca, "etcdTrustedCAFileFile"),
        shown(&tls.cert, "etcdCertFile"),
    );
    let has_identity = tls.cert.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
    if reason.contains("invalid peer certificate") {
        if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
            format!("etcd's certificate is not signed by the CA of {ca}")
        } else if reason.contains("NotValidForName") || reason.contains("not valid for name") {
            "etcd's certificate does not name the host of the endpoint: use a host name or \
             address its certificate lists"
                .to_owned()
        } else if reason.contains("Expired") || reason.contains("NotValidYet") {
            "etcd's certificate is out of its validity period (or this node's clock is)".to_owned()
        } else {
            format!("etcd's certificate is refused against {ca}")
        }
    } else if reason.contains("received fatal alert") {
        if reason.contains("CertificateRequired") || !has_identity {
            "etcd asks for a client certificate: set etcdCertFile and etcdKeyFile".to_owned()
        } else {
            format!(
                "etcd refused the client certificate of {cert}: it must be signed by a CA \
                 of etcd's --trusted-ca-file, be within its validity period and allow \
                 client authentication"
            )
        }
    } else {
        format!("check {ca}, {cert}, {}", shown(&tls.key, "etcdKeyFile"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> Error {
        Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn connection_failures_are_safe_to_repeat() {
        let f = classify(&status(Code::Unavailable, "tcp connect error"));
        assert_eq!(f.kind, Failure::NotSent);
        assert!(f.kind.may_repeat(false));
        let f = classify(&status(Code::Unavailable, "etcdserver: no leader"));
        assert_eq!(f.kind, Failure::NotSent);
    }

    #[test]
    fn ambiguous_failures_repeat_only_reads() {
        for (code, msg) in [
            (Code::Unavailable, "etcdserver: request timed out"),
            (Code::Unknown, "operation was canceled"),
            (Code::Cancelled, "Timeout expired"),
        ] {
            let f = classify(&status(code, msg));
            assert_eq!(f.kind, Failure::Unknown, "{msg}");
            assert!(f.kind.may_repeat(true) && !f.kind.may_repeat(false));
        }
    }

    #[test]
    fn oversized_answers_and_compacted_revisions_are_not_configuration() {
        let msg = "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes";
        let f = classify(&status(Code::OutOfRange, msg));
        assert_eq!(f.kind, Failure::Unanswerable, "{msg}");
        assert!(!f.kind.may_repeat(true));
        let e = f.into_store_error("http://e:2379", &TlsFiles::default(), "range");
        assert!(
            matches!(&e, StoreError::Unavailable(m) if m.contains(msg)),
            "{e}"
        );

        let msg = "etcdserver: mvcc: required revision has been compacted";
        let f = classify(&status(Code::OutOfRange, msg));
        assert_eq!(f.kind, Failure::Compacted, "{msg}");
        assert!(!f.kind.may_repeat(true));
        let e = f.into_store_error("http://e:2379", &TlsFiles::default(), "range at revision 9");
        assert!(
            matches!(&e, StoreError::Compacted(m) if m.contains(msg)),
            "{e}"
        );
    }

    #[test]
    fn a_full_database_says_what_to_run() {
        let msg = "etcdserver: mvcc: database space exceeded";
        let f = classify(&status(Code::ResourceExhausted, msg));
        assert_eq!(f.kind, Failure::NoSpace);
        assert!(!f.kind.may_repeat(false));
        let e = f.into_store_error("http://e:2379", &TlsFiles::default(), "commit");
        let StoreError::Full(m) = &e else {
            panic!("want Full, got {e:?}")
        };
        for fix in [
            "etcdctl compact",
            "etcdctl defrag",
            "etcdctl alarm disarm",
            msg,
        ] {
            assert!(m.contains(fix), "{fix} missing from {m}");
        }
        assert!(!e.is_transient());
    }

    #[test]
    fn refusals_and_certificates_are_configuration() {
        let f = classify(&status(
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ));
        assert_eq!(f.kind, Failure::Rejected);
        assert!(matches!(
            f.into_store_error("http://e:2379", &TlsFiles::default(), "commit"),
            StoreError::Config(_)
        ));
        let f = classify(&status(
            Code::Unavailable,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(f.kind, Failure::Tls);
        let tls = TlsFiles {
            ca: Some("/etc/kube-ipam/etcd-ca.pem".into()),
            cert: Some("/etc/kube-ipam/client.pem".into()),
            key: Some("/etc/kube-ipam/client-key.pem".into()),
        };
        let e = f.into_store_error("https://e:2379", &tls, "connect");
        assert!(
            matches!(&e, StoreError::Config(m)
                if m.contains("etcdTrustedCAFileFile /etc/kube-ipam/etcd-ca.pem")
                    && !m.contains("client.pem")),
            "{e}"
        );
        let f = classify(&status(
            Code::Unknown,
            "transport error: received fatal alert: BadCertificate",
        ));
        assert_eq!(f.kind, Failure::Tls);
        let e = f.into_store_error("https://e:2379", &tls, "connect");
        assert!(
            matches!(&e, StoreError::Config(m)
                if m.contains("etcdCertFile /etc/kube-ipam/client.pem")
                    && !m.contains("etcd-ca.pem")),
            "{e}"
        );
    }
}
