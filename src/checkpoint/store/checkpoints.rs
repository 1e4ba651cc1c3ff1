//! Checkpoints in a store: listing them, taking a generation, committing
//! a manifest, restoring, merging, pruning and discarding.

use std::collections::{BTreeMap, BTreeSet};

use crate::dataflow::state::{StateRow, KEY_GROUPS};
use crate::model::params::Params;

use super::manifest::{
    manifest_name, manifest_number, merged_piece_name, piece_parts, Manifest, Origin, PieceInfo,
};
use super::objects::{Object, Store, StoreError, WRITE_CHECK};
use super::piece;

/// A manifest whose pieces span more cuts than this is merged into one
/// piece, however few bytes they hold (see [`wants_merge`]).
pub const MERGE_AFTER_CUTS: usize = 64;
/// How many times taking a generation is tried when another run takes
/// each number first.
const CLAIM_TRIES: usize = 16;

/// Rows merged in order: later rows replace earlier ones with the same key,
/// and removals leave nothing. The result is sorted by key.
///
/// The sort is stable, so rows of one key stay in their order, and it takes
/// linear time on runs already sorted: a piece's sections are written
/// sorted by key, so merging a checkpoint's pieces costs about one pass per
/// piece, not a sort of the state.
pub fn merge_rows(rows: impl IntoIterator<Item = StateRow>) -> Vec<StateRow> {
    let mut merged = piece::last_per_key(rows.into_iter().collect());
    merged.retain(|row| !row.removes());
    merged
}

/// A manifest in the store: its number, and the manifest read or why it
/// could not be.
#[derive(Debug)]
pub struct Listed {
    /// Its number.
    pub number: u64,
    /// Its object's place, for messages.
    pub place: String,
    /// What it says.
    pub manifest: Result<Manifest, StoreError>,
}

impl Listed {
    /// The checkpoint it is (not a claim, and readable).
    pub fn checkpoint(&self) -> Option<&Manifest> {
        self.manifest.as_ref().ok().filter(|m| !m.claim)
    }
}

/// Every manifest among `objects`, newest first, each read or with why it
/// is damaged; one deleted since the listing is left out, and a store that
/// cannot be read is an error.
fn read_manifests(store: &Store, objects: &[Object]) -> Result<Vec<Listed>, StoreError> {
    let mut found = Vec::new();
    for object in objects {
        let Some(number) = manifest_number(&object.name) else {
            continue;
        };
        let place = store.place(&object.name);
        let manifest = match store.get(&object.name) {
            Ok(bytes) => {
                serde_json::from_slice::<Manifest>(&bytes).map_err(|e| StoreError::Damaged {
                    place: place.clone(),
                    what: e.to_string(),
                })
            }
            Err(StoreError::Missing { .. }) => continue,
            Err(error) => return Err(error),
        };
        found.push(Listed {
            number,
            place,
            manifest,
        });
    }
    found.sort_by_key(|l| std::cmp::Reverse(l.number));
    Ok(found)
}

/// Every manifest in the store, newest first (see [`Listed`]).
pub fn manifests(store: &Store) -> Result<Vec<Listed>, StoreError> {
    Ok(listing(store)?.1)
}

/// Every object in the store, and its manifests newest first: one listing
/// for what needs both.
pub fn listing(store: &Store) -> Result<(Vec<Object>, Vec<Listed>), StoreError> {
    let objects = store.list()?;
    let listed = read_manifests(store, &objects)?;
    Ok((objects, listed))
}

/// The numbers of the manifests (newest first) written by a run after a
/// newer generation had begun: a superseded writer's, which never count.
/// A run of generation `g` writes numbers from `g` up; one that finds a
/// manifest of generation `G > g` numbered at or below its own was late.
pub fn fenced(listed: &[Listed]) -> BTreeSet<u64> {
    let generations: Vec<u64> = listed
        .iter()
        .filter_map(|l| l.manifest.as_ref().ok().map(|m| m.generation))
        .collect();
    listed
        .iter()
        .filter(|l| {
            l.manifest.as_ref().is_ok_and(|m| {
                generations
                    .iter()
                    .any(|&g| g > m.generation && g <= l.number)
            })
        })
        .map(|l| l.number)
        .collect()
}

/// The pieces of a checkpoint, read whole and verified.
#[derive(Debug, Default)]
pub struct Fetched(BTreeMap<String, Vec<u8>>);

