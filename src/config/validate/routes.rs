//! `routes`: returned with every result, so each must be a route the kernel would take.

use std::str::FromStr;

use ipnet::IpNet;

use super::{address, nonempty, Errors, Field, NONE};
use crate::config::model::{Route, RouteAttrs};
use crate::config::raw::RawRoute;

pub(super) fn route(path: &str, raw: &RawRoute, errs: &mut Errors) -> Option<Route> {
    let before = errs.len();
    let dst = match nonempty(&raw.dst) {
        None => {
            errs.push(format!("{path}.dst"), NONE, "is required");
            None
        }
        Some(s) => match IpNet::from_str(s) {
            Err(_) => {
                errs.push(
                    format!("{path}.dst"),
                    s,
                    "is not a CIDR (address/prefix length)",
                );
                None
            }
            Ok(net) if net.trunc() != net => {
                errs.push(
                    format!("{path}.dst"),
                    s,
                    format!("{s} has host bits set; did you mean {}", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
        },
    };
    let gw = match address(&format!("{path}.gw"), &raw.gw, errs) {
        Field::Valid(gw) => {
            if let Some(dst) = dst.filter(|d| d.addr().is_ipv6() != gw.is_ipv6()) {
                errs.push(
                    format!("{path}.gw"),
                    gw,
                    format!("is not of the same family as dst {dst}"),
                );
            }
            Some(gw)
        }
        _ => None,
    };
    let scope = match raw.scope {
        None => None,
        Some(s) => match u8::try_from(s) {
            Ok(s) => Some(s),
            Err(_) => {
                errs.push(
                    format!("{path}.scope"),
                    s,
                    "must be 0 to 255 (a route scope)",
                );
                None
            }
        },
    };
    let attrs = RouteAttrs {
        mtu: raw.mtu,
        advmss: raw.advmss,
        priority: raw.priority,
        table: raw.table,
        scope,
    };
    let dst = dst?;
    (errs.len() == before).then_some(Route { dst, gw, attrs })
}
