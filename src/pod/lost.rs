//! Whether Kubernetes has given up the pod that holds an address.
//!
//! A node that dies takes its kubelet with it, so nothing ever confirms the deletion of its
//! pods: the node controller marks them for deletion once they stop tolerating the node's
//! `unreachable` taint (300 s by default), and the objects then stay, terminating, until
//! someone force-deletes them or the node object goes. A Deployment's replacement pod is
//! created at once and asks for the same fixed address; waiting for the old object would
//! keep it out for as long as nobody cleans up. So a terminating holder whose grace period
//! is over counts as gone when its node is gone too: deleted from the API, tainted
//! `out-of-service` by an operator (non-graceful node shutdown), or not Ready for long
//! enough. A terminating pod on a Ready node is still being torn down by its kubelet, whose
//! DEL will come: that one is waited for.

use std::time::Duration;

use super::{NodeState, PodMeta};

/// The taint an operator puts on a node known to be shut down (non-graceful node shutdown).
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// When a terminating holder may be given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `None`: never; the address waits until the pod object is gone.
    pub not_ready_for: Option<Duration>,
}

/// What to make of a holder that still exists with the uid its record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not given up: wait for its DEL.
    Live,
    /// Terminating past its grace period on this node; whether the node is lost decides.
    AskNode(String),
}

/// First look, from the pod alone. `now` is Unix seconds.
pub fn terminating(pod: &PodMeta, policy: &Policy, now: i64) -> Verdict {
    if policy.not_ready_for.is_none() {
        return Verdict::Live;
    }
    match (pod.deletion, &pod.node) {
        (Some(at), Some(node)) if at <= now => Verdict::AskNode(node.clone()),
        _ => Verdict::Live,
    }
}

/// Why the node counts as lost, or `None` while it may still run the pod's teardown.
pub fn node_lost(
    name: &str,
    node: Option<&NodeState>,
    policy: &Policy,
    now: i64,
) -> Option<String> {
    let after = policy.not_ready_for?;
    let Some(node) = node else {
        return Some(format!("node {name} no longer exists"));
    };
    if let Some((_, effect)) = node.taints.iter().find(|(k, _)| k == OUT_OF_SERVICE) {
        return Some(format!("node {name} is tainted {OUT_OF_SERVICE}:{effect}"));
    }
    let (status, since) = node.ready.as_ref()?;
    if status == "True" {
        return None;
    }
    // A condition without a transition time cannot say how long: not long enough.
    let since = (*since)?;
    let for_secs = now.saturating_sub(since);
    let needed = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    (for_secs >= needed).then(|| {
        format!("node {name} has been Ready={status} for {for_secs} s (at least {needed} s)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn policy(secs: u64) -> Policy {
        Policy {
            not_ready_for: Some(Duration::from_secs(secs)),
        }
    }

    fn pod(deletion: Option<i64>, node: Option<&str>) -> PodMeta {
        PodMeta {
            deletion,
            node: node.map(str::to_owned),
            ..Default::default()
        }
    }

    fn node(status: &str, since: Option<i64>, taints: &[(&str, &str)]) -> NodeState {
        NodeState {
            ready: Some((status.into(), since)),
            taints: taints
                .iter()
                .map(|(k, e)| (k.to_string(), e.to_string()))
                .collect(),
        }
    }

    #[test]
    fn only_a_terminating_pod_past_its_grace_period_asks_for_its_node() {
        let p = policy(300);
        assert_eq!(terminating(&pod(None, Some("n1")), &p, NOW), Verdict::Live);
        assert_eq!(
            terminating(&pod(Some(NOW + 30), Some("n1")), &p, NOW),
            Verdict::Live,
            "grace period not over"
        );
        assert_eq!(
            terminating(&pod(Some(NOW), Some("n1")), &p, NOW),
            Verdict::AskNode("n1".into())
        );
        assert_eq!(
            terminating(&pod(Some(NOW - 1), None), &p, NOW),
            Verdict::Live,
            "never scheduled"
        );
        let off = Policy {
            not_ready_for: None,
        };
        assert_eq!(
            terminating(&pod(Some(NOW - 600), Some("n1")), &off, NOW),
            Verdict::Live
        );
    }

    #[test]
    fn a_node_is_lost_when_gone_out_of_service_or_not_ready_long_enough() {
        let p = policy(300);
        assert!(node_lost("n1", None, &p, NOW)
            .unwrap()
            .contains("no longer exists"));
        let tainted = node("True", Some(NOW), &[(OUT_OF_SERVICE, "NoExecute")]);
        assert!(node_lost("n1", Some(&tainted), &p, NOW)
            .unwrap()
            .contains("out-of-service:NoExecute"));
        assert_eq!(
            node_lost("n1", Some(&node("True", Some(NOW - 9999), &[])), &p, NOW),
            None
        );
        assert_eq!(
            node_lost("n1", Some(&node("Unknown", Some(NOW - 299), &[])), &p, NOW),
            None
        );
        let why = node_lost("n1", Some(&node("Unknown", Some(NOW - 300), &[])), &p, NOW).unwrap();
        assert!(why.contains("Ready=Unknown for 300 s"), "{why}");
        assert!(node_lost("n1", Some(&node("False", Some(NOW - 301), &[])), &p, NOW).is_some());
        assert_eq!(
            node_lost("n1", Some(&node("False", None, &[])), &p, NOW),
            None
        );
        let unreachable = node(
            "Unknown",
            Some(NOW - 10),
            &[("node.kubernetes.io/unreachable", "NoExecute")],
        );
        assert_eq!(node_lost("n1", Some(&unreachable), &p, NOW), None);
        assert_eq!(
            node_lost("n1", Some(&NodeState::default()), &p, NOW),
            None,
            "no Ready condition at all"
        );
        let off = Policy {
            not_ready_for: None,
        };
        assert_eq!(node_lost("n1", None, &off, NOW), None);
    }
}
