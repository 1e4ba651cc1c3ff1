//! The service's metrics, served in Prometheus' text format at
//! `--metrics-addr` (off by default). Workers publish into one [`Metrics`]
//! per process a few times a second; scraping never touches the dataflow.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::dataflow::operators::windows::StateSize;
use crate::model::summary::Summary;

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

    /// The figures in Prometheus' text format.
    pub fn render(&self) -> String {
        let f = self
            .0
            .lock()
            .expect("no thread panics holding the metrics lock");
        let mut out = String::new();
        fn family(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(
                out,
                "# HELP presence_{name} {help}\n# TYPE presence_{name} {kind}"
            );
        }
        let seconds = |ms: u64| ms as f64 / 1000.0;
        let summary = f.summary();
        family(
            &mut out,
            "records_read_total",
            "counter",
            "Input records read, per topic and partition.",
        );
        for ((topic, partition), p) in &f.partitions {
            let _ = writeln!(
                out,
                "presence_records_read_total{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                p.read
            );
        }
        family(
            &mut out,
            "records_accepted_total",
            "counter",
            "Input records accepted, by kind.",
        );
        for (kind, n) in ["probe", "login", "base_count"]
            .iter()
            .zip(summary.accepted)
        {
            let _ = writeln!(
                out,
                "presence_records_accepted_total{{kind=\"{kind}\"}} {n}"
            );
        }
        family(
            &mut out,
            "records_rejected_total",
            "counter",
            "Input records rejected, by reason.",
        );
        for reason in crate::model::records::Reason::ALL.map(crate::model::records::Reason::as_str)
        {
            let n = summary.rejected.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "presence_records_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "records_blank_total",
            "counter",
            "Input records that were empty or only whitespace (not records at all).",
        );
        let _ = writeln!(out, "presence_records_blank_total {}", summary.blank);
        family(
            &mut out,
            "consumer_lag",
            "gauge",
            "End offset minus next offset to read, per partition.",
        );
        for ((topic, partition), p) in &f.partitions {
            if let Some(lag) = p.lag {
                let _ = writeln!(
                    out,
                    "presence_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}"
                );
            }
        }
        family(
            &mut out,
            "event_time_high_water_timestamp_seconds",
            "gauge",
            "Largest accepted probe ts per probe partition.",
        );
        for ((topic, partition), p) in &f.partitions {
            if let Some(hwm) = p.high_water {
                let _ = writeln!(out, "presence_event_time_high_water_timestamp_seconds{{topic=\"{topic}\",partition=\"{partition}\"}} {}", seconds(hwm));
            }
        }
        family(
            &mut out,
            "event_time_frontier_delay_seconds",
            "gauge",
            "Wall clock minus the event-time frontier a worker promised (how far the freeing of window state lags).",
        );
        for (worker, w) in &f.workers {
            if let Some(delay) = w.frontier_delay_ms {
                let _ = writeln!(
                    out,
                    "presence_event_time_frontier_delay_seconds{{worker=\"{worker}\"}} {}",
                    seconds(delay)
                );
            }
        }
        family(
            &mut out,
            "open_visits",
            "gauge",
            "Keys with open visits held by the detection operator, per worker.",
        );
        for (worker, w) in &f.workers {
            let _ = writeln!(
                out,
                "presence_open_visits{{worker=\"{worker}\"}} {}",
                w.window.keys
            );
        }
        family(
            &mut out,
            "window_timestamps",
            "gauge",
            "Probe timestamps held individually by the detection operator, per worker.",
        );
        for (worker, w) in &f.workers {
            let _ = writeln!(
                out,
                "presence_window_timestamps{{worker=\"{worker}\"}} {}",
                w.window.timestamps
            );
        }
        family(
            &mut out,
            "walkins_emitted_total",
            "counter",
            "Walk-in rows written to the walk-ins topic.",
        );
        let _ = writeln!(out, "presence_walkins_emitted_total {}", f.walkins_emitted);
        family(
            &mut out,
            "output_records_produced_total",
            "counter",
            "Output records handed to the producer.",
        );
        for (topic, n) in &f.produced {
            let _ = writeln!(
                out,
                "presence_output_records_produced_total{{topic=\"{topic}\"}} {n}"
            );
        }
        family(
            &mut out,
            "output_queue_full_total",
            "counter",
            "Times a sink found the producer's queue full and kept its records to send later (the broker is slower than the output).",
        );
        let _ = writeln!(
            out,
            "presence_output_queue_full_total {}",
            f.output_queue_full
        );
        family(
            &mut out,
            "output_records_waiting",
            "gauge",
            "Output records a worker's sinks hold because the producer's queue was full.",
        );
        for (worker, w) in &f.workers {
            let _ = writeln!(
                out,
                "presence_output_records_waiting{{worker=\"{worker}\"}} {}",
                w.output_waiting
            );
        }
        family(
            &mut out,
            "output_records_acknowledged_total",
            "counter",
            "Output records acknowledged by the broker.",
        );
        for (topic, n) in &f.acknowledged {
            let _ = writeln!(
                out,
                "presence_output_records_acknowledged_total{{topic=\"{topic}\"}} {n}"
            );
        }
        family(
            &mut out,
            "end_to_end_latency_seconds",
            "histogram",
            "From reading an input to the broker acknowledging an output it caused.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += f.latency_buckets[i];
            let _ = writeln!(
                out,
                "presence_end_to_end_latency_seconds_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        cumulative += f.latency_buckets[LATENCY_BUCKETS_MS.len()];
        let _ = writeln!(
            out,
            "presence_end_to_end_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(
            out,
            "presence_end_to_end_latency_seconds_sum {}",
            seconds(f.latency_sum_ms)
        );
        let _ = writeln!(
            out,
            "presence_end_to_end_latency_seconds_count {cumulative}"
        );
        family(
            &mut out,
            "output_frontier_timestamp_seconds",
            "gauge",
            "Every output update below this logical time (ms of wall clock at ingestion) is acknowledged by the broker.",
        );
        if let Some(frontier) = f.output_frontier() {
            let _ = writeln!(
                out,
                "presence_output_frontier_timestamp_seconds {}",
                seconds(frontier)
            );
        }
        family(
            &mut out,
            "progress_messages_total",
            "counter",
            "Messages written to the progress topic (by process 0).",
        );
        let _ = writeln!(
            out,
            "presence_progress_messages_total {}",
            f.progress.messages
        );
        family(
            &mut out,
            "state",
            "gauge",
            "1 for the state the process is in (starting, restoring, catching_up, running, stopping), 0 for the others.",
        );
        for state in ServiceState::ALL {
            let _ = writeln!(
                out,
                "presence_state{{state=\"{}\"}} {}",
                state.name(),
                u8::from(f.life.state == state)
            );
        }
        family(
            &mut out,
            "ready",
            "gauge",
            "1 when /ready answers 200: state restored and consumer lag below --ready-lag.",
        );
        let _ = writeln!(out, "presence_ready {}", u8::from(f.readiness().is_ok()));
        let c = &f.checkpoints;
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            family(out, name, "counter", help);
            let _ = writeln!(out, "presence_{name} {value}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<f64>| {
            family(out, name, "gauge", help);
            if let Some(value) = value {
                let _ = writeln!(out, "presence_{name} {value}");
            }
        };
        counter(
            &mut out,
            "checkpoints_total",
            "Checkpoints completed: manifests written (process 0).",
            c.completed,
        );
        counter(
            &mut out,
            "checkpoint_failures_total",
            "Checkpoints that could not be written (process 0).",
            c.failures,
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        gauge(
            &mut out,
            "checkpoint_age_seconds",
            "Since the newest complete checkpoint was written (process 0).",
            c.last_wall_ms
                .map(|wall| seconds(now_ms.saturating_sub(wall))),
        );
        gauge(
            &mut out,
            "checkpoint_duration_seconds",
            "How long the newest checkpoint's manifest took once its pieces were durable (process 0).",
            c.last_duration_seconds,
        );
        gauge(
            &mut out,
            "checkpoint_size_bytes",
            "The newest complete checkpoint's pieces (process 0).",
            c.last_time.map(|_| c.bytes as f64),
        );
        counter(
            &mut out,
            "checkpoint_written_bytes_total",
            "Checkpoint pieces written by this process's workers.",
            c.bytes_written,
        );
        gauge(
            &mut out,
            "restore_duration_seconds",
            "From start until the restored state was in the dataflow.",
            c.restore_seconds,
        );
        counter(
            &mut out,
            "restored_rows_total",
            "Checkpoint rows this process's workers restored.",
            c.restored_rows,
        );
        out
    }

    /// Serves `/metrics` on `addr` from a background thread; returns the
    /// address bound (so `127.0.0.1:0` picks a free port).
    pub fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let metrics = self.clone();
        std::thread::Builder::new().name("metrics".into()).spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut request = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Drain the headers; the request line decides.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let get = request.starts_with("GET ");
                let (status, body) = match path {
                    "/metrics" if get => ("200 OK", metrics.render()),
                    "/health" if get => ("200 OK", "ok\n".to_owned()),
                    "/ready" if get => match metrics.read(|f| f.readiness()) {
                        Ok(()) => ("200 OK", "ready\n".to_owned()),
                        Err(reason) => ("503 Service Unavailable", format!("not ready: {reason}\n")),
                    },
                    _ => (
                        "404 Not Found",
                        "presence serves /metrics, /health and /ready\n".to_owned(),
                    ),
                };
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
        Ok(bound)
    }
}

/// Latency histograms hold microseconds, from 1 µs to an hour, at 3 significant digits.
pub const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram (microseconds).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid bounds")
}

