//! Session-window micro-benchmark (`cargo bench --bench window`).
//!
//! Times the state of the `SessionWindows` operator,
//! [`presence::dataflow::operators::windows::Windows`], driven directly (no timely):
//! the probe stream of a generated workload arrives in epochs of
//! `PRESENCE_BENCH_BATCH` input lines, as `backfill` cuts them; each epoch's
//! probes go through `Windows::apply` (every emitted change is cloned into
//! an output buffer, as the operator's output session does), then
//! `Windows::advance` to the partition's watermark (high-water mark minus the
//! allowed lateness, as `backfill` promises it), and at the end
//! `advance(u64::MAX)`, as the operator does when its inputs close.
//!
//! The stream is what the operator sees in a one-worker backfill: the probe
//! lines of a [`Workload`] with one probe partition (delivery order: up to
//! 30 s of reordering, 0.2% duplicates, stragglers), through
//! `PartitionIngest` (late and malformed lines dropped) and the `rssi`
//! filter, as `((business, device), ts)` with the crate's inline [`Id`]s.
//! Preparing it (generating, parsing) is not timed.
//!
//! Two baselines run on the same stream in the same run:
//! - *hash only*: iterate the epochs and hash every key (foldhash, as the
//!   operator's map): the floor of touching each probe and its key once;
//! - *naive*: a `HashMap<(business, device), Vec<ts>>`, push every probe,
//!   then sort and dedup each key's timestamps and count the walk-ins of the
//!   sorted list. This computes the same final walk-ins (the bench checks
//!   that the counts agree), but only once at the end — it emits nothing
//!   incrementally — and it holds every key and timestamp ever seen.
//!
//! Each repetition starts from fresh state and a fresh copy of the input
//! (made outside the timer, so the timed code consumes its input by value
//! as the operator does). One untimed warm-up round, then
//! `PRESENCE_BENCH_RUNS` rounds (more for small streams, so that each case
//! runs at least about half a second in all), interleaved across cases; the
//! table gives the minimum and the median. Peak keys and timestamps are
//! `Windows::stats()` (for the naive map: its final size, which is its
//! peak). "Other load" is the CPU other processes used during a group's
//! timed rounds (from `/proc`), in cores.
//!
//! Epochs are cut by input lines, so at a fixed epoch size a smaller
//! workload spans fewer epochs, each covering more event time: the peak
//! state reflects the epoch size as much as the number of devices. A second
//! table therefore varies the epoch size at one device count: `backfill`
//! uses 64 Ki lines, while `run` closes an epoch every millisecond, so live
//! epochs are small; and `apply` recomputes the windows of every key an
//! epoch touches, so small epochs cost more per probe.
//!
//! Sizing, through the environment:
//!   PRESENCE_BENCH_DEVICES  phones, a comma-separated list (default 1000,10000,100000)
//!   PRESENCE_BENCH_DAYS     days of data                    (default 2)
//!   PRESENCE_BENCH_SEED     generator seed                  (default 1)
//!   PRESENCE_BENCH_BATCH    input lines per epoch           (default backfill's EPOCH_LINES)
//!   PRESENCE_BENCH_BATCHES  epoch sizes of the second table (default 16,256,4096,65536)
//!   PRESENCE_BENCH_BATCH_DEVICES phones for the second table (default 10000; 0 skips it)
//!   PRESENCE_BENCH_RUNS     timed rounds, at least          (default 5)
//!   PRESENCE_BENCH_QUICK=1  (or `-- --quick`) 1000 and 10000 phones, 1 day, 3 runs

mod common;
use common::{
    cpu_model, cpu_ticks, env_flag, env_u64, median, source_version, Counted, TICKS_PER_SECOND,
};

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use presence::backfill::EPOCH_LINES;
use presence::dataflow::operators::windows::{Window, WindowConfig, Windows};
use presence::harness::generator::{Workload, WorkloadConfig};
use presence::model::ingest::{Ingested, Kind, PartitionIngest};
use presence::model::params::Params;
use presence::model::records::{EventTime, Id};

