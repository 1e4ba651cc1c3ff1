//! The service's metrics, served in Prometheus' text format at
//! `--metrics-addr` (off by default). Workers publish into one [`Metrics`]
//! per process a few times a second; scraping never touches the dataflow.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::dataflow::operators::windows::StateSize;
use crate::model::summary::Summary;

mod render;

/// Upper bounds (ms) of the latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 5_000, 30_000];

/// The last frontier published, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The frontier.
    pub frontier: u64,
    /// Messages published so far.
    pub messages: u64,
}

/// One input partition's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionFigures {
    /// Messages read.
    pub read: u64,
    /// End offset minus the next offset to read, when last known.
    pub lag: Option<i64>,
    /// Largest accepted probe `ts` (probe partitions).
    pub high_water: Option<u64>,
}

/// One worker's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerFigures {
    /// What it read, accepted and rejected.
    pub summary: Summary,
    /// Wall clock minus the event-time frontier it promised (ms).
    pub frontier_delay_ms: Option<u64>,
    /// Its window operator's state.
    pub window: StateSize,
    /// The logical time below which every output update (of every worker)
    /// is acknowledged, as this worker last saw it.
    pub output_frontier: Option<u64>,
    /// Output records its sinks hold because the producer's queue was full.
    pub output_waiting: usize,
}

/// Checkpoints written and restored by this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointFigures {
    /// Checkpoints that completed (manifests written; process 0).
    pub completed: u64,
    /// Cuts whose checkpoint could not be written.
    pub failures: u64,
    /// The newest complete checkpoint's logical time.
    pub last_time: Option<u64>,
    /// When it was written (ms since the epoch).
    pub last_wall_ms: Option<u64>,
    /// How long its manifest took, from its pieces being durable (s).
    pub last_duration_seconds: Option<f64>,
    /// The size of the newest complete checkpoint's pieces.
    pub bytes: u64,
    /// Bytes of pieces written by this process's workers.
    pub bytes_written: u64,
    /// How long the restore took (s), if this run restored one.
    pub restore_seconds: Option<f64>,
    /// Rows restored by this process's workers.
    pub restored_rows: u64,
    /// Requests to the checkpoint store, by operation.
    pub store: BTreeMap<&'static str, StoreOpFigures>,
}

/// The checkpoint store's operations, as metrics label them.
pub const STORE_OPS: [&str; 4] = ["put", "get", "list", "delete"];

/// One operation's requests to the checkpoint store (`put`, `get`, `list`,
/// `delete`), by this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOpFigures {
    /// Requests made, retries included.
    pub requests: u64,
    /// Bytes sent (`put`) or received (`get`).
    pub bytes: u64,
    /// Requests that failed (each retry that failed included).
    pub errors: u64,
    /// Requests that were retries of a failed one.
    pub retries: u64,
}

/// Where the service is in its life, as `presence_state` and `/ready` report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceState {
    /// Connecting, checking the inputs, creating the outputs.
    #[default]
    Starting,
    /// Loading a checkpoint into the dataflow.
    Restoring,
    /// Reading, with a consumer lag of at least `--ready-lag` (or not yet known).
    CatchingUp,
    /// Reading, with a consumer lag below `--ready-lag`: ready.
    Running,
    /// Stopping: draining the outputs and writing the final checkpoint.
    Stopping,
}

impl ServiceState {
    /// Every state, in order.
    pub const ALL: [ServiceState; 5] = [
        ServiceState::Starting,
        ServiceState::Restoring,
        ServiceState::CatchingUp,
        ServiceState::Running,
        ServiceState::Stopping,
    ];

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Restoring => "restoring",
            ServiceState::CatchingUp => "catching_up",
            ServiceState::Running => "running",
            ServiceState::Stopping => "stopping",
        }
    }
}

