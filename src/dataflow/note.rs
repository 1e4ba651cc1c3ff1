//! Notes: facts about the input and the outputs that travel beside the
//! dataflow's records, at the logical time they hold for, to the operators
//! that publish progress and coordinate checkpoints (every worker's notes
//! reach them through the dataflow's own exchanges and progress tracking).

use serde::{Deserialize, Serialize};

/// A fact about the input or the outputs at a logical time (the note's time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Note {
    /// A sink wrote output records at this time.
    Written,
    /// Every record of the input partition before `next` is reflected at
    /// this time (and after), with the partition's lateness state then.
    Read {
        /// The input topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The next offset to read.
        next: i64,
        /// The largest accepted probe `ts`.
        high_water: Option<u64>,
        /// Probes below this are late.
        floor: u64,
    },
    /// A worker's event-time promise, from this time on: every probe it
    /// sends later has `ts >= frontier` (the progress topic's `event_time`
    /// is the least over the workers).
    Promised {
        /// The worker.
        worker: usize,
        /// Its promise.
        frontier: u64,
    },
    /// A worker's last epoch: it gives no input after this time.
    Closed,
}
