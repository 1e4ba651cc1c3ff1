//! Record parser micro-benchmark (`cargo bench --bench parser`).
//!
//! Times, in-process and on lines from the seeded generator
//! ([`presence::harness::generator::Workload`]), the three record parsers
//! (`parse_probe`, `parse_login`, `parse_base_count`) and the whole per-line
//! ingest step (`PartitionIngest::ingest`: parse, validate, the future rule
//! and, for probes, the lateness rule), against two baselines measured in
//! the same run on the same lines:
//!
//! - *byte scan*: counting the `"` bytes of each line, the floor of touching
//!   every byte once;
//! - *`serde_json::Value`*: a generic JSON parse of each line
//!   (`serde_json::from_slice::<serde_json::Value>`).
//!
//! For probes it also times two steps in between, to show where the parser
//! spends its time: UTF-8 validation alone (`std::str::from_utf8`), and the
//! serde deserialisation into a borrowed struct with the same fields and
//! field types as the one `ingest` uses (ids as `Cow<str>`, numbers as
//! `&RawValue`), and into one with plain `u64`/`i64` numbers.
//!
//! Four sets of lines, each one contiguous buffer (as a file reader's):
//! - *probes*: a partition's probe lines in delivery order, as generated
//!   (a few duplicates, stragglers rejected as late and broken lines);
//! - *logins* and *base counts*: the login and base-count lines;
//! - *probes, 10% broken*: probe lines with 10% broken lines and 2%
//!   stragglers, so that a sixth or so of the lines take the rejection path.
//!
//! Every case runs once untimed (warm-up; it also picks how many passes over
//! its set make one repetition last at least `PRESENCE_BENCH_MIN_MS`), then
//! `PRESENCE_BENCH_RUNS` repetitions, interleaved across cases. The table
//! gives the minimum and the median time per line, MB/s (10^6 bytes of line
//! text, without the newline) and lines/s at the minimum, the share of lines
//! a case accepted, and the ratio of its minimum to each baseline's minimum
//! on the same set. "Other load" is the CPU other processes used while the
//! case's repetitions ran (from `/proc`), in cores: a shared machine disturbs
//! the numbers, and the minimum is the least disturbed.
//!
//! Sizing, through the environment:
//!   PRESENCE_BENCH_DEVICES  phones in the generated workload   (default 10000)
//!   PRESENCE_BENCH_DAYS     days of data                        (default 2)
//!   PRESENCE_BENCH_SEED     generator seed                      (default 1)
//!   PRESENCE_BENCH_RUNS     timed repetitions per case          (default 5)
//!   PRESENCE_BENCH_MIN_MS   least duration of one repetition    (default 50)
//!   PRESENCE_BENCH_QUICK=1  (or `-- --quick`) 2000 phones, 1 day, 3 runs
//!   PRESENCE_BENCH_FILTER   time only the functions whose name contains this
//!                           (and the baselines), e.g. to profile one

mod common;
use common::{
    cpu_model, cpu_ticks, env_flag, env_u64, median, source_version, Counted, TICKS_PER_SECOND,
};

use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use presence::harness::generator::{Workload, WorkloadConfig};
use presence::model::ingest::{
    parse_base_count, parse_login, parse_probe, Ingested, Kind, PartitionIngest,
};
use presence::model::params::Params;

/// The allocator the `presence` binary uses: allocation is part of parsing
/// (rejections' strings, `serde_json::Value`'s maps).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Base-count lines to time: the generator writes one per 50 phones, so
/// they come from a workload of 50 times as many phones (only its base
/// counts are generated).
const BASE_COUNT_LINES: u64 = 20_000;

/// Lines stored back to back in one buffer, as a reader holds them.
struct Lines {
    name: &'static str,
    kind: Kind,
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    fn new(name: &'static str, kind: Kind, lines: impl IntoIterator<Item = String>) -> Self {
        let mut text = Vec::new();
        let mut ends = Vec::new();
        for line in lines {
            text.extend_from_slice(line.as_bytes());
            ends.push(text.len());
        }
        Lines {
            name,
            kind,
            text,
            ends,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let line = &self.text[start..end];
            start = end;
            line
        })
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What a case is compared with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Scan,
    Value,
    Measured,
}

