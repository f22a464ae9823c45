//! Range sets: each range on its own, then families and overlaps across them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

use super::{address, nonempty, Errors, Field, NONE};
use crate::config::model::{Range, RangeSet};
use crate::config::raw::{RawIpam, RawRange};

/// A range that passed its own checks, with where it came from, for the cross-range checks.
struct Placed {
    set: usize,
    path: String,
    range: Range,
}

/// The range sets in host-local's order: `runtimeConfig.ipRanges` (the `ipRanges`
/// capability), then the single-range keys of the ipam block, then `ipam.ranges`.
pub(super) fn range_sets(
    ipam: &RawIpam,
    runtime: Option<&[Vec<RawRange>]>,
    errs: &mut Errors,
) -> Vec<RangeSet> {
    let top = ipam.top_level_range();
    let top_given = top.values().iter().any(|v| nonempty(v).is_some());
    let listed = |prefix: &str, sets: &[Vec<RawRange>]| -> Vec<(String, Vec<(String, RawRange)>)> {
        sets.iter()
            .enumerate()
            .map(|(i, set)| {
                let path = format!("{prefix}[{i}]");
                let ranges = set
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (format!("{path}[{j}]"), r.clone()))
                    .collect();
                (path, ranges)
            })
            .collect()
    };
    let mut raw_sets = listed("runtimeConfig.ipRanges", runtime.unwrap_or_default());
    if top_given {
        raw_sets.push(("ipam".to_owned(), vec![("ipam".to_owned(), top)]));
    }
    raw_sets.extend(listed(
        "ipam.ranges",
        ipam.ranges.as_deref().unwrap_or_default(),
    ));
    if ipam.exclude.is_some() && !top_given {
        errs.push(
            "ipam.exclude",
            format!("{:?}", ipam.exclude.as_deref().unwrap_or_default()),
            "belongs to the range of ipam.subnet, which is not given; with ipam.ranges, give \
             exclude inside each range",
        );
    }
    if raw_sets.is_empty() {
        errs.push(
            "ipam.subnet",
            NONE,
            "is required: give ipam.subnet (one range) or ipam.ranges (range sets)",
        );
    }

    let mut placed = Vec::new();
    let mut subnets = Vec::new();
    let mut sets_out = Vec::new();
    for (set_idx, (set_path, ranges)) in raw_sets.iter().enumerate() {
        if ranges.is_empty() {
            errs.push(
                set_path.as_str(),
                "[]",
                "is empty: a range set needs at least one range",
            );
        }
        let mut out = Vec::new();
        for (path, raw) in ranges {
            let (net, range) = range(path, raw, errs);
            if let Some(net) = net {
                subnets.push((set_idx, path.as_str(), net));
            }
            if let Some(range) = range {
                out.push(range.clone());
                placed.push(Placed {
                    set: set_idx,
                    path: path.clone(),
                    range,
                });
            }
        }
        sets_out.push(RangeSet { ranges: out });
    }
    check_families(&subnets, errs);
    check_overlaps(&placed, errs);
    sets_out
}

/// One range on its own: syntax, containment, order, the fixed zone, and host-local's defaults.
/// The subnet comes back on its own as soon as it is valid, for the family check of the set.
fn range(prefix: &str, raw: &RawRange, errs: &mut Errors) -> (Option<IpNet>, Option<Range>) {
    let before = errs.len();
    let subnet = match nonempty(&raw.subnet) {
        None => {
            errs.push(format!("{prefix}.subnet"), NONE, "is required");
            None
        }
        Some(s) => subnet(&format!("{prefix}.subnet"), s, errs),
    };
    let range = range_in(prefix, subnet, raw, errs);
    (subnet, range.filter(|_| errs.len() == before))
}

