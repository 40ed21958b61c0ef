//! The claim every database shares: pick the oldest claimable jobs, decide where each runs,
//! place and write them — one transaction for a whole [`ClaimBatch`]. Each database supplies
//! the statements through [`Tuned`] (its pick and its write of the claims) and its supertraits; the
//! decisions are [`crate::queue::placement::decide`]'s.

use berth_shared::wire::{NodeRef, NodeState};

use super::node_cache::FleetView;
use super::primitives::{Pick, Tuned};
use super::{ClaimBatch, Claimed, StoreResult};
use crate::queue::attempt::AttemptRecord;
use crate::queue::fleet::Fleet;
use crate::queue::placement::{decide, lost_stop, on_stale_view, Decision};
use crate::queue::{JobRecord, Millis, NodeRecord, Placement};

/// A pending job a claim picked (and, where the database locks rows, locked), with its app's
/// placement.
#[derive(Debug)]
pub struct Candidate {
    /// The job.
    pub job: JobRecord,
    /// Where its app is placed, if anywhere.
    pub placement: Option<Placement>,
}

/// What a claim transaction did, for its database to commit.
#[derive(Debug)]
pub struct ClaimOutcome {
    /// The jobs claimed, the `i`-th for the batch's `i`-th claimer.
    pub claimed: Vec<Claimed>,
    /// Whether the fleet was found stale (the database refused a reservation it allowed):
    /// read the node table again.
    pub nodes_stale: bool,
    /// The jobs it failed instead of handing out (a `STOP` whose node is lost).
    pub given_up: Vec<JobRecord>,
}

/// Claims up to one job per claimer of `batch` through `tx`, deciding with `nodes` (every
/// node), in which it counts each app it places as it decides to.
pub async fn claim_batch(
    tx: &mut impl Tuned,
    nodes: &mut impl FleetView,
    batch: &ClaimBatch,
) -> StoreResult<ClaimOutcome> {
    let mut skipped: Vec<i64> = Vec::new();
    // Jobs looked at: claims are written at the end of the batch, so a later pick in the same
    // transaction must not see them again as pending.
    let mut seen: Vec<i64> = Vec::new();
    let mut claimed: Vec<Claimed> = Vec::new();
    let mut nodes_stale = false;
    let mut given_up: Vec<JobRecord> = Vec::new();
    while claimed.len() < batch.claimers.len() && skipped.len() < CLAIM_SCAN {
        let want = batch.claimers.len() - claimed.len();
        let pick = Pick {
            now: batch.now,
            skipped: &seen,
            want,
        };
        let picked = tx.pick(pick).await?;
        seen.extend(picked.iter().map(|c| c.job.seq));
        let last_pick = picked.len() < want;
        for Candidate { mut job, placement } in picked {
            let Some(claimer) = batch.claimers.get(claimed.len()) else {
                // A pick returned more jobs than asked for: leave the rest pending.
                break;
            };
            // Decided and counted under one hold of the fleet, so that a claim deciding
            // meanwhile sees the room this one takes.
            let step = nodes.with(|fleet| {
                let step = plan_claim(&mut job, placement.as_ref(), fleet, batch);
                if let ClaimStep::Run(Route {
                    moved_to: Some(to), ..
                }) = &step
                {
                    let resources = &job.payload.resources;
                    let (memory, cpu) = (resources.memory_mb(), resources.cpu_millis());
                    fleet.placed(to, memory, cpu, placement.as_ref());
                }
                step
            });
            let route = match step {
                ClaimStep::Wait { changed } => {
                    if changed {
                        tx.update_job(&job).await?;
                    }
                    skipped.push(job.seq);
                    continue;
                }
                ClaimStep::GiveUp(reason) => {
                    tracing::warn!(job_id = %job.job_id, app_id = %job.app_id, reason = %reason, "job failed without a claim");
                    job.give_up(reason, batch.now)?;
                    tx.save_transition(&job).await?;
                    given_up.push(job);
                    continue;
                }
                ClaimStep::Run(route) => route,
            };
            if let Some(to) = &route.moved_to {
                if !place(tx, &job, to, placement.as_ref(), batch.now).await? {
                    // Another replica took the last room on that node since we read it (the
                    // fleet, which counted this placement, is read again).
                    nodes_stale = true;
                    skipped.push(job.seq);
                    continue;
                }
            }
            let node_id = route.node.as_ref().map(|n| n.node_id.clone());
            job.claim(
                &claimer.runner_id,
                &claimer.lease_token,
                batch.lease_expires_at,
                node_id,
                batch.now,
            )?;
            claimed.push(route.into_claimed(job));
        }
        if last_pick {
            break;
        }
    }
    let jobs: Vec<&JobRecord> = claimed.iter().map(|c| &c.job).collect();
    tx.save_claimed(&jobs).await?;
    let opened: Vec<_> = jobs
        .iter()
        .filter_map(|job| Some((job.job_id, AttemptRecord::opened(job)?)))
        .collect();
    if !opened.is_empty() {
        tx.open_attempts(&opened).await?;
    }
    Ok(ClaimOutcome {
        claimed,
        nodes_stale,
        given_up,
    })
}