/// One timed function over one set of lines; it returns how many lines it
/// accepted (for the scan: how many it read).
struct Case<'a> {
    set: usize,
    name: &'static str,
    role: Role,
    run: Box<dyn Fn(&Lines) -> usize + 'a>,
    passes: u64,
    times: Vec<Duration>,
    accepted: usize,
    other_ticks: u64,
    wall_ticks: f64,
}

// The same shape as `ingest`'s private `RawProbe`: ids borrowed where no
// escape forces a copy, numbers as their raw JSON text.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawProbe<'a> {
    #[serde(borrow)]
    device: Cow<'a, str>,
    #[serde(borrow)]
    business: Cow<'a, str>,
    #[serde(borrow)]
    ts: &'a RawValue,
    #[serde(borrow)]
    rssi: &'a RawValue,
}

// The same with numbers deserialised by serde_json itself.
#[derive(Deserialize)]
#[allow(dead_code)]
struct PlainProbe<'a> {
    #[serde(borrow)]
    device: Cow<'a, str>,
    #[serde(borrow)]
    business: Cow<'a, str>,
    ts: u64,
    rssi: i64,
}

fn time(case: &Case, lines: &Lines, passes: u64) -> (Duration, usize, u64) {
    let before = cpu_ticks(Counted::Own);
    let started = Instant::now();
    let mut accepted = 0;
    for _ in 0..passes {
        accepted = black_box((case.run)(black_box(lines)));
    }
    let elapsed = started.elapsed();
    let after = cpu_ticks(Counted::Own);
    let other = (after.0.saturating_sub(before.0)).saturating_sub(after.1.saturating_sub(before.1));
    (elapsed, accepted, other)
}

fn accepted(ingested: Ingested) -> usize {
    match black_box(ingested) {
        Ingested::Probe(_) | Ingested::Login(_) | Ingested::BaseCount(_) => 1,
        Ingested::Rejected(_) | Ingested::Blank => 0,
    }
}

