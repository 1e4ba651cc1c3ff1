//! The harness's [`Hooks`]: in-dataflow latency for `presence bench`, and
//! the synthetic faults that show the harness sees what it should (an
//! output delay, a stall of every worker) or that widen a crash test's
//! window (a delay before each checkpoint piece is durable).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::observe::hooks::Hooks;
use crate::observe::metrics::LatencyRecorder;

/// What the harness measures and injects; all off by default.
#[derive(Debug, Default)]
pub struct Injected {
    /// Where to record in-dataflow latency (see
    /// [`Hooks::dataflow_latency`]).
    pub dataflow_latency: Option<Arc<LatencyRecorder>>,
    /// Hold every upsert output this long past its logical time.
    pub delay_outputs: Duration,
    /// A synthetic stall of every worker of the process.
    pub stall: Option<Stall>,
    /// Sleep this long before making each checkpoint piece durable.
    pub checkpoint_write_delay: Duration,
    /// The workers that have stalled already.
    stalled: Mutex<BTreeSet<usize>>,
}

/// A synthetic stall of every worker of a process: once `after` has passed
/// since `from` (the start of the load's schedule, set by the harness when
/// it starts the schedule), each worker stops for `length`. Timed from the
/// load, not the workers, so that it lands where the harness measures,
/// however long the workers took to start.
#[derive(Clone, Debug)]
pub struct Stall {
    /// How long after the schedule starts.
    pub after: Duration,
    /// How long each worker stops.
    pub length: Duration,
    /// When the schedule starts; unset, no stall.
    pub from: Arc<OnceLock<Instant>>,
}

impl Injected {
    /// Only a delay before each checkpoint piece is durable (the hidden
    /// `--inject-checkpoint-delay` of `run` and `backfill`).
    pub fn checkpoint_write_delay(delay: Duration) -> Self {
        Injected {
            checkpoint_write_delay: delay,
            ..Injected::default()
        }
    }
}

impl Hooks for Injected {
    fn dataflow_latency(&self) -> Option<&LatencyRecorder> {
        self.dataflow_latency.as_deref()
    }

    fn output_delay(&self) -> Duration {
        self.delay_outputs
    }

    fn between_steps(&self, worker: usize) {
        let Some(stall) = &self.stall else {
            return;
        };
        let due = stall.from.get().map(|from| *from + stall.after);
        if due.is_some_and(|due| Instant::now() >= due)
            && self
                .stalled
                .lock()
                .expect("no thread panics holding the lock")
                .insert(worker)
        {
            std::thread::sleep(stall.length);
        }
    }

    fn before_durable(&self) {
        if !self.checkpoint_write_delay.is_zero() {
            std::thread::sleep(self.checkpoint_write_delay);
        }
    }
}
