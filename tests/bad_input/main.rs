//! Malformed input of every kind through the real binary, table driven: bad environment, stdin
//! that is not JSON, invalid configs, unsupported versions and refused address requests.
//!
//! Every case must give the spec's error JSON (and nothing else) on stdout with the right code,
//! a non-zero exit, details that name the field or value, no panic, and no change to the store.
//! The store is one embedded store that holds two attachments before the first bad call; after
//! the last one, both are still held exactly as before, and a range of five dynamic addresses
//! has exactly three left.
//!
//! One file per topic, each a table of cases; `case.rs` runs each table against a store of its
//! own.

#[path = "../support/mod.rs"]
mod support;

mod case;
mod env;
mod etcd;
mod json;
mod ranges;
mod requests;
mod required;
mod teardown;
mod types;
mod versions;

use case::exercise;

// How many cases each table holds at least: a case lost in an edit fails its test.
const MIN_JSON: usize = 21;
const MIN_TYPES: usize = 20;
const MIN_REQUIRED: usize = 11;
const MIN_RANGES: usize = 29;
const MIN_ETCD: usize = 10;
const MIN_REQUESTS: usize = 17;
const MIN_ENV: usize = 54;
const MIN_VERSIONS: usize = 11;
const MIN_TEARDOWN: usize = 11;

#[test]
fn stdin_that_is_not_json_is_error_6() {
    exercise(json::cases, MIN_JSON);
}

#[test]
fn values_of_the_wrong_type_are_error_7_naming_the_key() {
    exercise(types::cases, MIN_TYPES);
}

#[test]
fn missing_keys_and_unsafe_names_are_refused() {
    exercise(required::cases, MIN_REQUIRED);
}

#[test]
fn ranges_that_cannot_work_are_refused() {
    exercise(ranges::cases, MIN_RANGES);
}

#[test]
fn etcd_configs_that_cannot_work_are_refused() {
    exercise(etcd::cases, MIN_ETCD);
}

#[test]
fn addresses_that_cannot_be_given_are_error_7() {
    exercise(requests::cases, MIN_REQUESTS);
}

#[test]
fn a_malformed_environment_is_error_4() {
    exercise(env::cases, MIN_ENV);
}

#[test]
fn versions_kube_ipam_does_not_speak_are_error_1() {
    exercise(versions::cases, MIN_VERSIONS);
}

#[test]
fn teardown_of_held_attachments_releases_nothing_it_must_not() {
    exercise(teardown::cases, MIN_TEARDOWN);
}

#[test]
fn non_utf8_environment_is_refused_and_changes_nothing() {
    exercise(env::non_utf8_cases, 6);
}
