//! The pod annotations kube-ipam reads:
//!
//! ```text
//! kube-ipam.ip:      10.188.0.216            one or more addresses, comma separated, v4 and v6
//! kube-ipam.ip-pool: 10.188.0.216-10.188.0.219,fd00:188::216-fd00:188::219
//!                                            addresses and inclusive ranges: one per family each
//! kube-ipam.netmask: 255.255.0.0 | 16        one for all, or one per address (pool: per entry)
//! kube-ipam.gateway: 10.188.0.1              at most one per family; default: the range's
//! kube-ipam.sticky:  "true"                  keep the first dynamic address across recreations
//! ```
//!
//! Only the syntax is checked here; whether an address may be handed out (subnet, dynamic
//! range, fixed zone, gateway placement) is the engine's call, against the configured ranges.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::cni::args::parse_requested;
use crate::config::{PoolSpan, RequestedIp};
use crate::{Error, Result};

pub const IP: &str = "kube-ipam.ip";
pub const IP_POOL: &str = "kube-ipam.ip-pool";
pub const NETMASK: &str = "kube-ipam.netmask";
pub const GATEWAY: &str = "kube-ipam.gateway";
pub const STICKY: &str = "kube-ipam.sticky";

/// More addresses than any sane network has range sets: a bound on work, not a policy.
const MAX_ADDRESSES: usize = 16;
/// Addresses of one pool: every ADD of a pool reads all of its records in this network, so
/// the bound keeps that one request small. A workload of more replicas than this is better
/// served by a range of its own.
pub const MAX_POOL: u128 = 1024;

/// An address as a number, to bound and compare pool spans.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// What a pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intent {
    /// Fixed addresses, each with the gateway the pod asked for, if any.
    pub ips: Vec<(RequestedIp, Option<IpAddr>)>,
    /// The pool to take one address per family from, in the order written.
    pub pool: Vec<PoolSpan>,
    pub sticky: bool,
}

fn field(name: &str) -> String {
    format!("pod annotation {name}")
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Reads the kube-ipam annotations of a pod. Netmask and gateway without an address are
/// ignored, as the original plugin did.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Intent> {
    let sticky = sticky(annotations)?;
    let mut intent = Intent {
        sticky,
        ..Intent::default()
    };
    match (annotations.get(IP), annotations.get(IP_POOL)) {
        (None, None) => {}
        (Some(ip), Some(pool)) => {
            return Err(Error::config(
                format!("{} and {IP_POOL}", field(IP)),
                format!("{ip:?} and {pool:?}"),
                "name fixed addresses two ways; give the pod one of them",
            ))
        }
        (Some(raw), None) => intent.ips = fixed(raw, annotations)?,
        (None, Some(raw)) => intent.pool = pool(raw, annotations)?,
    }
    Ok(intent)
}

