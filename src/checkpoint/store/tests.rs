//! The store's unit tests, on a local folder (the same code path as an S3
//! prefix): names, checksums, manifests, generations, pruning.
use std::fs;

use super::*;
use crate::dataflow::operators::windows::Visit;
use crate::dataflow::state::StateRow;
use crate::model::params::Params;

fn walkin(device: &str, start: u64, detected_at: Option<u64>) -> StateRow {
    StateRow::WalkIn {
        business: "shop".into(),
        device: device.into(),
        start,
        detected_at,
    }
}

fn folder() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::Local(dir.path().to_owned()), &Default::default()).unwrap();
    (dir, store)
}

/// The state of `manifest`, all key groups or those `wanted` selects.
fn state(store: &Store, manifest: &Manifest, wanted: impl Fn(u32) -> bool) -> Vec<StateRow> {
    let fetched = fetch(store, manifest).unwrap();
    restore_rows(store, manifest, &fetched, wanted).unwrap()
}

#[test]
fn pieces_round_trip_by_key_group_and_later_rows_win() {
    let (_dir, store) = folder();
    let first: Vec<StateRow> = (0..500)
        .map(|i| walkin(&format!("d{i}"), i, Some(i + 5)))
        .chain([StateRow::Window {
            business: "shop".into(),
            device: "d1".into(),
            state: Some(crate::dataflow::operators::windows::KeySnapshot {
                head: Some(Visit {
                    first: 1,
                    last: 9,
                    probes: 3,
                    detected_at: Some(9),
                }),
                tail: vec![20, 21],
            }),
        }])
        .collect();
    let a = write_piece(&store, "a.piece", first.clone()).unwrap();
    // The second piece removes one walk-in and moves another (twice: a
    // row carried from a failed cut, then the cut's own).
    let second = vec![
        walkin("d0", 0, None),
        walkin("d1", 1, Some(6)),
        walkin("d1", 1, Some(7)),
    ];
    let b = write_piece(&store, "b.piece", second).unwrap();
    let mut manifest = Manifest::new(100, Origin::Run, &Params::default(), 2);
    manifest.pieces = vec![a, b];
    let all = state(&store, &manifest, |_| true);
    assert_eq!(all.len(), 500, "500 walk-ins - 1 removed + 1 window");
    assert!(all.contains(&walkin("d1", 1, Some(7))));
    assert!(!all.iter().any(|r| r.key() == walkin("d0", 0, None).key()));
    // Reading by halves of the key groups gives the same rows.
    let even = state(&store, &manifest, |g| g % 2 == 0);
    let odd = state(&store, &manifest, |g| g % 2 == 1);
    let by_key = |mut rows: Vec<StateRow>| {
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        rows
    };
    assert_eq!(
        by_key(even.into_iter().chain(odd).collect()),
        by_key(all.clone())
    );
    // Merging keeps the state and makes one piece.
    let merged = merge(&store, &manifest, 1).unwrap();
    assert_eq!(merged.pieces.len(), 1);
    assert_eq!(state(&store, &merged, |_| true), all);
}

#[test]
fn a_damaged_piece_fails_its_checksum_and_the_previous_checkpoint_counts() {
    let (dir, store) = folder();
    let params = Params::default();
    let generation = claim(&store, Origin::Run, &params, None).unwrap();
    let mut committer = Committer::new(store.clone(), generation);
    let a = write_piece(&store, "a.piece", vec![walkin("d", 1, Some(2))]).unwrap();
    let mut older = Manifest::new(10, Origin::Run, &params, 1);
    older.pieces = vec![a.clone()];
    committer.commit(older).unwrap();
    let b = write_piece(&store, "b.piece", vec![walkin("e", 1, Some(2))]).unwrap();
    let mut newer = Manifest::new(20, Origin::Run, &params, 1);
    newer.pieces = vec![a, b.clone()];
    committer.commit(newer).unwrap();
    let newest = |skipped: &mut Vec<String>| newest_complete(&store, skipped).unwrap().unwrap().0;
    let mut skipped = Vec::new();
    assert_eq!(newest(&mut skipped).time, 20);
    // Flip a byte of b.
    let path = dir.path().join(&b.name);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert_eq!(newest(&mut skipped).time, 10);
    assert!(skipped[0].contains("checksum"), "{skipped:?}");
    // A half-written manifest does not count either, nor one whose piece
    // is gone.
    fs::write(dir.path().join(manifest_name(9)), "{\"version\":").unwrap();
    fs::remove_file(&path).unwrap();
    let mut skipped = Vec::new();
    assert_eq!(newest(&mut skipped).time, 10);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[1].contains("missing"), "{skipped:?}");
}

