//! How large the latency the harness sees from injected faults is on this
//! machine (`cargo bench --bench harness`): the figures `tests/bench.rs`
//! no longer judges, because they depend on the machine's speed.
//!
//! Alternating rounds (plain, delayed, stalled, plain, ...) of `presence
//! bench`'s harness on the in-process broker, 1,000 records/s for 6 s:
//! - an injected delay of 300 ms on every output: how far it moves the
//!   end-to-end median (ideally by 300 ms) and the in-dataflow median
//!   (ideally not at all: it ends before the sinks);
//! - a 1.5 s stall of every worker 3 s into the schedule: the end-to-end
//!   p99 of each second of the timeline (by due time; ideally high in
//!   seconds 3 and 4 only), and the share of samples above 750 ms (about
//!   15% if every record due in the stall's first 0.75 s waited).
//!
//! Environment: `PRESENCE_BENCH_RUNS` rounds (default 3).

use std::time::Duration;

use presence::harness::bench::{bench, BenchConfig, Report};

mod common;
use common::{cpu_model, env_u64, median, source_version};

fn run(config: BenchConfig) -> Report {
    bench(timely::Config::process(1), config)
        .expect("the harness runs")
        .expect("process 0 reports")
}

fn main() {
    let rounds = env_u64("PRESENCE_BENCH_RUNS", 3);
    println!("# harness: injected delay and stall ({rounds} rounds)");
    println!("cpu: {}; source: {}", cpu_model(), source_version());
    let (mut e2e_shift, mut dataflow_shift, mut above) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let plain = run(BenchConfig::harness_check(Duration::from_secs(6)));
        let delayed = run(BenchConfig {
            delay_outputs: Duration::from_millis(300),
            ..BenchConfig::harness_check(Duration::from_secs(6))
        });
        let stalled = run(BenchConfig {
            stall: Some((Duration::from_secs(3), Duration::from_millis(1_500))),
            ..BenchConfig::harness_check(Duration::from_secs(6))
        });
        let p50 = |r: &Report, name: &str| r.latency_ms[name].p50;
        e2e_shift.push(p50(&delayed, "e2e") - p50(&plain, "e2e"));
        dataflow_shift.push(p50(&delayed, "dataflow") - p50(&plain, "dataflow"));
        let share = stalled.ccdf["e2e"]
            .iter()
            .find(|(ms, _)| *ms >= 750.0)
            .map_or(0.0, |(_, fraction)| *fraction);
        above.push(share);
        let timeline: Vec<String> = stalled
            .timeline
            .iter()
            .map(|s| s.e2e_p99.map_or("-".into(), |p| format!("{p:.0}")))
            .collect();
        println!(
            "round {round}: delay moved the e2e median {:.0} ms, the dataflow median {:.0} ms; \
             stall: {:.1}% of samples above 750 ms, e2e p99 by second [{}] ms; \
             plain e2e p99 {:.0} ms",
            e2e_shift[round as usize],
            dataflow_shift[round as usize],
            share * 100.0,
            timeline.join(", "),
            plain.latency_ms["e2e"].p99,
        );
    }
    println!(
        "median of {rounds}: a 300 ms delay moved the e2e median {:.0} ms and the dataflow median {:.0} ms; \
         a 1.5 s stall put {:.1}% of samples above 750 ms",
        median(e2e_shift),
        median(dataflow_shift),
        median(above) * 100.0
    );
}
