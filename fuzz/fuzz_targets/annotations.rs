//! Pod annotations as any user with edit rights on a pod can write them: parsing must never
//! panic, and whatever it accepts must be a well-formed request. Input: the values of
//! `kube-ipam.ip`, `.netmask`, `.gateway` and `.sticky`, one per line; fewer lines leave the
//! later annotations unset.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let keys = [
        "kube-ipam.ip",
        "kube-ipam.netmask",
        "kube-ipam.gateway",
        "kube-ipam.sticky",
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
});
