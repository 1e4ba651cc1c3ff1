//! Where a harness may look into a run or disturb it: the measurement
//! hooks and synthetic faults of `presence bench` and the crash tests. The
//! product runs with [`NoHooks`]; the harness's implementation is
//! `crate::harness::hooks::Injected`. Each hook is called at one place,
//! named in its doc, and costs nothing when it does nothing.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::observe::metrics::LatencyRecorder;

/// A run's hooks; every method's default does nothing.
pub trait Hooks: Debug + Send + Sync {
    /// Where to record in-dataflow latency: from a probe entering the
    /// dataflow to the frontier of the outputs before the sinks passing
    /// its logical time (`service`'s worker loop).
    fn dataflow_latency(&self) -> Option<&LatencyRecorder> {
        None
    }

    /// How long the upsert sinks hold every output past its logical time
    /// before writing it (a synthetic delay the harness must see).
    fn output_delay(&self) -> Duration {
        Duration::ZERO
    }

    /// Called by each worker of `run` between steps of its loop (a
    /// synthetic stall sleeps here).
    fn between_steps(&self, _worker: usize) {}

    /// Called by a checkpoint writer just before it makes a piece durable
    /// (a crash test's kill then lands inside a write more often).
    fn before_durable(&self) {}
}

/// The product's hooks: none.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Shared hooks, as jobs hold them.
pub type SharedHooks = Arc<dyn Hooks>;

/// [`NoHooks`], shared.
pub fn no_hooks() -> SharedHooks {
    Arc::new(NoHooks)
}
