//! The key layout, shared by every backend:
//!
//! ```text
//! <prefix>/_space/ip/4/<8 hex digits>              -> IpRecord   (one per IPv4 address held)
//! <prefix>/_space/ip/6/<32 hex digits>             -> IpRecord   (one per IPv6 address held)
//! <prefix>/_space/hint/<4|6>/<level>/<hex>         -> free-space hint of one block of addresses
//! <prefix>/_space/cool/<4|6>/<hex>                 -> a released address waiting out reuseDelay
//! <prefix>/<network>/owner/<container id>/<ifname> -> Attachment (what one attachment holds)
//! <prefix>/<network>/pod/<namespace>/<name>         -> Binding    (fixed or sticky addresses of a pod)
//! <prefix>/<network>/stats/event/<unique id>        -> one release or takeover, for the counters
//! <prefix>/<network>/stats/totals                   -> events already folded into totals
//! <prefix>/<network>/held-twice/<4|6>/<hex>        -> IpRecord   (see below)
//! <prefix>/<network>/network                        -> the network exists in this store
//! ```
//!
//! The address records and what summarises them are one address space for every network of
//! the store: an address is held once, whatever network holds it, and the record names the
//! network. `_space` cannot be a network name (those start with a letter or a digit). What
//! belongs to one attachment or one pod stays under its network.
//!
//! Releases before this layout kept the address records and hints under the network
//! (`<prefix>/<network>/ip/...`, `<prefix>/<network>/hint/...`); [`Keys::network_ip`] and
//! friends name them, for the conversion that moves them into the space. A record whose address
//! another network held already when it was moved (that layout let two networks hold one
//! address) goes to `held-twice/` instead, where `check-store` reports it.
//!
//! Addresses are fixed-width hex so that key order is address order: a window of a range is one
//! ordered range read, whatever the size of the range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Default prefix of every key.
pub const DEFAULT_PREFIX: &str = "/kube-ipam";

/// Key builder for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `<prefix>/<network>/`: what belongs to the network's attachments and pods.
    root: String,
    /// `<prefix>/_space/`: the address space every network of the store shares.
    space: String,
    prefix: String,
    network: String,
}

impl Keys {
    /// `prefix` is used as given less trailing slashes; `network` must already be validated
    /// (no `/`), which the config layer does.
    pub fn new(prefix: &str, network: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Keys {
            root: format!("{prefix}/{network}/"),
            space: format!("{prefix}/_space/"),
            prefix: prefix.to_owned(),
            network: network.to_owned(),
        }
    }

    /// The keys of another network of the same store.
    pub fn of_network(&self, network: &str) -> Keys {
        Keys::new(&self.prefix, network)
    }

    /// The network name the keys belong to.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Everything under this network's own root (owner, pod and stats records, and the
    /// address records of the layout before the shared space): `[from, to)`.
    pub fn all(&self) -> (String, String) {
        span(&self.root)
    }

    pub fn ip(&self, addr: IpAddr) -> String {
        address_key(&self.space, "ip", addr)
    }

    /// Keys of the addresses `first..=last` (same family): `[from, to)`.
    pub fn ip_range(&self, first: IpAddr, last: IpAddr) -> (String, String) {
        let mut to = self.ip(last);
        // Fixed-width keys: anything longer than `last`'s key sorts after it and before the next.
        to.push('\0');
        (self.ip(first), to)
    }

    /// Every address record of the store, both families, whatever network holds it.
    pub fn ips(&self) -> (String, String) {
        span(&format!("{}ip/", self.space))
    }

    /// Parses an address key back into the address.
    /// Only the spelling `ip` writes is accepted: `from_str_radix` alone would also take
    /// `+`-signed and upper-case hex, a second key for the same address.
    pub fn parse_ip(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_prefix(&self.space)?.strip_prefix("ip/")?;
        parse_family_hex(rest)
    }

    /// The free-space hint of the block of `2^(10 (level + 1))` addresses starting at `first`.
    pub fn hint(&self, v6: bool, level: u8, first: u128) -> String {
        if v6 {
            format!("{}hint/6/{level}/{first:032x}", self.space)
        } else {
            format!("{}hint/4/{level}/{first:08x}", self.space)
        }
    }

    /// Hints of the blocks of `level` starting at `first..=last`: `[from, to)`.
    pub fn hint_range(&self, v6: bool, level: u8, first: u128, last: u128) -> (String, String) {
        let mut to = self.hint(v6, level, last);
        to.push('\0');
        (self.hint(v6, level, first), to)
    }

