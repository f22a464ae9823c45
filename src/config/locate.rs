//! Finding the kube-ipam network config inside a file from `/etc/cni/net.d`.
//!
//! Operators point the CLI at whatever file the node uses: a plain config, a conflist, or the
//! Multus daemon config whose `delegates` hold the real networks (themselves plain configs or
//! conflists). The answer is the single-plugin config the plugin would see on stdin.

use serde_json::{Map, Value};

/// The `ipam.type` that marks our block.
const IPAM_TYPE: &str = "kube-ipam";

/// Returns the single-plugin network config that holds a kube-ipam `ipam` block, searching
/// conflist `plugins` and Multus `delegates` at any depth; the first match wins.
pub fn locate(file_json: &Value) -> Option<Value> {
    let obj = file_json.as_object()?;
    if is_ours(obj) {
        return Some(file_json.clone());
    }
    if let Some(plugins) = obj.get("plugins").and_then(Value::as_array) {
        for plugin in plugins {
            match plugin.as_object() {
                Some(p) if is_ours(p) => return Some(Value::Object(inject(obj, p))),
                Some(_) => {
                    if let Some(found) = locate(plugin) {
                        return Some(found);
                    }
                }
                None => {}
            }
        }
    }
    obj.get("delegates")
        .and_then(Value::as_array)
        .and_then(|delegates| delegates.iter().find_map(locate))
}

fn is_ours(obj: &Map<String, Value>) -> bool {
    obj.get("ipam")
        .and_then(|ipam| ipam.get("type"))
        .and_then(Value::as_str)
        == Some(IPAM_TYPE)
}

/// What libcni does when it runs one plugin of a list: the list's `name` and `cniVersion`
/// replace the plugin's own.
fn inject(list: &Map<String, Value>, plugin: &Map<String, Value>) -> Map<String, Value> {
    let mut out = plugin.clone();
    for key in ["name", "cniVersion"] {
        if let Some(v) = list.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    out
}
