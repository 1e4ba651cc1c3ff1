//! End-to-end latency samples, kept by the second their record was due and
//! in total over the measured window.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::config::BenchConfig;
use crate::observe::metrics::{latency_histogram as histogram, MAX_LATENCY_MICROS as MAX_MICROS};

/// The wall clock in microseconds.
pub(super) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Latency samples by due second, and in total over the measured window.
pub(super) struct Samples {
    start_ms: u64,
    from_ms: u64,
    until_ms: u64,
    /// Every sample due in the measured window.
    pub(super) total: Histogram<u64>,
    /// Every sample, by the second it was due in (warm-up included).
    pub(super) seconds: Vec<Histogram<u64>>,
    /// The end-to-end latency split at the moment the pipeline read the
    /// probe (the output's logical `"time"`): before, and after.
    pub(super) input: Histogram<u64>,
    pub(super) output: Histogram<u64>,
    /// Their 99th percentiles per due second.
    pub(super) input_seconds: Vec<Histogram<u64>>,
    pub(super) output_seconds: Vec<Histogram<u64>>,
}

impl Samples {
    /// No samples yet, for a schedule that starts at `start_ms`.
    pub(super) fn new(start_ms: u64, config: &BenchConfig) -> Self {
        let seconds = config.duration.as_secs() as usize + 1;
        Samples {
            start_ms,
            from_ms: start_ms + config.warmup.as_millis() as u64,
            until_ms: start_ms + config.duration.as_millis() as u64,
            total: histogram(),
            seconds: (0..seconds).map(|_| histogram()).collect(),
            input: histogram(),
            output: histogram(),
            input_seconds: (0..seconds).map(|_| histogram()).collect(),
            output_seconds: (0..seconds).map(|_| histogram()).collect(),
        }
    }

    /// A record due at `due_ms` became visible now; the pipeline read it
    /// at `read_ms`, if known.
    pub(super) fn record(&mut self, due_ms: u64, read_ms: Option<u64>) {
        let now = wall_us();
        let us =
            |from_ms: u64, to_us: u64| to_us.saturating_sub(from_ms * 1000).clamp(1, MAX_MICROS);
        let second = (due_ms.saturating_sub(self.start_ms) / 1000) as usize;
        let measured = due_ms >= self.from_ms && due_ms < self.until_ms;
        let add = |total: &mut Histogram<u64>, seconds: &mut Vec<Histogram<u64>>, value: u64| {
            if let Some(h) = seconds.get_mut(second) {
                let _ = h.record(value);
            }
            if measured {
                let _ = total.record(value);
            }
        };
        add(&mut self.total, &mut self.seconds, us(due_ms, now));
        if let Some(read_ms) = read_ms {
            add(
                &mut self.input,
                &mut self.input_seconds,
                us(due_ms, read_ms * 1000),
            );
            add(&mut self.output, &mut self.output_seconds, us(read_ms, now));
        }
    }
}