    /// Parses a hint key of `level` back into the first address of its block.
    pub fn parse_hint(&self, v6: bool, level: u8, key: &str) -> Option<u128> {
        let fam = if v6 { "6" } else { "4" };
        let hex = key
            .strip_prefix(&self.space)?
            .strip_prefix("hint/")?
            .strip_prefix(fam)?
            .strip_prefix('/')?
            .strip_prefix(level.to_string().as_str())?
            .strip_prefix('/')?;
        let width = if v6 { 32 } else { 8 };
        if hex.len() != width || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u128::from_str_radix(hex, 16).ok()
    }

    /// Every hint of the store: `[from, to)`.
    pub fn hints(&self) -> (String, String) {
        span(&format!("{}hint/", self.space))
    }

    /// The cooling mark of a released address: while it lasts, the address goes to another
    /// attachment only when nothing else is free.
    pub fn cool(&self, addr: IpAddr) -> String {
        address_key(&self.space, "cool", addr)
    }

    /// Cooling marks of the addresses `first..=last` (same family): `[from, to)`.
    pub fn cool_range(&self, first: IpAddr, last: IpAddr) -> (String, String) {
        let mut to = self.cool(last);
        to.push('\0');
        (self.cool(first), to)
    }

    /// Parses a cooling mark's key back into the address.
    pub fn parse_cool(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_prefix(&self.space)?.strip_prefix("cool/")?;
        parse_family_hex(rest)
    }

    /// Where the releases before the shared address space kept this network's record of
    /// `addr`.
    pub fn network_ip(&self, addr: IpAddr) -> String {
        address_key(&self.root, "ip", addr)
    }

    /// Every address record of the network in the layout before the shared space.
    pub fn network_ips(&self) -> (String, String) {
        span(&format!("{}ip/", self.root))
    }

    /// Parses a key of [`Self::network_ips`] back into the address.
    pub fn parse_network_ip(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("ip/")?;
        parse_family_hex(rest)
    }

    /// Where the conversion into the shared space leaves a record of this network whose
    /// address another network held already (the layout before the space allowed it): the
    /// address is held twice, by two live attachments, until one of them goes.
    pub fn held_twice(&self, addr: IpAddr) -> String {
        address_key(&self.root, "held-twice", addr)
    }

    /// Every record of [`Self::held_twice`]: `[from, to)`.
    pub fn held_twice_all(&self) -> (String, String) {
        span(&format!("{}held-twice/", self.root))
    }

    /// Parses a key of [`Self::held_twice_all`] back into the address.
    pub fn parse_held_twice(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("held-twice/")?;
        parse_family_hex(rest)
    }

    /// Written by the network's first ADD: the network exists in this store, so an operator
    /// command given a mistyped name can say so instead of "nothing held".
    pub fn network_marker(&self) -> String {
        format!("{}network", self.root)
    }

    /// Every hint of the network in the layout before the shared space.
    pub fn network_hints(&self) -> (String, String) {
        span(&format!("{}hint/", self.root))
    }

    pub fn owner(&self, container_id: &str, ifname: &str) -> String {
        format!("{}owner/{}/{}", self.root, container_id, ifname)
    }

    /// Every owner record of the network: `[from, to)`.
    pub fn owners(&self) -> (String, String) {
        span(&format!("{}owner/", self.root))
    }

    pub fn binding(&self, namespace: &str, name: &str) -> String {
        format!("{}pod/{}/{}", self.root, namespace, name)
    }

    /// Every pod binding of the network: `[from, to)`.
    pub fn bindings(&self) -> (String, String) {
        span(&format!("{}pod/", self.root))
    }

    /// A counted event, written in the commit that made it happen. Each has its own key so
    /// that concurrent releases never compete for one counter.
    pub fn event(&self, id: &str) -> String {
        format!("{}stats/event/{}", self.root, id)
    }

    /// Every counted event not yet folded into the totals: `[from, to)`.
    pub fn events(&self) -> (String, String) {
        span(&format!("{}stats/event/", self.root))
    }

    /// The totals events are folded into; only the collector writes it.
    pub fn totals(&self) -> String {
        format!("{}stats/totals", self.root)
    }
}

/// `<base><segment>/4/<8 hex>` or `<base><segment>/6/<32 hex>`: fixed-width hex, so that key
/// order is address order.
fn address_key(base: &str, segment: &str, addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{base}{segment}/4/{:08x}", u32::from(a)),
        IpAddr::V6(a) => format!("{base}{segment}/6/{:032x}", u128::from(a)),
    }
}

/// `4/<8 hex>` or `6/<32 hex>`, in exactly the spelling the keys are written in:
/// `from_str_radix` alone would also take `+`-signed and upper-case hex, a second key for the
/// same address.
fn parse_family_hex(rest: &str) -> Option<IpAddr> {
    let canonical = |hex: &str| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !rest.get(2..).is_some_and(canonical) {
        return None;
    }
    if let Some(hex) = rest.strip_prefix("4/") {
        if hex.len() != 8 {
            return None;
        }
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v)))
    } else if let Some(hex) = rest.strip_prefix("6/") {
        if hex.len() != 32 {
            return None;
        }
        u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v)))
    } else {
        None
    }
}