fn fixed(
    raw_ips: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<(RequestedIp, Option<IpAddr>)>> {
    let mut ips: Vec<RequestedIp> = Vec::new();
    for e in entries(raw_ips) {
        let ip = parse_requested(e).map_err(|why| Error::config(field(IP), e, why))?;
        if ips.iter().any(|p| p.address == ip.address) {
            return Err(Error::config(field(IP), e, "is listed twice"));
        }
        ips.push(ip);
    }
    if ips.len() > MAX_ADDRESSES {
        return Err(Error::config(
            field(IP),
            raw_ips,
            format!("lists more than {MAX_ADDRESSES} addresses"),
        ));
    }
    let given: Vec<(IpAddr, Option<u8>)> = ips.iter().map(|i| (i.address, i.prefix_len)).collect();
    let lens = netmasks(annotations, IP, ("addresses", "address"), &given)?;
    let gateways = gateways(annotations, IP, &given)?;
    Ok(ips
        .into_iter()
        .zip(lens)
        .zip(gateways)
        .map(|((ip, prefix_len), gw)| (RequestedIp { prefix_len, ..ip }, gw))
        .collect())
}

fn pool(raw: &str, annotations: &BTreeMap<String, String>) -> Result<Vec<PoolSpan>> {
    let mut spans: Vec<PoolSpan> = Vec::new();
    let mut total: u128 = 0;
    for e in entries(raw) {
        let bad = |why: String| Error::config(field(IP_POOL), e, why);
        let address = |s: &str| -> Result<IpAddr> {
            s.trim()
                .parse()
                .map_err(|_| bad(format!("{:?} is not an IP address", s.trim())))
        };
        let (first, last) = match e.split_once('-') {
            Some((a, b)) => (address(a)?, address(b)?),
            None => {
                let a = address(e)?;
                (a, a)
            }
        };
        if first.is_ipv4() != last.is_ipv4() {
            return Err(bad("mixes an IPv4 and an IPv6 address".into()));
        }
        if bits(first) > bits(last) {
            return Err(bad(format!("starts after it ends ({first} > {last})")));
        }
        let (a, b) = (bits(first), bits(last));
        if let Some(o) = spans.iter().find(|s| {
            s.first.is_ipv4() == first.is_ipv4() && bits(s.first) <= b && a <= bits(s.last)
        }) {
            return Err(bad(format!(
                "overlaps {}-{} listed before",
                o.first, o.last
            )));
        }
        total = total.saturating_add(b - a + 1);
        if total > MAX_POOL {
            return Err(Error::config(
                field(IP_POOL),
                raw,
                format!("holds more than {MAX_POOL} addresses"),
            ));
        }
        spans.push(PoolSpan {
            first,
            last,
            prefix_len: None,
            gateway: None,
        });
    }
    if spans.is_empty() {
        return Err(Error::config(field(IP_POOL), raw, "lists no address"));
    }
    let given: Vec<(IpAddr, Option<u8>)> = spans.iter().map(|s| (s.first, None)).collect();
    let lens = netmasks(annotations, IP_POOL, ("pool entries", "pool entry"), &given)?;
    let gws = gateways(annotations, IP_POOL, &given)?;
    for ((s, len), gw) in spans.iter_mut().zip(lens).zip(gws) {
        s.prefix_len = len;
        s.gateway = gw;
    }
    Ok(spans)
}

/// `kube-ipam.sticky` alone, for calls whose addresses are named elsewhere.
pub fn sticky(annotations: &BTreeMap<String, String>) -> Result<bool> {
    match annotations.get(STICKY).map(|v| v.trim()) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::config(
            field(STICKY),
            v,
            "must be \"true\" or \"false\"",
        )),
    }
}

/// The prefix length of each of `given` (an address and the length written with it, if
/// any): one netmask for every one, or one per one in the same order.
fn netmasks(
    annotations: &BTreeMap<String, String>,
    of: &str,
    noun: (&str, &str),
    given: &[(IpAddr, Option<u8>)],
) -> Result<Vec<Option<u8>>> {
    let mut out: Vec<Option<u8>> = given.iter().map(|(_, l)| *l).collect();
    let Some(raw) = annotations.get(NETMASK) else {
        return Ok(out);
    };
    let masks: Vec<&str> = entries(raw).collect();
    if masks.is_empty() {
        return Ok(out);
    }
    if masks.len() != 1 && masks.len() != given.len() {
        return Err(Error::config(
            field(NETMASK),
            raw,
            format!(
                "gives {} netmasks for {} {}; give one for all or one per {}",
                masks.len(),
                given.len(),
                noun.0,
                noun.1
            ),
        ));
    }
    for (i, ((address, written), slot)) in given.iter().zip(out.iter_mut()).enumerate() {
        let m = masks[if masks.len() == 1 { 0 } else { i }];
        let len = prefix_len(m, *address).map_err(|why| Error::config(field(NETMASK), m, why))?;
        match written {
            Some(w) if *w != len => {
                return Err(Error::config(
                    field(NETMASK),
                    m,
                    format!("says /{len} but {of} says {address}/{w}"),
                ))
            }
            _ => *slot = Some(len),
        }
    }
    Ok(out)
}

/// `16`, `/16`, `255.255.0.0` or `ffff:ffff::`, for an address of the given family.
pub fn prefix_len(mask: &str, addr: IpAddr) -> std::result::Result<u8, String> {
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let m = mask.trim();
    if let Ok(n) = m.trim_start_matches('/').parse::<u8>() {
        return if n <= max {
            Ok(n)
        } else {
            Err(format!("/{n} is too long for {addr}"))
        };
    }
    let bits = match m.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if addr.is_ipv4() => u128::from(u32::from(v4)) << 96,
        Ok(IpAddr::V6(v6)) if addr.is_ipv6() => u128::from(v6),
        Ok(_) => return Err(format!("is a netmask of the other family than {addr}")),
        Err(_) => return Err("is neither a prefix length nor a dotted netmask".into()),
    };
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) != 0 {
        return Err("is not a contiguous netmask".into());
    }
    Ok(ones as u8)
}

