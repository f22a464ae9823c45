//! The pod annotations kube-ipam reads:
//!
//! ```text
//! kube-ipam.ip:      10.188.0.216            one or more addresses, comma separated, v4 and v6
//! kube-ipam.netmask: 255.255.0.0 | 16        one for all addresses, or one per address
//! kube-ipam.gateway: 10.188.0.1              at most one per family; default: the range's
//! kube-ipam.sticky:  "true"                  keep the first dynamic address across recreations
//! ```
//!
//! Only the syntax is checked here; whether an address may be handed out (subnet, dynamic
//! range, fixed zone, gateway placement) is the engine's call, against the configured ranges.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::cni::args::parse_requested;
use crate::config::RequestedIp;
use crate::{Error, Result};

pub const IP: &str = "kube-ipam.ip";
pub const NETMASK: &str = "kube-ipam.netmask";
pub const GATEWAY: &str = "kube-ipam.gateway";
pub const STICKY: &str = "kube-ipam.sticky";

/// More addresses than any sane network has range sets: a bound on work, not a policy.
const MAX_ADDRESSES: usize = 16;

/// What a pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intent {
    /// Fixed addresses, each with the gateway the pod asked for, if any.
    pub ips: Vec<(RequestedIp, Option<IpAddr>)>,
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
    let Some(raw_ips) = annotations.get(IP) else {
        return Ok(Intent {
            ips: vec![],
            sticky,
        });
    };
    let mut ips = Vec::new();
    for e in entries(raw_ips) {
        let ip = parse_requested(e).map_err(|why| Error::config(field(IP), e, why))?;
        if ips
            .iter()
            .any(|(p, _): &(RequestedIp, _)| p.address == ip.address)
        {
            return Err(Error::config(field(IP), e, "is listed twice"));
        }
        ips.push((ip, None));
    }
    if ips.len() > MAX_ADDRESSES {
        return Err(Error::config(
            field(IP),
            raw_ips,
            format!("lists more than {MAX_ADDRESSES} addresses"),
        ));
    }
    if let Some(raw) = annotations.get(NETMASK) {
        apply_netmasks(raw, &mut ips)?;
    }
    if let Some(raw) = annotations.get(GATEWAY) {
        apply_gateways(raw, &mut ips)?;
    }
    Ok(Intent { ips, sticky })
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

/// One netmask for every address, or one per address in the same order.
fn apply_netmasks(raw: &str, ips: &mut [(RequestedIp, Option<IpAddr>)]) -> Result<()> {
    let masks: Vec<&str> = entries(raw).collect();
    if masks.is_empty() {
        return Ok(());
    }
    if masks.len() != 1 && masks.len() != ips.len() {
        return Err(Error::config(
            field(NETMASK),
            raw,
            format!(
                "gives {} netmasks for {} addresses; give one for all or one per address",
                masks.len(),
                ips.len()
            ),
        ));
    }
    for (i, (ip, _)) in ips.iter_mut().enumerate() {
        let m = masks[if masks.len() == 1 { 0 } else { i }];
        let len = prefix_len(m, ip.address).map_err(|why| Error::config(field(NETMASK), m, why))?;
        match ip.prefix_len {
            Some(given) if given != len => {
                return Err(Error::config(
                    field(NETMASK),
                    m,
                    format!("says /{len} but {IP} says {}/{given}", ip.address),
                ))
            }
            _ => ip.prefix_len = Some(len),
        }
    }
    Ok(())
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

/// At most one gateway per family; each applies to the addresses of its family.
fn apply_gateways(raw: &str, ips: &mut [(RequestedIp, Option<IpAddr>)]) -> Result<()> {
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
        for (ip, slot) in ips.iter_mut() {
            if ip.address.is_ipv4() == gw.is_ipv4() {
                *slot = Some(gw);
                used = true;
            }
        }
        if !used {
            return Err(Error::config(
                field(GATEWAY),
                g,
                format!("has no address of its family in {IP}"),
            ));
        }
    }
    Ok(())
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
    fn netmask_forms() {
        let v6 = ip("fd00::1");
        assert_eq!(prefix_len("ffff:ffff:ffff:ffff::", v6), Ok(64));
        assert_eq!(prefix_len("128", v6), Ok(128));
        assert_eq!(prefix_len("255.255.255.255", ip("1.2.3.4")), Ok(32));
        assert_eq!(prefix_len("0.0.0.0", ip("1.2.3.4")), Ok(0));
        assert!(prefix_len("129", v6).is_err());
    }
}
