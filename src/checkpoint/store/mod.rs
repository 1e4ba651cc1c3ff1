//! Checkpoints in `--checkpoint-dir`: a local folder or an S3 prefix
//! (`s3://BUCKET/PREFIX`), one code path through the `object_store` crate.
//! Objects are only ever created and deleted, never changed.
//!
//! - A **piece** holds rows of state (see [`StateRow`](crate::dataflow::state::StateRow))
//!   that one worker wrote at one cut: the rows that changed since its
//!   previous piece. Its rows are grouped into [`KEY_GROUPS`] key groups by
//!   a stable hash of their key, each group a section with its own CRC-32,
//!   so that a worker of any later cluster shape takes only the groups it
//!   restores. The piece as a whole has a CRC-32 too, recorded in the
//!   manifest ([`piece`]).
//! - A **manifest** (`manifest-<number>.json`) names every piece of a
//!   checkpoint, oldest first: the state is the pieces' rows merged in
//!   order, later rows replacing earlier ones with the same key. It also
//!   holds what the checkpoint reflects of the input (each partition's next
//!   offset and lateness state) and the parameters it was made with. It is
//!   created last, at the number after the previous one, and never
//!   overwritten (a conditional create): a checkpoint counts once, and only
//!   once, its manifest exists ([`manifest`]).
//! - **Generations** fence out older writers: a run starts by creating a
//!   claim at the next free number; a writer of an older generation finds
//!   its next number taken and stops, superseded
//!   ([`checkpoints::Committer`]).
//!
//! [`checkpoints::merge`] rewrites a long chain of pieces into one, off the
//! hot path; [`checkpoints::Committer::prune`] deletes what no kept manifest
//! names. The requests themselves, their retries and their counts are in
//! [`objects`].

pub mod checkpoints;
pub mod describe;
pub mod location;
pub mod manifest;
pub mod objects;
pub mod piece;

pub use checkpoints::{
    claim, fenced, fetch, incomplete, listing, manifests, merge, merge_rows, newest_complete,
    reset, restore_groups, restore_rows, wants_merge, write_piece, Committer, Fetched, Listed,
    MERGE_AFTER_CUTS,
};
pub use describe::describe;
pub use location::Location;
pub use manifest::{
    manifest_name, piece_name, Manifest, Origin, OutputFloor, PartitionState, PieceInfo,
};
pub use objects::{Object, Store, StoreError, PATIENCE};

pub use crate::dataflow::state::KEY_GROUPS;
/// Checkpoints kept by default (with the pieces they name): the newest
/// and the ones before it, to fall back to when a newer one is damaged.
pub const MANIFESTS_KEPT: usize = 3;

#[cfg(test)]
mod tests;
