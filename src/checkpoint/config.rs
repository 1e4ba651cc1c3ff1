//! What the checkpoint operators are told: where and how to write.

use std::sync::{Arc, OnceLock};

use crate::dataflow::Time;
use crate::model::params::Params;
use crate::observe::hooks::SharedHooks;

use super::store::{Manifest, Origin, Store};

/// Set (once, with the line to stop with) when a newer run took the
/// checkpoint store: this run may no longer make a checkpoint count, and
/// the service stops.
pub type Superseded = Arc<OnceLock<String>>;

/// Where and how checkpoints are written.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The checkpoint store (every process of a cluster names the same).
    pub store: Store,
    /// The generation this run took (its claim's number): its manifests
    /// follow it.
    pub generation: u64,
    /// Set when a newer generation took the store.
    pub superseded: Superseded,
    /// A cut every multiple of this logical time; `None`: only the final one.
    pub every: Option<u64>,
    /// What writes it.
    pub origin: Origin,
    /// The detection parameters (recorded, and checked on restore).
    pub params: Params,
    /// The input topics (probes, logins, base counts), for `run`.
    pub inputs: Option<[String; 3]>,
    /// The checkpoint this run restored, whose pieces the next ones extend.
    pub base: Option<Manifest>,
    /// The run's first epoch: file names of different runs never collide.
    pub run: u64,
    /// The restore epoch: its updates are the restored state, already in
    /// `base`, not changes to write again.
    pub restored_at: Option<Time>,
    /// The rejected topic, and the rejected records in it that this run
    /// does not write again (see `crate::service::restore::Restart::rejections`).
    pub rejections: Option<(String, Vec<crate::kafka::upsert::WrittenRejection>)>,
    /// How many complete checkpoints pruning keeps.
    pub kept: usize,
    /// The harness's hooks ([`crate::observe::hooks::Hooks::before_durable`]
    /// before each piece is made durable).
    pub hooks: SharedHooks,
}
