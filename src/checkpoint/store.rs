//! Checkpoints on disk, in `--checkpoint-dir`: immutable piece files, and
//! manifests that say which pieces make a checkpoint.
//!
//! - A **piece** holds rows of state (see [`StateRow`]) that one worker wrote at
//!   one cut: the rows that changed since its previous piece. Its rows are
//!   grouped into [`KEY_GROUPS`] key groups by a stable hash of their key, each
//!   group a section with its own CRC-32, indexed at the end of the file,
//!   so that a worker of any later cluster shape reads only the groups it
//!   restores. The file as a whole has a CRC-32 too, recorded in the
//!   manifest.
//! - A **manifest** (`manifest-<time>.json`) names every piece of a
//!   checkpoint, oldest first: the state is the pieces' rows merged in
//!   order, later rows replacing earlier ones with the same key. It also
//!   holds what the checkpoint reflects of the input (each partition's next
//!   offset and lateness state) and the parameters it was made with. It is
//!   written last, to a temporary name, synced and renamed, so a
//!   checkpoint counts once, and only once, it is complete and durable.
//!
//! Files are only ever created, renamed and deleted, never changed, so the
//! folder could be an object store. [`merge`] rewrites a long chain of
//! pieces into one, off the hot path; [`prune`] deletes what no kept
//! manifest names.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataflow::state::StateRow;
use crate::model::params::Params;

pub use crate::dataflow::state::KEY_GROUPS;
/// Manifests kept by default (with the pieces they name): the newest and
/// the ones before it, to fall back to when a newer one is damaged.
pub const MANIFESTS_KEPT: usize = 3;
/// A manifest whose pieces span more cuts than this is merged into one piece.
pub const MERGE_AFTER_CUTS: usize = 8;

const PIECE_MAGIC: &[u8; 8] = b"PRSNPC01";
const PIECE_END: &[u8; 8] = b"PRSNEND1";
const MANIFEST_VERSION: u32 = 1;

/// Rows merged in order: later rows replace earlier ones with the same key,
/// and removals leave nothing. The result is sorted by key.
///
/// The sort is stable, so rows of one key stay in their order, and it takes
/// linear time on runs already sorted: a piece's sections are written
/// sorted by key, so merging a checkpoint's pieces costs about one pass per
/// piece, not a sort of the state.
pub fn merge_rows(rows: impl IntoIterator<Item = StateRow>) -> Vec<StateRow> {
    let mut merged = last_per_key(rows.into_iter().collect());
    merged.retain(|row| !row.removes());
    merged
}

/// Of `rows` in order, the last of each key, sorted by key (a stable sort).
fn last_per_key(mut rows: Vec<StateRow>) -> Vec<StateRow> {
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut last: Vec<StateRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match last.last_mut() {
            Some(previous) if previous.key() == row.key() => *previous = row,
            _ => last.push(row),
        }
    }
    last
}

/// A piece file as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    /// The file name in the checkpoint folder.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The CRC-32 of the whole file.
    pub crc32: u32,
    /// Rows in it.
    pub rows: u64,
}

/// One section of a piece: a key group's rows.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Section {
    group: u32,
    offset: u64,
    len: u64,
    crc32: u32,
}

/// A checkpoint that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be written, read, renamed or synced.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file's content is not what was written.
    #[error("{path} is damaged: {what}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn damaged(path: &Path, what: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// A writer that keeps the CRC-32 of everything written.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `rows` as the piece `name` in `dir`: to a temporary name, synced,
/// then renamed (the folder itself is synced with the manifest that names
/// it).
pub fn write_piece(dir: &Path, name: &str, rows: Vec<StateRow>) -> Result<PieceInfo, StoreError> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut groups: BTreeMap<u32, Vec<StateRow>> = BTreeMap::new();
    for row in rows {
        groups.entry(row.group()).or_default().push(row);
    }
    let mut count = 0;
    let file = File::create(&temporary).map_err(io_error(&temporary))?;
    let mut out = Checksummed {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    let write =
        |out: &mut Checksummed<_>, bytes: &[u8]| out.write_all(bytes).map_err(io_error(&temporary));
    write(&mut out, PIECE_MAGIC)?;
    let mut sections = Vec::new();
    for (group, rows) in groups {
        // Sorted by key with one row per key (the last: a row carried from
        // a failed cut and the cut's own), so that a restore merges sorted
        // runs.
        let rows = last_per_key(rows);
        count += rows.len() as u64;
        let bytes = bincode::serialize(&rows).expect("rows serialize");
        sections.push(Section {
            group,
            offset: out.written,
            len: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        });
        write(&mut out, &bytes)?;
    }
    let index = bincode::serialize(&sections).expect("an index serializes");
    write(&mut out, &index)?;
    write(&mut out, &(index.len() as u64).to_le_bytes())?;
    write(&mut out, &crc32fast::hash(&index).to_le_bytes())?;
    write(&mut out, PIECE_END)?;
    out.flush().map_err(io_error(&temporary))?;
    let crc32 = out.hasher.clone().finalize();
    let bytes = out.written;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_error(&temporary)(e.into_error()))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    Ok(PieceInfo {
        name: name.to_owned(),
        bytes,
        crc32,
        rows: count,
    })
}

