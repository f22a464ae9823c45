//! A configured range turned into address arithmetic: the dynamic span and the holes in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Range;

/// Addresses as integers so both families share one search.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// One range of the config, ready for searching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub range: Range,
    /// The range's identity: its content, so reordering the config changes nothing.
    pub id: String,
    pub v6: bool,
    /// First and last dynamic address, inclusive.
    pub start: u128,
    pub end: u128,
    /// Sorted, disjoint, inclusive spans inside `start..=end` never handed out dynamically:
    /// network and broadcast addresses, the gateway, the fixed zone, what `exclude` names.
    pub holes: Vec<(u128, u128)>,
}

impl Pool {
    pub fn new(range: &Range) -> Pool {
        let v6 = range.subnet.addr().is_ipv6();
        let start = to_u128(range.range_start);
        let end = to_u128(range.range_end);
        let net = to_u128(range.subnet.network());
        let bcast = to_u128(range.subnet.broadcast());
        let mut holes = vec![(net, net)];
        // IPv6 has no broadcast address: its last address is an ordinary host, as in host-local.
        if !v6 {
            holes.push((bcast, bcast));
        }
        if let Some(gw) = range.gateway {
            let g = to_u128(gw);
            holes.push((g, g));
        }
        if let Some((fs, fe)) = range.fixed {
            holes.push((to_u128(fs), to_u128(fe)));
        }
        holes.extend(range.exclude.iter().map(|&(a, b)| (to_u128(a), to_u128(b))));
        let holes = normalise(holes, start, end);
        let id = format!("{} {}-{}", range.subnet, range.range_start, range.range_end);
        Pool {
            range: range.clone(),
            id,
            v6,
            start,
            end,
            holes,
        }
    }

    /// Number of addresses the range can hand out dynamically.
    pub fn size(&self) -> u128 {
        let span = self.end - self.start + 1;
        let holes: u128 = self.holes.iter().map(|(a, b)| b - a + 1).sum();
        span - holes
    }

    /// The `k`-th dynamic address (from 0, `k < size()`): a spot picked at random among
    /// the addresses that can be handed out, wherever the holes lie.
    pub fn nth_dynamic(&self, k: u128) -> u128 {
        let mut v = self.start + k;
        for &(a, b) in &self.holes {
            if a <= v {
                v += b - a + 1;
            } else {
                break;
            }
        }
        v.min(self.end)
    }

    /// Whether `v` is excluded by the config's `exclude`.
    pub fn excluded(&self, v: u128) -> Option<(IpAddr, IpAddr)> {
        self.range
            .exclude
            .iter()
            .copied()
            .find(|&(a, b)| v >= to_u128(a) && v <= to_u128(b))
    }

    pub fn contains_dynamic(&self, v: u128) -> bool {
        v >= self.start && v <= self.end && !self.in_hole(v)
    }

    pub fn in_hole(&self, v: u128) -> bool {
        self.holes.iter().any(|&(a, b)| v >= a && v <= b)
    }

    /// How many dynamic addresses of this pool `a..=b` holds.
    pub fn dynamic_in(&self, a: u128, b: u128) -> u128 {
        let (a, b) = (a.max(self.start), b.min(self.end));
        if a > b {
            return 0;
        }
        let holes: u128 = self
            .holes
            .iter()
            .filter(|&&(ha, hb)| hb >= a && ha <= b)
            .map(|&(ha, hb)| hb.min(b) - ha.max(a) + 1)
            .sum();
        b - a + 1 - holes
    }

    /// Whether `a..=b` holds a dynamic address of this pool.
    pub fn any_dynamic(&self, a: u128, b: u128) -> bool {
        let (a, b) = (a.max(self.start), b.min(self.end));
        if a > b {
            return false;
        }
        // Holes are sorted and merged: walk them while they cover the span from its start.
        let mut next = a;
        for &(ha, hb) in &self.holes {
            if hb < next {
                continue;
            }
            if ha > next {
                return true;
            }
            if hb >= b {
                return false;
            }
            next = hb + 1;
        }
        true
    }