/// The process's life: its state and what decides readiness.
#[derive(Clone, Debug, Default)]
pub struct Life {
    /// The current state.
    pub state: ServiceState,
    /// `--ready-lag`: ready once the consumer lag is below this.
    pub ready_lag: i64,
    /// Workers of this process.
    pub workers: usize,
    /// Workers of this process whose restored state is in the dataflow.
    pub restored: usize,
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Figures {
    /// Per (topic, partition).
    pub partitions: BTreeMap<(String, i32), PartitionFigures>,
    /// Per worker of this process.
    pub workers: BTreeMap<usize, WorkerFigures>,
    /// Walk-ins inserted into the walk-ins topic.
    pub walkins_emitted: u64,
    /// Output records handed to the producer, per topic.
    pub produced: BTreeMap<String, u64>,
    /// Output records the broker acknowledged, per topic.
    pub acknowledged: BTreeMap<String, u64>,
    /// Times a sink found the producer's queue full and kept its records.
    pub output_queue_full: u64,
    /// Latency from ingestion (a record's logical time) to acknowledgement:
    /// counts per bucket of [`LATENCY_BUCKETS_MS`] plus one for +Inf.
    pub latency_buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of the latencies (ms).
    pub latency_sum_ms: u64,
    /// The progress topic's last frontier (process 0 publishes it).
    pub progress: Published,
    /// Checkpoints.
    pub checkpoints: CheckpointFigures,
    /// The service's state.
    pub life: Life,
}

impl Figures {
    /// What every worker of this process read, accepted and rejected.
    pub fn summary(&self) -> Summary {
        let mut total = Summary::default();
        for worker in self.workers.values() {
            total.merge(worker.summary.clone());
        }
        total
    }

    /// The least output frontier this process's workers saw.
    pub fn output_frontier(&self) -> Option<u64> {
        self.workers
            .values()
            .filter_map(|w| w.output_frontier)
            .min()
    }

    /// Consumer lag summed over the partitions whose lag is known.
    pub fn lag(&self) -> i64 {
        self.partitions.values().filter_map(|p| p.lag).sum()
    }

    /// Moves to `state`, logging the transition once.
    pub fn enter(&mut self, state: ServiceState) {
        if self.life.state != state {
            tracing::info!(
                from = self.life.state.name(),
                to = state.name(),
                "state changed"
            );
            self.life.state = state;
        }
    }

    /// Moves between catching up and running by the consumer lag, and out
    /// of restoring once every worker's state is in. Workers call it with
    /// their figures.
    pub fn refresh_state(&mut self) {
        let life = &self.life;
        let next = match life.state {
            ServiceState::Restoring if life.restored >= life.workers => ServiceState::CatchingUp,
            ServiceState::CatchingUp | ServiceState::Running => {
                let known = self.partitions.values().all(|p| p.lag.is_some());
                if known && self.workers.len() >= life.workers && self.lag() < life.ready_lag {
                    ServiceState::Running
                } else {
                    ServiceState::CatchingUp
                }
            }
            other => other,
        };
        self.enter(next);
    }

    /// `Ok` when ready (`/ready`), or why not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.life.state {
            ServiceState::Running => Ok(()),
            ServiceState::Starting => Err("starting: connecting and checking the topics".into()),
            ServiceState::Restoring => Err(format!(
                "restoring a checkpoint: {} of {} workers done",
                self.life.restored, self.life.workers
            )),
            ServiceState::CatchingUp => {
                if self.partitions.values().any(|p| p.lag.is_none())
                    || self.workers.len() < self.life.workers
                {
                    Err("catching up: consumer lag not known yet".into())
                } else {
                    Err(format!(
                        "catching up: consumer lag {} records, not below --ready-lag {}",
                        self.lag(),
                        self.life.ready_lag
                    ))
                }
            }
            ServiceState::Stopping => Err("stopping".into()),
        }
    }
}

/// The process's metrics, shared by its workers and the HTTP server.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Arc<Mutex<Figures>>);

impl Metrics {
    /// Changes the figures.
    pub fn update(&self, change: impl FnOnce(&mut Figures)) {
        change(
            &mut self
                .0
                .lock()
                .expect("no thread panics holding the metrics lock"),
        );
    }

    /// Reads the figures.
    pub fn read<T>(&self, read: impl FnOnce(&Figures) -> T) -> T {
        read(
            &self
                .0
                .lock()
                .expect("no thread panics holding the metrics lock"),
        )
    }

