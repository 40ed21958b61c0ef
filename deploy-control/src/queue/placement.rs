//! Which node a job runs on (SPEC §2): sticky while the app's node is `ONLINE` and
//! schedulable, otherwise the `ONLINE` schedulable node with room and the fewest apps. Apps
//! count as [`NodeRecord::counted_apps`] says: up to `maxSleepingApps` sleeping apps of a node
//! (SPEC §8) free their slot of `maxApps`, so a host fills with idle apps.

use berth_shared::wire::{JobKind, NodeState, Scheduling};

use super::fleet::Fleet;
use super::{JobRecord, Millis, NodeRecord, Placement};

/// Where a claimed job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep the app on the node it is placed on.
    Stay(String),
    /// Place the app on a node (first deploy, or its node went away): reserve room there.
    Move {
        /// The chosen node.
        to: String,
        /// The node the app was on, if any.
        from: Option<String>,
    },
    /// A `STOP` of an app that was never placed: nothing runs, no node is needed.
    Nowhere,
    /// No node can take the job now; the text is its `waitingReason`.
    Wait(String),
}

/// Decides where `job` runs, given the app's current placement and every node. A new node is
/// found in the fleet's order ([`Fleet::by_preference`]): the first `ONLINE` one with room.
pub fn decide(
    job: &JobRecord,
    current: Option<&Placement>,
    nodes: &Fleet,
    now: Millis,
    ttl_ms: i64,
) -> Decision {
    let node_of = |id: &str| nodes.get(id);
    let online = |n: &NodeRecord| n.state_at(now, ttl_ms) == NodeState::Online;

    if job.kind == JobKind::Stop {
        // A stop goes where the app runs, cordoned or not.
        return match current {
            None => Decision::Nowhere,
            Some(p) => match node_of(&p.node_id) {
                Some(n) if online(n) => Decision::Stay(n.node_id.clone()),
                _ => Decision::Wait(format!("node {} that runs the app is OFFLINE", p.node_id)),
            },
        };
    }

    if let Some(p) = current {
        if let Some(n) = node_of(&p.node_id) {
            if online(n) && n.scheduling == Scheduling::Active {
                return Decision::Stay(n.node_id.clone());
            }
        }
    }

    let ask_memory = job.payload.resources.memory_mb();
    let ask_cpu = job.payload.resources.cpu_millis();
    let has_room = |n: &NodeRecord| {
        let apps_ok = n.counted_apps() < i64::from(n.capacity.max_apps);
        let memory_ok =
            ask_memory == 0 || n.reserved_memory_mb + ask_memory <= n.capacity.memory_mb as i64;
        let cpu_ok = ask_cpu == 0
            || n.reserved_cpu_millis + ask_cpu <= (n.capacity.cpus * 1000.0).round() as i64;
        apps_ok && memory_ok && cpu_ok
    };
    let best = nodes.by_preference().find(|n| online(n) && has_room(n));
    match best {
        Some(n) => Decision::Move {
            to: n.node_id.clone(),
            from: current.map(|p| p.node_id.clone()),
        },
        None => Decision::Wait(why_no_node(nodes.all(), now, ttl_ms)),
    }
}

/// `decision` for a claim made while the control plane's view of the nodes may be stale: it has
/// not watched heartbeats for one TTL since its start or its database's return
/// (`crate::watch`). A move off the app's node while that node looks `OFFLINE` then waits — the
/// node may only have had no chance to heartbeat — so an app is not moved, and served twice, on
/// a stale view. Moves off a node that is `ONLINE` but cordoned, and every other decision, stand.
pub fn on_stale_view(decision: Decision, nodes: &Fleet, now: Millis, ttl_ms: i64) -> Decision {
    let Decision::Move {
        from: Some(from), ..
    } = &decision
    else {
        return decision;
    };
    let online = nodes
        .get(from)
        .is_some_and(|n| n.state_at(now, ttl_ms) == NodeState::Online);
    if online {
        return decision;
    }
    Decision::Wait(format!(
        "node {from} that runs the app looks OFFLINE, but the control plane has watched heartbeats for less than the node TTL since it started or its database came back: the app waits for the node's heartbeat rather than moving"
    ))
}

/// Why `job` fails instead of waiting, when it is a `STOP` of an app whose node has sent no
/// heartbeat for longer than `lost_ms` (the node is lost, SPEC §8): otherwise it would wait for
/// ever and block every later job of the app. `lost_ms` is `None` while the control plane has
/// not watched for that long itself ([`crate::watch`]): its own absence proves nothing about
/// the node. The placement stays: the container may still run there.
pub fn lost_stop(
    job: &JobRecord,
    current: Option<&Placement>,
    nodes: &Fleet,
    now: Millis,
    lost_ms: Option<i64>,
) -> Option<String> {
    let (lost_ms, placement) = (lost_ms?, current?);
    if job.kind != JobKind::Stop {
        return None;
    }
    let silent_ms = nodes
        .get(&placement.node_id)
        .map_or(i64::MAX, |n| now - n.last_heartbeat_at);
    (silent_ms > lost_ms).then(|| {
        format!(
            "node {} that runs the app has sent no heartbeat for more than {} s (it is lost): the app was not stopped there; stop it again once the node is back, or remove the node",
            placement.node_id,
            lost_ms / 1000
        )
    })
}

