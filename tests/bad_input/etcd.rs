//! etcd configs that cannot work.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let mut c = Vec::new();
    for (name, etcd, details) in [
        (
            "etcd URL ftp://",
            json!({"etcdURL": "ftp://127.0.0.1:2379"}),
            vec!["etcdURL", "ftp://127.0.0.1:2379"],
        ),
        (
            "etcd URL without scheme",
            json!({"etcdURL": "127.0.0.1:2379"}),
            vec!["etcdURL", "127.0.0.1:2379"],
        ),
        (
            "etcd URL without host",
            json!({"etcdURL": "http://"}),
            vec!["etcdURL", "http://"],
        ),
        (
            "etcd URL list with an empty entry",
            json!({"etcdURL": "http://127.0.0.1:9,,http://127.0.0.2:9"}),
            vec!["etcdURL"],
        ),
        ("etcdConfig without URL", json!({}), vec!["etcdURL"]),
        (
            "https etcd without CA",
            json!({"etcdURL": "https://127.0.0.1:9"}),
            vec!["etcdTrustedCAFileFile"],
        ),
        (
            "etcd mixing http and https",
            json!({"etcdURL": "http://127.0.0.1:9,https://127.0.0.2:9",
                   "etcdTrustedCAFileFile": "/nonexistent/ca.pem"}),
            vec!["http://", "https://"],
        ),
        (
            "etcd cert without key",
            json!({"etcdURL": "https://127.0.0.1:9", "etcdCertFile": "/x/c.pem",
                   "etcdTrustedCAFileFile": "/x/ca.pem"}),
            vec!["etcdKeyFile"],
        ),
        (
            "etcd CA under two contradicting keys",
            json!({"etcdURL": "https://127.0.0.1:9", "etcdTrustedCAFileFile": "/x/a.pem",
                   "etcdTrustedCAFile": "/x/b.pem"}),
            vec!["etcdTrustedCAFile", "/x/b.pem"],
        ),
        (
            "etcd requestTimeout 0",
            json!({"etcdURL": "http://127.0.0.1:9", "requestTimeout": 0}),
            vec!["requestTimeout"],
        ),
    ] {
        c.push(
            Case::new(
                name,
                7,
                ipam_over(s, "1.0.0", json!({ "etcdConfig": etcd })),
            )
            .details(&details),
        );
    }
    c
}
