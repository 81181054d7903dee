//! The checkers run at the end of every simulation (after the heal phase):
//! safety (nothing lost, nothing resurrected) and liveness (converged).

use serde::Serialize;
use std::collections::BTreeMap;

use geocache_crdt::Key;

use crate::oracle::visible_value;
use crate::world::World;

/// One checker's verdict.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Its name.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// What went wrong (the first few cases).
    pub detail: String,
}

/// Runs every checker.
pub fn run(world: &World) -> Vec<Check> {
    let state = world.final_state();
    let now = state.now_ms();
    let expected = state.expected();
    // Convergence: every live node holding a key shows the same value, and
    // it is the value of every surviving write folded (so no replica holds
    // a value another has superseded, and no delete is undone). Streamed
    // node by node: only a replica that differs is described.
    let want_by_key: BTreeMap<&Key, Option<Vec<u8>>> =
        expected.iter().map(|(k, r)| (k, visible_value(r, now))).collect();
    let mut diverged_at = Vec::new();
    let mut resurrected_at = Vec::new();
    for (node, key, register) in state.held() {
        let want = want_by_key.get(key).and_then(Option::as_deref);
        let shown = visible_value(&register, now);
        if shown.as_deref() == want {
            continue;
        }
        // A delete (or expired value) that the fold already supersedes
        // reads as a miss, as the key evicted would: newest or nothing.
        // Tombstones keep their own space for their retention
        // (`tombstone_space.rs`), so a node that missed the write after
        // its delete holds it where, in one LRU with the values, it was
        // evicted first.
        if shown.is_none() && expected.get(key).is_some_and(|e| e.merged(&register) == *e) {
            continue;
        }
        let wanted = expected.get(key).map(describe).unwrap_or_else(|| "nothing".into());
        let case = format!("{key} at node {node} holds {}, expected {wanted}", describe(&register));
        if want.is_none() {
            resurrected_at.push((key.clone(), node, case));
        } else {
            diverged_at.push((key.clone(), node, case));
        }
    }
    // In key order, then node order, as a reader compares them.
    let in_key_order = |mut cases: Vec<(Key, usize, String)>| -> Vec<String> {
        cases.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        cases.into_iter().map(|(_, _, case)| case).collect()
    };
    let diverged = in_key_order(diverged_at);
    let resurrected = in_key_order(resurrected_at);
    let lost = state.lost_acked_writes();
    let ryw = state.ryw_violations();
    let gaps: Vec<String> = state
        .membership_gaps()
        .into_iter()
        .map(|(node, missing, extra)| format!("node {node} misses {missing:?}, still lists {extra:?}"))
        .collect();
    vec![
        verdict("convergence", &diverged),
        verdict("no_resurrected_delete", &resurrected),
        verdict(
            "no_acked_write_lost",
            &lost.iter().map(|(o, s)| format!("write {o}/{s}")).collect::<Vec<_>>(),
        ),
        Check {
            name: "read_your_writes",
            passed: ryw == 0,
            detail: if ryw == 0 { String::new() } else { format!("{ryw} reads missed the node's own write") },
        },
        // Liveness of the real membership: after the heal phase, every live
        // node sees every other live node, as its current life, and no
        // other.
        verdict("membership_converged", &gaps),
        // A full transfer's drop rule runs only on a transfer that arrived
        // whole: it never removes a key the sender sent in it.
        verdict("transfer_drops_only_what_the_sender_dropped", state.live_keys_dropped()),
        // Every simulated node is honest: the identity rules (a node speaks
        // only for itself, `gossip/src/identities.rs`) never refuse one,
        // through restarts, partitions and wiped data.
        verdict("honest_nodes_never_refused", &honest_refusals(world)),
        // Counters are exact: every node holding one reads the sum of every
        // increment that survives, added up here without the merge code.
        // Strong keys are linearizable: no lost update, every acknowledged
        // increment counted (`strong_clients.rs`).
        verdict("strong_linearizable", &world.strong_errors()),
        verdict(
            "counters_exact",
            &state
                .counter_errors()
                .into_iter()
                .map(|(c, node, held, sum)| {
                    format!("counter{c} at node {node} reads {held:?}, the increments sum to {sum}")
                })
                .collect::<Vec<_>>(),
        ),
    ]
}

fn honest_refusals(world: &World) -> Vec<String> {
    world
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.core.refusals().total() > 0)
        .map(|(i, n)| format!("node {i}: {:?}", n.core.refusals()))
        .collect()
}

fn describe(r: &geocache_crdt::Register) -> String {
    let m = &r.meta;
    format!(
        "[stamp {} epoch {} dot {}/{} expires {:?}{}]",
        m.stamp,
        m.epoch,
        m.dot.origin,
        m.dot.seq,
        m.expires_at_ms,
        if m.tombstone { " tombstone" } else { "" }
    )
}

fn verdict(name: &'static str, failures: &[String]) -> Check {
    let detail = if failures.is_empty() {
        String::new()
    } else {
        let shown: Vec<&str> = failures.iter().take(5).map(String::as_str).collect();
        format!("{} cases, e.g. {}", failures.len(), shown.join("; "))
    };
    Check { name, passed: failures.is_empty(), detail }
}
