//! What the checkpoint operators are told: where and how to write.

use std::path::PathBuf;

use crate::dataflow::Time;
use crate::model::params::Params;
use crate::observe::hooks::SharedHooks;

use super::store::{Manifest, Origin};

/// Where and how checkpoints are written.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// The checkpoint folder (every process of a cluster names the same).
    pub dir: PathBuf,
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
