//! The stand-in Kubernetes API of the tests, as a process for the bench scripts: `kube-ipam
//! gc` needs a pod list, and `scripts/scale.sh` measures it at a million held addresses.
//!
//! ```text
//! kube_api KUBECONFIG    serves until stdin closes; writes a kubeconfig for it to KUBECONFIG
//! ```
//!
//! It lists no pods. Stopping at the end of stdin rather than on a signal lets it remove the
//! certificates it wrote: the script holds the pipe and exits, whatever way it exits.

use std::io::Read;

use kube_ipam::testing::KubeApi;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: kube_api KUBECONFIG");
        std::process::exit(2);
    };
    let api = KubeApi::start()?;
    // Written under another name and renamed, so a reader never sees half a file.
    let part = format!("{out}.part");
    std::fs::copy(api.kubeconfig(), &part)?;
    std::fs::rename(&part, &out)?;
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    api.stop();
    Ok(())
}
