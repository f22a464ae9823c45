//! Links the plugin as a fixed-address executable, as the reference CNI plugins are.
//!
//! Each CNI call is a new process, and a position-independent executable of this size makes
//! the dynamic loader apply some 28,000 relocations (and copy the pages they touch) before
//! `main`: about a tenth of a whole ADD's CPU time. The code stays position-independent, so
//! this changes only the link; address-space randomisation still covers the stack, heap and
//! shared libraries.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
