//! The etcd layout of the original kube-ipam plugin (cloudnativer/kube-ipam v0.2.0), as far
//! as taking over from it needs:
//!
//! ```text
//! /etcd-cni/networks/<network>/used/<ip>   -> container id (one key per held address)
//! ```
//!
//! `<ip>` is Go's `net.IP.String()`: dotted IPv4, RFC 5952 compressed IPv6, which is also
//! what Rust's `Display` writes. The original's lock, ranges and `lastReserved/` keys are
//! never touched: its nodes keep working with them during a rolling upgrade.

use std::net::IpAddr;

/// Where the original plugin keeps every network.
pub const ORIGINAL_ROOT: &str = "/etcd-cni/networks";

/// Key builder for the original plugin's records of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalKeys {
    used: String,
}

impl OriginalKeys {
    /// `network` must already be validated (no `/`), which the config layer does.
    pub fn new(network: &str) -> Self {
        OriginalKeys {
            used: format!("{ORIGINAL_ROOT}/{network}/used/"),
        }
    }

    /// The key that says `addr` is held.
    pub fn used(&self, addr: IpAddr) -> String {
        format!("{}{addr}", self.used)
    }

    /// Every `used/` key of the network: `[from, to)`.
    pub fn all_used(&self) -> (String, String) {
        let mut to = self.used.clone();
        to.pop();
        to.push('0');
        (self.used.clone(), to)
    }

    /// The address of a `used/` key. Any spelling Go could have parsed is accepted, but only
    /// the one [`OriginalKeys::used`] writes can be compared against, so callers use the
    /// address, never the key text.
    pub fn parse_used(&self, key: &str) -> Option<IpAddr> {
        key.strip_prefix(&self.used)?.parse().ok()
    }
}

/// The container id a `used/` value names: the original wrote it bare; whitespace around it
/// is not part of any id.
pub fn used_by(value: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(value).ok()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spell_addresses_as_go_does() {
        let k = OriginalKeys::new("k8s-pod-network");
        assert_eq!(
            k.used("10.188.0.12".parse().unwrap()),
            "/etcd-cni/networks/k8s-pod-network/used/10.188.0.12"
        );
        // net.IP.String(): the longest run of zero groups collapses, lower-case hex.
        assert_eq!(
            k.used("fd00:0:0:0:0:0:0:a".parse().unwrap()),
            "/etcd-cni/networks/k8s-pod-network/used/fd00::a"
        );
        assert_eq!(
            k.used("2001:db8:0:1:0:0:0:1".parse().unwrap()),
            "/etcd-cni/networks/k8s-pod-network/used/2001:db8:0:1::1"
        );
    }

    #[test]
    fn used_span_holds_the_network_only() {
        let k = OriginalKeys::new("n");
        let (from, to) = k.all_used();
        let inside = k.used("10.0.0.1".parse().unwrap());
        assert!(from <= inside && inside < to);
        assert!(OriginalKeys::new("n2").used("10.0.0.1".parse().unwrap()) >= to);
        assert!("/etcd-cni/networks/n/lastReserved/0" < from.as_str());
        assert_eq!(k.parse_used(&inside), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(k.parse_used("/etcd-cni/networks/n/used/nonsense"), None);
        assert_eq!(used_by(b" abc\n"), Some("abc".into()));
        assert_eq!(used_by(b"  "), None);
    }
}