/// `[p, p')` where `p'` is the smallest string greater than every string starting with `p`.
/// Our prefixes end in `/`, so bumping that byte to `0` is enough.
fn span(prefix: &str) -> (String, String) {
    let mut end = prefix.to_owned();
    if end.ends_with('/') {
        end.pop();
        end.push('0');
    } else {
        end.push('\u{7f}');
    }
    (prefix.to_owned(), end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_address_order() {
        let k = Keys::new("/kube-ipam/", "net");
        let a = k.ip("10.0.0.9".parse().unwrap());
        let b = k.ip("10.0.0.10".parse().unwrap());
        let c = k.ip("10.0.1.0".parse().unwrap());
        assert!(a < b && b < c);
        assert_eq!(a, "/kube-ipam/_space/ip/4/0a000009");
        // The same address in another network of the store is the same key.
        assert_eq!(
            Keys::new("/kube-ipam", "other").ip("10.0.0.9".parse().unwrap()),
            a
        );
        let (from, to) = k.ip_range("10.0.0.9".parse().unwrap(), "10.0.0.10".parse().unwrap());
        assert!(from <= a && a < to && b < to && c >= to);
    }

    #[test]
    fn parse_round_trips() {
        let k = Keys::new("/p", "n");
        for s in ["0.0.0.0", "255.255.255.255", "::", "fd00::1", "ffff::ffff"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(k.parse_ip(&k.ip(ip)), Some(ip));
        }
        assert_eq!(k.parse_ip("/p/_space/ip/4/zz"), None);
        assert_eq!(
            k.parse_ip("/p/n/ip/4/0a000001"),
            None,
            "the layout before the space"
        );
        assert_eq!(
            k.parse_network_ip("/p/n/ip/4/0a000001"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(k.parse_network_ip("/p/other/ip/4/0a000001"), None);
        let ip: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(k.parse_cool(&k.cool(ip)), Some(ip));
        assert_eq!(k.parse_network_ip(&k.network_ip(ip)), Some(ip));
        assert_eq!(
            k.of_network("m").owner("c", "e"),
            Keys::new("/p", "m").owner("c", "e")
        );
    }

    /// Found by the `records` fuzz target: a key in upper-case hex parsed as the same address
    /// as its lower-case twin, so two records could both look like the holder of one address.
    #[test]
    fn only_the_written_spelling_parses() {
        let k = Keys::new("/p", "n");
        assert_eq!(k.parse_ip("/p/_space/ip/4/0a00000A"), None);
        assert_eq!(k.parse_ip("/p/_space/ip/4/+a000001"), None);
        assert_eq!(
            k.parse_ip("/p/_space/ip/6/fd00000A000000000000000000000005"),
            None
        );
        assert_eq!(
            k.parse_ip("/p/_space/ip/6/+d000000000000000000000000000005"),
            None
        );
        assert_eq!(
            k.parse_ip("/p/_space/ip/4/0a00000a"),
            Some("10.0.0.10".parse().unwrap())
        );
    }

    #[test]
    fn hints_sort_in_address_order_and_parse_back() {
        let k = Keys::new("/p", "n");
        let a = k.hint(false, 0, 0x0a00_0000);
        let b = k.hint(false, 0, 0x0a00_0400);
        assert!(a < b);
        assert_eq!(a, "/p/_space/hint/4/0/0a000000");
        assert_eq!(k.parse_hint(false, 0, &b), Some(0x0a00_0400));
        assert_eq!(k.parse_hint(false, 1, &b), None);
        assert_eq!(k.parse_hint(true, 0, &b), None);
        let (from, to) = k.hint_range(false, 0, 0x0a00_0000, 0x0a00_0400);
        assert!(from <= a && b < to && k.hint(false, 0, 0x0a00_0800) >= to);
        let (f, t) = k.ips();
        assert!(a < f || a >= t, "hints are not address records");
    }

    #[test]
    fn spans_cover_their_prefix_only() {
        let k = Keys::new("/p", "n");
        let (from, to) = k.owners();
        let inside = k.owner("abc", "eth0");
        assert!(from <= inside && inside < to);
        assert!(k.binding("ns", "x") >= to || k.binding("ns", "x") < from);
        let (f, t) = k.all();
        assert!(f <= inside && inside < t);
        assert!(Keys::new("/p", "n2").owner("a", "b") >= t);
        // Nothing of the shared space lies under a network, nor the other way round.
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for shared in [k.ip(ip), k.hint(false, 0, 0), k.cool(ip)] {
            assert!(shared < f || shared >= t, "{shared}");
        }
        let (sf, st) = k.ips();
        assert!(inside < sf || inside >= st);
    }
}
