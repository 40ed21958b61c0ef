//! The agent grants of one claimed job (SPEC §7): one per node the claim names, each opening
//! the job's app on that node until the lease ends. Lease heartbeats renew them, so a call to
//! an agent always carries the newest; a grant the control plane did not renew is kept until it
//! runs out (the agent then refuses it).

use std::collections::BTreeMap;
use std::sync::Mutex;

use berth_shared::wire::{ClaimResponse, NodeRef};

/// The grants by node id, shared by the job's work and its heartbeats.
#[derive(Debug, Default)]
pub struct JobGrants {
    by_node: Mutex<BTreeMap<String, String>>,
}

impl JobGrants {
    /// The grants `claim` hands out, for its node and the app's previous node.
    pub fn of(claim: &ClaimResponse) -> Self {
        let by_node = claim
            .node
            .iter()
            .chain(claim.previous_node.iter())
            .map(|n| (n.node_id.clone(), n.agent_grant.clone()))
            .collect();
        Self {
            by_node: Mutex::new(by_node),
        }
    }

    /// The newest grant for `node` (its claim's, when none was renewed).
    pub fn for_node(&self, node: &NodeRef) -> String {
        self.lock()
            .get(&node.node_id)
            .cloned()
            .unwrap_or_else(|| node.agent_grant.clone())
    }

    /// Every grant, to be renewed with the lease.
    pub fn all(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    /// Takes the renewed grants of a heartbeat's answer.
    pub fn renew(&self, renewed: BTreeMap<String, String>) {
        self.lock().extend(renewed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.by_node.lock().unwrap_or_else(|e| e.into_inner())
    }
}
