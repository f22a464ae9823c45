//! Stored records and keys as another node, an older version or a damaged store may have left
//! them: decoding must never panic, and what decodes must encode back to the same record.
//! Input: a key, a newline, then the stored value.
#![no_main]

use kube_ipam_store::keys::Keys;
use kube_ipam_store::records::{decode, encode, Attachment, Binding, IpRecord};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(record) = decode::<T>("fuzz", bytes) {
        let again: T = decode("fuzz", &encode(&record)).expect("re-decode what we encoded");
        assert_eq!(again, record);
    }
}

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let key = String::from_utf8_lossy(key);
    let key = key.as_ref();
    let keys = Keys::new("/kube-ipam", "net");
    if let Some(ip) = keys.parse_ip(key) {
        // One address, one key: a second spelling would let two records hold the same address.
        assert_eq!(keys.ip(ip), key);
    }
    round_trip::<IpRecord>(value);
    round_trip::<Attachment>(value);
    round_trip::<Binding>(value);
});
