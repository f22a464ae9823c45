//! `etcdConfig`: endpoints, TLS files and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use super::{
    nonempty, Errors, DEFAULT_DIAL_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, MAX_TIMEOUT_SECS, NONE,
};
use crate::config::model::EtcdConf;
use crate::config::raw::RawEtcd;

pub(super) fn etcd(raw: &RawEtcd, errs: &mut Errors) -> Option<EtcdConf> {
    const P: &str = "ipam.etcdConfig";
    let before = errs.len();
    let endpoints = match nonempty(&raw.etcd_url) {
        None => {
            errs.push(
                format!("{P}.etcdURL"),
                NONE,
                "is required when etcdConfig is given (leave etcdConfig out for the embedded store)",
            );
            Vec::new()
        }
        Some(urls) => endpoints(&format!("{P}.etcdURL"), urls, errs),
    };
    let cert_file = nonempty(&raw.cert_file).map(PathBuf::from);
    let key_file = nonempty(&raw.key_file).map(PathBuf::from);
    match (&cert_file, &key_file) {
        (Some(c), None) => errs.push(
            format!("{P}.etcdKeyFile"),
            NONE,
            format!(
                "is required with etcdCertFile {}: a client certificate needs its key",
                c.display()
            ),
        ),
        (None, Some(k)) => errs.push(
            format!("{P}.etcdCertFile"),
            NONE,
            format!(
                "is required with etcdKeyFile {}: a client key needs its certificate",
                k.display()
            ),
        ),
        _ => {}
    }
    let ca_file = match (nonempty(&raw.ca_file_file), nonempty(&raw.ca_file)) {
        (Some(a), Some(b)) if a != b => {
            errs.push(
                format!("{P}.etcdTrustedCAFile"),
                b,
                format!("contradicts etcdTrustedCAFileFile {a}: give one of the two"),
            );
            None
        }
        (a, b) => a.or(b).map(PathBuf::from),
    };
    let connect_timeout = timeout(
        &format!("{P}.dialTimeout"),
        raw.dial_timeout,
        DEFAULT_DIAL_TIMEOUT,
        errs,
    );
    let request_timeout = timeout(
        &format!("{P}.requestTimeout"),
        raw.request_timeout,
        DEFAULT_REQUEST_TIMEOUT,
        errs,
    );
    (errs.len() == before).then_some(EtcdConf {
        endpoints,
        cert_file,
        key_file,
        ca_file,
        connect_timeout,
        request_timeout,
    })
}

fn endpoints(field: &str, urls: &str, errs: &mut Errors) -> Vec<String> {
    let mut out = Vec::new();
    for entry in urls.split(',').map(str::trim) {
        if entry.is_empty() {
            errs.push(
                field,
                format!("{urls:?}"),
                "has an empty entry: endpoints are separated by single commas",
            );
            continue;
        }
        let lower = entry.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') => {
                out.push(entry.to_owned());
            }
            Some(_) => errs.push(field, entry, "has no host after the scheme"),
            None => errs.push(
                field,
                entry,
                "is not an http:// or https:// URL (etcd endpoints are comma separated URLs)",
            ),
        }
    }
    out
}

pub(super) fn timeout(
    field: &str,
    raw: Option<f64>,
    default: Duration,
    errs: &mut Errors,
) -> Duration {
    let Some(secs) = raw else {
        return default;
    };
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        errs.push(
            field,
            secs,
            format!("must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"),
        );
        return default;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(default)
}
