//! Manifests: what makes a checkpoint count, and the names of the objects.
//!
//! Manifests are numbered: `manifest-<number>.json`, each created once,
//! never overwritten, at the number after the newest its writer knows. A
//! run takes a generation at start by creating a *claim* (a manifest that
//! holds no state) at the next free number; its checkpoints follow it, each
//! recording the generation. A writer whose next number is taken finds
//! itself superseded.

use serde::{Deserialize, Serialize};

use crate::model::params::Params;

pub use crate::model::ingest::PartitionState;

const MANIFEST_VERSION: u32 = 2;

/// A piece file as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    /// The object's name in the folder or prefix.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The CRC-32 of the whole piece.
    pub crc32: u32,
    /// Rows in it.
    pub rows: u64,
}

/// Where a checkpoint's state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `presence run`: its outputs are in the output topics.
    Run,
    /// `presence backfill`: its outputs were written to files, not topics.
    Backfill,
}

impl Origin {
    /// The command that wrote it, as listings and refusals name it.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Run => "run",
            Origin::Backfill => "backfill",
        }
    }
}

/// A complete checkpoint, or a run's claim of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format's version.
    pub version: u32,
    /// The cut: the state reflects every logical time below this.
    pub time: u64,
    /// When it was written (ms since the epoch).
    pub wall_time_ms: u64,
    /// What wrote it.
    pub origin: Origin,
    /// The detection parameters it was made with.
    pub params: Params,
    /// The input topics it read (probes, logins, base counts); none from a backfill.
    pub inputs: Option<[String; 3]>,
    /// What it reflects of each input partition.
    pub partitions: Vec<PartitionState>,
    /// Its pieces, oldest first.
    pub pieces: Vec<PieceInfo>,
    /// Workers of the cluster that wrote it (for the record: any shape restores it).
    pub workers: usize,
    /// Per output partition, an offset at or above which is every record
    /// written at a logical time at or after the cut (by this run or any
    /// later one): a restart reads the output topics back from there.
    /// `None` (a backfill, or an older format): read them in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputFloor>>,
    /// The generation of the run that wrote it: the number of its claim
    /// (0: a format before generations).
    #[serde(default)]
    pub generation: u64,
    /// A claim: the start of a generation, holding no state (not a checkpoint).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
}

/// Where reading an output partition back starts (see [`Manifest::outputs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFloor {
    /// The output topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Every record at or after the cut is at this offset or above.
    pub offset: i64,
}

impl Manifest {
    /// A manifest of `pieces` at `time`, without partitions.
    pub fn new(time: u64, origin: Origin, params: &Params, workers: usize) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            time,
            wall_time_ms: crate::model::clock::now_ms(),
            origin,
            params: *params,
            inputs: None,
            partitions: Vec::new(),
            pieces: Vec::new(),
            workers,
            outputs: None,
            generation: 0,
            claim: false,
        }
    }

    /// A claim of `generation` by a run of `origin` with `params` and `inputs`.
    pub fn claim(
        generation: u64,
        origin: Origin,
        params: &Params,
        inputs: Option<[String; 3]>,
    ) -> Self {
        Manifest {
            inputs,
            generation,
            claim: true,
            ..Manifest::new(0, origin, params, 0)
        }
    }

    /// Bytes of all its pieces.
    pub fn bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.bytes).sum()
    }

    /// Rows in all its pieces (before merging).
    pub fn rows(&self) -> u64 {
        self.pieces.iter().map(|p| p.rows).sum()
    }
}

/// The object name of manifest `number`.
pub fn manifest_name(number: u64) -> String {
    format!("manifest-{number:020}.json")
}

/// A manifest's number, from its object name.
pub fn manifest_number(name: &str) -> Option<u64> {
    name.strip_prefix("manifest-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// The name of the piece of worker `worker` at `cut` (`None`: the final
/// cut) of the run whose workers' run id is `run`.
pub fn piece_name(cut: Option<u64>, run: u64, worker: usize) -> String {
    let cut = cut.map_or_else(|| "final".to_owned(), |c| format!("{c:020}"));
    format!("piece-{cut}-{run}-w{worker:04}.piece")
}

/// The name of the piece that merges a checkpoint at `time` of generation
/// `generation`.
pub fn merged_piece_name(time: u64, generation: u64) -> String {
    format!("piece-{time:020}-m{generation}-w0000.piece")
}

/// A piece's cut (`None`: final) and writer (a run id, or `m<generation>`
/// for a merge), from its name.
pub fn piece_parts(name: &str) -> Option<(Option<u64>, &str)> {
    let rest = name.strip_prefix("piece-")?.strip_suffix(".piece")?;
    let mut parts = rest.split('-');
    let cut = parts.next()?;
    let run = parts.next()?;
    let cut = if cut == "final" {
        None
    } else {
        Some(cut.parse().ok()?)
    };
    Some((cut, run))
}