/// The gateway of each of `given`: at most one per family, each for the addresses of its
/// family.
fn gateways(
    annotations: &BTreeMap<String, String>,
    of: &str,
    given: &[(IpAddr, Option<u8>)],
) -> Result<Vec<Option<IpAddr>>> {
    let mut out = vec![None; given.len()];
    let Some(raw) = annotations.get(GATEWAY) else {
        return Ok(out);
    };
    let mut seen: Vec<IpAddr> = Vec::new();
    for g in entries(raw) {
        let gw: IpAddr = g
            .parse()
            .map_err(|_| Error::config(field(GATEWAY), g, "is not an IP address"))?;
        if seen.iter().any(|s| s.is_ipv4() == gw.is_ipv4()) {
            return Err(Error::config(
                field(GATEWAY),
                raw,
                "names two gateways of one family",
            ));
        }
        seen.push(gw);
        let mut used = false;
        for ((address, _), slot) in given.iter().zip(out.iter_mut()) {
            if address.is_ipv4() == gw.is_ipv4() {
                *slot = Some(gw);
                used = true;
            }
        }
        if !used {
            return Err(Error::config(
                field(GATEWAY),
                g,
                format!("has no address of its family in {of}"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn original_annotations_dotted_or_prefix() {
        for mask in ["255.255.0.0", "16", "/16"] {
            let i = parse(&ann(&[
                (IP, "10.188.0.216"),
                (NETMASK, mask),
                (GATEWAY, "10.188.0.1"),
            ]))
            .unwrap();
            assert_eq!(i.ips.len(), 1);
            assert_eq!(i.ips[0].0.address, ip("10.188.0.216"));
            assert_eq!(i.ips[0].0.prefix_len, Some(16), "{mask}");
            assert_eq!(i.ips[0].1, Some(ip("10.188.0.1")));
            assert!(!i.sticky);
        }
    }

    #[test]
    fn dual_stack_with_masks_per_address_and_gateways_per_family() {
        let i = parse(&ann(&[
            (IP, "10.188.0.216, fd00:188::216"),
            (NETMASK, "255.255.0.0,64"),
            (GATEWAY, "fd00:188::1,10.188.0.1"),
        ]))
        .unwrap();
        assert_eq!(i.ips[0].0.prefix_len, Some(16));
        assert_eq!(i.ips[1].0.prefix_len, Some(64));
        assert_eq!(i.ips[0].1, Some(ip("10.188.0.1")));
        assert_eq!(i.ips[1].1, Some(ip("fd00:188::1")));
    }

    #[test]
    fn sticky_alone_and_nothing_at_all() {
        let i = parse(&ann(&[(STICKY, "True")])).unwrap();
        assert!(i.sticky && i.ips.is_empty());
        assert_eq!(parse(&ann(&[])).unwrap(), Intent::default());
        // Netmask and gateway alone ask for nothing.
        assert!(parse(&ann(&[(NETMASK, "16"), (GATEWAY, "x")]))
            .unwrap()
            .ips
            .is_empty());
    }

    #[test]
    fn every_bad_value_is_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[(IP, "10.188.0.300")], IP, "10.188.0.300"),
            (&[(IP, "10.1.1.1,10.1.1.1")], IP, "twice"),
            (
                &[(IP, "10.1.1.1"), (NETMASK, "255.0.255.0")],
                NETMASK,
                "contiguous",
            ),
            (&[(IP, "10.1.1.1"), (NETMASK, "33")], NETMASK, "/33"),
            (&[(IP, "10.1.1.1"), (NETMASK, "abc")], NETMASK, "abc"),
            (
                &[(IP, "10.1.1.1"), (NETMASK, "ffff::")],
                NETMASK,
                "other family",
            ),
            (&[(IP, "10.1.1.1/24"), (NETMASK, "16")], NETMASK, "/24"),
            (
                &[(IP, "10.1.1.1,10.1.2.1,10.1.3.1"), (NETMASK, "16,16")],
                NETMASK,
                "2 netmasks",
            ),
            (&[(IP, "10.1.1.1"), (GATEWAY, "10.1.1")], GATEWAY, "10.1.1"),
            (
                &[(IP, "10.1.1.1"), (GATEWAY, "10.1.0.1,10.1.0.2")],
                GATEWAY,
                "two gateways",
            ),
            (
                &[(IP, "10.1.1.1"), (GATEWAY, "fd00::1")],
                GATEWAY,
                "fd00::1",
            ),
            (&[(STICKY, "yes")], STICKY, "yes"),
        ];
        for (pairs, name, needle) in cases {
            let e = parse(&ann(pairs)).unwrap_err();
            assert_eq!(e.code(), 7, "{pairs:?}");
            let text = e.to_string();
            assert!(
                text.contains(name) && text.contains(needle),
                "{pairs:?}: {text}"
            );
        }
    }

    #[test]
    fn a_pool_of_addresses_and_ranges_with_a_netmask_and_gateway_per_family() {
        let i = parse(&ann(&[
            (
                IP_POOL,
                "10.188.0.216-10.188.0.219, fd00:188::216 - fd00:188::219,10.188.0.230",
            ),
            (NETMASK, "16,64,16"),
            (GATEWAY, "10.188.0.1,fd00:188::1"),
        ]))
        .unwrap();
        assert!(i.ips.is_empty());
        assert_eq!(i.pool.len(), 3);
        assert_eq!(
            (i.pool[0].first, i.pool[0].last, i.pool[0].prefix_len),
            (ip("10.188.0.216"), ip("10.188.0.219"), Some(16))
        );
        assert_eq!(i.pool[1].last, ip("fd00:188::219"));
        assert_eq!(i.pool[1].prefix_len, Some(64));
        assert_eq!(i.pool[1].gateway, Some(ip("fd00:188::1")));
        assert_eq!(i.pool[2].first, i.pool[2].last);
        assert_eq!(i.pool[2].gateway, Some(ip("10.188.0.1")));
    }

    #[test]
    fn every_bad_pool_is_named() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[(IP_POOL, "10.0.0.9-10.0.0.2")],
                IP_POOL,
                "starts after it ends",
            ),
            (&[(IP_POOL, "10.0.0.1-fd00::9")], IP_POOL, "mixes"),
            (&[(IP_POOL, "10.0.0.1-10.0.0.x")], IP_POOL, "10.0.0.x"),
            (
                &[(IP_POOL, "10.0.0.1-10.0.0.5,10.0.0.5")],
                IP_POOL,
                "overlaps 10.0.0.1-10.0.0.5",
            ),
            (
                &[(IP_POOL, "10.0.0.0-10.0.255.255")],
                IP_POOL,
                "more than 1024",
            ),
            (&[(IP_POOL, " , ")], IP_POOL, "no address"),
            (
                &[
                    (IP_POOL, "10.0.0.1-10.0.0.3,fd00::1"),
                    (NETMASK, "24,64,64"),
                ],
                NETMASK,
                "3 netmasks for 2 pool entries; give one for all or one per pool entry",
            ),
            (
                &[(IP_POOL, "10.0.0.1-10.0.0.3"), (GATEWAY, "fd00::1")],
                GATEWAY,
                "no address of its family in kube-ipam.ip-pool",
            ),
            (
                &[(IP, "10.0.0.1"), (IP_POOL, "10.0.0.2-10.0.0.3")],
                IP_POOL,
                "kube-ipam.ip and kube-ipam.ip-pool",
            ),
        ];
        for (pairs, name, needle) in cases {
            let e = parse(&ann(pairs)).unwrap_err();
            assert_eq!(e.code(), 7, "{pairs:?}");
            let text = e.to_string();
            assert!(
                text.contains(name) && text.contains(needle),
                "{pairs:?}: {text}"
            );
        }
        // 1024 addresses exactly is a pool.
        let i = parse(&ann(&[(IP_POOL, "10.0.0.0-10.0.3.255")])).unwrap();
        assert_eq!(i.pool.len(), 1);
    }

    #[test]
    fn netmask_forms() {
        let v6 = ip("fd00::1");
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::", v6), Ok(64));
        assert_eq!(prefix_len("128", v6), Ok(128));
        assert_eq!(prefix_len("255.255.255.255", ip("1.2.3.4")), Ok(32));
        assert_eq!(prefix_len("0.0.0.0", ip("1.2.3.4")), Ok(0));
        assert!(prefix_len("129", v6).is_err());
    }
}
