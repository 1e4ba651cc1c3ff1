//! What a running service is doing, in one line: sampled from its
//! [`Metrics`] by `presence run` every `--status-interval` (as a structured
//! log line) and, on a terminal, every second in place.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::model::clock::now_ms;
use crate::model::records::Reason;
use crate::observe::metrics::Metrics;

/// One sample of a service's figures (this process's workers).
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Time since the service started.
    pub uptime: Duration,
    /// Input records read per second since the previous sample.
    pub records_per_second: f64,
    /// Input records read in all.
    pub records: u64,
    /// Consumer lag summed over this process's partitions (records).
    pub lag: i64,
    /// Walk-in rows written.
    pub walkins: u64,
    /// Rejected input records by reason (every reason, zeros included).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Wall clock minus the output frontier (every output update below it
    /// is acknowledged); `None` before the first.
    pub frontier_age: Option<Duration>,
    /// Keys with open visits in the window operators.
    pub open_visits: u64,
    /// Probe timestamps the window operators hold individually.
    pub window_timestamps: u64,
    /// Whether the service is still starting (connecting, checking the
    /// topics): nothing to report yet.
    pub starting: bool,
}

/// Samples a service's metrics; rates are over the time between samples.
#[derive(Debug)]
pub struct Sampler {
    metrics: Metrics,
    started: Instant,
    previous: (Instant, u64),
}

impl Sampler {
    /// Samples `metrics` from now on.
    pub fn new(metrics: Metrics) -> Self {
        let now = Instant::now();
        Sampler {
            metrics,
            started: now,
            previous: (now, 0),
        }
    }

    /// The figures now.
    pub fn sample(&mut self) -> Status {
        let now = Instant::now();
        let status = self.metrics.read(|f| {
            let summary = f.summary();
            let seconds = now.duration_since(self.previous.0).as_secs_f64();
            let records = summary.lines;
            Status {
                uptime: now.duration_since(self.started),
                records_per_second: if seconds > 0.0 {
                    records.saturating_sub(self.previous.1) as f64 / seconds
                } else {
                    0.0
                },
                records,
                lag: f.lag(),
                walkins: f.walkins_emitted,
                rejected: Reason::ALL
                    .into_iter()
                    .map(|r| {
                        let name = r.as_str();
                        (name, summary.rejected.get(name).copied().unwrap_or(0))
                    })
                    .collect(),
                frontier_age: f
                    .output_frontier()
                    .map(|t| Duration::from_millis(now_ms().saturating_sub(t))),
                open_visits: f.workers.values().map(|w| w.window.keys as u64).sum(),
                window_timestamps: f.workers.values().map(|w| w.window.timestamps as u64).sum(),
                starting: f.life.state == crate::observe::metrics::ServiceState::Starting,
            }
        });
        self.previous = (now, status.records);
        status
    }
}

impl Status {
    /// Emits the status as one structured log line (target `presence::observe::status`).
    pub fn log(&self) {
        let r = |reason: &str| self.rejected.get(reason).copied().unwrap_or(0);
        tracing::info!(
            target: "presence::observe::status",
            uptime_seconds = self.uptime.as_secs(),
            records_per_second = self.records_per_second.round() as u64,
            records_read = self.records,
            consumer_lag = self.lag,
            walkins_emitted = self.walkins,
            rejected_malformed = r("malformed"),
            rejected_late = r("late"),
            rejected_future = r("future"),
            rejected_too_large = r("too_large"),
            rejected_corrupt = r("corrupt"),
            frontier_age_seconds = self.frontier_age.map(|a| a.as_secs_f64()),
            open_visits = self.open_visits,
            window_timestamps = self.window_timestamps,
            "status"
        );
    }
}

impl fmt::Display for Status {
    /// The one-line form shown in place on a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        write!(
            f,
            "{:.0} records/s, {} read, lag {}, walk-ins {}, rejected {}, frontier {}, window {} visits / {} probes",
            self.records_per_second,
            self.records,
            self.lag,
            self.walkins,
            if rejected.is_empty() {
                "0".to_owned()
            } else {
                rejected.join(", ")
            },
            match self.frontier_age {
                Some(age) => format!("{:.1} s old", age.as_secs_f64()),
                None => "not yet".to_owned(),
            },
            self.open_visits,
            self.window_timestamps
        )
    }
}