#[test]
fn a_manifest_is_created_once_and_a_newer_generation_supersedes_the_older() {
    let (_dir, store) = folder();
    let params = Params::default();
    let old = claim(&store, Origin::Run, &params, None).unwrap();
    let mut older = Committer::new(store.clone(), old);
    let piece = write_piece(
        &store,
        &piece_name(Some(5), 1, 0),
        vec![walkin("d", 1, Some(2))],
    )
    .unwrap();
    let mut at_5 = Manifest::new(5, Origin::Run, &params, 1);
    at_5.pieces = vec![piece];
    older.commit(at_5.clone()).unwrap();
    // A second run takes the next generation: the older one's next
    // manifest finds its number taken, and it is superseded.
    let new = claim(&store, Origin::Run, &params, None).unwrap();
    assert_eq!(new, old + 2, "after the claim and the checkpoint");
    let mut newer = Committer::new(store.clone(), new);
    let theirs = write_piece(
        &store,
        &piece_name(Some(9), 2, 0),
        vec![walkin("e", 1, Some(2))],
    )
    .unwrap();
    match older.commit(Manifest::new(6, Origin::Run, &params, 1)) {
        Err(StoreError::Superseded { ours, newer, .. }) => assert_eq!((ours, newer), (old, new)),
        other => panic!("not superseded: {other:?}"),
    }
    // Nor may the older one prune: the newer's piece on its way stays.
    assert!(matches!(
        older.prune(&[1].into(), 1),
        Err(StoreError::Superseded { .. })
    ));
    let mut at_9 = at_5.clone();
    at_9.time = 9;
    at_9.pieces.push(theirs.clone());
    newer.commit(at_9).unwrap();
    newer.prune(&[2].into(), 1).unwrap();
    let mut skipped = Vec::new();
    let (restored, _) = newest_complete(&store, &mut skipped).unwrap().unwrap();
    assert_eq!((restored.time, restored.generation), (9, new));
    assert_eq!(
        restored.pieces.len(),
        2,
        "the older run's piece is named, and kept"
    );
}