/// Places `job`'s app on node `to`: reserves its room there (false, and nothing written, when
/// the node has none left), gives back what the `old` placement reserved and records the new
/// one.
async fn place(
    tx: &mut impl Tuned,
    job: &JobRecord,
    to: &str,
    old: Option<&Placement>,
    now: Millis,
) -> StoreResult<bool> {
    let placement = Placement {
        app_id: job.app_id.clone(),
        node_id: to.to_owned(),
        memory_mb: job.payload.resources.memory_mb(),
        cpu_millis: job.payload.resources.cpu_millis(),
    };
    if !tx
        .reserve(to, placement.memory_mb, placement.cpu_millis)
        .await?
    {
        return Ok(false);
    }
    if let Some(old) = old {
        tx.release(old).await?;
    }
    tx.record_placement(&placement, now).await?;
    Ok(true)
}

/// How many pending jobs one claim looks at before it gives up (jobs no node can take are
/// skipped, and get their waiting reason).
const CLAIM_SCAN: usize = 16;

/// What a claim does with one candidate job: [`decide`]'s answer in the terms storage acts on.
#[derive(Debug)]
enum ClaimStep {
    /// No node can take the job now: write it when `changed` (its waiting reason is new), and
    /// look at the next job.
    Wait {
        /// Whether the job's row changed.
        changed: bool,
    },
    /// Run the job as `route` says.
    Run(Route),
    /// No node will ever take the job: it fails for this reason.
    GiveUp(String),
}

/// Where a claimed job runs.
#[derive(Debug)]
struct Route {
    /// Its node (`None` for a stop of an app never placed).
    node: Option<NodeRef>,
    /// The node the app leaves, when it moves and that node is still `ONLINE`.
    previous_node: Option<NodeRef>,
    /// The node the app moves to (or is first placed on): reserve the job's resources there,
    /// release the old placement's and record the new one, all in the claim's transaction.
    moved_to: Option<String>,
}

impl Route {
    /// The claimed job with this route.
    fn into_claimed(self, job: JobRecord) -> Claimed {
        Claimed {
            job,
            node: self.node,
            previous_node: self.previous_node,
        }
    }
}

/// Decides what a claim does with `job`, the app's `placement` and every node.
fn plan_claim(
    job: &mut JobRecord,
    placement: Option<&Placement>,
    nodes: &Fleet,
    req: &ClaimBatch,
) -> ClaimStep {
    let node_ref = |id: &str| nodes.get(id).map(NodeRecord::to_ref);
    let online_ref = |id: &str| {
        nodes
            .get(id)
            .filter(|n| n.state_at(req.now, req.node_ttl_ms) == NodeState::Online)
            .map(NodeRecord::to_ref)
    };
    let mut decision = decide(job, placement, nodes, req.now, req.node_ttl_ms);
    if !req.nodes_settled {
        decision = on_stale_view(decision, nodes, req.now, req.node_ttl_ms);
    }
    let route = match decision {
        Decision::Wait(reason) => {
            if let Some(lost) = lost_stop(job, placement, nodes, req.now, req.node_lost_ms) {
                return ClaimStep::GiveUp(lost);
            }
            return ClaimStep::Wait {
                changed: job.wait_for(reason, req.now),
            };
        }
        Decision::Nowhere => Route {
            node: None,
            previous_node: None,
            moved_to: None,
        },
        Decision::Stay(id) => Route {
            node: node_ref(&id),
            previous_node: None,
            moved_to: None,
        },
        Decision::Move { to, from } => Route {
            node: node_ref(&to),
            previous_node: from.as_deref().and_then(online_ref),
            moved_to: Some(to),
        },
    };
    ClaimStep::Run(route)
}
