//! CNI spec versions and the shapes that differ between them.

use crate::{Error, Result};

pub const SUPPORTED: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];
pub const LATEST: &str = "1.1.0";
pub use crate::config::UNVERSIONED;

/// A supported spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u8, u8, u8);

impl Version {
    pub fn parse(s: &str) -> Result<Version> {
        let bad = || Error::IncompatibleVersion {
            version: s.to_owned(),
            reason: format!(
                "not a version kube-ipam speaks (it speaks {})",
                SUPPORTED.join(", ")
            ),
        };
        if !SUPPORTED.contains(&s) {
            return Err(bad());
        }
        let mut parts = s.split('.').map(|p| p.parse::<u8>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok(Version(a, b, c)),
            _ => Err(bad()),
        }
    }

    /// 0.1.0 and 0.2.0 results carry one `ip4` and one `ip6` object instead of an `ips` list.
    pub fn per_family_result(self) -> bool {
        self < Version(0, 3, 0)
    }

    /// 0.3.x and 0.4.0 results tag each address with its family.
    pub fn tags_ip_version(self) -> bool {
        self >= Version(0, 3, 0) && self < Version(1, 0, 0)
    }

    /// Route fields `mtu`, `advmss`, `priority`, `table` and `scope` came with 1.1.0.
    pub fn has_route_attributes(self) -> bool {
        self >= Version(1, 1, 0)
    }

    pub fn has_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    pub fn has_gc_and_status(self) -> bool {
        self >= Version(1, 1, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for s in SUPPORTED {
            assert_eq!(Version::parse(s).unwrap().to_string(), s);
        }
        let e = Version::parse("0.5.0").unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.to_string().contains("0.5.0"));
        assert!(Version::parse("0.2.0").unwrap().per_family_result());
        assert!(!Version::parse("0.2.0").unwrap().tags_ip_version());
        assert!(!Version::parse("0.3.0").unwrap().per_family_result());
        assert!(Version::parse("0.4.0").unwrap().has_check());
        assert!(!Version::parse("0.3.1").unwrap().has_check());
        assert!(Version::parse("0.4.0").unwrap().tags_ip_version());
        assert!(!Version::parse("1.0.0").unwrap().tags_ip_version());
        assert!(!Version::parse("1.0.0").unwrap().has_gc_and_status());
    }
}
