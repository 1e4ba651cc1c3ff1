//! Checkpoints: one consistent cut of every worker's state, written while
//! the dataflow runs (see [`crate::checkpoint::store`] for the files).
//!
//! State is data. The window operator snapshots its changed keys at every
//! cut ([`crate::dataflow::operators::windows::WindowSnapshot`]); the walk-ins, the
//! latest login per device and the base counts are differential
//! collections. Each worker's [`checkpoint`] operator sees all four, and
//! once its inputs have passed a cut `c` it has exactly the changes of
//! every logical time below `c`: it hands them to a writer thread (off the
//! worker's thread), which writes them as a piece. Cuts are multiples of
//! `--checkpoint-interval` in logical time, which every worker computes by
//! itself: no coordination message is needed to agree on them.
//!
//! Each piece is noted to worker 0's [`coordinate`] operator. When every
//! worker's piece of a cut is durable, the outputs below the cut are
//! acknowledged by the broker and the input notes below it have arrived
//! (the offsets and lateness state of every partition as of the cut), it
//! writes the cut's manifest: the checkpoint counts. A cut a worker could
//! not write counts as a failure; that worker carries the changes into its
//! next piece (one cut is at its writer at a time, so the next piece is
//! made once the failure is known), and the next manifest names every piece written since the
//! last one that counted.
//!
//! At the end of the input (a clean stop), every worker writes a final
//! piece and the coordinator a final manifest at the least time above
//! every worker's last epoch.
//!
//! The worker operator and its piece writer are in `worker`, the
//! coordinator and its manifest writer in `coordinator`, what both are
//! told in `config`, and the files in [`store`].

mod config;
mod coordinator;
pub mod store;
mod worker;

pub use config::{CheckpointConfig, Superseded};
pub use coordinator::coordinate;
pub use worker::{checkpoint, PieceNote, Written};
