//! `resolv.conf` of the host, turned into the result's `dns`.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// Parses resolv.conf as the resolver does: last `domain`/`search` wins, comments with `#` or
/// `;`, unknown directives ignored. Never fails: a line it cannot read is skipped.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next() {
                    if ns.parse::<std::net::IpAddr>().is_ok() {
                        dns.nameservers.push(ns.to_owned());
                    }
                }
            }
            Some("domain") => {
                if let Some(d) = words.next() {
                    dns.domain = Some(d.to_owned());
                }
            }
            Some("search") => dns.search = words.map(str::to_owned).collect(),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_directives() {
        let d = parse_resolv_conf(
            "# generated\nnameserver 10.96.0.10\nnameserver fd00::10 # v6\nnameserver bogus\nsearch a.svc b.svc\noptions ndots:5 edns0\ndomain cluster.local\n; comment\nsortlist 1.2.3.4\n",
        );
        assert_eq!(d.nameservers, vec!["10.96.0.10", "fd00::10"]);
        assert_eq!(d.search, vec!["a.svc", "b.svc"]);
        assert_eq!(d.options, vec!["ndots:5", "edns0"]);
        assert_eq!(d.domain.as_deref(), Some("cluster.local"));
        assert!(parse_resolv_conf("").is_empty());
    }
}