fn main() {
    let quick = env_flag("PRESENCE_BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
    let devices = env_u64("PRESENCE_BENCH_DEVICES", if quick { 2_000 } else { 10_000 });
    let days = env_u64("PRESENCE_BENCH_DAYS", if quick { 1 } else { 2 });
    let seed = env_u64("PRESENCE_BENCH_SEED", 1);
    let runs = env_u64("PRESENCE_BENCH_RUNS", if quick { 3 } else { 5 }).max(1);
    let min_rep = Duration::from_millis(env_u64("PRESENCE_BENCH_MIN_MS", 50).max(1));
    let filter = std::env::var("PRESENCE_BENCH_FILTER").unwrap_or_default();
    let params = Params::default();

    println!("# presence parser benchmark");
    println!();
    println!(
        "machine: {} logical CPUs available; CPU {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!("source: {}", source_version());
    println!(
        "repetitions: 1 untimed warm-up, then {runs} timed per case (interleaved), \
         each at least {} ms",
        min_rep.as_millis()
    );
    println!();

    // 1. The lines.
    let started = Instant::now();
    let config = WorkloadConfig {
        seed,
        days,
        devices,
        // One partition: probes in one partition's delivery order.
        probe_partitions: 1,
        // Every shopping visit logs in, for enough login lines to time.
        login_chance: 1.0,
        ..WorkloadConfig::default()
    };
    let end_ms = config.start_ms + days * DAY_MS;
    let (mut probes, mut logins) = (Vec::new(), Vec::new());
    for record in Workload::new(config.clone()) {
        match record.kind {
            Kind::Probe => probes.push(record.line),
            Kind::Login => logins.push(record.line),
            Kind::BaseCount => {}
        }
    }
    let base_counts = Workload::new(WorkloadConfig {
        devices: BASE_COUNT_LINES * 50,
        ..config.clone()
    })
    .take(BASE_COUNT_LINES as usize)
    .map(|record| {
        assert_eq!(record.kind, Kind::BaseCount, "base counts come first");
        record.line
    });
    let broken_config = WorkloadConfig {
        days: 1,
        broken_chance: 0.10,
        straggler_chance: 0.02,
        ..config.clone()
    };
    let broken = Workload::new(broken_config.clone())
        .filter(|record| record.kind == Kind::Probe)
        .map(|record| record.line);
    let sets = [
        Lines::new("probes", Kind::Probe, probes),
        Lines::new("logins", Kind::Login, logins),
        Lines::new("base counts", Kind::BaseCount, base_counts),
        Lines::new("probes, 10% broken", Kind::Probe, broken),
    ];
    println!("## lines");
    println!();
    println!(
        "generated in {:.1} s from `WorkloadConfig {{ seed: {seed}, days: {days}, devices: {devices}, \
         probe_partitions: 1, login_chance: 1.0, ..Default }}`; base counts from the same with \
         {} devices (its first {BASE_COUNT_LINES} records); the broken set from the same with \
         days: 1, broken_chance: 0.1, straggler_chance: 0.02",
        started.elapsed().as_secs_f64(),
        BASE_COUNT_LINES * 50,
    );
    println!();
    println!("| set | lines | MB | bytes/line | example |");
    println!("|---|---:|---:|---:|---|");
    for set in &sets {
        println!(
            "| {} | {} | {:.1} | {:.1} | `{}` |",
            set.name,
            set.len(),
            set.text.len() as f64 / 1e6,
            set.text.len() as f64 / set.len() as f64,
            String::from_utf8_lossy(set.iter().next().unwrap_or_default())
        );
    }
    println!();

    // 2. The cases.
    // A fresh partition per pass (its lateness state starts empty), with a
    // wall clock after the workload's last event: nothing is in the future.
    let now = end_ms + DAY_MS;
    let ingest = move |lines: &Lines| {
        let mut partition = PartitionIngest::new(lines.kind, "bench.jsonl", 0, &params);
        lines
            .iter()
            .enumerate()
            .map(|(offset, line)| accepted(partition.ingest(line, offset as u64 + 1, now)))
            .sum()
    };
    let scan = |lines: &Lines| {
        // Counted in `u8`s per 255-byte chunk, which vectorises byte-wide.
        let quotes: usize = lines
            .iter()
            .flat_map(|line| line.chunks(255))
            .map(|chunk| chunk.iter().fold(0u8, |n, &b| n + u8::from(b == b'"')) as usize)
            .sum();
        black_box(quotes);
        lines.len()
    };
    let value = |lines: &Lines| {
        lines
            .iter()
            .filter(|line| black_box(serde_json::from_slice::<serde_json::Value>(line)).is_ok())
            .count()
    };
    let utf8 = |lines: &Lines| {
        lines
            .iter()
            .filter(|line| black_box(std::str::from_utf8(line)).is_ok())
            .count()
    };
    let raw_struct = |lines: &Lines| {
        lines
            .iter()
            .filter(|line| {
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| black_box(serde_json::from_str::<RawProbe>(text)).ok())
                    .is_some()
            })
            .count()
    };
    let plain_struct = |lines: &Lines| {
        lines
            .iter()
            .filter(|line| {
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| black_box(serde_json::from_str::<PlainProbe>(text)).ok())
                    .is_some()
            })
            .count()
    };
    fn count_ok<T, E>(parse: fn(&[u8]) -> Result<T, E>) -> impl Fn(&Lines) -> usize {
        move |lines: &Lines| {
            lines
                .iter()
                .filter(|line| black_box(parse(line)).is_ok())
                .count()
        }
    }
    let mut cases: Vec<Case> = Vec::new();
    let mut add =
        |set: usize, name: &'static str, role: Role, run: Box<dyn Fn(&Lines) -> usize>| {
            if role == Role::Measured && !name.contains(filter.as_str()) {
                return;
            }
            cases.push(Case {
                set,
                name,
                role,
                run,
                passes: 1,
                times: Vec::new(),
                accepted: 0,
                other_ticks: 0,
                wall_ticks: 0.0,
            })
        };
    // probes
    add(0, "byte scan (count `\"`)", Role::Scan, Box::new(scan));
    add(0, "std::str::from_utf8", Role::Measured, Box::new(utf8));
    add(0, "serde_json::Value", Role::Value, Box::new(value));
    add(
        0,
        "serde struct, raw numbers (as ingest)",
        Role::Measured,
        Box::new(raw_struct),
    );
    add(
        0,
        "serde struct, u64/i64 numbers",
        Role::Measured,
        Box::new(plain_struct),
    );
    add(
        0,
        "parse_probe",
        Role::Measured,
        Box::new(count_ok(parse_probe)),
    );
    add(
        0,
        "PartitionIngest::ingest",
        Role::Measured,
        Box::new(ingest),
    );
    // logins
    add(1, "byte scan (count `\"`)", Role::Scan, Box::new(scan));
    add(1, "serde_json::Value", Role::Value, Box::new(value));
    add(
        1,
        "parse_login",
        Role::Measured,
        Box::new(count_ok(parse_login)),
    );
    add(
        1,
        "PartitionIngest::ingest",
        Role::Measured,
        Box::new(ingest),
    );
    // base counts
    add(2, "byte scan (count `\"`)", Role::Scan, Box::new(scan));
    add(2, "serde_json::Value", Role::Value, Box::new(value));
    add(
        2,
        "parse_base_count",
        Role::Measured,
        Box::new(count_ok(parse_base_count)),
    );
    add(
        2,
        "PartitionIngest::ingest",
        Role::Measured,
        Box::new(ingest),
    );
    // probes, 10% broken
    add(3, "byte scan (count `\"`)", Role::Scan, Box::new(scan));
    add(3, "serde_json::Value", Role::Value, Box::new(value));
    add(
        3,
        "parse_probe",
        Role::Measured,
        Box::new(count_ok(parse_probe)),
    );
    add(
        3,
        "PartitionIngest::ingest",
        Role::Measured,
        Box::new(ingest),
    );

    // 3. Warm-up (and how many passes make a repetition), then the runs.
    let started = Instant::now();
    for case in cases.iter_mut() {
        let (elapsed, accepted, _) = time(case, &sets[case.set], 1);
        case.accepted = accepted;
        let per_pass = elapsed.as_secs_f64().max(1e-6);
        case.passes = (min_rep.as_secs_f64() / per_pass).ceil().max(1.0) as u64;
    }
    for _ in 0..runs {
        for case in cases.iter_mut() {
            let (elapsed, accepted, other) = time(case, &sets[case.set], case.passes);
            assert_eq!(
                accepted, case.accepted,
                "{}: same lines, same result",
                case.name
            );
            case.times.push(elapsed);
            case.other_ticks += other;
            case.wall_ticks += elapsed.as_secs_f64() * TICKS_PER_SECOND;
        }
    }
    let measured_in = started.elapsed();

    // 4. The table.
    let per_line = |case: &Case, t: Duration| {
        t.as_secs_f64() / (case.passes as f64 * sets[case.set].len() as f64)
    };
    let best = |case: &Case| per_line(case, *case.times.iter().min().expect("runs >= 1"));
    let baseline = |set: usize, role: Role| {
        cases
            .iter()
            .find(|c| c.set == set && c.role == role)
            .map(best)
            .expect("every set has both baselines")
    };
    println!("## results");
    println!();
    println!(
        "| set | function | ns/line (min) | ns/line (median) | MB/s | lines/s | accepted | vs Value | vs byte scan | other load, cores |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in &cases {
        let lines = &sets[case.set];
        let min = best(case);
        let med = median(case.times.iter().map(|&t| per_line(case, t)).collect());
        let bytes_per_line = lines.text.len() as f64 / lines.len() as f64;
        let ratio = |role: Role, what: &str| {
            if case.role == role {
                format!("(baseline: {what})")
            } else {
                format!("{:.2}x", min / baseline(case.set, role))
            }
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.2} M | {} | {} | {} | {:.2} |",
            lines.name,
            case.name,
            min * 1e9,
            med * 1e9,
            bytes_per_line / min / 1e6,
            1.0 / min / 1e6,
            if case.role == Role::Scan {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * case.accepted as f64 / lines.len() as f64)
            },
            ratio(Role::Value, "Value"),
            ratio(Role::Scan, "scan"),
            case.other_ticks as f64 / case.wall_ticks.max(1.0),
        );
    }
    println!();
    println!(
        "ns/line = repetition time / (passes x lines); MB/s and lines/s at the minimum; \
         MB = 10^6 bytes of line text. accepted = lines the function returned Ok for (for \
         ingest: accepted records; the rest are rejected as malformed or late). Ratios are \
         of minimums on the same set. Timed part: {:.1} s.",
        measured_in.as_secs_f64()
    );
    println!();

    println!("## commands");
    println!();
    println!(
        "    PRESENCE_BENCH_DEVICES={devices} PRESENCE_BENCH_DAYS={days} PRESENCE_BENCH_SEED={seed} \
         PRESENCE_BENCH_RUNS={runs} PRESENCE_BENCH_MIN_MS={} cargo bench --bench parser",
        min_rep.as_millis()
    );
    println!();
}
