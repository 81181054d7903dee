//! The simulator: deterministic reports, checkers that pass on the real
//! code under faults, and catch a broken merge.

use geocache_sim::scenario::Scenario;
use geocache_sim::simulate;
use std::path::Path;

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    Scenario::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The faults scenario, shortened so that many seeds run in a debug build.
fn short_faults() -> Scenario {
    let mut s = scenario("faults.toml");
    s.workload.ops_per_s_per_region = 60.0;
    s
}

#[test]
fn same_scenario_and_seed_give_a_byte_identical_report() {
    let s = short_faults();
    let a = simulate(&s, 42, &mut |_| {}).to_json();
    let b = simulate(&s, 42, &mut |_| {}).to_json();
    assert_eq!(a, b);
    let c = simulate(&s, 43, &mut |_| {}).to_json();
    assert_ne!(a, c, "another seed is another run");
}

#[test]
fn the_checkers_pass_under_partitions_crashes_skew_and_loss() {
    // `geocache-sim explore sim/scenarios/faults.toml --seeds 1..501` runs
    // the full scenario over 500 seeds in a release build; here, 12 seeds
    // of the shortened one.
    let s = short_faults();
    for seed in 1..13 {
        let report = simulate(&s, seed, &mut |_| {});
        assert!(report.passed(), "SEED={seed}\n{}", report.to_text());
        assert!(report.writes > 1_000 && report.reads > 500);
    }
}

#[test]
fn a_broken_merge_is_caught() {
    let mut s = short_faults();
    s.debug.broken_merge = true;
    let caught = (1..11).filter(|&seed| !simulate(&s, seed, &mut |_| {}).passed()).count();
    assert!(caught > 0, "no seed of 10 caught a broken merge");
}

#[test]
fn a_drop_rule_run_on_a_partial_transfer_is_caught() {
    // The full scenario: enough writes to outrun the 1 MiB backlogs.
    let mut s = scenario("faults.toml");
    s.debug.drop_partial_transfer = true;
    let caught = (1..9).any(|seed| {
        let report = simulate(&s, seed, &mut |_| {});
        report.checks.iter().any(|c| c.name == "transfer_drops_only_what_the_sender_dropped" && !c.passed)
    });
    assert!(caught, "no seed of 8 caught a drop rule run on a partial transfer");
}

#[test]
fn the_faults_scenario_runs_full_transfers_through_lost_chunks() {
    let s = scenario("faults.toml");
    let report = simulate(&s, 1, &mut |_| {});
    assert!(report.passed(), "{}", report.to_text());
    assert!(report.transfers_applied > 0, "the faults scenario must exercise full transfers");
}

#[test]
fn predicted_lag_matches_the_emulated_measurement() {
    // The link-emulator test measures a median of 44.6-46.0 ms over a 40 ms
    // link (docs/BENCHMARKS.md); the simulator must predict within 20 %.
    let mut s = scenario("two-regions.toml");
    s.workload.duration_s = 5.0;
    let report = simulate(&s, 1, &mut |_| {});
    let row = report.lag.iter().find(|r| r.from == "montreal" && r.to == "frankfurt").unwrap();
    let measured_ms = 45.5;
    let error = (row.p50_ms - measured_ms).abs() / measured_ms;
    assert!(error < 0.2, "predicted {} ms vs measured {measured_ms} ms", row.p50_ms);
    assert!(report.passed());
}

#[test]
fn the_html_report_has_both_plots() {
    let mut s = scenario("two-regions.toml");
    s.workload.duration_s = 2.0;
    let (report, page) = geocache_sim::simulate_with_html(&s, 1, &mut |_| {}, true);
    let page = page.unwrap();
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("montreal -&gt; frankfurt") || page.contains("montreal -> frankfurt"));
    assert!(page.contains(&report.scenario));
}

#[test]
fn the_real_membership_sees_crashes_and_restarts() {
    // Six nodes: 30 members up at formation. Crashes are declared down by
    // foca (no oracle) and restarted nodes come up again, and every checker,
    // `membership_converged` included, holds after the heal phase.
    let report = simulate(&short_faults(), 7, &mut |_| {});
    assert!(report.formation_s > 0.0 && report.formation_s < 5.0, "formed in {} s", report.formation_s);
    assert!(report.member_downs > 0, "no member was declared down");
    assert!(report.member_ups > 30, "no member came back up: {} ups", report.member_ups);
    assert!(report.membership_wan_bytes_per_node_s > 0.0);
    assert!(report.passed(), "{}", report.to_text());
}

#[test]
fn counters_merged_as_last_writer_wins_are_caught() {
    let mut s = short_faults();
    s.debug.lww_counters = true;
    let caught = (1..6).any(|seed| {
        let report = simulate(&s, seed, &mut |_| {});
        report.checks.iter().any(|c| c.name == "counters_exact" && !c.passed)
    });
    assert!(caught, "no seed of 5 caught counters that lose increments");
}

#[test]
fn strong_keys_count_every_acknowledged_increment_under_faults() {
    // `geocache-sim explore sim/scenarios/strong.toml --seeds 1..201` runs
    // 200 seeds in a release build; here, 6.
    let s = scenario("strong.toml");
    for seed in 1..7 {
        let report = simulate(&s, seed, &mut |_| {});
        assert!(report.passed(), "SEED={seed}\n{}", report.to_text());
        let [acked, _, unavailable, _] = report.strong;
        assert!(acked > 20, "SEED={seed}: only {acked} strong increments acked");
        assert!(unavailable > 0, "SEED={seed}: the region cut off was never refused");
    }
}

#[test]
fn acceptors_that_forget_their_promises_are_caught() {
    let mut s = scenario("strong.toml");
    s.debug.forget_promises = true;
    let caught = (1..11).any(|seed| {
        let report = simulate(&s, seed, &mut |_| {});
        report.checks.iter().any(|c| c.name == "strong_linearizable" && !c.passed)
    });
    assert!(caught, "no seed of 10 caught acceptors that forget their promises");
}
