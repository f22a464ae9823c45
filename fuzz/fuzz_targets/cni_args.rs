//! `CNI_ARGS` strings as runtimes (or attackers) may send them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let _ = kube_ipam::cni::args::CniArgs::parse(data);
});