/// Checks that the piece has the size and CRC-32 its manifest records.
pub fn verify_piece(dir: &Path, piece: &PieceInfo) -> Result<(), StoreError> {
    let path = dir.join(&piece.name);
    let mut file = File::open(&path).map_err(io_error(&path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_error(&path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    if bytes != piece.bytes {
        return Err(damaged(
            &path,
            format!("{bytes} bytes, the manifest says {}", piece.bytes),
        ));
    }
    if hasher.finalize() != piece.crc32 {
        return Err(damaged(&path, "its checksum does not match its manifest's"));
    }
    Ok(())
}

/// The sections of the key groups `wanted` selects in the piece `name`:
/// each group's rows, in the order written.
fn read_sections(
    dir: &Path,
    name: &str,
    wanted: impl Fn(u32) -> bool,
) -> Result<Vec<(u32, Vec<StateRow>)>, StoreError> {
    let path = dir.join(name);
    let mut file = File::open(&path).map_err(io_error(&path))?;
    let size = file.metadata().map_err(io_error(&path))?.len();
    let footer = 8 + 4 + 8;
    if size < (PIECE_MAGIC.len() + footer) as u64 {
        return Err(damaged(&path, "too short to be a piece"));
    }
    let mut tail = [0u8; 20];
    file.seek(SeekFrom::Start(size - footer as u64))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(io_error(&path))?;
    if &tail[12..] != PIECE_END {
        return Err(damaged(&path, "no end marker"));
    }
    let index_len = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
    let index_crc = u32::from_le_bytes(tail[8..12].try_into().expect("4 bytes"));
    let index_at = (size - footer as u64)
        .checked_sub(index_len)
        .ok_or_else(|| damaged(&path, "index longer than the file"))?;
    let mut index = vec![0; index_len as usize];
    file.seek(SeekFrom::Start(index_at))
        .and_then(|_| file.read_exact(&mut index))
        .map_err(io_error(&path))?;
    if crc32fast::hash(&index) != index_crc {
        return Err(damaged(&path, "its index fails its checksum"));
    }
    let sections: Vec<Section> =
        bincode::deserialize(&index).map_err(|e| damaged(&path, format!("index: {e}")))?;
    let mut rows = Vec::new();
    for section in sections.into_iter().filter(|s| wanted(s.group)) {
        let mut bytes = vec![0; section.len as usize];
        file.seek(SeekFrom::Start(section.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(io_error(&path))?;
        if crc32fast::hash(&bytes) != section.crc32 {
            return Err(damaged(
                &path,
                format!("key group {} fails its checksum", section.group),
            ));
        }
        let section_rows: Vec<StateRow> = bincode::deserialize(&bytes)
            .map_err(|e| damaged(&path, format!("key group {}: {e}", section.group)))?;
        rows.push((section.group, section_rows));
    }
    Ok(rows)
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

pub use crate::model::ingest::PartitionState;

/// A complete checkpoint.
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

/// The file name of the manifest of `time`.
pub fn manifest_name(time: u64) -> String {
    format!("manifest-{time:020}.json")
}

/// Creates `dir` if needed and checks that files can be created, synced and
/// removed in it, so that an unusable folder fails before any work.
pub fn prepare(dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    File::create(&probe)
        .and_then(|f| f.sync_all())
        .map_err(io_error(dir))?;
    fs::remove_file(&probe).map_err(io_error(&probe))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Writes `manifest` durably: temporary name, sync, rename, sync the folder.
/// Once this returns, the checkpoint counts.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let name = manifest_name(manifest.time);
    let path = dir.join(&name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    File::create(&temporary)
        .and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        })
        .map_err(io_error(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

/// The files of `dir`, with their names.
fn files(dir: &Path) -> Result<Vec<(PathBuf, String)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((path, name));
    }
    Ok(found)
}

/// Whether `name` is a manifest's file name.
fn is_manifest(name: &str) -> bool {
    name.starts_with("manifest-") && name.ends_with(".json")
}

/// A manifest's file, and the manifest read from it or why it could not be.
pub type Listed = (PathBuf, Result<Manifest, StoreError>);

/// Every manifest in `dir`, newest first, each read or with why it could
/// not be.
pub fn manifests(dir: &Path) -> Result<Vec<Listed>, StoreError> {
    let mut found = Vec::new();
    for (path, name) in files(dir)? {
        if is_manifest(&name) {
            let manifest = fs::read(&path).map_err(io_error(&path)).and_then(|bytes| {
                serde_json::from_slice::<Manifest>(&bytes)
                    .map_err(|e| damaged(&path, e.to_string()))
            });
            found.push((path, manifest));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(found)
}

/// The newest manifest whose pieces all pass their checksums; each one
/// skipped on the way is described in `skipped`.
pub fn newest_complete(
    dir: &Path,
    skipped: &mut Vec<String>,
) -> Result<Option<Manifest>, StoreError> {
    for (path, manifest) in manifests(dir)? {
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                skipped.push(format!("{}: {error}", path.display()));
                continue;
            }
        };
        match manifest
            .pieces
            .iter()
            .try_for_each(|piece| verify_piece(dir, piece))
        {
            Ok(()) => return Ok(Some(manifest)),
            Err(error) => skipped.push(format!(
                "checkpoint at {} ({}): {error}",
                manifest.time,
                path.display()
            )),
        }
    }
    Ok(None)
}

/// The state of the key groups `wanted` selects: `manifest`'s pieces read
/// and merged in order.
pub fn restore_rows(
    dir: &Path,
    manifest: &Manifest,
    wanted: impl Fn(u32) -> bool,
) -> Result<Vec<StateRow>, StoreError> {
    // Merged key group by key group: each group's rows of every piece, in
    // the pieces' order, are sorted runs.
    let mut groups: BTreeMap<u32, Vec<StateRow>> = BTreeMap::new();
    for piece in &manifest.pieces {
        for (group, rows) in read_sections(dir, &piece.name, &wanted)? {
            groups.entry(group).or_default().extend(rows);
        }
    }
    Ok(groups.into_values().flat_map(merge_rows).collect())
}

/// Rewrites `manifest`'s pieces as one (`name`), key group by key group, so
/// that the folder and a restore stay proportional to the state; returns
/// the manifest to write in its place.
pub fn merge(dir: &Path, manifest: &Manifest, name: &str) -> Result<Manifest, StoreError> {
    let mut rows = Vec::new();
    // One pass per key group: memory is a group's rows, not the state's.
    for group in 0..KEY_GROUPS {
        let merged = restore_rows(dir, manifest, |g| g == group)?;
        rows.push(merged);
    }
    let piece = write_piece(dir, name, rows.into_iter().flatten().collect())?;
    Ok(Manifest {
        pieces: vec![piece],
        ..manifest.clone()
    })
}

/// The name of the piece of worker `worker` at `cut` (`None`: the final
/// cut) of the run that started at `run`.
pub fn piece_name(cut: Option<u64>, run: u64, worker: usize) -> String {
    let cut = cut.map_or_else(|| "final".to_owned(), |c| format!("{c:020}"));
    format!("piece-{cut}-{run}-w{worker:04}.piece")
}

/// A piece file's cut (`None`: final) and run, from its name.
fn piece_parts(name: &str) -> Option<(Option<u64>, &str)> {
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

/// Deletes what no checkpoint can still need: manifests but the newest
/// `keep` complete ones, pieces no kept manifest names — of
/// other runs than `runs` (every worker's of the live cluster; others were
/// left by a crash), or of those if older than the newest manifest (pieces
/// of later cuts may be on their way into the next one) — and temporary
/// files of other runs. Returns the bytes freed.
pub fn prune(
    dir: &Path,
    runs: &std::collections::BTreeSet<u64>,
    keep: usize,
) -> Result<u64, StoreError> {
    let found = manifests(dir)?;
    let mut kept: BTreeMap<String, ()> = BTreeMap::new();
    let mut freed = 0;
    let mut remove = |path: &Path| -> Result<(), StoreError> {
        let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(path) {
            Ok(()) => {
                freed += bytes;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(path)(e)),
        }
    };
    let mut complete = 0;
    let mut newest = None;
    for (path, manifest) in &found {
        match manifest {
            Ok(manifest) if complete < keep.max(1) => {
                complete += 1;
                newest = newest.max(Some(manifest.time));
                kept.insert(manifest_name(manifest.time), ());
                for piece in &manifest.pieces {
                    kept.insert(piece.name.clone(), ());
                }
            }
            _ => remove(path)?,
        }
    }
    let ours = |run: &str| run == "merged" || run.parse().is_ok_and(|r: u64| runs.contains(&r));
    for (path, name) in files(dir)? {
        if kept.contains_key(&name) {
            continue;
        }
        let stale = if let Some(piece) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp"))
        {
            // A temporary file: this run's may be being written.
            !piece_parts(piece).is_some_and(|(_, r)| ours(r))
        } else if let Some((cut, piece_run)) = piece_parts(&name) {
            !ours(piece_run) || cut.is_some_and(|c| newest.is_some_and(|n| c < n))
        } else {
            false // not ours
        };
        if stale {
            remove(&path)?;
        }
    }
    Ok(freed)
}

/// Deletes every manifest, piece and temporary file in `dir` (`--reset-state`).
/// Returns how many files it deleted.
pub fn reset(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for (path, name) in files(dir)? {
        let ours = name.ends_with(".piece")
            || is_manifest(&name)
            || (name.starts_with('.') && name.ends_with(".tmp"));
        if ours {
            // Another process of the cluster may be discarding them too.
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path)(error)),
            }
        }
    }
    sync_dir(dir)?;
    Ok(removed)
}

/// Pieces written but named by no manifest: a checkpoint that did not
/// complete (or is being written), as `(cut label, files, bytes)`.
pub fn incomplete(dir: &Path) -> Result<Vec<(String, usize, u64)>, StoreError> {
    let mut named = std::collections::BTreeSet::new();
    for (_, manifest) in manifests(dir)? {
        if let Ok(manifest) = manifest {
            named.extend(manifest.pieces.into_iter().map(|p| p.name));
        }
    }
    let mut by_cut: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (path, name) in files(dir)? {
        if name.ends_with(".piece") && !named.contains(&name) {
            // piece-<cut>-<run>-w<worker>.piece
            let cut = name.split('-').nth(1).unwrap_or("?").to_owned();
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let entry = by_cut.entry(cut).or_default();
            entry.0 += 1;
            entry.1 += bytes;
        }
    }
    Ok(by_cut
        .into_iter()
        .map(|(cut, (files, bytes))| (cut, files, bytes))
        .collect())
}

/// A human-readable listing of the checkpoints in `dir`, newest first: for
/// each, its logical time, when and by what it was written, whether it is
/// complete (every piece present with its checksum), its size, rows,
/// parameters and the offsets it resumes at; then pieces that no complete
/// checkpoint names (one being written, or left by a crash).
pub fn describe(dir: &Path) -> Result<String, StoreError> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let found = manifests(dir)?;
    if found.is_empty() {
        let _ = writeln!(out, "no checkpoints in {}", dir.display());
    }
    for (path, manifest) in found {
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                let _ = writeln!(
                    out,
                    "{}: not a complete checkpoint: {error}",
                    path.display()
                );
                continue;
            }
        };
        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_millis(manifest.wall_time_ms);
        let status = match manifest
            .pieces
            .iter()
            .try_for_each(|p| verify_piece(dir, p))
        {
            Ok(()) => "complete".to_owned(),
            Err(error) => format!("NOT usable: {error}"),
        };
        let _ = writeln!(
            out,
            "checkpoint at logical time {} (written {}, by {}, {} workers): {status}",
            manifest.time,
            humantime::format_rfc3339_seconds(wall),
            manifest.origin.name(),
            manifest.workers
        );
        let _ = writeln!(
            out,
            "  {} bytes in {} pieces, {} rows",
            manifest.bytes(),
            manifest.pieces.len(),
            manifest.rows()
        );
        let _ = writeln!(out, "  parameters: {}", manifest.params.as_flags());
        if let Some(inputs) = &manifest.inputs {
            let _ = writeln!(out, "  inputs: {}", inputs.join(", "));
        }
        if !manifest.partitions.is_empty() {
            let offsets: Vec<String> = manifest
                .partitions
                .iter()
                .map(|p| format!("{}/{} {}", p.topic, p.partition, p.next))
                .collect();
            let _ = writeln!(out, "  resumes at: {}", offsets.join(", "));
        }
        match &manifest.outputs {
            Some(floors) if !floors.is_empty() => {
                let offsets: Vec<String> = floors
                    .iter()
                    .map(|f| format!("{}/{} {}", f.topic, f.partition, f.offset))
                    .collect();
                let _ = writeln!(out, "  outputs read back from: {}", offsets.join(", "));
            }
            _ => {
                let _ = writeln!(out, "  outputs read back from: their beginning");
            }
        }
    }
    for (cut, files, bytes) in incomplete(dir)? {
        let _ = writeln!(
            out,
            "incomplete: cut {cut}: {files} pieces, {bytes} bytes, named by no complete checkpoint (being written, or left by a crash)"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
