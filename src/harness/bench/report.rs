//! What one point measured: the report (`--json`), its CSV row, and how it
//! is made from the harness's samples.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::config::BenchConfig;
use super::samples::{wall_us, Samples};
use crate::kafka;
use crate::observe::metrics::latency_histogram as histogram;
use crate::observe::metrics::{Metrics, STORE_OPS};

/// The latencies a report holds, and what each measures.
pub const LATENCIES: [(&str, &str); 5] = [
    (
        "e2e",
        "a probe's due time -> the walk-in it triggered is readable in the walk-ins topic (fetched by the harness's consumer)",
    ),
    (
        "e2e_input",
        "the due time -> the pipeline read the probe (generator, producer, broker, the pipeline's consumer)",
    ),
    (
        "e2e_output",
        "the pipeline read the probe -> the walk-in is readable (dataflow, upsert sink, broker, harness's consumer)",
    ),
    (
        "dataflow",
        "a probe given to the dataflow -> the dataflow's outputs pass its time (before the Kafka sinks)",
    ),
    (
        "kafka_floor",
        "the same schedule through one topic of the same broker and client settings, no dataflow",
    ),
];

/// Percentiles of one latency, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    /// The smallest sample.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest sample.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Latency {
    /// The percentiles of `h` (all zero when it is empty).
    pub(super) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            min: ms(h.min()),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }

    /// Its figures by name, in the CSV's column order.
    fn columns(&self) -> [(&'static str, f64); 7] {
        [
            ("min", self.min),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p999", self.p999),
            ("max", self.max),
            ("count", self.count as f64),
        ]
    }
}

/// One second of the run (by due time).
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    /// Seconds since the start.
    pub t_s: u64,
    /// Input records the broker acknowledged in this second.
    pub acked: u64,
    /// End-to-end samples due in this second.
    pub e2e_count: u64,
    /// Their median (ms).
    pub e2e_p50: Option<f64>,
    /// Their 99th percentile (ms).
    pub e2e_p99: Option<f64>,
    /// Their largest (ms).
    pub e2e_max: Option<f64>,
    /// The 99th percentile of the part of those samples before the pipeline read the probe (ms).
    pub input_p99: Option<f64>,
    /// The 99th percentile of the part after (ms).
    pub output_p99: Option<f64>,
    /// This process's resident memory at the end of the second (MiB).
    pub rss_mib: Option<f64>,
    /// Consumer lag of process 0's input partitions (records).
    pub lag: Option<i64>,
}

/// What one point measured: the JSON the `--json` file holds.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Format version.
    pub version: u32,
    /// The git commit of the working directory, if any.
    pub commit: String,
    /// When (UTC, seconds since the epoch).
    pub unix_time: u64,
    /// The machine.
    pub machine: serde_json::Value,
    /// Every parameter of the point.
    pub config: serde_json::Value,
    /// Offered records per second.
    pub rate_offered: u64,
    /// Input records per second the broker acknowledged within the duration.
    pub rate_achieved: f64,
    /// The latencies.
    pub latency_ms: BTreeMap<&'static str, Latency>,
    /// Consumer lag of process 0's input partitions when the generator stopped.
    pub lag_end: i64,
    /// See the module docs of [`crate::harness::bench`].
    pub sustainable: bool,
    /// Peak resident memory of process 0 (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Per second, by due time.
    pub timeline: Vec<Second>,
    /// Per latency: `[ms, fraction of samples above]`, log-spaced.
    pub ccdf: BTreeMap<&'static str, Vec<(f64, f64)>>,
    /// With `--checkpoint-dir`: checkpoints completed, failed, and the bytes
    /// of pieces written by process 0 (per checkpoint, on average), and the
    /// size of the last one; process 0's requests to the checkpoint store by
    /// operation, in all (`store`) and per checkpoint completed
    /// (`store_per_checkpoint`).
    pub checkpoints: Option<serde_json::Value>,
    /// With `--query-rate`: the point queries' figures.
    pub queries: Option<QueryFigures>,
}

/// What the point queries of `--query-rate` measured (those due after the
/// warm-up).
#[derive(Clone, Debug, Serialize)]
pub struct QueryFigures {
    /// Offered queries per second.
    pub rate_offered: u64,
    /// Queries per second answered with 200.
    pub rate_answered: f64,
    /// Queries due in the measured window.
    pub offered: u64,
    /// Of those, answered with 200.
    pub answered: u64,
    /// Of those, not answered or not with 200.
    pub failed: u64,
    /// From a query's due time to its answer's last byte.
    pub latency_ms: Latency,
}