    pub fn addr(&self, v: u128) -> IpAddr {
        from_u128(v, self.v6)
    }

    pub fn prefix_len(&self) -> u8 {
        self.range.subnet.prefix_len()
    }
}

/// Clips spans to `start..=end`, sorts and merges them.
fn normalise(mut spans: Vec<(u128, u128)>, start: u128, end: u128) -> Vec<(u128, u128)> {
    spans.retain(|&(a, b)| b >= start && a <= end);
    for s in &mut spans {
        s.0 = s.0.max(start);
        s.1 = s.1.min(end);
    }
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: &str, end: &str, gw: Option<&str>) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            range_start: start.parse().unwrap(),
            range_end: end.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            fixed: None,
            exclude: vec![],
        }
    }

    #[test]
    fn holes_and_size() {
        let p = Pool::new(&range(
            "10.0.0.0/24",
            "10.0.0.1",
            "10.0.0.254",
            Some("10.0.0.1"),
        ));
        assert_eq!(p.size(), 253);
        assert!(!p.contains_dynamic(to_u128("10.0.0.1".parse().unwrap())));
        assert!(p.contains_dynamic(to_u128("10.0.0.2".parse().unwrap())));
        let mut r = range(
            "10.188.0.0/16",
            "10.188.0.0",
            "10.188.255.255",
            Some("10.188.0.1"),
        );
        r.fixed = Some((
            "10.188.0.10".parse().unwrap(),
            "10.188.0.255".parse().unwrap(),
        ));
        let p = Pool::new(&r);
        // network, broadcast, gateway, 246 fixed.
        assert_eq!(p.size(), 65536 - 1 - 1 - 1 - 246);
        assert_eq!(p.id, "10.188.0.0/16 10.188.0.0-10.188.255.255");
    }

    #[test]
    fn the_nth_dynamic_address_skips_every_hole() {
        let mut r = range("10.0.0.0/24", "10.0.0.1", "10.0.0.254", Some("10.0.0.1"));
        r.exclude = vec![
            ("10.0.0.10".parse().unwrap(), "10.0.0.99".parse().unwrap()),
            ("10.0.0.200".parse().unwrap(), "10.0.0.200".parse().unwrap()),
        ];
        let p = Pool::new(&r);
        let dynamic: Vec<u128> = (p.start..=p.end)
            .filter(|&v| p.contains_dynamic(v))
            .collect();
        assert_eq!(p.size(), dynamic.len() as u128);
        assert_eq!(p.size(), 254 - 1 - 90 - 1);
        let nth: Vec<u128> = (0..p.size()).map(|k| p.nth_dynamic(k)).collect();
        assert_eq!(nth, dynamic);
        assert!(p.excluded(to_u128("10.0.0.50".parse().unwrap())).is_some());
        assert!(p.excluded(to_u128("10.0.0.100".parse().unwrap())).is_none());
    }

    #[test]
    fn any_dynamic_agrees_with_contains_dynamic() {
        let mut r = range("10.0.0.0/24", "10.0.0.5", "10.0.0.250", Some("10.0.0.9"));
        r.fixed = Some(("10.0.0.20".parse().unwrap(), "10.0.0.30".parse().unwrap()));
        let p = Pool::new(&r);
        let base = to_u128("10.0.0.0".parse().unwrap());
        for a in 0..256u128 {
            for b in a..(a + 40).min(256) {
                let naive = (a..=b).any(|v| p.contains_dynamic(base + v));
                assert_eq!(p.any_dynamic(base + a, base + b), naive, "{a}..={b}");
                let count = (a..=b).filter(|v| p.contains_dynamic(base + v)).count();
                assert_eq!(p.dynamic_in(base + a, base + b), count as u128, "{a}..={b}");
            }
        }
    }

    #[test]
    fn merge_adjacent_spans() {
        assert_eq!(
            normalise(vec![(5, 6), (1, 2), (3, 4), (9, 20)], 0, 10),
            vec![(1, 6), (9, 10)]
        );
    }
}
