//! The `CNI_*` environment of one call, checked as the spec asks before anything becomes a key.

use std::collections::HashMap;

use super::args::CniArgs;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND".into(),
                    value: s.chars().take(64).collect(),
                    reason: "expected ADD, DEL, CHECK, VERSION, GC or STATUS".into(),
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }

    /// Verbs that act on one attachment and so need its container id and interface.
    fn per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
}

impl Env {
    /// Reads the environment of a verb from `vars` (the process environment in production).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Env> {
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let command = Command::parse(&get("CNI_COMMAND"))?;
        let container_id = get("CNI_CONTAINERID");
        let netns = get("CNI_NETNS");
        let ifname = get("CNI_IFNAME");
        if command.per_attachment() {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
            // DEL must work when the namespace is already gone, so only ADD and CHECK need it.
            if matches!(command, Command::Add | Command::Check) && netns.is_empty() {
                return Err(missing("CNI_NETNS"));
            }
        }
        let args = CniArgs::parse(&get("CNI_ARGS"))?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

fn missing(name: &str) -> Error {
    Error::InvalidEnv {
        name: name.into(),
        value: String::new(),
        reason: "required but not set".into(),
    }
}

/// The spec's rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It keeps ids safe as store keys.
pub fn validate_container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(missing("CNI_CONTAINERID"));
    }
    let ok = id.len() <= 1024
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            name: "CNI_CONTAINERID".into(),
            value: id.chars().take(128).collect(),
            reason: "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$".into(),
        })
    }
}

/// The kernel's rules for interface names (as libcni checks them).
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(missing("CNI_IFNAME"));
    }
    let reason = if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("may not be . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("may not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(r) => Err(Error::InvalidEnv {
            name: "CNI_IFNAME".into(),
            value: name.chars().take(64).collect(),
            reason: r.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn add_needs_id_netns_ifname() {
        let ok = vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc-1.x_y"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]);
        assert!(Env::from_vars(&ok).is_ok());
        for drop in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let mut v = ok.clone();
            v.remove(drop);
            let e = Env::from_vars(&v).unwrap_err();
            assert_eq!(e.code(), 4);
            assert!(e.to_string().contains(drop), "{e}");
        }
        let mut del = ok.clone();
        del.insert("CNI_COMMAND".into(), "DEL".into());
        del.remove("CNI_NETNS");
        assert!(Env::from_vars(&del).is_ok());
        assert!(Env::from_vars(&vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
    }

    #[test]
    fn ids_and_names_that_could_escape_a_key_are_refused() {
        for id in ["../etc", "a/b", "-x", "a b", "a\0"] {
            assert_eq!(validate_container_id(id).unwrap_err().code(), 4, "{id}");
        }
        for n in ["a/b", "..", ".", "eth0:1", "0123456789abcdef", "a b"] {
            assert_eq!(validate_ifname(n).unwrap_err().code(), 4, "{n}");
        }
        assert!(Command::parse("add").is_err());
    }
}
