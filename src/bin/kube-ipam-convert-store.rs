//! `kube-ipam-convert-store DIR`: converts the sled store that releases before the SQLite
//! store kept in `DIR` (`<dataDir>/<network>`) into the current one, once, keeping every
//! record. A binary of its own, so that the plugin run at every pod start does not carry sled.

use std::path::PathBuf;

use clap::Parser;
use kube_ipam_sqlite::sled;

/// Converts the store an earlier release kept in DIR (`<dataDir>/<network>`, sled) into the
/// current one, keeping every record; the plugin refuses that directory until then.
/// Exit codes: 0 converted; 2 could not be done, the reason on stderr.
#[derive(Debug, Parser)]
#[command(name = sled::CONVERTER, version)]
struct Args {
    /// The store directory, `<dataDir>/<network>`.
    dir: PathBuf,
}

fn main() {
    let args = Args::parse();
    // As the plugin: the store names pods and their addresses, for no other user to read.
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    match sled::convert(&args.dir) {
        Ok(copied) => println!("{}: converted, {copied} records", args.dir.display()),
        Err(e) => {
            eprintln!("{}: {e}", sled::CONVERTER);
            std::process::exit(2)
        }
    }
}
