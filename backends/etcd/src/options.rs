use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Identity, TlsOptions};
use kube_ipam_store::StoreError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// PEM files for mutual TLS, named after the network config keys that carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Client certificate (`etcdCertFile`).
    pub cert: Option<PathBuf>,
    /// Client private key (`etcdKeyFile`).
    pub key: Option<PathBuf>,
    /// The CA that signed the etcd server certificate (`etcdTrustedCAFileFile`); the only
    /// trust root, so a server certificate from any other CA is refused.
    pub ca: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://host:port` or `https://host:port`, one scheme for all of them.
    pub endpoints: Vec<String>,
    pub tls: TlsFiles,
    /// Bounds establishing the connection, TLS handshake and first round trip included.
    pub connect_timeout: Duration,
    /// Bounds each store operation, retries included.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            tls: TlsFiles::default(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdOptions {
    /// Default timeouts, no TLS files.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// Options checked and files loaded: everything that can be wrong without touching the
/// network has been reported by the time this exists.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsOptions>,
    /// Whether `tls` presents a client certificate.
    pub client_identity: bool,
}

const HTTP: &str = "http://";
const HTTPS: &str = "https://";

impl EtcdOptions {
    pub(crate) fn prepare(&self) -> Result<Prepared, StoreError> {
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(config("etcd connect and request timeouts must be positive"));
        }
        let endpoints = normalise_endpoints(&self.endpoints)?;
        let https = endpoints.iter().filter(|e| e.starts_with(HTTPS)).count();
        if https != 0 && https != endpoints.len() {
            return Err(config(format!(
                "etcd endpoints mix http:// and https://: {}",
                endpoints.join(",")
            )));
        }
        let (cert, key, ca) = (set(&self.tls.cert), set(&self.tls.key), set(&self.tls.ca));
        if cert.is_some() != key.is_some() {
            return Err(config(
                "etcdCertFile and etcdKeyFile must be given together for a client certificate",
            ));
        }
        if https == 0 {
            if cert.is_some() || ca.is_some() {
                // Certificates next to plain-text endpoints are almost certainly a typo in the
                // scheme; connecting anyway would send the pool's state unencrypted.
                return Err(config(format!(
                    "etcd TLS files are set but the endpoints use http://: {}",
                    endpoints.join(",")
                )));
            }
            return Ok(Prepared {
                endpoints,
                tls: None,
                client_identity: false,
            });
        }
        let ca =
            ca.ok_or_else(|| config("etcdTrustedCAFileFile is required for https endpoints"))?;
        let ca_pem = read_certificates(ca, "CA")?;
        let mut tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .timeout(self.connect_timeout);
        let client_identity = if let (Some(cert), Some(key)) = (cert, key) {
            let cert_pem = read_certificates(cert, "client certificate")?;
            let key_pem = read_key(key)?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
            true
        } else {
            false
        };
        Ok(Prepared {
            endpoints,
            tls: Some(tls),
            client_identity,
        })
    }
}

fn config(msg: impl Into<String>) -> StoreError {
    StoreError::Config(msg.into())
}

/// An empty path is how an unset config string arrives; treat it as unset.
fn set(p: &Option<PathBuf>) -> Option<&Path> {
    p.as_deref().filter(|p| !p.as_os_str().is_empty())
}

fn normalise_endpoints(raw: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        let e = e.trim();
        if e.is_empty() {
            // A trailing comma in the config leaves an empty item; it names nothing.
            continue;
        }
        let lower = e.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with(HTTPS) {
            (HTTPS, &e[HTTPS.len()..])
        } else if lower.starts_with(HTTP) {
            (HTTP, &e[HTTP.len()..])
        } else {
            return Err(config(format!(
                "etcd endpoint {e:?} must start with http:// or https://"
            )));
        };
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(config(format!("etcd endpoint {e:?} has no valid host")));
        }
        out.push(format!("{scheme}{rest}"));
    }
    if out.is_empty() {
        return Err(config("no etcd endpoints configured"));
    }
    Ok(out)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        config(format!(
            "cannot read etcd {what} file {}: {e}",
            path.display()
        ))
    })
}

/// rustls silently skips CA entries it cannot parse, which would turn a broken CA file into
/// "unknown issuer" at handshake time; checking here names the real culprit.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    let pem = read(path, what)?;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&pem) {
        c.map_err(|e| {
            config(format!(
                "etcd {what} file {} is not valid PEM: {e}",
                path.display()
            ))
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(config(format!(
            "etcd {what} file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

fn read_key(path: &Path) -> Result<Vec<u8>, StoreError> {
    let pem = read(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        config(format!(
            "etcd key file {} holds no usable PEM private key: {e}",
            path.display()
        ))
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoints: &[&str]) -> EtcdOptions {
        EtcdOptions::new(endpoints.iter().copied())
    }

    fn config_error(o: &EtcdOptions) -> String {
        match o.prepare() {
            Err(StoreError::Config(m)) => m,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn plain_endpoints_are_accepted_and_trimmed() {
        let p = opts(&[" http://127.0.0.1:2379", "HTTP://10.0.0.1:2379 ", ""])
            .prepare()
            .unwrap();
        assert_eq!(
            p.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.1:2379"]
        );
        assert!(p.tls.is_none());
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for bad in ["127.0.0.1:2379", "unix:///run/etcd.sock", "grpc://x:1"] {
            let m = config_error(&opts(&[bad]));
            assert!(m.contains(bad), "{m}");
        }
        assert!(config_error(&opts(&["http://"])).contains("no valid host"));
        assert!(config_error(&opts(&[])).contains("no etcd endpoints"));
    }

    #[test]
    fn mixed_schemes_are_refused() {
        let m = config_error(&opts(&["http://a:2379", "https://b:2379"]));
        assert!(m.contains("mix"), "{m}");
    }

    #[test]
    fn https_needs_a_ca() {
        let m = config_error(&opts(&["https://127.0.0.1:2379"]));
        assert_eq!(m, "etcdTrustedCAFileFile is required for https endpoints");
        let mut o = opts(&["https://127.0.0.1:2379"]);
        o.tls.ca = Some(PathBuf::new());
        assert_eq!(config_error(&o), m);
    }

    #[test]
    fn cert_and_key_go_together() {
        let mut o = opts(&["https://127.0.0.1:2379"]);
        o.tls.ca = Some("/nonexistent/ca.pem".into());
        o.tls.cert = Some("/nonexistent/client.pem".into());
        assert!(config_error(&o).contains("together"));
        o.tls.cert = None;
        o.tls.key = Some("/nonexistent/client-key.pem".into());
        assert!(config_error(&o).contains("together"));
    }

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(&["https://127.0.0.1:2379"]);
        o.tls.ca = Some(dir.path().join("missing-ca.pem"));
        assert!(config_error(&o).contains("missing-ca.pem"));

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        o.tls.ca = Some(junk);
        let m = config_error(&o);
        assert!(
            m.contains("junk.pem") && m.contains("no PEM certificate"),
            "{m}"
        );
    }

    #[test]
    fn tls_files_with_http_are_refused() {
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.tls.ca = Some("/etc/ca.pem".into());
        assert!(config_error(&o).contains("http://"));
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let mut o = opts(&["http://127.0.0.1:2379"]);
        o.request_timeout = Duration::ZERO;
        assert!(config_error(&o).contains("positive"));
    }
}