fn range_in(
    prefix: &str,
    subnet: Option<IpNet>,
    raw: &RawRange,
    errs: &mut Errors,
) -> Option<Range> {
    let field = |key: &str| format!("{prefix}.{key}");
    let start = address(&field("rangeStart"), &raw.range_start, errs);
    let end = address(&field("rangeEnd"), &raw.range_end, errs);
    let gateway = address(&field("gateway"), &raw.gateway, errs);
    let fixed_start = address(&field("fixedStart"), &raw.fixed_start, errs);
    let fixed_end = address(&field("fixedEnd"), &raw.fixed_end, errs);

    match (&fixed_start, &fixed_end) {
        (Field::Absent, Field::Valid(_) | Field::Invalid) => errs.push(
            field("fixedStart"),
            NONE,
            "is required when fixedEnd is set: the fixed zone needs both ends",
        ),
        (Field::Valid(_) | Field::Invalid, Field::Absent) => errs.push(
            field("fixedEnd"),
            NONE,
            "is required when fixedStart is set: the fixed zone needs both ends",
        ),
        _ => {}
    }

    let subnet = subnet?;
    let usable = |key: &str, f: &Field<IpAddr>, errs: &mut Errors| -> Option<IpAddr> {
        let addr = f.valid()?;
        if !subnet.contains(&addr) {
            errs.push(field(key), addr, format!("is outside subnet {subnet}"));
            return None;
        }
        if let IpNet::V4(net) = subnet {
            if IpAddr::V4(net.network()) == addr {
                errs.push(
                    field(key),
                    addr,
                    format!("is the network address of {subnet}"),
                );
                return None;
            }
            if IpAddr::V4(net.broadcast()) == addr {
                errs.push(
                    field(key),
                    addr,
                    format!("is the broadcast address of {subnet}"),
                );
                return None;
            }
        }
        Some(addr)
    };
    let start_ok = usable("rangeStart", &start, errs);
    let end_ok = usable("rangeEnd", &end, errs);
    let gateway_ok = usable("gateway", &gateway, errs);
    let fixed_start_ok = usable("fixedStart", &fixed_start, errs);
    let fixed_end_ok = usable("fixedEnd", &fixed_end, errs);

    // host-local's defaults: the gateway is skipped by the engine, not by moving rangeStart.
    let first = next(subnet.network());
    let last = match subnet {
        IpNet::V4(_) => prev(subnet.broadcast()),
        IpNet::V6(_) => subnet.broadcast(),
    };
    let range_start = start_ok.unwrap_or(first);
    let range_end = end_ok.unwrap_or(last);
    let dynamic_defaulted = matches!(start, Field::Absent) || matches!(end, Field::Absent);
    let bound_ok = |f: &Field<IpAddr>, ok: Option<IpAddr>| match f {
        Field::Absent => true,
        Field::Invalid => false,
        Field::Valid(_) => ok.is_some(),
    };
    let dynamic_ok = bound_ok(&start, start_ok) && bound_ok(&end, end_ok);
    if dynamic_ok && range_start > range_end {
        errs.push(
            field("rangeStart"),
            range_start,
            format!("is after rangeEnd {range_end}"),
        );
    }

    let fixed = match (fixed_start_ok, fixed_end_ok) {
        (Some(fs), Some(fe)) => {
            if fs > fe {
                errs.push(field("fixedStart"), fs, format!("is after fixedEnd {fe}"));
            } else if dynamic_ok && range_start <= range_end && fs <= range_end && range_start <= fe
            {
                let hint = if dynamic_defaulted {
                    " (rangeStart/rangeEnd not both set, so the dynamic range defaults to the \
                     whole subnet; set them around the fixed zone)"
                } else {
                    ""
                };
                errs.push(
                    field("fixedStart"),
                    format!("{fs}-{fe}"),
                    format!(
                        "the fixed zone overlaps the dynamic range {range_start}-{range_end}{hint}"
                    ),
                );
            }
            Some((fs, fe))
        }
        _ => None,
    };

    let exclude = exclude(&field("exclude"), subnet, raw.exclude.as_deref(), errs);
    Some(Range {
        subnet,
        range_start,
        range_end,
        gateway: Some(gateway_ok.unwrap_or(first)),
        fixed,
        exclude,
    })
}

