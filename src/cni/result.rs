//! Result and error JSON, each in the caller's `cniVersion`.

use serde_json::{json, Map, Value};

use super::version::Version;
use crate::config::Route;
use crate::dns::Dns;
use crate::Error;
use kube_ipam_store::Attachment;

/// The IPAM result of ADD: addresses, routes, DNS. IPAM results carry no `interfaces`.
pub fn add_result(version: Version, att: &Attachment, routes: &[Route], dns: &Dns) -> Value {
    let ips: Vec<Value> = att
        .ips
        .iter()
        .map(|ip| {
            let mut m = Map::new();
            if version.tags_ip_version() {
                m.insert(
                    "version".into(),
                    json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                );
            }
            m.insert(
                "address".into(),
                json!(format!("{}/{}", ip.address, ip.prefix_len)),
            );
            if let Some(gw) = ip.gateway {
                m.insert("gateway".into(), json!(gw.to_string()));
            }
            Value::Object(m)
        })
        .collect();
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("dst".into(), json!(r.dst.to_string()));
            if let Some(gw) = r.gw {
                m.insert("gw".into(), json!(gw.to_string()));
            }
            Value::Object(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.to_string()));
    out.insert("ips".into(), Value::Array(ips));
    if !routes.is_empty() {
        out.insert("routes".into(), Value::Array(routes));
    }
    if !dns.is_empty() {
        out.insert("dns".into(), json!(dns));
    }
    Value::Object(out)
}

/// The spec's error object: `msg` is the short class, `details` says exactly what went wrong.
pub fn error_result(version: &str, err: &Error) -> Value {
    json!({
        "cniVersion": version,
        "code": err.code(),
        "msg": err.summary(),
        "details": err.to_string(),
    })
}

/// The addresses of a `prevResult`, whatever its version's shape.
pub fn prev_result_ips(prev: &Value) -> Result<Vec<std::net::IpAddr>, Error> {
    let bad = |why: &str| Error::Decode {
        what: "prevResult".into(),
        reason: why.into(),
    };
    let Some(ips) = prev.get("ips").and_then(Value::as_array) else {
        return Err(bad("has no ips list"));
    };
    ips.iter()
        .map(|ip| {
            let a = ip
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("an ip has no address"))?;
            let host = a.split('/').next().unwrap_or(a);
            host.parse()
                .map_err(|_| bad(&format!("{a:?} is not an address")))
        })
        .collect()
}