/// In-dataflow latency samples, recorded by the workers of a run that
/// `presence bench` instruments (see `run::Instrument`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.update(|f| {
            f.partitions.insert(
                ("probes".into(), 0),
                PartitionFigures {
                    read: 7,
                    lag: Some(3),
                    high_water: Some(99),
                },
            );
            let mut summary = Summary::default();
            summary.rejected.insert("late", 2);
            summary.blank = 4;
            f.workers.insert(
                0,
                WorkerFigures {
                    summary,
                    window: StateSize {
                        keys: 5,
                        ..StateSize::default()
                    },
                    ..WorkerFigures::default()
                },
            );
            f.checkpoints.completed = 2;
            f.checkpoints.last_time = Some(1_000);
            f.checkpoints.bytes = 4096;
            f.checkpoints.restore_seconds = Some(0.25);
        });
        metrics.acknowledged("walkins", 3);
        metrics.acknowledged("walkins", 40_000);
        let text = metrics.render();
        for line in [
            "presence_records_read_total{topic=\"probes\",partition=\"0\"} 7",
            "presence_consumer_lag{topic=\"probes\",partition=\"0\"} 3",
            "presence_records_rejected_total{reason=\"late\"} 2",
            "presence_records_rejected_total{reason=\"corrupt\"} 0",
            "presence_open_visits{worker=\"0\"} 5",
            "presence_records_blank_total 4",
            "presence_event_time_high_water_timestamp_seconds{topic=\"probes\",partition=\"0\"} 0.099",
            "presence_end_to_end_latency_seconds_bucket{le=\"0.002\"} 0",
            "presence_end_to_end_latency_seconds_bucket{le=\"0.005\"} 1",
            "presence_end_to_end_latency_seconds_bucket{le=\"+Inf\"} 2",
            "presence_end_to_end_latency_seconds_count 2",
            "presence_output_records_acknowledged_total{topic=\"walkins\"} 2",
            "presence_checkpoints_total 2",
            "presence_checkpoint_failures_total 0",
            "presence_checkpoint_size_bytes 4096",
            "presence_restore_duration_seconds 0.25",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn serves_over_http() {
        let metrics = Metrics::default();
        let addr = metrics.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.contains("presence_walkins_emitted_total 0"),
            "{response}"
        );
    }
}
