//! Result and error JSON, each in the caller's `cniVersion`.

use serde_json::{json, Map, Value};

use super::version::Version;
use crate::config::Route;
use crate::dns::Dns;
use crate::Error;
use kube_ipam_store::{AttachedIp, Attachment};

/// The IPAM result of ADD: addresses, routes, DNS. IPAM results carry no `interfaces`.
pub fn add_result(version: Version, att: &Attachment, routes: &[Route], dns: &Dns) -> Value {
    if version.per_family_result() {
        return per_family_result(version, att, routes, dns);
    }
    let ips: Vec<Value> = att
        .ips
        .iter()
        .map(|ip| {
            let mut m = ip_config(ip, "address");
            if version.tags_ip_version() {
                m.insert(
                    "version".into(),
                    json!(if ip.address.is_ipv4() { "4" } else { "6" }),
                );
            }
            Value::Object(m)
        })
        .collect();
    let routes: Vec<Value> = routes.iter().map(|r| route(version, r)).collect();
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

/// 0.1.0 and 0.2.0: one `ip4` and one `ip6` object, each with the routes of its family, and
/// `dns` always present (as libcni's own 0.2.0 type writes it).
fn per_family_result(version: Version, att: &Attachment, routes: &[Route], dns: &Dns) -> Value {
    let mut out = Map::new();
    out.insert("cniVersion".into(), json!(version.to_string()));
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(ip) = att.ips.iter().find(|i| i.address.is_ipv4() == v4) else {
            continue;
        };
        let mut m = ip_config(ip, "ip");
        let family: Vec<Value> = routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv4() == v4)
            .map(|r| route(version, r))
            .collect();
        if !family.is_empty() {
            m.insert("routes".into(), Value::Array(family));
        }
        out.insert(key.into(), Value::Object(m));
    }
    out.insert("dns".into(), json!(dns));
    Value::Object(out)
}

fn ip_config(ip: &AttachedIp, address_key: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        address_key.into(),
        json!(format!("{}/{}", ip.address, ip.prefix_len)),
    );
    if let Some(gw) = ip.gateway {
        m.insert("gateway".into(), json!(gw.to_string()));
    }
    m
}

fn route(version: Version, r: &Route) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    if version.has_route_attributes() {
        let a = &r.attrs;
        let fields = [
            ("mtu", a.mtu),
            ("advmss", a.advmss),
            ("priority", a.priority),
            ("table", a.table),
            ("scope", a.scope.map(u32::from)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }
    Value::Object(m)
}

/// The spec's error object: `msg` is the short class, `details` says exactly what went wrong.
/// libcni shows both joined (`msg; details`), so `details` does not repeat the class.
pub fn error_result(version: &str, err: &Error) -> Value {
    let summary = err.summary();
    let text = err.to_string();
    let details = text
        .strip_prefix(summary)
        .and_then(|rest| rest.strip_prefix(": "))
        .map_or_else(|| text.clone(), str::to_owned);
    json!({
        "cniVersion": version,
        "code": err.code(),
        "msg": summary,
        "details": details,
    })
}

/// The addresses of a `prevResult`, whatever its version's shape: `ips[].address`, or
/// `ip4.ip` and `ip6.ip` in 0.1.0 and 0.2.0.
pub fn prev_result_ips(prev: &Value) -> Result<Vec<std::net::IpAddr>, Error> {
    let bad = |why: &str| Error::Decode {
        what: "prevResult".into(),
        reason: why.into(),
    };
    let (configs, key): (Vec<&Value>, &str) = match prev.get("ips") {
        Some(ips) => match ips.as_array() {
            Some(list) => (list.iter().collect(), "address"),
            None => return Err(bad("has an ips that is not a list")),
        },
        None if prev.get("ip4").is_some() || prev.get("ip6").is_some() => (
            ["ip4", "ip6"].iter().filter_map(|k| prev.get(*k)).collect(),
            "ip",
        ),
        None => return Err(bad("has no ips list")),
    };
    configs
        .into_iter()
        .map(|c| {
            let a = c
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("an ip has no {key}")))?;
            let host = a.split('/').next().unwrap_or(a);
            host.parse()
                .map_err(|_| bad(&format!("{a:?} is not an address")))
        })
        .collect()
}
