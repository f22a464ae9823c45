//! Host resolv.conf files of any shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let _ = kube_ipam::dns::parse_resolv_conf(data);
});