impl Fetched {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0.values().map(|b| b.len() as u64).sum()
    }
}

/// Reads every piece `manifest` names and checks it against its checksum.
pub fn fetch(store: &Store, manifest: &Manifest) -> Result<Fetched, StoreError> {
    let mut fetched = BTreeMap::new();
    for info in &manifest.pieces {
        let bytes = store.get(&info.name)?;
        piece::verify(&bytes, info).map_err(|what| StoreError::Damaged {
            place: store.place(&info.name),
            what,
        })?;
        fetched.insert(info.name.clone(), bytes);
    }
    Ok(Fetched(fetched))
}

/// The newest checkpoint whose pieces all pass their checksums, with
/// them; each one skipped on the way (damaged, or a superseded writer's)
/// is described in `skipped`. Claims are not checkpoints.
pub fn newest_complete(
    store: &Store,
    skipped: &mut Vec<String>,
) -> Result<Option<(Manifest, Fetched)>, StoreError> {
    let listed = manifests(store)?;
    let fenced = fenced(&listed);
    for entry in listed {
        let manifest = match entry.manifest {
            Ok(manifest) if manifest.claim => continue,
            Ok(manifest) => manifest,
            Err(error) => {
                skipped.push(error.to_string());
                continue;
            }
        };
        if fenced.contains(&entry.number) {
            skipped.push(format!(
                "{}: written by a run of generation {} after a newer one began",
                entry.place, manifest.generation
            ));
            continue;
        }
        match fetch(store, &manifest) {
            Ok(fetched) => return Ok(Some((manifest, fetched))),
            Err(error @ StoreError::Damaged { .. }) => skipped.push(format!(
                "checkpoint at {} ({}): {error}",
                manifest.time, entry.place
            )),
            Err(error @ StoreError::Missing { .. }) => skipped.push(format!(
                "checkpoint at {} ({}): {error}",
                manifest.time, entry.place
            )),
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// The state of the key groups `wanted` selects: `manifest`'s pieces (in
/// `fetched`) merged in order.
pub fn restore_rows(
    store: &Store,
    manifest: &Manifest,
    fetched: &Fetched,
    wanted: impl Fn(u32) -> bool,
) -> Result<Vec<StateRow>, StoreError> {
    let mut rows = Vec::new();
    restore_groups(store, manifest, fetched, wanted, |group| rows.extend(group))?;
    Ok(rows)
}

/// As [`restore_rows`], one key group at a time: `each` gets a group's
/// merged rows, so that a restore never holds more than one group of its
/// state decoded (a restore feeds each to the dataflow as it comes).
pub fn restore_groups(
    store: &Store,
    manifest: &Manifest,
    fetched: &Fetched,
    wanted: impl Fn(u32) -> bool,
    mut each: impl FnMut(Vec<StateRow>),
) -> Result<(), StoreError> {
    let damaged = |info: &PieceInfo| {
        let place = store.place(&info.name);
        move |what| StoreError::Damaged { place, what }
    };
    // Each piece's index is read once; then the groups one at a time.
    let pieces = manifest
        .pieces
        .iter()
        .map(|info| {
            let bytes = fetched
                .0
                .get(&info.name)
                .ok_or_else(|| damaged(info)("not fetched".to_owned()))?;
            Ok((info, piece::Sections::of(bytes).map_err(damaged(info))?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    for group in (0..KEY_GROUPS).filter(|&group| wanted(group)) {
        // The group's rows of every piece, in the pieces' order, are sorted runs.
        let mut rows = Vec::new();
        for (info, sections) in &pieces {
            rows.extend(sections.rows(group).map_err(damaged(info))?);
        }
        if !rows.is_empty() {
            each(merge_rows(rows));
        }
    }
    Ok(())
}

/// Writes `rows` as the piece `name` (replacing a leftover of the same
/// name: names are the writer's own).
pub fn write_piece(
    store: &Store,
    name: &str,
    rows: Vec<StateRow>,
) -> Result<PieceInfo, StoreError> {
    let (bytes, info) = piece::encode(name, rows);
    store.put(name, bytes, false)?;
    Ok(info)
}

/// Whether `manifest`'s pieces are due to be merged into one: when those
/// after its first cut's (the changes since the last merge) hold as many
/// bytes as the first cut's (about the state), or they span more than
/// [`MERGE_AFTER_CUTS`] cuts. A merge rewrites the state, so it is paid
/// once per state's worth of changes (what checkpoints write follows the
/// changes, not the state), and a restore reads about twice the state at
/// most, in a bounded number of pieces.
pub fn wants_merge(manifest: &Manifest) -> bool {
    let cut = |piece: &PieceInfo| piece_parts(&piece.name).map(|(cut, _)| cut);
    let Some(first) = manifest.pieces.first().map(cut) else {
        return false;
    };
    let cuts: BTreeSet<_> = manifest.pieces.iter().map(cut).collect();
    let (base, changes): (Vec<&PieceInfo>, Vec<&PieceInfo>) =
        manifest.pieces.iter().partition(|p| cut(p) == first);
    let bytes = |pieces: &[&PieceInfo]| pieces.iter().map(|p| p.bytes).sum::<u64>();
    cuts.len() > 1 && (bytes(&changes) >= bytes(&base) || cuts.len() > MERGE_AFTER_CUTS)
}

/// Rewrites `manifest`'s pieces as one (`name`), so that the store and a
/// restore stay proportional to the state; returns the manifest to commit
/// in its place.
pub fn merge(store: &Store, manifest: &Manifest, generation: u64) -> Result<Manifest, StoreError> {
    let fetched = fetch(store, manifest)?;
    let mut rows = Vec::new();
    // One pass per key group: each merged group is a sorted run.
    for group in 0..KEY_GROUPS {
        rows.extend(restore_rows(store, manifest, &fetched, |g| g == group)?);
    }
    drop(fetched);
    let name = merged_piece_name(manifest.time, generation);
    let piece = write_piece(store, &name, rows)?;
    Ok(Manifest {
        pieces: vec![piece],
        ..manifest.clone()
    })
}

/// Takes the next generation: creates a claim at the number after every
/// manifest in the store (trying the next one while other runs take them
/// first). A writer of an older generation then finds its next number
/// taken. Returns the generation.
pub fn claim(
    store: &Store,
    origin: Origin,
    params: &Params,
    inputs: Option<[String; 3]>,
) -> Result<u64, StoreError> {
    for _ in 0..CLAIM_TRIES {
        let newest = store
            .list()?
            .iter()
            .filter_map(|o| manifest_number(&o.name))
            .max()
            .unwrap_or(0);
        let generation = newest + 1;
        let claim = Manifest::claim(generation, origin, params, inputs.clone());
        let text = serde_json::to_vec_pretty(&claim).expect("a manifest serializes");
        match store.put(&manifest_name(generation), text, true) {
            Ok(()) => return Ok(generation),
            Err(StoreError::Exists { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
    Err(StoreError::Store {
        place: store.location().to_string(),
        message: format!("{CLAIM_TRIES} other runs took a generation first; try again"),
    })
}

/// Commits a generation's manifests: each is created at the number after
/// the last, never overwritten; a number already taken means a newer
/// generation began, and this one is superseded.
#[derive(Debug)]
pub struct Committer {
    store: Store,
    generation: u64,
    /// The number of the last manifest this generation created.
    last: u64,
}

impl Committer {
    /// The committer of `generation` (its claim is its last manifest).
    pub fn new(store: Store, generation: u64) -> Committer {
        Committer {
            store,
            generation,
            last: generation,
        }
    }

    /// The generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates `manifest` (stamped with the generation) at the next
    /// number: once this returns, the checkpoint counts.
    ///
    /// A commit that failed without an answer (the store timed out) may
    /// still have landed: finding the next number taken by a manifest of
    /// its own generation, the committer goes past it (only this
    /// committer writes its generation's manifests); finding one of
    /// another generation, it is superseded.
    pub fn commit(&mut self, mut manifest: Manifest) -> Result<Manifest, StoreError> {
        manifest.generation = self.generation;
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        loop {
            let number = self.last + 1;
            match self.store.put(&manifest_name(number), text.clone(), true) {
                Ok(()) => {
                    self.last = number;
                    return Ok(manifest);
                }
                Err(StoreError::Exists { .. }) => match self.generation_of(number) {
                    Some(generation) if generation == self.generation => self.last = number,
                    _ => return Err(self.superseded(number)),
                },
                Err(error) => return Err(error),
            }
        }
    }

    /// The generation of manifest `number`, if it can be read.
    fn generation_of(&self, number: u64) -> Option<u64> {
        self.store
            .get(&manifest_name(number))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .map(|m| m.generation)
    }

    /// The error of finding manifest `number` written by another run.
    fn superseded(&self, number: u64) -> StoreError {
        let newer = self.generation_of(number).unwrap_or(number);
        StoreError::Superseded {
            place: self.store.location().to_string(),
            ours: self.generation,
            newer,
        }
    }

    /// Deletes what no kept checkpoint needs: manifests but the newest
    /// `keep` checkpoints (and this generation's claim), and pieces they do
    /// not name — this generation's (of `runs`, the live workers' run ids)
    /// only if older than the newest kept checkpoint (later ones may be on
    /// their way into the next), another writer's only if the store wrote
    /// them before this generation's last manifest (a newer generation
    /// writes only after that). Finding a manifest above its last, it
    /// deletes nothing: it is superseded. Returns the bytes freed.
    pub fn prune(&self, runs: &BTreeSet<u64>, keep: usize) -> Result<u64, StoreError> {
        let (objects, listed) = listing(&self.store)?;
        if let Some(newer) = listed.iter().find(|l| l.number > self.last) {
            return Err(self.superseded(newer.number));
        }
        let fenced = fenced(&listed);
        let mut kept: BTreeSet<String> =
            [manifest_name(self.generation), manifest_name(self.last)].into();
        let mut newest_time = None;
        let checkpoints = listed
            .iter()
            .filter(|l| !fenced.contains(&l.number))
            .filter_map(|l| Some((l.number, l.checkpoint()?)));
        let mut times = BTreeSet::new();
        for (number, manifest) in checkpoints {
            // A merge's manifest replaces the one of its time before it.
            if times.len() == keep.max(1) || !times.insert(manifest.time) {
                continue;
            }
            newest_time = newest_time.max(Some(manifest.time));
            kept.insert(manifest_name(number));
            kept.extend(manifest.pieces.iter().map(|p| p.name.clone()));
        }
        let cutoff = objects
            .iter()
            .find(|o| o.name == manifest_name(self.last))
            .map_or(i64::MIN, |o| o.modified_ms);
        let merged = format!("m{}", self.generation);
        let ours =
            |writer: &str| writer == merged || writer.parse().is_ok_and(|r: u64| runs.contains(&r));
        let mut freed = 0;
        for object in objects.iter().filter(|o| !kept.contains(&o.name)) {
            let stale = if manifest_number(&object.name).is_some() {
                true
            } else if let Some((cut, writer)) = piece_parts(&object.name) {
                if ours(writer) {
                    cut.is_some_and(|c| newest_time.is_some_and(|n| c < n))
                } else {
                    object.modified_ms < cutoff
                }
            } else {
                // A start's check left by a crash; anything else is not ours.
                object.name.starts_with(WRITE_CHECK) && object.modified_ms < cutoff
            };
            if stale && self.store.delete(&object.name)? {
                freed += object.bytes;
            }
        }
        Ok(freed)
    }
}

/// Deletes every manifest numbered below `below` (every one: `u64::MAX`)
/// and every piece (`--reset-state`). Returns how many objects it deleted.
pub fn reset(store: &Store, below: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for object in store.list()? {
        let ours = match manifest_number(&object.name) {
            Some(number) => number < below,
            None => piece_parts(&object.name).is_some(),
        };
        // Another process of the cluster may be discarding them too.
        if ours && store.delete(&object.name)? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Pieces among `objects` named by no manifest of `listed`: a checkpoint
/// that did not complete (or is being written), as `(cut label, pieces,
/// bytes)`.
pub fn incomplete(objects: &[Object], listed: &[Listed]) -> Vec<(String, usize, u64)> {
    let named: BTreeSet<&str> = listed
        .iter()
        .filter_map(|l| l.manifest.as_ref().ok())
        .flat_map(|m| m.pieces.iter().map(|p| p.name.as_str()))
        .collect();
    let mut by_cut: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for object in objects {
        if let Some((cut, _)) = piece_parts(&object.name) {
            if !named.contains(object.name.as_str()) {
                let label = cut.map_or_else(|| "final".to_owned(), |c| format!("{c:020}"));
                let entry = by_cut.entry(label).or_default();
                entry.0 += 1;
                entry.1 += object.bytes;
            }
        }
    }
    by_cut
        .into_iter()
        .map(|(cut, (pieces, bytes))| (cut, pieces, bytes))
        .collect()
}