/// `exclude`: addresses and CIDRs, each inside the subnet (anything outside it is most likely
/// meant for another range, and excluding it here would exclude nothing).
fn exclude(
    field: &str,
    subnet: IpNet,
    raw: Option<&[String]>,
    errs: &mut Errors,
) -> Vec<(IpAddr, IpAddr)> {
    let mut out = Vec::new();
    for (i, entry) in raw.unwrap_or_default().iter().enumerate() {
        let path = format!("{field}[{i}]");
        let s = entry.trim();
        let span = match (IpAddr::from_str(s), IpNet::from_str(s)) {
            (Ok(a), _) => (a, a),
            (_, Ok(net)) if net.trunc() == net => (net.network(), net.broadcast()),
            (_, Ok(net)) => {
                errs.push(
                    path,
                    s,
                    format!("has host bits set; did you mean {}", net.trunc()),
                );
                continue;
            }
            _ => {
                errs.push(path, s, "is neither an IP address nor a CIDR");
                continue;
            }
        };
        if !subnet.contains(&span.0) || !subnet.contains(&span.1) {
            errs.push(path, s, format!("is outside subnet {subnet}"));
            continue;
        }
        out.push(span);
    }
    out
}

/// A subnet must be given exactly: silently clearing host bits would hide a typo that moves
/// the whole network.
fn subnet(field: &str, s: &str, errs: &mut Errors) -> Option<IpNet> {
    let Ok(net) = IpNet::from_str(s) else {
        errs.push(field, s, "is not a CIDR (address/prefix length)");
        return None;
    };
    if net.trunc() != net {
        errs.push(
            field,
            s,
            format!("{s} has host bits set; did you mean {}", net.trunc()),
        );
        return None;
    }
    if net.prefix_len() + 2 > net.max_prefix_len() {
        errs.push(
            field,
            s,
            format!(
                "is too small: a /{} leaves no address to hand out besides network and gateway",
                net.prefix_len()
            ),
        );
        return None;
    }
    Some(net)
}

/// One range set hands out one address: mixing families in it would make the family of that
/// address depend on which range happens to have room.
fn check_families(subnets: &[(usize, &str, IpNet)], errs: &mut Errors) {
    for (i, (set, path, net)) in subnets.iter().enumerate() {
        let Some((_, first_path, first)) = subnets[..i].iter().find(|(s, _, _)| s == set) else {
            continue;
        };
        if is_v6(first) != is_v6(net) {
            errs.push(
                format!("{path}.subnet"),
                net,
                format!(
                    "is {} but {first_path}.subnet {first} is {}: a range set holds one family; \
                     put each family in its own set",
                    family(net),
                    family(first)
                ),
            );
        }
    }
}

/// No address may belong to two ranges: two ranges handing out the same address would each
/// believe it free, and a fixed address would have two owners.
fn check_overlaps(placed: &[Placed], errs: &mut Errors) {
    for (i, b) in placed.iter().enumerate() {
        for a in &placed[..i] {
            let (sa, sb) = (a.range.subnet, b.range.subnet);
            if a.set == b.set && (sa.contains(&sb.network()) || sb.contains(&sa.network())) {
                errs.push(
                    format!("{}.subnet", b.path),
                    sb,
                    format!(
                        "overlaps subnet {sa} of {} in the same range set: a set's ranges must \
                         be disjoint subnets",
                        a.path
                    ),
                );
                continue;
            }
            'pair: for (kb, bs, be) in zones(&b.range) {
                for (ka, as_, ae) in zones(&a.range) {
                    if as_.is_ipv6() == bs.is_ipv6() && as_ <= be && bs <= ae {
                        let key = if kb == DYNAMIC {
                            "rangeStart"
                        } else {
                            "fixedStart"
                        };
                        errs.push(
                            format!("{}.{key}", b.path),
                            format!("{bs}-{be}"),
                            format!(
                                "the {kb} overlaps the {ka} {as_}-{ae} of {}: ranges must not \
                                 share addresses",
                                a.path
                            ),
                        );
                        break 'pair;
                    }
                }
            }
        }
    }
}

const DYNAMIC: &str = "dynamic range";
const FIXED: &str = "fixed zone";

fn zones(r: &Range) -> Vec<(&'static str, IpAddr, IpAddr)> {
    let mut z = vec![(DYNAMIC, r.range_start, r.range_end)];
    if let Some((s, e)) = r.fixed {
        z.push((FIXED, s, e));
    }
    z
}

fn is_v6(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(_))
}

fn family(net: &IpNet) -> &'static str {
    if is_v6(net) {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).saturating_add(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).saturating_add(1))),
    }
}

fn prev(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).saturating_sub(1))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).saturating_sub(1))),
    }
}