/// What the open-loop schedule measured through the pipeline, for its report.
pub(super) struct Measured {
    /// The end-to-end samples the harness's consumer took.
    pub(super) samples: Samples,
    /// Input records the broker acknowledged, per second since the start.
    pub(super) acked: Arc<Vec<AtomicU64>>,
    /// This process's resident memory (MiB) and the consumer lag, at the
    /// end of every second of the schedule.
    pub(super) per_second: Vec<(Option<f64>, i64)>,
    /// Input records per second the broker acknowledged within the duration.
    pub(super) achieved: f64,
    /// Consumer lag when the generator stopped.
    pub(super) lag_end: i64,
}

impl Report {
    /// The report of a run of `config`: what the harness `measured`, the
    /// in-dataflow latency the workers of process 0 recorded, the floor if
    /// it was measured, and the checkpoints' figures from `metrics`.
    pub(super) fn new(
        config: &BenchConfig,
        measured: &Measured,
        dataflow: &Histogram<u64>,
        floor: Option<&Histogram<u64>>,
        metrics: &Metrics,
    ) -> Self {
        let timeline = timeline(config, measured);
        let sustainable = measured.achieved >= 0.95 * config.rate as f64
            && (measured.lag_end as f64) <= config.rate as f64 / 2.0
            && !growing(config, &measured.samples);
        Report {
            version: 1,
            commit: commit(),
            unix_time: wall_us() / 1_000_000,
            machine: serde_json::json!({
                "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "os": std::env::consts::OS,
            }),
            config: config_json(config),
            rate_offered: config.rate,
            rate_achieved: measured.achieved,
            latency_ms: latencies(&measured.samples, dataflow, floor),
            lag_end: measured.lag_end,
            sustainable,
            peak_rss_mib: peak_rss_mib(),
            timeline,
            ccdf: ccdfs(&measured.samples, dataflow, floor),
            checkpoints: config.checkpoint_dir.as_ref().map(|_| checkpoints(metrics)),
            queries: None,
        }
    }

    /// One CSV header line and one row: every parameter and percentile.
    pub fn csv(&self) -> String {
        let c = &self.config;
        let mut header = vec![
            "commit",
            "rate_offered",
            "rate_achieved",
            "workers",
            "processes",
            "broker",
            "devices",
            "duration_s",
            "warmup_s",
            "linger_ms",
            "tick_ms",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        let mut row = vec![
            self.commit.clone(),
            self.rate_offered.to_string(),
            format!("{:.1}", self.rate_achieved),
            c["workers"].to_string(),
            c["processes"].to_string(),
            c["broker"].as_str().unwrap_or("").to_owned(),
            c["devices"].to_string(),
            c["duration_s"].to_string(),
            c["warmup_s"].to_string(),
            c["linger_ms"].to_string(),
            c["tick_ms"].to_string(),
        ];
        // Every latency's columns, whether measured or not (so that the
        // rows of several points line up); one not measured (the floor
        // with --no-floor) is empty, not zero.
        for (name, _) in LATENCIES {
            let measured = self.latency_ms.get(name);
            for (field, value) in measured.cloned().unwrap_or_default().columns() {
                header.push(format!("{name}_{field}"));
                row.push(measured.map_or(String::new(), |_| format!("{value}")));
            }
        }
        header.extend(["lag_end", "sustainable", "peak_rss_mib"].map(String::from));
        row.push(self.lag_end.to_string());
        row.push(self.sustainable.to_string());
        row.push(
            self.peak_rss_mib
                .map_or(String::new(), |m| format!("{m:.1}")),
        );
        format!("{}\n{}\n", header.join(","), row.join(","))
    }
}

/// Every latency's percentiles: end-to-end (and its two parts), dataflow,
/// and the floor if it was measured.
fn latencies(
    samples: &Samples,
    dataflow: &Histogram<u64>,
    floor: Option<&Histogram<u64>>,
) -> BTreeMap<&'static str, Latency> {
    let mut latency_ms = BTreeMap::from([
        ("e2e", Latency::of(&samples.total)),
        ("dataflow", Latency::of(dataflow)),
    ]);
    latency_ms.insert("e2e_input", Latency::of(&samples.input));
    latency_ms.insert("e2e_output", Latency::of(&samples.output));
    if let Some(floor) = floor {
        latency_ms.insert("kafka_floor", Latency::of(floor));
    }
    latency_ms
}

