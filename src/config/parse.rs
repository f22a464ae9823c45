//! From stdin bytes to the raw config: JSON syntax first, then the typed extraction.
//!
//! The JSON is read with serde_json on its own so that a syntax error reports line and column,
//! and so that the untyped document stays at hand: `prevResult` is kept as the caller wrote it,
//! and a type error can quote the offending value. The typed extraction goes through figment
//! because its errors carry the full key path (`ipam.ranges.1.0.subnet`), which serde_json's
//! do not.

use figment::providers::Serialized;
use figment::Figment;
use serde_json::Value;

use super::raw::RawNetConf;
use crate::error::Error;

const WHAT: &str = "network config";

/// Longest quoted value in an error message; a whole object would drown the message.
const MAX_QUOTED: usize = 120;

/// Reads stdin as one JSON object.
pub(crate) fn decode(stdin: &[u8]) -> Result<Value, Error> {
    let decode_err = |reason: String| Error::Decode {
        what: WHAT.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(stdin).map_err(|e| {
        decode_err(format!(
            "not UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    // Editors on some hosts save files with a byte-order mark; it carries no meaning here.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(decode_err("stdin is empty".to_owned()));
    }
    // serde_json's message ends with the line and column of the problem.
    let value: Value =
        serde_json::from_str(text).map_err(|e| decode_err(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(decode_err(format!(
            "expected a JSON object, found {}",
            kind_of(&value)
        )));
    }
    Ok(value)
}

/// Extracts the typed raw config; every error names the key path and quotes the value found.
pub(crate) fn extract(doc: &Value) -> Result<RawNetConf, Vec<Error>> {
    let mut doc = doc.clone();
    // When both GC lists are sent, only the newer one counts, so a malformed older one must
    // not fail the call.
    if let Some(obj) = doc.as_object_mut() {
        if obj.contains_key("cni.dev/valid-attachments") {
            obj.remove("cni.dev/attachments");
        }
        // Only CHECK reads it, untyped, from the document itself.
        obj.remove("prevResult");
    }
    Figment::from(Serialized::defaults(&doc))
        .extract::<RawNetConf>()
        .map_err(|err| err.into_iter().map(|e| convert(&doc, e)).collect())
}

fn convert(doc: &Value, err: figment::Error) -> Error {
    let field = render_path(doc, &err.path);
    let value = lookup(doc, &err.path).map_or_else(|| "(none)".to_owned(), quote);
    Error::config(field, value, err.kind.to_string())
}

/// Renders figment's path segments the way users read them: `ipam.ranges[1][0].subnet`.
/// A segment is an index exactly when the document holds an array at that point.
pub(crate) fn render_path(doc: &Value, path: &[String]) -> String {
    let mut out = String::new();
    let mut cur = Some(doc);
    for seg in path {
        match cur {
            Some(Value::Array(items)) => {
                out.push('[');
                out.push_str(seg);
                out.push(']');
                cur = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(seg);
                cur = other.and_then(|v| v.get(seg));
            }
        }
    }
    if out.is_empty() {
        "(top level)".to_owned()
    } else {
        out
    }
}

fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |cur, seg| match cur {
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        other => other.get(seg),
    })
}

fn quote(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= MAX_QUOTED {
        return text;
    }
    let mut short: String = text.chars().take(MAX_QUOTED).collect();
    short.push_str("...");
    short
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
