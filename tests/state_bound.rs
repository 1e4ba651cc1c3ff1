//! The dataflow's state is bounded by open visits and the shoppers, not by
//! history, except for the walk-ins the join must keep: backfilling four
//! times as many days of the same shoppers needs no more window state, and
//! what the join and the count hold is exactly one entry per walk-in, per
//! device and per (business, contact) — nothing per update.

use std::sync::Arc;

use presence::backfill::{run_with_epochs, Job, Progress};
use presence::harness::generator::{write_files, WorkloadConfig};
use presence::model::summary::Summary;

/// The shoppers of every history.
const DEVICES: u64 = 1_500;

fn backfill_days(days: u64, dir: &std::path::Path) -> Summary {
    let config = WorkloadConfig {
        days,
        devices: DEVICES,
        businesses: 8,
        broken_chance: 0.0,
        ..WorkloadConfig::default()
    };
    let written = write_files(&config, &dir.join(format!("input-{days}"))).unwrap();
    let job = Job {
        probes: written.probes,
        logins: written.logins,
        base_counts: written.base_counts,
        out: dir.join(format!("output-{days}")),
        ..Job::default()
    };
    // Small epochs, so that the bound observed is the operator's, not the read-ahead's.
    let summary = run_with_epochs(
        timely::Config::process(2),
        job,
        Arc::new(Progress::default()),
        512,
    )
    .unwrap();
    assert!(
        summary.accepted[0] > days * 5_000,
        "{days} days should have many probes: {summary:?}"
    );
    summary
}

#[test]
fn state_is_open_visits_and_one_entry_per_walkin_device_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let short = backfill_days(3, dir.path());
    let long = backfill_days(12, dir.path());
    eprintln!("3 days: {short:?}\n12 days: {long:?}");
    assert!(
        long.written["walkins"] > 3 * short.written["walkins"],
        "more days, more walk-ins"
    );
    // Peaks vary with each day's random visits (the busiest of 12 days beats
    // the busiest of 3), but state that grew with history would be 4 times larger.
    assert!(
        long.peak_window_keys <= short.peak_window_keys * 2,
        "open visits grew with history: {} over 3 days, {} over 12",
        short.peak_window_keys,
        long.peak_window_keys
    );
    assert!(
        long.peak_window_timestamps <= short.peak_window_timestamps * 2,
        "held probes grew with history: {} over 3 days, {} over 12",
        short.peak_window_timestamps,
        long.peak_window_timestamps
    );
    // And both are far below the probes read: state is not history.
    assert!(
        long.peak_window_timestamps as u64 * 20 < long.accepted[0],
        "{long:?}"
    );
    // What stays is the walk-ins, one entry each (the output, not its
    // updates), the devices (at most the shoppers) and one count per pair.
    for summary in [&short, &long] {
        assert_eq!(
            summary.held_walkins as u64, summary.written["walkins"],
            "{summary:?}"
        );
        assert_eq!(
            summary.held_counts as u64, summary.written["walkin-counts"],
            "{summary:?}"
        );
        assert!(summary.held_devices as u64 <= DEVICES, "{summary:?}");
        assert!(
            summary.held_devices as u64 >= summary.written["device-contacts"],
            "every device with a contact is held: {summary:?}"
        );
    }
}
