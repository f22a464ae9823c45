//! What the runtime asks for: addresses by name, and the GC verb's list of live attachments.

use std::net::IpAddr;
use std::str::FromStr;

use super::{nonempty, Errors, NONE};
use crate::config::model::{AttachmentRef, RequestedIp};
use crate::config::raw::RawAttachment;

pub(super) fn requested_ips(
    path: &str,
    list: Option<&[String]>,
    errs: &mut Errors,
) -> Vec<RequestedIp> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match requested_ip(s) {
            Ok(ip) => Some(ip),
            Err(reason) => {
                errs.push(format!("{path}[{i}]"), s, reason);
                None
            }
        })
        .collect()
}

/// `10.1.2.3` or `10.1.2.3/24`; the prefix length, when given, is kept apart because the
/// address itself is what is asked for (it may well have host bits, being a host).
pub(super) fn requested_ip(s: &str) -> Result<RequestedIp, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let address =
        IpAddr::from_str(addr).map_err(|_| "is not an IP address (addr or addr/len)".to_owned())?;
    let max = if address.is_ipv6() { 128 } else { 32 };
    let prefix_len = match len {
        None => None,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => Some(n),
            _ => return Err(format!("has a prefix length that is not 0..={max}")),
        },
    };
    Ok(RequestedIp {
        address,
        prefix_len,
    })
}

pub(super) fn attachments(
    path: &str,
    list: &[RawAttachment],
    errs: &mut Errors,
) -> Vec<AttachmentRef> {
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let container_id = nonempty(&a.container_id);
            let ifname = nonempty(&a.ifname);
            if container_id.is_none() {
                errs.push(format!("{path}[{i}].containerID"), NONE, "is required");
            }
            if ifname.is_none() {
                errs.push(format!("{path}[{i}].ifname"), NONE, "is required");
            }
            Some(AttachmentRef {
                container_id: container_id?.to_owned(),
                ifname: ifname?.to_owned(),
            })
        })
        .collect()
}