#[test]
fn a_late_manifest_of_an_older_generation_never_counts() {
    let (dir, store) = folder();
    let params = Params::default();
    // Generation 1 wrote 2; generation 3 claimed 3 and wrote 4; then a
    // zombie of generation 1 wrote 5 (a number pruning had freed).
    for (number, generation, time) in [(2, 1, 10), (4, 3, 20), (5, 1, 30)] {
        let mut manifest = Manifest::new(time, Origin::Run, &params, 1);
        manifest.generation = generation;
        fs::write(
            dir.path().join(manifest_name(number)),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    }
    let claim_3 = Manifest::claim(3, Origin::Run, &params, None);
    fs::write(
        dir.path().join(manifest_name(3)),
        serde_json::to_vec(&claim_3).unwrap(),
    )
    .unwrap();
    let listed = manifests(&store).unwrap();
    assert_eq!(fenced(&listed), [5].into());
    let mut skipped = Vec::new();
    let (restored, _) = newest_complete(&store, &mut skipped).unwrap().unwrap();
    assert_eq!(restored.time, 20);
    assert!(skipped[0].contains("newer one began"), "{skipped:?}");
}

/// A folder with the checkpoints of times 1 to 5 of run 7, a piece each;
/// the committer and the pieces' names, oldest first.
fn five_checkpoints() -> (tempfile::TempDir, Store, Committer, Vec<String>) {
    let (dir, store) = folder();
    let params = Params::default();
    let generation = claim(&store, Origin::Run, &params, None).unwrap();
    let mut committer = Committer::new(store.clone(), generation);
    let mut names = Vec::new();
    for time in 1..=5u64 {
        let name = piece_name(Some(time), 7, 0);
        let piece = write_piece(&store, &name, vec![walkin("d", time, Some(time))]).unwrap();
        let mut manifest = Manifest::new(time, Origin::Run, &params, 1);
        manifest.pieces = vec![piece];
        committer.commit(manifest).unwrap();
        names.push(name);
    }
    (dir, store, committer, names)
}

fn times_left(store: &Store) -> Vec<u64> {
    manifests(store)
        .unwrap()
        .iter()
        .filter_map(|l| l.checkpoint().map(|m| m.time))
        .collect()
}

#[test]
fn prune_keeps_the_newest_manifests_and_what_they_name() {
    let (dir, store, committer, names) = five_checkpoints();
    // An orphan of another run (written before the newest manifest), and
    // a piece of this run on its way.
    let orphan = dir.path().join(piece_name(Some(9), 3, 0));
    fs::write(&orphan, "orphan").unwrap();
    let file = fs::File::options().write(true).open(&orphan).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    // A start's check that a crash left behind.
    let check = dir.path().join("write-check-1-1");
    fs::write(&check, "presence").unwrap();
    let file = fs::File::options().write(true).open(&check).unwrap();
    file.set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    let on_its_way = piece_name(None, 7, 1);
    fs::write(dir.path().join(&on_its_way), "half").unwrap();
    committer.prune(&[7].into(), MANIFESTS_KEPT).unwrap();
    assert_eq!(times_left(&store), vec![5, 4, 3]);
    assert!(!dir.path().join(&names[0]).exists());
    assert!(dir.path().join(&names[4]).exists());
    assert!(!orphan.exists());
    assert!(!check.exists());
    assert!(dir.path().join(&on_its_way).exists());
    assert!(
        dir.path()
            .join(manifest_name(committer.generation()))
            .exists(),
        "the generation's claim stays"
    );
}

#[test]
fn prune_keeps_as_many_complete_checkpoints_as_asked_and_at_least_one() {
    for (keep, expected) in [(1, vec![5]), (0, vec![5]), (4, vec![5, 4, 3, 2])] {
        let (dir, store, committer, names) = five_checkpoints();
        committer.prune(&[7].into(), keep).unwrap();
        assert_eq!(times_left(&store), expected, "keep {keep}");
        for (time, name) in (1..=5u64).zip(&names) {
            assert_eq!(
                dir.path().join(name).exists(),
                expected.contains(&time),
                "keep {keep}: piece of {time}"
            );
        }
    }
}

#[test]
fn reset_keeps_the_claim_that_follows_every_number_used() {
    let (_dir, store, committer, _) = five_checkpoints();
    let before = committer.generation();
    let generation = claim(&store, Origin::Run, &Params::default(), None).unwrap();
    assert!(generation > before + 5);
    reset(&store, generation).unwrap();
    let left: Vec<u64> = manifests(&store)
        .unwrap()
        .iter()
        .map(|l| l.number)
        .collect();
    assert_eq!(left, vec![generation]);
    assert!(store
        .list()
        .unwrap()
        .iter()
        .all(|o| !o.name.ends_with(".piece")));
}

#[test]
fn a_commit_that_landed_after_it_failed_is_gone_past() {
    let (_dir, store) = folder();
    let params = Params::default();
    let generation = claim(&store, Origin::Run, &params, None).unwrap();
    let mut committer = Committer::new(store.clone(), generation);
    // The store took the next manifest but its answer was lost: the
    // committer still thinks its last is the claim.
    let mut landed = Manifest::new(5, Origin::Run, &params, 1);
    landed.generation = generation;
    store
        .put(
            &manifest_name(generation + 1),
            serde_json::to_vec(&landed).unwrap(),
            true,
        )
        .unwrap();
    committer
        .commit(Manifest::new(6, Origin::Run, &params, 1))
        .unwrap();
    let numbers: Vec<u64> = manifests(&store)
        .unwrap()
        .iter()
        .map(|l| l.number)
        .collect();
    assert_eq!(numbers, vec![generation + 2, generation + 1, generation]);
    committer.prune(&[1].into(), 3).unwrap();
}

#[test]
fn pieces_are_merged_once_the_changes_hold_as_many_bytes_as_the_state() {
    let info = |cut: u64, worker: usize, bytes: u64| PieceInfo {
        name: piece_name(Some(cut), 7, worker),
        bytes,
        crc32: 0,
        rows: 1,
    };
    let with = |pieces: Vec<PieceInfo>| Manifest {
        pieces,
        ..Manifest::new(9, Origin::Run, &Params::default(), 2)
    };
    // The state (the first cut, two workers): 1,000 bytes.
    let state = vec![info(1, 0, 600), info(1, 1, 400)];
    assert!(!wants_merge(&with(state.clone())), "one cut");
    let mut chain = state.clone();
    chain.extend((2..=10).map(|cut| info(cut, 0, 100)));
    assert!(!wants_merge(&with(chain.clone())), "900 bytes of changes");
    chain.push(info(11, 1, 100));
    assert!(wants_merge(&with(chain)), "1,000 bytes of changes");
    // Many tiny cuts are merged too, however few bytes they hold.
    let mut many = state;
    many.extend((2..=(MERGE_AFTER_CUTS as u64 + 1)).map(|cut| info(cut, 0, 1)));
    assert!(wants_merge(&with(many)));
}

#[test]
fn the_listing_names_pieces_no_manifest_names() {
    let (dir, store, _committer, _) = five_checkpoints();
    fs::write(dir.path().join(piece_name(Some(9), 7, 1)), "half").unwrap();
    let (objects, listed) = listing(&store).unwrap();
    assert_eq!(
        incomplete(&objects, &listed),
        vec![(format!("{:020}", 9), 1, 4)]
    );
    assert!(describe(&store).unwrap().contains("incomplete: cut"));
}