/// Explains why no node could take a job, in words an operator can act on.
fn why_no_node(nodes: &[NodeRecord], now: Millis, ttl_ms: i64) -> String {
    let online: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.state_at(now, ttl_ms) == NodeState::Online)
        .collect();
    if nodes.is_empty() {
        "no runtime node has registered yet".to_owned()
    } else if online.is_empty() {
        format!("all {} runtime nodes are OFFLINE", nodes.len())
    } else if online.iter().all(|n| n.scheduling != Scheduling::Active) {
        format!("all {} ONLINE nodes are cordoned or draining", online.len())
    } else {
        "no ONLINE schedulable node has room (maxApps, memory or CPU) for this app".to_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::queue::NodeRecord;
    use berth_shared::wire::{Capacity, JobPayload, JobState, NodeState, Resources};
    use uuid::Uuid;

    const NOW: Millis = 1_000_000;
    const TTL: i64 = 15_000;

    /// A roomy `ONLINE`, `ACTIVE` node with `apps` placed on it.
    pub(crate) fn node(id: &str, apps: i64) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            name: id.into(),
            agent_base_url: format!("http://127.0.0.1:7005/{id}"),
            gateway_base_url: "http://127.0.0.1:8088".into(),
            labels: Default::default(),
            capacity: Capacity {
                cpus: 2.0,
                memory_mb: 1024,
                max_apps: 10,
                max_sleeping_apps: 0,
            },
            reported_apps: vec![],
            version: "test".into(),
            scheduling: Scheduling::Active,
            recorded_state: NodeState::Online,
            last_heartbeat_at: NOW,
            app_count: apps,
            sleeping_apps: 0,
            reserved_memory_mb: 0,
            reserved_cpu_millis: 0,
            agent_url_change: None,
        }
    }

    fn job(kind: JobKind) -> JobRecord {
        JobRecord {
            seq: 1,
            job_id: Uuid::now_v7(),
            app_id: "app".into(),
            kind,
            state: JobState::Pending,
            payload: JobPayload::default(),
            secret_env: berth_shared::sealed::SealedEnv::empty(),
            attempt: 0,
            max_attempts: 3,
            run_after: NOW,
            node_id: None,
            runner_id: None,
            lease_token: None,
            lease_expires_at: None,
            waiting_reason: None,
            error: None,
            result: None,
            version: 1,
            idempotency_key: None,
            request_hash: None,
            created_at: NOW,
            updated_at: NOW,
            started_at: None,
            finished_at: None,
        }
    }

    /// Where a first deploy goes among `nodes`.
    fn first_deploy(nodes: Vec<NodeRecord>) -> Decision {
        decide(&job(JobKind::Deploy), None, &Fleet::new(nodes), NOW, TTL)
    }

    fn placed(on: &str) -> Placement {
        Placement {
            app_id: "app".into(),
            node_id: on.into(),
            memory_mb: 0,
            cpu_millis: 0,
        }
    }

    #[test]
    fn first_deploy_goes_to_the_emptiest_node_ties_by_id() {
        let nodes = Fleet::new(vec![node("b", 1), node("a", 1), node("c", 2)]);
        assert_eq!(
            decide(&job(JobKind::Deploy), None, &nodes, NOW, TTL),
            Decision::Move {
                to: "a".into(),
                from: None
            }
        );
    }

    #[test]
    fn sticky_while_online_and_schedulable() {
        let nodes = Fleet::new(vec![node("a", 0), node("b", 5)]);
        assert_eq!(
            decide(&job(JobKind::Deploy), Some(&placed("b")), &nodes, NOW, TTL),
            Decision::Stay("b".into())
        );
    }

    #[test]
    fn moves_off_an_offline_or_cordoned_node() {
        let mut offline = node("b", 0);
        offline.last_heartbeat_at = NOW - TTL - 1;
        let nodes = Fleet::new(vec![node("a", 3), offline]);
        assert_eq!(
            decide(&job(JobKind::Deploy), Some(&placed("b")), &nodes, NOW, TTL),
            Decision::Move {
                to: "a".into(),
                from: Some("b".into())
            }
        );
        let mut cordoned = node("b", 0);
        cordoned.scheduling = Scheduling::Cordoned;
        let nodes = Fleet::new(vec![node("a", 3), cordoned]);
        assert_eq!(
            decide(&job(JobKind::Deploy), None, &nodes, NOW, TTL),
            Decision::Move {
                to: "a".into(),
                from: None
            }
        );
    }

    #[test]
    fn on_a_stale_view_an_app_waits_for_its_offline_node_instead_of_moving() {
        let mut offline = node("b", 1);
        offline.last_heartbeat_at = NOW - TTL - 1;
        let nodes = Fleet::new(vec![node("a", 0), offline]);
        let moved = decide(&job(JobKind::Deploy), Some(&placed("b")), &nodes, NOW, TTL);
        assert!(matches!(moved, Decision::Move { .. }));
        assert!(
            matches!(on_stale_view(moved, &nodes, NOW, TTL), Decision::Wait(r) if r.contains("node b") && r.contains("TTL"))
        );
        // Off a cordoned node that is ONLINE, and to a first node, an app still goes.
        let mut cordoned = node("b", 1);
        cordoned.scheduling = Scheduling::Cordoned;
        let nodes = Fleet::new(vec![node("a", 0), cordoned]);
        let moved = decide(&job(JobKind::Deploy), Some(&placed("b")), &nodes, NOW, TTL);
        assert_eq!(on_stale_view(moved.clone(), &nodes, NOW, TTL), moved);
        let first = decide(&job(JobKind::Deploy), None, &nodes, NOW, TTL);
        assert_eq!(on_stale_view(first.clone(), &nodes, NOW, TTL), first);
    }

    #[test]
    fn a_stop_on_a_lost_node_fails_once_the_control_plane_watched_that_long() {
        const LOST: i64 = 30_000;
        let mut gone = node("a", 1);
        gone.last_heartbeat_at = NOW - LOST - 1;
        let stop = job(JobKind::Stop);
        let nodes = Fleet::new(vec![gone.clone()]);
        let reason = lost_stop(&stop, Some(&placed("a")), &nodes, NOW, Some(LOST));
        assert!(reason.is_some_and(|r| r.contains("node a") && r.contains("30 s")));
        assert_eq!(
            lost_stop(&stop, Some(&placed("a")), &nodes, NOW, None),
            None,
            "not watched that long"
        );
        assert_eq!(
            lost_stop(&stop, None, &nodes, NOW, Some(LOST)),
            None,
            "never placed"
        );
        assert_eq!(
            lost_stop(
                &job(JobKind::Deploy),
                Some(&placed("a")),
                &nodes,
                NOW,
                Some(LOST)
            ),
            None
        );
        gone.last_heartbeat_at = NOW - LOST;
        assert_eq!(
            lost_stop(
                &stop,
                Some(&placed("a")),
                &Fleet::new(vec![gone]),
                NOW,
                Some(LOST)
            ),
            None,
            "only OFFLINE so far"
        );
    }

    #[test]
    fn waits_with_a_reason_when_nothing_fits() {
        assert!(
            matches!(decide(&job(JobKind::Deploy), None, &Fleet::default(), NOW, TTL), Decision::Wait(r) if r.contains("no runtime node"))
        );
        let mut full = node("a", 10);
        assert!(
            matches!(first_deploy(vec![full.clone()]), Decision::Wait(r) if r.contains("room"))
        );
        full.app_count = 0;
        full.scheduling = Scheduling::Draining;
        assert!(matches!(first_deploy(vec![full]), Decision::Wait(r) if r.contains("cordoned")));
        let mut big = job(JobKind::Deploy);
        big.payload.resources = Resources {
            memory_mb: Some(2048),
            cpus: None,
        };
        assert!(matches!(
            decide(&big, None, &Fleet::new(vec![node("a", 0)]), NOW, TTL),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn stop_follows_the_app_even_to_a_cordoned_node() {
        let mut cordoned = node("a", 1);
        cordoned.scheduling = Scheduling::Cordoned;
        assert_eq!(
            decide(
                &job(JobKind::Stop),
                Some(&placed("a")),
                &Fleet::new(vec![cordoned]),
                NOW,
                TTL
            ),
            Decision::Stay("a".into())
        );
        assert_eq!(
            decide(&job(JobKind::Stop), None, &Fleet::default(), NOW, TTL),
            Decision::Nowhere
        );
    }

    #[test]
    fn sleeping_apps_free_their_slot_up_to_max_sleeping_apps() {
        let mut full = node("a", 10);
        full.sleeping_apps = 4;
        // An agent without sleeping apps (maxSleepingApps 0): every app counts.
        assert_eq!(full.counted_apps(), 10);
        assert!(matches!(
            first_deploy(vec![full.clone()]),
            Decision::Wait(_)
        ));
        full.capacity.max_sleeping_apps = 3;
        assert_eq!(full.counted_apps(), 7, "3 of the 4 sleeping apps are free");
        assert!(matches!(
            first_deploy(vec![full.clone()]),
            Decision::Move { .. }
        ));
        // A stale count larger than the apps placed frees no more than there are.
        full.sleeping_apps = 50;
        full.capacity.max_sleeping_apps = 100;
        assert_eq!(full.counted_apps(), 0);
        // The node with fewer counted apps wins, though it holds more apps.
        let mut idle = node("b", 8);
        idle.sleeping_apps = 8;
        idle.capacity.max_sleeping_apps = 100;
        let busy = node("a", 2);
        assert_eq!(
            first_deploy(vec![busy, idle]),
            Decision::Move {
                to: "b".into(),
                from: None
            }
        );
    }
}