/// The CCDFs of the end-to-end and dataflow latencies, and of the floor
/// if it was measured.
fn ccdfs(
    samples: &Samples,
    dataflow: &Histogram<u64>,
    floor: Option<&Histogram<u64>>,
) -> BTreeMap<&'static str, Vec<(f64, f64)>> {
    let mut ccdfs = BTreeMap::from([("e2e", ccdf(&samples.total)), ("dataflow", ccdf(dataflow))]);
    if let Some(floor) = floor {
        ccdfs.insert("kafka_floor", ccdf(floor));
    }
    ccdfs
}

/// One [`Second`] per second of the duration, by due time.
fn timeline(config: &BenchConfig, measured: &Measured) -> Vec<Second> {
    let samples = &measured.samples;
    let per_second = &measured.per_second;
    let p99 =
        |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0);
    (0..config.duration.as_secs() as usize)
        .map(|s| {
            let h = &samples.seconds[s];
            let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
            Second {
                t_s: s as u64,
                acked: measured.acked[s].load(Ordering::Relaxed),
                e2e_count: h.len(),
                e2e_p50: q(0.5),
                e2e_p99: q(0.99),
                e2e_max: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
                input_p99: p99(&samples.input_seconds[s]),
                output_p99: p99(&samples.output_seconds[s]),
                rss_mib: per_second.get(s).and_then(|p| p.0),
                lag: per_second.get(s).map(|p| p.1),
            }
        })
        .collect()
}

/// What "sustainable" means, as the summary states it.
pub const SUSTAINABLE: &str =
    "achieved at least 95% of the offered rate, at most half a second of \
     input (rate / 2 records) not yet read at the end, and the end-to-end median of the last third \
     of the measurement at most 1.5 x that of the first third + 10 ms";

/// Whether the end-to-end latency kept growing over the measurement.
fn growing(config: &BenchConfig, samples: &Samples) -> bool {
    // Latency must not keep growing: compare the medians of the first and
    // last thirds of the measurement (medians: a one-off spike that clears
    // is not a growing backlog).
    let warm = config.warmup.as_secs() as usize;
    let measured = samples.seconds.len().saturating_sub(1);
    let third = measured.saturating_sub(warm) / 3;
    let median_of = |range: std::ops::Range<usize>| {
        let mut h = histogram();
        for s in range {
            if let Some(second) = samples.seconds.get(s) {
                h.add(second).expect("same bounds");
            }
        }
        (!h.is_empty()).then(|| h.value_at_quantile(0.5) as f64 / 1000.0)
    };
    match (
        median_of(warm..warm + third.max(1)),
        median_of(measured - third.max(1)..measured),
    ) {
        (Some(first), Some(last)) => last > 1.5 * first + 10.0,
        _ => true, // no samples: nothing shown sustainable
    }
}

/// Every parameter of the point, as the report's `config` holds them.
fn config_json(config: &BenchConfig) -> serde_json::Value {
    let p = &config.params;
    serde_json::json!({
        "rate_offered": config.rate,
        "duration_s": config.duration.as_secs_f64(),
        "warmup_s": config.warmup.as_secs_f64(),
        "drain_s": config.drain.as_secs_f64(),
        "workers": config.workers,
        "processes": config.processes,
        "broker": config.brokers.clone().unwrap_or_else(|| "in-process".into()),
        "devices": config.devices,
        "businesses": config.businesses,
        "visit_s": config.visit.as_secs_f64(),
        "probe_partitions": config.partitions,
        "linger_ms": config.linger_ms,
        "pipeline_linger_ms": kafka::PRODUCER_LINGER_MS,
        // Not set by presence: librdkafka's defaults for every producer.
        "batch_num_messages": 10_000,
        "batch_size_bytes": 1_000_000,
        "fetch_wait_max_ms": kafka::FETCH_WAIT_MAX_MS,
        "tick_ms": 1,
        "floor": config.floor,
        "checkpoint_dir": config.checkpoint_dir.as_ref().map(|d| d.to_string()),
        "checkpoint_interval_s": config.checkpoint_interval.as_secs_f64(),
        "delay_outputs_ms": config.delay_outputs.as_millis() as u64,
        "stall": config.stall.map(|(a, l)| [a.as_secs_f64(), l.as_secs_f64()]),
        "params": {
            "rssi_min": p.rssi_min,
            "session_gap_ms": p.session_gap,
            "min_dwell_ms": p.min_dwell,
            "min_probes": p.min_probes,
            "allowed_lateness_ms": p.allowed_lateness,
            "max_future_ms": p.max_future,
        },
    })
}

