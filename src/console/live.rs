//! Long commands seen while they run: the service's status (`presence run`),
//! a load's progress (`presence produce`) and a backfill's (`presence
//! backfill`), each a line redrawn in place when stderr is a terminal and a
//! structured log line every so often when it is not.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backfill::{self, BackfillError, Job, Progress};
use crate::console::terminal::{live_line, Painter};
use crate::harness::load::{self, Load};
use crate::kafka::KafkaFailure;
use crate::model::summary::Summary;
use crate::observe::metrics::Metrics;
use crate::observe::status::Sampler;

/// A thread that reports a service's status: a structured log line every
/// `interval`, and on a terminal a line redrawn every second. It stops when
/// the returned handle is dropped.
pub fn watch_status(metrics: Metrics, interval: Duration) -> Painter {
    let bar = live_line("{spinner} {elapsed} {msg}");
    let mut log = Sampler::new(metrics.clone());
    let mut live = Sampler::new(metrics);
    let tick = if bar.is_some() {
        interval.min(Duration::from_secs(1))
    } else {
        interval
    };
    let mut next_log = Instant::now() + interval;
    Painter::start(bar, tick, move |bar| {
        if let Some(bar) = bar {
            bar.set_message(live.sample().to_string());
            bar.tick();
        }
        if Instant::now() >= next_log {
            // Status lines begin once the service is connected: before, a
            // failure to connect is the one line to say.
            let status = log.sample();
            if !status.starting {
                status.log();
            }
            next_log += interval;
        }
    })
}

/// What [`produce`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Produced {
    /// Records produced.
    pub records: u64,
    /// How long producing took.
    pub elapsed: Duration,
    /// Whether `stop` (a signal) ended it.
    pub stopped: bool,
}

impl fmt::Display for Produced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        write!(
            f,
            "produced {} records in {seconds:.2} s ({:.0} records/s){}",
            self.records,
            self.records as f64 / seconds.max(1e-9),
            if self.stopped {
                "; stopped by a signal"
            } else {
                ""
            }
        )
    }
}

/// Produces `load` (see [`load::produce`]) with its progress: the records
/// produced and their rate, redrawn every second on a terminal, otherwise
/// logged every `status_interval`.
pub fn produce(
    load: &Load,
    stop: &AtomicBool,
    status_interval: Duration,
) -> Result<Produced, KafkaFailure> {
    let produced = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let bar = live_line("{spinner} {elapsed} {msg}");
    let tick = if bar.is_some() {
        Duration::from_secs(1)
    } else {
        status_interval
    };
    let painter = {
        let produced = Arc::clone(&produced);
        let mut previous = (Instant::now(), 0);
        Painter::start(bar, tick, move |bar| {
            let n = produced.load(Ordering::Relaxed);
            let rate = (n - previous.1) as f64 / previous.0.elapsed().as_secs_f64().max(1e-3);
            previous = (Instant::now(), n);
            match bar {
                Some(bar) => bar.set_message(format!("produced {n} records, {rate:.0}/s")),
                None => tracing::info!(
                    target: "presence::produce",
                    produced = n,
                    records_per_second = rate.round() as u64,
                    "producing"
                ),
            }
        })
    };
    let result = load::produce(load, stop, &produced);
    drop(painter);
    result?;
    Ok(Produced {
        records: produced.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        stopped: stop.load(Ordering::Relaxed),
    })
}

/// Runs a backfill (see [`backfill::run`]) with a progress bar on a
/// terminal (bytes read of the inputs', records and their rate), otherwise
/// a log line every 10 s for long backfills. Returns its summary and how
/// long it took.
pub fn backfill(config: timely::Config, job: Job) -> Result<(Summary, Duration), BackfillError> {
    let (_, bytes) = backfill::inputs(&job)?;
    let progress = Arc::new(Progress::default());
    let bar = live_line("{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg}");
    if let Some(bar) = &bar {
        bar.set_length(bytes);
    }
    let started = Instant::now();
    let tick = if bar.is_some() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(10)
    };
    let painter = {
        let progress = Arc::clone(&progress);
        Painter::start(bar, tick, move |bar| {
            let lines = progress.lines.load(Ordering::Relaxed);
            let read = progress.bytes.load(Ordering::Relaxed);
            let rate = lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
            match bar {
                Some(bar) => {
                    bar.set_position(read);
                    bar.set_message(format!("{lines} records, {rate:.0} records/s"));
                }
                None => tracing::info!(
                    target: "presence::backfill",
                    records = lines,
                    bytes = read,
                    total_bytes = bytes,
                    records_per_second = rate.round() as u64,
                    "backfilling"
                ),
            }
        })
    };
    let result = backfill::run(config, job, progress);
    let elapsed = started.elapsed();
    drop(painter);
    Ok((result?, elapsed))
}
