//! Whole-stdin network config: parse and validate must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kube_ipam::config::parse(data);
    let _ = kube_ipam::config::check(data);
});
