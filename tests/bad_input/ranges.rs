//! Addresses and ranges that cannot work.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let mut c = Vec::new();
    for (name, over, details) in [
        (
            "subnet without prefix",
            json!({"subnet": "10.50.0.0"}),
            vec!["ipam.subnet", "10.50.0.0"],
        ),
        (
            "subnet prefix 99",
            json!({"subnet": "10.50.0.0/99"}),
            vec!["ipam.subnet", "10.50.0.0/99"],
        ),
        (
            "subnet host bits",
            json!({"subnet": "10.50.0.5/28"}),
            vec!["ipam.subnet", "10.50.0.5/28", "host bits"],
        ),
        (
            "subnet /31",
            json!({"subnet": "10.50.0.0/31"}),
            vec!["ipam.subnet", "10.50.0.0/31"],
        ),
        (
            "subnet /32",
            json!({"subnet": "10.50.0.0/32"}),
            vec!["ipam.subnet", "10.50.0.0/32"],
        ),
        (
            "subnet 300.1.1.0/24",
            json!({"subnet": "300.1.1.0/24"}),
            vec!["ipam.subnet", "300.1.1.0/24"],
        ),
        (
            "IPv6 rangeStart in an IPv4 subnet",
            json!({"rangeStart": "fd00::2"}),
            vec!["ipam.rangeStart", "fd00::2"],
        ),
        (
            "IPv4 gateway in an IPv6 subnet",
            json!({"subnet": "fd50::/64", "gateway": "10.50.0.1", "rangeStart": null,
                   "rangeEnd": null, "fixedStart": null, "fixedEnd": null}),
            vec!["ipam.gateway", "10.50.0.1"],
        ),
        (
            "rangeStart after rangeEnd",
            json!({"rangeStart": "10.50.0.6", "rangeEnd": "10.50.0.2"}),
            vec!["ipam.rangeStart", "10.50.0.6"],
        ),
        (
            "rangeEnd is the broadcast address",
            json!({"rangeEnd": "10.50.0.15"}),
            vec!["ipam.rangeEnd", "10.50.0.15"],
        ),
        (
            "rangeStart is the network address",
            json!({"rangeStart": "10.50.0.0"}),
            vec!["ipam.rangeStart", "10.50.0.0"],
        ),
        (
            "rangeStart not an address",
            json!({"rangeStart": "10.50.0.x"}),
            vec!["ipam.rangeStart", "10.50.0.x"],
        ),
        (
            "rangeEnd outside the subnet",
            json!({"rangeEnd": "10.50.1.6"}),
            vec!["ipam.rangeEnd", "10.50.1.6"],
        ),
        (
            "fixed zone overlapping the dynamic range",
            json!({"fixedStart": "10.50.0.5", "fixedEnd": "10.50.0.11"}),
            vec!["ipam.fixedStart", "10.50.0.5-10.50.0.11"],
        ),
        (
            "fixedStart after fixedEnd",
            json!({"fixedStart": "10.50.0.12", "fixedEnd": "10.50.0.10"}),
            vec!["ipam.fixedStart", "10.50.0.12"],
        ),
        (
            "fixedStart without fixedEnd",
            json!({"fixedEnd": ""}),
            vec!["ipam.fixedEnd"],
        ),
        (
            "route dst with host bits",
            json!({"routes": [{"dst": "10.0.0.1/8"}]}),
            vec!["ipam.routes[0].dst", "10.0.0.1/8"],
        ),
        (
            "route gw of the other family",
            json!({"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
            vec!["ipam.routes[0].gw", "fd00::1"],
        ),
        (
            "relative dataDir",
            json!({"dataDir": "data"}),
            vec!["ipam.dataDir", "data"],
        ),
        (
            "traversal dataDir",
            json!({"dataDir": "../../etc"}),
            vec!["ipam.dataDir", "../../etc"],
        ),
        (
            "relative logFile",
            json!({"logFile": "x/../kube-ipam.log"}),
            vec!["ipam.logFile"],
        ),
        (
            "keyPrefix without a slash",
            json!({"keyPrefix": "kube-ipam"}),
            vec!["ipam.keyPrefix", "kube-ipam"],
        ),
        (
            "unknown logLevel",
            json!({"logLevel": "loud"}),
            vec!["ipam.logLevel", "loud"],
        ),
    ] {
        c.push(Case::new(name, 7, ipam_over(s, "1.0.0", over)).details(&details));
    }
    for (name, sets, details) in [
        (
            "mixed families in one range set",
            json!([[{"subnet": "10.50.0.0/28"}, {"subnet": "fd50::/64"}]]),
            vec!["ipam.ranges[0][1].subnet", "fd50::/64", "IPv4"],
        ),
        (
            "empty range set",
            json!([[]]),
            vec!["ipam.ranges[0]", "empty"],
        ),
        (
            "overlapping subnets in one set",
            json!([[{"subnet": "10.50.0.0/24"}, {"subnet": "10.50.0.0/28"}]]),
            vec!["ipam.ranges[0][1].subnet", "10.50.0.0/28"],
        ),
        (
            "two sets sharing addresses",
            json!([[{"subnet": "10.50.0.0/28"}], [{"subnet": "10.50.0.0/28"}]]),
            vec!["ipam.ranges[1][0]"],
        ),
        (
            "range entry without subnet",
            json!([[{"rangeStart": "10.50.0.2"}]]),
            vec!["ipam.ranges[0][0].subnet"],
        ),
        (
            "IPv6 /127 in ranges",
            json!([[{"subnet": "fd50::/127"}]]),
            vec!["ipam.ranges[0][0].subnet", "fd50::/127"],
        ),
    ] {
        c.push(Case::new(name, 7, ranges(s, sets)).details(&details));
    }
    c
}