    /// Records one acknowledged output record of `topic` written `latency_ms`
    /// after its input (producers count through [`OutputCounts`]).
    #[cfg(test)]
    pub fn acknowledged(&self, topic: &str, latency_ms: u64) {
        let mut counts = OutputCounts::default();
        counts.acknowledged(topic, latency_ms);
        self.add(&mut counts);
    }

    /// Adds `counts` to the figures, and clears them.
    pub fn add(&self, counts: &mut OutputCounts) {
        if counts.is_empty() {
            return;
        }
        self.update(|f| {
            for (totals, counted) in [
                (&mut f.produced, &mut counts.produced),
                (&mut f.acknowledged, &mut counts.acknowledged),
            ] {
                for (topic, n) in counted.iter_mut().filter(|(_, n)| *n > 0) {
                    match totals.get_mut(topic.as_str()) {
                        Some(total) => *total += *n,
                        None => {
                            totals.insert(topic.clone(), *n);
                        }
                    }
                    *n = 0;
                }
            }
            for (total, n) in f
                .latency_buckets
                .iter_mut()
                .zip(&mut counts.latency_buckets)
            {
                *total += std::mem::take(n);
            }
            f.latency_sum_ms += std::mem::take(&mut counts.latency_sum_ms);
        });
    }
}

/// Latency histograms hold microseconds, from 1 µs to an hour, at 3 significant digits.
pub const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram (microseconds).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid bounds")
}

/// In-dataflow latency samples, recorded by the workers of a run that
/// `presence bench` instruments (see `crate::observe::hooks::Hooks::dataflow_latency`).
#[derive(Debug)]
pub struct LatencyRecorder {
    /// Samples that entered in `[from, until)` count.
    window: Mutex<(Instant, Instant)>,
    histogram: Mutex<Histogram<u64>>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        let now = Instant::now();
        LatencyRecorder {
            window: Mutex::new((now, now + Duration::from_secs(u32::MAX as u64))),
            histogram: Mutex::new(latency_histogram()),
        }
    }
}

impl LatencyRecorder {
    /// Counts only samples that enter in `[from, until)`.
    pub fn set_window(&self, from: Instant, until: Instant) {
        *self.window.lock().expect("no panics holding the lock") = (from, until);
    }

    /// Records `n` samples of `latency` for records that entered at `entered`.
    pub fn record(&self, entered: Instant, latency: Duration, n: u64) {
        let (from, until) = *self.window.lock().expect("no panics holding the lock");
        if entered >= from && entered < until {
            let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_MICROS);
            let _ = self
                .histogram
                .lock()
                .expect("no panics holding the lock")
                .record_n(us, n);
        }
    }

    /// The samples so far.
    pub fn histogram(&self) -> Histogram<u64> {
        self.histogram
            .lock()
            .expect("no panics holding the lock")
            .clone()
    }
}

/// Output records produced and acknowledged, counted by one producer
/// between two [`Metrics::add`]s: a record's counts take no lock that
/// other threads contend for.
#[derive(Debug, Default)]
pub struct OutputCounts {
    produced: Vec<(String, u64)>,
    acknowledged: Vec<(String, u64)>,
    latency_buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_ms: u64,
}

impl OutputCounts {
    /// Counts a record produced to `topic`.
    pub fn produced(&mut self, topic: &str) {
        add_one(&mut self.produced, topic);
    }

    /// Counts an acknowledged record of `topic`, written `latency_ms` after its input.
    pub fn acknowledged(&mut self, topic: &str, latency_ms: u64) {
        add_one(&mut self.acknowledged, topic);
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| latency_ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency_buckets[bucket] += 1;
        self.latency_sum_ms += latency_ms;
    }

    fn is_empty(&self) -> bool {
        self.produced
            .iter()
            .chain(&self.acknowledged)
            .all(|(_, n)| *n == 0)
    }
}

/// One more for `topic` (a producer writes a handful of topics; its name is
/// copied only the first time).
fn add_one(counts: &mut Vec<(String, u64)>, topic: &str) {
    match counts.iter_mut().find(|(t, _)| t == topic) {
        Some((_, n)) => *n += 1,
        None => counts.push((topic.to_owned(), 1)),
    }
}
