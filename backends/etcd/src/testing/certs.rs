use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::TlsFiles;

/// PEM files of a mutual-TLS test server, all in its temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The CA that signed the server and client certificates (`ca.pem`).
    pub ca: PathBuf,
    /// Client certificate the server accepts (`client.pem`).
    pub client_cert: PathBuf,
    /// Its key (`client-key.pem`).
    pub client_key: PathBuf,
    /// A CA unrelated to the server, for clients that must refuse it (`wrong-ca.pem`).
    pub wrong_ca: PathBuf,
    /// A client certificate signed by that CA, which the server must refuse
    /// (`stranger.pem`), and its key (`stranger-key.pem`).
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// The server's certificate (`server.pem`), for SAN `IP:127.0.0.1` and `DNS:localhost`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TlsPaths {
    /// What a correctly configured client passes.
    pub fn client_files(&self) -> TlsFiles {
        TlsFiles {
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
            ca: Some(self.ca.clone()),
        }
    }
}

/// Extensions for `openssl`. rustls (webpki) insists on a CA marked as one, a server
/// certificate for the exact name or IP dialled, and the matching extended key usage.
const CONFIG: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// P-256 keys: generated in milliseconds, understood by both rustls and Go.
const KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Creates a CA, a server and a client certificate signed by it, and an unrelated CA with a
/// client certificate of its own, with the `openssl` command-line tool.
pub(super) fn generate(dir: &Path) -> io::Result<TlsPaths> {
    fs::create_dir_all(dir)?;
    let cnf = dir.join("x509.cnf");
    fs::write(&cnf, CONFIG)?;
    let p = |name: &str| dir.join(name);

    let self_signed = |cert: &str, key: &str, cn: &str| {
        openssl(
            dir,
            &[
                &["req", "-x509", "-new"],
                KEY,
                &["-keyout", key, "-out", cert, "-days", "2", "-subj", cn],
                &["-config", "x509.cnf", "-extensions", "ca"],
            ],
        )
    };
    let signed = |name: &str, cn: &str, ext: &str, serial: &str, ca: &str| -> io::Result<()> {
        let (cert, key, csr) = (
            format!("{name}.pem"),
            format!("{name}-key.pem"),
            format!("{name}.csr"),
        );
        openssl(
            dir,
            &[
                &["req", "-new"],
                KEY,
                &[
                    "-keyout", &key, "-out", &csr, "-subj", cn, "-config", "x509.cnf",
                ],
            ],
        )?;
        openssl(
            dir,
            &[
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}-key.pem"),
                ],
                &["-set_serial", serial, "-days", "2", "-out", &cert],
                &["-extfile", "x509.cnf", "-extensions", ext],
            ],
        )
    };

    self_signed("ca.pem", "ca-key.pem", "/CN=kube-ipam test CA")?;
    self_signed(
        "wrong-ca.pem",
        "wrong-ca-key.pem",
        "/CN=kube-ipam unrelated CA",
    )?;
    signed("server", "/CN=localhost", "server", "2", "ca")?;
    signed("client", "/CN=kube-ipam client", "client", "3", "ca")?;
    signed(
        "stranger",
        "/CN=kube-ipam stranger",
        "client",
        "4",
        "wrong-ca",
    )?;
    Ok(TlsPaths {
        ca: p("ca.pem"),
        client_cert: p("client.pem"),
        client_key: p("client-key.pem"),
        wrong_ca: p("wrong-ca.pem"),
        stranger_cert: p("stranger.pem"),
        stranger_key: p("stranger-key.pem"),
        server_cert: p("server.pem"),
        server_key: p("server-key.pem"),
    })
}

fn openssl(dir: &Path, args: &[&[&str]]) -> io::Result<()> {
    let args: Vec<&str> = args.concat();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run openssl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
