//! Every node as placement sees it, indexed so that choosing a node does not scan the fleet.
//!
//! A claim asks two things of the nodes: "this node, by id" (is the app's node still there?)
//! and "the schedulable nodes, emptiest first" (where does a new app go?). A [`Fleet`] answers
//! both without looking at every node: rows by id in a map, and the `ACTIVE` nodes in a
//! sorted set keyed the way [`super::placement::decide`] prefers them — fewest counted apps,
//! then fewest placed apps, then node id. Placing an app moves two keys in that set
//! ([`Fleet::placed`]), so a claim that places thousands of apps on thousands of nodes does a
//! few map and set operations per app instead of a pass over every node.

use std::collections::{BTreeSet, HashMap};

use berth_shared::wire::Scheduling;

use super::{NodeRecord, Placement};

/// The nodes, with their indexes. Build one with [`Fleet::new`].
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    /// Every node, sorted by id (so a row's position breaks ties by id).
    rows: Vec<NodeRecord>,
    /// Node id → its position in `rows`.
    by_id: HashMap<String, usize>,
    /// The `ACTIVE` nodes as `(counted apps, placed apps, position)`: placement's order.
    by_load: BTreeSet<(i64, i64, usize)>,
    /// What changed since [`Fleet::start_journal`], while a newer read of the table is under
    /// way: to apply again to what that read returns.
    journal: Option<Vec<Change>>,
}

/// One change of a fleet: what [`Fleet::placed`] or [`Fleet::replace`] was told.
#[derive(Debug, Clone)]
pub enum Change {
    /// An app placed ([`Fleet::placed`]'s arguments).
    Placed {
        /// The node it went to.
        to: String,
        /// Memory reserved there, MiB.
        memory_mb: i64,
        /// CPU reserved there, thousandths of a core.
        cpu_millis: i64,
        /// The placement it left.
        old: Option<Placement>,
    },
    /// A node's row replaced.
    Row(NodeRecord),
}

impl Fleet {
    /// The fleet of `rows`, in any order.
    pub fn new(mut rows: Vec<NodeRecord>) -> Fleet {
        rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let by_id = rows
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node_id.clone(), i))
            .collect();
        let by_load = rows
            .iter()
            .enumerate()
            .filter_map(|(i, n)| load_key(n, i))
            .collect();
        Fleet {
            rows,
            by_id,
            by_load,
            journal: None,
        }
    }

    /// Records every change from now on, until [`Fleet::take_journal`].
    pub fn start_journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// The changes recorded since [`Fleet::start_journal`] (none if it was not called); stops
    /// recording.
    pub fn take_journal(&mut self) -> Vec<Change> {
        self.journal.take().unwrap_or_default()
    }

    /// Applies `changes` (another fleet's journal) again here.
    pub fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Placed {
                    to,
                    memory_mb,
                    cpu_millis,
                    old,
                } => self.placed(&to, memory_mb, cpu_millis, old.as_ref()),
                Change::Row(row) => {
                    self.replace(row);
                }
            }
        }
    }

    /// Every node, by id.
    pub fn all(&self) -> &[NodeRecord] {
        &self.rows
    }

    /// The node with this id.
    pub fn get(&self, node_id: &str) -> Option<&NodeRecord> {
        self.by_id.get(node_id).map(|&i| &self.rows[i])
    }

    /// The `ACTIVE` nodes in the order placement prefers them: fewest counted apps
    /// ([`NodeRecord::counted_apps`]), then fewest placed apps, then by id. Whether each is
    /// `ONLINE` and has room is the caller's question.
    pub fn by_preference(&self) -> impl Iterator<Item = &NodeRecord> {
        self.by_load.iter().map(|&(_, _, i)| &self.rows[i])
    }

    /// Counts an app placed on node `to` with what it reserves there (`memory_mb`,
    /// `cpu_millis`), and given back on its `old` placement, as the claim's `RESERVE` and
    /// `RELEASE` statements did in the database. Unknown nodes are left alone.
    pub fn placed(&mut self, to: &str, memory_mb: i64, cpu_millis: i64, old: Option<&Placement>) {
        if let Some(journal) = &mut self.journal {
            journal.push(Change::Placed {
                to: to.to_owned(),
                memory_mb,
                cpu_millis,
                old: old.cloned(),
            });
        }
        self.change(to, |n| {
            n.app_count += 1;
            n.reserved_memory_mb += memory_mb;
            n.reserved_cpu_millis += cpu_millis;
        });
        if let Some(old) = old {
            self.change(&old.node_id, |n| {
                n.app_count -= 1;
                n.reserved_memory_mb -= old.memory_mb;
                n.reserved_cpu_millis -= old.cpu_millis;
            });
        }
    }

    /// Puts `row` in place of the node's row (a heartbeat wrote it). False, and nothing
    /// changed, for a node this fleet does not hold: the caller reads the fleet again.
    pub fn replace(&mut self, row: NodeRecord) -> bool {
        if !self.by_id.contains_key(&row.node_id) {
            return false;
        }
        if let Some(journal) = &mut self.journal {
            journal.push(Change::Row(row.clone()));
        }
        let node_id = row.node_id.clone();
        self.change(&node_id, |n| *n = row);
        true
    }

    /// Applies `edit` to one node's row and moves its key in `by_load`.
    fn change(&mut self, node_id: &str, edit: impl FnOnce(&mut NodeRecord)) {
        let Some(&i) = self.by_id.get(node_id) else {
            return;
        };
        if let Some(key) = load_key(&self.rows[i], i) {
            self.by_load.remove(&key);
        }
        edit(&mut self.rows[i]);
        if let Some(key) = load_key(&self.rows[i], i) {
            self.by_load.insert(key);
        }
    }
}

