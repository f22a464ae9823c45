//! What the runtime asks for: addresses by name, and the GC verb's list of live attachments.

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
        .filter_map(|(i, s)| match RequestedIp::parse(s) {
            Ok(ip) => Some(ip),
            Err(reason) => {
                errs.push(format!("{path}[{i}]"), s, reason);
                None
            }
        })
        .collect()
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