/// The allocator the `presence` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The operator's key: `(business, device)`.
type Key = (Id, Id);
type Batches = Vec<Vec<(Key, EventTime)>>;

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a list of whole numbers"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// The probe stream the window operator sees, and where its epochs end.
struct Stream {
    /// Accepted probes above the `rssi` threshold, in delivery order.
    probes: Vec<(Key, EventTime)>,
    /// Per input line: the probes up to and including it, and the
    /// partition's watermark after it.
    lines: Vec<(usize, Option<EventTime>)>,
    /// Distinct `(business, device)` keys.
    keys: usize,
}

impl Stream {
    fn generate(devices: u64, days: u64, seed: u64, params: &Params) -> Stream {
        let config = WorkloadConfig {
            seed,
            days,
            devices,
            probe_partitions: 1,
            ..WorkloadConfig::default()
        };
        let now = config.start_ms + (days + 1) * DAY_MS;
        let mut ingest = PartitionIngest::new(Kind::Probe, "probes-0.jsonl", 0, params);
        let mut probes = Vec::new();
        let mut lines = Vec::new();
        let records = Workload::new(config).filter(|record| record.kind == Kind::Probe);
        for (offset, record) in records.enumerate() {
            if let Ingested::Probe(probe) =
                ingest.ingest(record.line.as_bytes(), offset as u64, now)
            {
                if probe.rssi >= params.rssi_min {
                    probes.push(((probe.business, probe.device), probe.ts));
                }
            }
            lines.push((probes.len(), ingest.watermark()));
        }
        let keys = probes
            .iter()
            .map(|(key, _)| key)
            .collect::<std::collections::HashSet<_>>()
            .len();
        Stream {
            probes,
            lines,
            keys,
        }
    }

    /// The epochs of `batch` input lines: probe ranges and the watermark
    /// promised at the end of each.
    fn epochs(&self, batch: usize) -> Vec<(Range<usize>, Option<EventTime>)> {
        let mut start = 0;
        self.lines
            .chunks(batch.max(1))
            .map(|chunk| {
                let &(end, watermark) = chunk.last().expect("chunks are not empty");
                let range = start..end;
                start = end;
                (range, watermark)
            })
            .collect()
    }

    fn batches(&self, epochs: &[(Range<usize>, Option<EventTime>)]) -> Batches {
        epochs
            .iter()
            .map(|(range, _)| self.probes[range.clone()].to_vec())
            .collect()
    }
}

/// What one run of a case computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Walk-ins at the end (net of retractions).
    walkins: i64,
    /// Output changes emitted (insertions and retractions).
    changes: u64,
    peak_keys: usize,
    peak_timestamps: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Algo {
    HashOnly,
    Naive,
    Windows,
}

struct Case {
    name: String,
    algo: Algo,
    epochs: Vec<(Range<usize>, Option<EventTime>)>,
    times: Vec<Duration>,
    outcome: Outcome,
}

impl Case {
    fn new(name: impl Into<String>, algo: Algo, stream: &Stream, batch: usize) -> Case {
        Case {
            name: name.into(),
            algo,
            epochs: stream.epochs(batch),
            times: Vec::new(),
            outcome: Outcome::default(),
        }
    }

    fn best(&self) -> Duration {
        *self.times.iter().min().expect("at least one timed run")
    }
}

fn hash_only(batches: Batches) -> Outcome {
    let hasher = foldhash::fast::FixedState::with_seed(1);
    let mut acc = 0u64;
    for batch in batches {
        for (key, ts) in batch {
            acc = acc.wrapping_add(hasher.hash_one(&key) ^ ts);
        }
    }
    black_box(acc);
    Outcome::default()
}

