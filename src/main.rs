//! The `kube-ipam` binary: a CNI plugin when `CNI_COMMAND` is set, the operator CLI otherwise.

use std::collections::HashMap;
use std::io::{Read, Write};

use kube_ipam::cni;

/// Stdin larger than this is no network config; refusing it bounds memory.
const MAX_STDIN: u64 = 16 << 20;

fn main() {
    // Everything kube-ipam writes (store, log) names pods and their addresses, and SQLite
    // creates its files with the default mode: nothing it makes is for other users.
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    if std::env::var_os("CNI_COMMAND").is_some() {
        cni_main()
    } else {
        std::process::exit(kube_ipam::cli::main())
    }
}

fn cni_main() -> ! {
    // Whatever goes wrong, the caller gets a CNI error on stdout, never a bare panic.
    std::panic::set_hook(Box::new(|info| {
        let err = kube_ipam::Error::Internal(format!("panic: {info}"));
        let body = cni::result::error_result(cni::version::LATEST, &err);
        let _ = writeln!(std::io::stdout(), "{body}");
        std::process::exit(1);
    }));
    let mut vars: HashMap<String, String> = HashMap::new();
    for (k, v) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        match v.into_string() {
            Ok(v) => {
                vars.insert(k, v);
            }
            // A lossy CNI_* value would silently turn distinct ids or names into one key.
            Err(raw) if k.starts_with("CNI_") => {
                let err = kube_ipam::Error::InvalidEnv {
                    name: k,
                    value: raw.to_string_lossy().chars().take(128).collect(),
                    reason: "is not valid UTF-8".into(),
                };
                let body = cni::result::error_result(cni::version::LATEST, &err);
                let _ = writeln!(std::io::stdout(), "{body}");
                std::process::exit(1);
            }
            Err(_) => {}
        }
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut stdin);
    let reply = match read {
        Err(e) => io_error_reply(&format!("cannot read stdin: {e}")),
        Ok(_) if stdin.len() as u64 > MAX_STDIN => {
            io_error_reply(&format!("stdin is larger than {MAX_STDIN} bytes"))
        }
        Ok(_) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(cni::run(&vars, &stdin)),
            Err(e) => io_error_reply(&format!("cannot start runtime: {e}")),
        },
    };
    let mut out = std::io::stdout().lock();
    let written = out.write_all(&reply.stdout).and_then(|()| out.flush());
    // A runtime that reads no result must not be told the call succeeded: it would have no
    // address to configure, and would not know to DEL.
    match written {
        Err(e) if reply.exit_code == 0 => {
            eprintln!("kube-ipam: cannot write the result: {e}");
            std::process::exit(1)
        }
        _ => std::process::exit(reply.exit_code),
    }
}

fn io_error_reply(reason: &str) -> cni::Reply {
    let err = kube_ipam::Error::Decode {
        what: "stdin".into(),
        reason: reason.into(),
    };
    cni::Reply {
        stdout: format!(
            "{}\n",
            cni::result::error_result(cni::version::LATEST, &err)
        )
        .into_bytes(),
        exit_code: 1,
    }
}
