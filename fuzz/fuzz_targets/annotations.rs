//! Pod annotations as any user with edit rights on a pod can write them: parsing must never
//! panic, and whatever it accepts must be a well-formed request. Input: the values of
//! `kube-ipam.ip`, `.netmask`, `.gateway`, `.sticky` and `.ip-pool`, one per line; fewer
//! lines leave the later annotations unset.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let keys = [
        "kube-ipam.ip",
        "kube-ipam.netmask",
        "kube-ipam.gateway",
        "kube-ipam.sticky",
        "kube-ipam.ip-pool",
    ];
    let annotations: BTreeMap<String, String> = keys
        .iter()
        .zip(data.split('\n'))
        .map(|(k, v)| (k.to_string(), v.to_owned()))
        .collect();
    let Ok(intent) = kube_ipam::pod::annotations::parse(&annotations) else {
        return;
    };
    for (i, (req, gw)) in intent.ips.iter().enumerate() {
        let max = if req.address.is_ipv4() { 32 } else { 128 };
        assert!(req.prefix_len.is_none_or(|p| p <= max), "{req:?}");
        if let Some(gw) = gw {
            assert_eq!(
                gw.is_ipv4(),
                req.address.is_ipv4(),
                "gateway family of {req:?}"
            );
        }
        assert!(
            intent.ips[..i]
                .iter()
                .all(|(o, _)| o.address != req.address),
            "{} listed twice",
            req.address
        );
    }
    assert!(
        intent.ips.is_empty() || intent.pool.is_empty(),
        "both named"
    );
    let bits = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let mut total = 0u128;
    for (i, s) in intent.pool.iter().enumerate() {
        assert_eq!(s.first.is_ipv4(), s.last.is_ipv4(), "{s:?}");
        assert!(bits(s.first) <= bits(s.last), "{s:?}");
        let max = if s.first.is_ipv4() { 32 } else { 128 };
        assert!(s.prefix_len.is_none_or(|p| p <= max), "{s:?}");
        assert!(
            s.gateway.is_none_or(|g| g.is_ipv4() == s.first.is_ipv4()),
            "{s:?}"
        );
        for o in &intent.pool[..i] {
            let apart = o.first.is_ipv4() != s.first.is_ipv4()
                || bits(o.last) < bits(s.first)
                || bits(s.last) < bits(o.first);
            assert!(apart, "{o:?} overlaps {s:?}");
        }
        total += bits(s.last) - bits(s.first) + 1;
    }
    assert!(
        total <= kube_ipam::pod::annotations::MAX_POOL,
        "{total} addresses"
    );
});