/// The walk-ins of one key's sorted, distinct timestamps (docs/contract.md, section 2).
fn walkins_of(ts: &[EventTime], config: &WindowConfig) -> i64 {
    let mut walkins = 0;
    let mut start = 0;
    for end in 1..=ts.len() {
        if end == ts.len() || ts[end] - ts[end - 1] > config.session_gap {
            let visit = &ts[start..end];
            if visit.len() as u64 >= config.min_probes
                && visit[visit.len() - 1] - visit[0] >= config.min_dwell
            {
                walkins += 1;
            }
            start = end;
        }
    }
    walkins
}

fn naive(batches: Batches, config: &WindowConfig) -> Outcome {
    let mut map: HashMap<Key, Vec<EventTime>, foldhash::fast::RandomState> = HashMap::default();
    for batch in batches {
        for (key, ts) in batch {
            map.entry(key).or_default().push(ts);
        }
    }
    let mut outcome = Outcome {
        peak_keys: map.len(),
        ..Outcome::default()
    };
    for ts in map.values_mut() {
        ts.sort_unstable();
        ts.dedup();
        outcome.peak_timestamps += ts.len();
        outcome.walkins += walkins_of(ts, config);
    }
    outcome.changes = outcome.walkins as u64;
    drop(black_box(map));
    outcome
}

fn windows(
    batches: Batches,
    epochs: &[(Range<usize>, Option<EventTime>)],
    config: WindowConfig,
) -> Outcome {
    let mut windows = Windows::new(config);
    let mut out: Vec<(Key, Window, isize)> = Vec::new();
    let mut outcome = Outcome::default();
    for (batch, (_, watermark)) in batches.into_iter().zip(epochs) {
        windows.apply(batch, |key, window, diff| {
            out.push((key.clone(), window, diff))
        });
        outcome.changes += out.len() as u64;
        outcome.walkins += out.iter().map(|(_, _, diff)| *diff as i64).sum::<i64>();
        black_box(&mut out).clear();
        if let Some(watermark) = watermark {
            windows.advance(*watermark);
        }
    }
    windows.advance(EventTime::MAX);
    let stats = windows.stats();
    assert_eq!(stats.keys, 0, "advancing to the end frees every key");
    outcome.peak_keys = stats.peak_keys;
    outcome.peak_timestamps = stats.peak_timestamps;
    outcome
}

/// Runs `case` once on a fresh copy of the input; `timed` adds the result
/// to its times.
fn run(case: &mut Case, stream: &Stream, config: WindowConfig, timed: bool) {
    let batches = stream.batches(&case.epochs);
    let started = Instant::now();
    let outcome = match case.algo {
        Algo::HashOnly => hash_only(batches),
        Algo::Naive => naive(batches, &config),
        Algo::Windows => windows(batches, &case.epochs, config),
    };
    let elapsed = started.elapsed();
    if timed {
        assert_eq!(
            outcome, case.outcome,
            "{}: same input, same result",
            case.name
        );
        case.times.push(elapsed);
    } else {
        case.outcome = outcome;
    }
}

/// A warm-up round, then at least `runs` rounds (more if a round is short),
/// interleaved across `cases`. Returns the CPU other processes used during
/// the timed rounds, in cores.
fn measure(cases: &mut [Case], stream: &Stream, config: WindowConfig, runs: u64) -> f64 {
    let started = Instant::now();
    for case in cases.iter_mut() {
        run(case, stream, config, false);
    }
    // Aim for about half a second per case in all, at most 50 rounds.
    let round = started.elapsed().as_secs_f64() / cases.len() as f64;
    let rounds = ((0.5 / round.max(1e-6)).ceil() as u64).clamp(runs, runs.max(50));
    let (before, started) = (cpu_ticks(Counted::Own), Instant::now());
    for _ in 0..rounds {
        for case in cases.iter_mut() {
            run(case, stream, config, true);
        }
    }
    let (after, wall) = (cpu_ticks(Counted::Own), started.elapsed().as_secs_f64());
    let other_ticks =
        (after.0.saturating_sub(before.0)).saturating_sub(after.1.saturating_sub(before.1));
    let walkins = cases
        .iter()
        .find(|c| c.algo == Algo::Naive)
        .map(|c| c.outcome.walkins);
    for case in cases.iter() {
        if case.algo == Algo::Windows {
            assert_eq!(
                Some(case.outcome.walkins),
                walkins,
                "{}: the operator's walk-ins and the naive count agree",
                case.name
            );
        }
    }
    other_ticks as f64 / TICKS_PER_SECOND / wall.max(1e-3)
}

