//! The benchmark harness measures what it claims: a delay injected into the
//! pipeline shows up in the end-to-end percentiles (and not in the
//! in-dataflow ones, which end before the sinks), and a stall shows up as
//! latency for every record due during it — not just the one that was
//! blocked (no coordinated omission). Bounds are generous: these check the
//! harness, not the machine's speed.

use std::time::Duration;

use presence::bench::{bench, BenchConfig, Report};
use presence::params::Params;

fn config(duration: Duration) -> BenchConfig {
    BenchConfig {
        rate: 1_000,
        duration,
        warmup: Duration::from_secs(1),
        drain: Duration::from_millis(1_500),
        brokers: None,
        kafka_settings: Default::default(),
        prefix: None,
        devices: 500,
        businesses: 20,
        visit: Duration::from_secs(5),
        partitions: 4,
        linger_ms: 5,
        params: Params {
            session_gap: 2_000,
            min_dwell: 1_000,
            allowed_lateness: 1_000,
            ..Params::default()
        },
        floor: false,
        delay_outputs: Duration::ZERO,
        stall: None,
        workers: 1,
        processes: 1,
        process: 0,
        checkpoint_dir: None,
        checkpoint_interval: Duration::from_secs(10),
    }
}

fn run(config: BenchConfig) -> Report {
    bench(timely::Config::process(1), config)
        .unwrap()
        .expect("process 0 reports")
}

#[test]
fn an_injected_delay_shows_in_end_to_end_latency_only() {
    let plain = run(config(Duration::from_secs(4)));
    let delay = Duration::from_millis(300);
    let delayed = run(BenchConfig {
        delay_outputs: delay,
        ..config(Duration::from_secs(4))
    });
    let (e2e, e2e_delayed) = (&plain.latency_ms["e2e"], &delayed.latency_ms["e2e"]);
    assert!(e2e.count > 100, "{e2e:?}");
    assert!(e2e_delayed.count > 100, "{e2e_delayed:?}");
    let shift = e2e_delayed.p50 - e2e.p50;
    assert!(
        (250.0..=500.0).contains(&shift),
        "a 300 ms delay moved the e2e median by {shift} ms: {e2e:?} -> {e2e_delayed:?}"
    );
    assert!(e2e_delayed.max >= 300.0, "{e2e_delayed:?}");
    // The in-dataflow latency ends before the sinks, where the delay is.
    let dataflow = &delayed.latency_ms["dataflow"];
    assert!(dataflow.count > 1_000, "{dataflow:?}");
    assert!(dataflow.p50 < 150.0, "{dataflow:?}");
    // The report says what was injected.
    assert_eq!(delayed.config["delay_outputs_ms"], 300);
}

#[test]
fn a_stall_shows_as_latency_for_every_record_due_during_it() {
    let stall = Duration::from_millis(1_500);
    let report = run(BenchConfig {
        stall: Some((Duration::from_secs(3), stall)),
        ..config(Duration::from_secs(6))
    });
    let e2e = &report.latency_ms["e2e"];
    assert!(e2e.max >= 1_200.0, "{e2e:?}");
    // Measured from due times, the records due during the 1.5 s stall wait
    // from 1.5 s down to 0: about 0.75 s / 5 s measured = 15% of samples
    // above 750 ms. Measured from send times (coordinated omission), only
    // the few records in flight at the stall would be slow.
    let above = report.ccdf["e2e"]
        .iter()
        .find(|(ms, _)| *ms >= 750.0)
        .map(|(_, fraction)| *fraction)
        .unwrap();
    assert!(above >= 0.05, "{above} of samples above 750 ms: {e2e:?}");
    // The timeline shows latency growing in the stall and recovering after.
    // The stall is timed from the workers' start, the timeline from the
    // load's, which comes up to a second or so later: the stall ends in
    // second 2, 3 or 4 of the timeline, where latency peaks.
    let p99 = |second: usize| report.timeline[second].e2e_p99.unwrap();
    assert!(p99(1) < 500.0, "{:?}", report.timeline);
    let peak = (2..=4).map(p99).fold(0.0, f64::max);
    assert!(peak >= 900.0, "{:?}", report.timeline);
    assert!(p99(5) < 500.0, "{:?}", report.timeline);
}

#[test]
fn the_report_has_every_field_and_a_matching_csv() {
    let report = run(BenchConfig {
        floor: true,
        ..config(Duration::from_secs(3))
    });
    for name in ["e2e", "dataflow", "kafka_floor"] {
        let l = &report.latency_ms[name];
        assert!(l.count > 0, "{name}: {l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    }
    assert!(report.rate_achieved > 900.0, "{}", report.rate_achieved);
    assert_eq!(report.timeline.len(), 3);
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "rate_offered",
        "rate_achieved",
        "latency_ms",
        "config",
        "timeline",
        "ccdf",
    ] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    let csv = report.csv();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), lines[1].len(), "{csv}");
    let column = |name: &str| lines[1][lines[0].iter().position(|h| *h == name).unwrap()];
    assert_eq!(column("rate_offered"), "1000");
    assert_eq!(
        column("kafka_floor_count"),
        report.latency_ms["kafka_floor"].count.to_string()
    );
    // Built in a git checkout, the report names its commit.
    let head = std::process::Command::new("git")
        .args(["-c", "safe.directory=*", "rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(head) = head {
        let short = report.commit.trim_end_matches("-dirty");
        assert!(
            short.len() >= 7 && head.starts_with(short),
            "commit {} of HEAD {head}",
            report.commit
        );
    }
    assert_eq!(column("commit"), report.commit);
}