/// With `--checkpoint-dir`: the checkpoints' figures from `metrics`.
///
/// `store` holds every request to the checkpoint store by operation (every
/// one of [`STORE_OPS`], zeros included): the run's start (the write check,
/// the listing, the claim) and its final checkpoint count too, as do merges
/// (a `get` of every piece and a `put` of the merged one) and pruning (a
/// `list`, a `get` of every manifest, the `delete`s). `store_per_checkpoint`
/// is each operation's requests and bytes divided by the checkpoints
/// completed: what a checkpoint costs in the store, start-up included.
fn checkpoints(metrics: &Metrics) -> serde_json::Value {
    let c = metrics.read(|f| f.checkpoints.clone());
    let per_checkpoint = |total: u64| total as f64 / c.completed.max(1) as f64;
    let mut store = serde_json::Map::new();
    let mut store_per_checkpoint = serde_json::Map::new();
    for op in STORE_OPS {
        let s = c.store.get(op).copied().unwrap_or_default();
        store.insert(
            op.to_owned(),
            serde_json::json!({
                "requests": s.requests,
                "bytes": s.bytes,
                "errors": s.errors,
                "retries": s.retries,
            }),
        );
        store_per_checkpoint.insert(
            op.to_owned(),
            serde_json::json!({
                "requests": per_checkpoint(s.requests),
                "bytes": per_checkpoint(s.bytes),
            }),
        );
    }
    serde_json::json!({
        "completed": c.completed,
        "failures": c.failures,
        "bytes_written": c.bytes_written,
        "bytes_per_checkpoint": per_checkpoint(c.bytes_written),
        "last_size_bytes": c.bytes,
        "last_duration_s": c.last_duration_seconds,
        "store": store,
        "store_per_checkpoint": store_per_checkpoint,
    })
}

/// The samples of `h` above each of log-spaced latencies: `[ms, fraction
/// of samples above]`.
fn ccdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    if h.is_empty() {
        return points;
    }
    let total = h.len() as f64;
    // 20 points per decade from 10 µs to the maximum.
    let mut us = 10.0f64;
    while us <= h.max() as f64 * 1.1 {
        let at = us as u64;
        let above = h.len() - h.count_between(0, at);
        points.push((at as f64 / 1000.0, above as f64 / total));
        us *= 10f64.powf(1.0 / 20.0);
    }
    points
}

/// The commit the binary was built from (`build.rs` asks git at build
/// time, so the report names the code that ran wherever it runs), with
/// `-dirty` for uncommitted changes; `unknown` outside a git checkout.
pub fn commit() -> String {
    option_env!("PRESENCE_COMMIT")
        .filter(|c| !c.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// This process's resident memory now, in MiB.
pub fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

/// This process's peak resident memory (VmHWM), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::StoreOpFigures;

    #[test]
    fn the_store_s_requests_are_reported_in_all_and_per_checkpoint() {
        let metrics = Metrics::default();
        metrics.update(|f| {
            f.checkpoints.completed = 4;
            f.checkpoints.bytes_written = 4000;
            f.checkpoints.store.insert(
                "put",
                StoreOpFigures {
                    requests: 10,
                    bytes: 6000,
                    errors: 1,
                    retries: 1,
                },
            );
            f.checkpoints.store.insert(
                "list",
                StoreOpFigures {
                    requests: 6,
                    ..StoreOpFigures::default()
                },
            );
        });
        let c = checkpoints(&metrics);
        assert_eq!(c["bytes_per_checkpoint"], 1000.0);
        assert_eq!(c["store"]["put"]["requests"], 10);
        assert_eq!(c["store"]["put"]["errors"], 1);
        assert_eq!(c["store"]["get"]["requests"], 0);
        let per = &c["store_per_checkpoint"];
        assert_eq!(per["put"]["requests"], 2.5);
        assert_eq!(per["put"]["bytes"], 1500.0);
        assert_eq!(per["list"]["requests"], 1.5);
        assert_eq!(per["delete"]["requests"], 0.0);
        assert_eq!(
            per.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["delete", "get", "list", "put"]
        );
    }
}