fn main() {
    let quick = env_flag("PRESENCE_BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
    let device_counts = env_list(
        "PRESENCE_BENCH_DEVICES",
        if quick {
            &[1_000, 10_000]
        } else {
            &[1_000, 10_000, 100_000]
        },
    );
    let days = env_u64("PRESENCE_BENCH_DAYS", if quick { 1 } else { 2 });
    let seed = env_u64("PRESENCE_BENCH_SEED", 1);
    let batch = env_u64("PRESENCE_BENCH_BATCH", EPOCH_LINES).max(1) as usize;
    let batch_sizes = env_list("PRESENCE_BENCH_BATCHES", &[16, 256, 4096, 65536]);
    let batch_devices = env_u64("PRESENCE_BENCH_BATCH_DEVICES", 10_000);
    let runs = env_u64("PRESENCE_BENCH_RUNS", if quick { 3 } else { 5 }).max(1);
    let params = Params::default();
    let config = WindowConfig {
        session_gap: params.session_gap,
        min_dwell: params.min_dwell,
        min_probes: params.min_probes,
    };

    println!("# presence session-window benchmark");
    println!();
    println!(
        "machine: {} logical CPUs available; CPU {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!("source: {}", source_version());
    println!(
        "parameters: the defaults (session gap {} s, min dwell {} s, min probes {}, \
         allowed lateness {} s, rssi >= {}); epochs of {batch} input lines",
        config.session_gap / 1000,
        config.min_dwell / 1000,
        config.min_probes,
        params.allowed_lateness / 1000,
        params.rssi_min
    );
    println!(
        "workload: `WorkloadConfig {{ seed: {seed}, days: {days}, devices: N, probe_partitions: 1, \
         ..Default }}` (40 businesses)"
    );
    println!(
        "repetitions: 1 untimed warm-up round, then at least {runs} rounds (interleaved), fresh \
         state and input each"
    );
    println!();

    let started = Instant::now();
    let mut rows = Vec::new();
    for &devices in &device_counts {
        let prepared = Instant::now();
        let stream = Stream::generate(devices, days, seed, &params);
        let prepare = prepared.elapsed();
        let mut cases = vec![
            Case::new("hash only", Algo::HashOnly, &stream, batch),
            Case::new(
                "naive HashMap<key, Vec<ts>> + sort",
                Algo::Naive,
                &stream,
                batch,
            ),
            Case::new("Windows (operator state)", Algo::Windows, &stream, batch),
        ];
        let other = measure(&mut cases, &stream, config, runs);
        eprintln!(
            "{devices} devices: {} probes prepared in {:.1} s, measured in {:.1} s",
            stream.probes.len(),
            prepare.as_secs_f64(),
            (prepared.elapsed() - prepare).as_secs_f64()
        );
        rows.push((devices, stream.probes.len(), stream.keys, cases, other));
    }

    println!("## by number of devices");
    println!();
    println!(
        "| devices | probes | keys | epochs | implementation | ms (min) | ns/probe (min) | ns/probe (median) | probes/s | peak keys | peak timestamps | walk-ins | vs hash only | vs naive | runs | other load, cores |"
    );
    println!("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (devices, probes, keys, cases, other) in &rows {
        let baseline = |algo: Algo| {
            cases
                .iter()
                .find(|c| c.algo == algo)
                .map(Case::best)
                .expect("both baselines run")
        };
        for case in cases {
            let best = case.best().as_secs_f64();
            let per_probe = |t: f64| t / *probes as f64 * 1e9;
            let ratio = |algo: Algo| {
                if case.algo == algo {
                    "(baseline)".to_string()
                } else {
                    format!("{:.2}x", best / baseline(algo).as_secs_f64())
                }
            };
            let (peak_keys, peak_ts, walkins) = match case.algo {
                Algo::HashOnly => ("-".into(), "-".into(), "-".into()),
                _ => (
                    case.outcome.peak_keys.to_string(),
                    case.outcome.peak_timestamps.to_string(),
                    case.outcome.walkins.to_string(),
                ),
            };
            println!(
                "| {devices} | {probes} | {keys} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} M | {peak_keys} | {peak_ts} | {walkins} | {} | {} | {} | {other:.2} |",
                case.epochs.len(),
                case.name,
                best * 1e3,
                per_probe(best),
                per_probe(median(case.times.iter().map(|t| t.as_secs_f64()).collect())),
                *probes as f64 / best / 1e6,
                ratio(Algo::HashOnly),
                ratio(Algo::Naive),
                case.times.len(),
            );
        }
    }
    println!();
    println!(
        "keys = distinct (business, device) pairs in the stream. Peak keys/timestamps: for \
         Windows, the largest state `Windows::stats()` saw (checked after every apply and \
         advance); for the naive map, its final size (all keys, all distinct timestamps). \
         walk-ins: net walk-ins at the end (the two must agree; the bench checks it). \
         Ratios are of minimums. epochs: how many `apply` + `advance` steps the \
         stream took (the naive map ignores them). Other load: CPU used by other processes \
         during this group's timed rounds."
    );
    println!();

    if batch_devices > 0 && !batch_sizes.is_empty() {
        let stream = Stream::generate(batch_devices, days, seed, &params);
        let mut cases = vec![Case::new(
            "naive HashMap<key, Vec<ts>> + sort",
            Algo::Naive,
            &stream,
            batch,
        )];
        for &b in &batch_sizes {
            cases.push(Case::new(
                format!("Windows, epochs of {b} lines"),
                Algo::Windows,
                &stream,
                b as usize,
            ));
        }
        let other = measure(&mut cases, &stream, config, runs);
        let naive = cases[0].best().as_secs_f64();
        let probes = stream.probes.len();
        println!("## by epoch size ({batch_devices} devices, {probes} probes)");
        println!();
        println!(
            "| implementation | epochs | probes/epoch | ns/probe (min) | ns/probe (median) | probes/s | output changes | peak keys | peak timestamps | vs naive | other load, cores |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for case in &cases {
            let best = case.best().as_secs_f64();
            let epochs = case.epochs.len();
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.1} | {:.2} M | {} | {} | {} | {} | {other:.2} |",
                case.name,
                if case.algo == Algo::Naive {
                    "-".to_string()
                } else {
                    epochs.to_string()
                },
                if case.algo == Algo::Naive {
                    probes as f64
                } else {
                    probes as f64 / epochs as f64
                },
                best / probes as f64 * 1e9,
                median(case.times.iter().map(|t| t.as_secs_f64()).collect()) / probes as f64 * 1e9,
                probes as f64 / best / 1e6,
                case.outcome.changes,
                case.outcome.peak_keys,
                case.outcome.peak_timestamps,
                if case.algo == Algo::Naive {
                    "(baseline)".to_string()
                } else {
                    format!("{:.2}x", best / naive)
                },
            );
        }
        println!();
        println!(
            "output changes: insertions plus retractions the operator emitted (a probe that \
             arrives out of order and changes a visit's detection retracts and corrects it)."
        );
        println!();
    }

    println!("total {:.1} s", started.elapsed().as_secs_f64());
    println!();
    println!("## commands");
    println!();
    println!(
        "    PRESENCE_BENCH_DEVICES={} PRESENCE_BENCH_DAYS={days} PRESENCE_BENCH_SEED={seed} \
         PRESENCE_BENCH_BATCH={batch} PRESENCE_BENCH_BATCHES={} PRESENCE_BENCH_BATCH_DEVICES={batch_devices} \
         PRESENCE_BENCH_RUNS={runs} cargo bench --bench window",
        device_counts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        batch_sizes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    println!();
}