/// A node's key in placement's order, for `ACTIVE` nodes only.
fn load_key(node: &NodeRecord, position: usize) -> Option<(i64, i64, usize)> {
    (node.scheduling == Scheduling::Active).then(|| (node.counted_apps(), node.app_count, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::placement::tests::node;

    fn order(fleet: &Fleet) -> Vec<&str> {
        fleet.by_preference().map(|n| n.node_id.as_str()).collect()
    }

    #[test]
    fn prefers_the_emptiest_active_node_ties_by_id() {
        let mut cordoned = node("a", 0);
        cordoned.scheduling = Scheduling::Cordoned;
        let fleet = Fleet::new(vec![node("c", 1), node("d", 0), cordoned, node("b", 1)]);
        assert_eq!(order(&fleet), ["d", "b", "c"]);
        assert_eq!(fleet.all().len(), 4);
        assert_eq!(
            fleet.get("a").map(|n| n.scheduling),
            Some(Scheduling::Cordoned)
        );
    }

    #[test]
    fn a_placement_moves_both_nodes_in_the_order() {
        let mut fleet = Fleet::new(vec![node("a", 0), node("b", 1)]);
        let old = Placement {
            app_id: "app".into(),
            node_id: "b".into(),
            memory_mb: 128,
            cpu_millis: 250,
        };
        fleet.placed("b", 128, 250, None);
        fleet.placed("a", 128, 250, None);
        fleet.placed("a", 128, 250, Some(&old));
        assert_eq!(order(&fleet), ["b", "a"]);
        let a = fleet.get("a").expect("a");
        assert_eq!(
            (a.app_count, a.reserved_memory_mb, a.reserved_cpu_millis),
            (2, 256, 500)
        );
        let b = fleet.get("b").expect("b");
        assert_eq!(
            (b.app_count, b.reserved_memory_mb, b.reserved_cpu_millis),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_journal_applies_the_changes_again_to_a_newer_read() {
        let mut old = Fleet::new(vec![node("a", 0), node("b", 0)]);
        old.placed("a", 0, 0, None);
        old.start_journal();
        old.placed("b", 64, 0, None);
        old.replace(node("a", 3));
        let mut newer = Fleet::new(vec![node("a", 1), node("b", 0)]);
        newer.apply(old.take_journal());
        assert_eq!(
            newer.get("b").map(|n| (n.app_count, n.reserved_memory_mb)),
            Some((1, 64))
        );
        assert_eq!(newer.get("a").map(|n| n.app_count), Some(3));
        assert!(old.take_journal().is_empty(), "recording stopped");
    }

    #[test]
    fn a_replaced_row_takes_its_new_place_and_unknown_nodes_are_refused() {
        let mut fleet = Fleet::new(vec![node("a", 0), node("b", 1)]);
        let mut busy = node("a", 5);
        busy.sleeping_apps = 1;
        assert!(fleet.replace(busy));
        assert_eq!(order(&fleet), ["b", "a"]);
        let mut drained = node("b", 1);
        drained.scheduling = Scheduling::Draining;
        assert!(fleet.replace(drained));
        assert_eq!(order(&fleet), ["a"]);
        assert!(!fleet.replace(node("z", 0)));
        assert!(fleet.get("z").is_none());
    }
}
