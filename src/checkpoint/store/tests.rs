//! The store's unit tests: names, checksums, manifests, pruning.
use super::*;
use crate::dataflow::operators::windows::Visit;

fn walkin(device: &str, start: u64, detected_at: Option<u64>) -> StateRow {
    StateRow::WalkIn {
        business: "shop".into(),
        device: device.into(),
        start,
        detected_at,
    }
}

#[test]
fn pieces_round_trip_by_key_group_and_later_rows_win() {
    let dir = tempfile::tempdir().unwrap();
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
    let a = write_piece(dir.path(), "a.piece", first.clone()).unwrap();
    // The second piece removes one walk-in and moves another (twice: a
    // row carried from a failed cut, then the cut's own).
    let second = vec![
        walkin("d0", 0, None),
        walkin("d1", 1, Some(6)),
        walkin("d1", 1, Some(7)),
    ];
    let b = write_piece(dir.path(), "b.piece", second).unwrap();
    verify_piece(dir.path(), &a).unwrap();
    let mut manifest = Manifest::new(100, Origin::Run, &Params::default(), 2);
    manifest.pieces = vec![a, b];
    let all = restore_rows(dir.path(), &manifest, |_| true).unwrap();
    assert_eq!(all.len(), 500, "500 walk-ins - 1 removed + 1 window");
    assert!(all.contains(&walkin("d1", 1, Some(7))));
    assert!(!all.iter().any(|r| r.key() == walkin("d0", 0, None).key()));
    // Reading by halves of the key groups gives the same rows.
    let even = restore_rows(dir.path(), &manifest, |g| g % 2 == 0).unwrap();
    let odd = restore_rows(dir.path(), &manifest, |g| g % 2 == 1).unwrap();
    let by_key = |mut rows: Vec<StateRow>| {
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        rows
    };
    assert_eq!(
        by_key(even.into_iter().chain(odd).collect()),
        by_key(all.clone())
    );
    // Merging keeps the state and makes one piece.
    let merged = merge(dir.path(), &manifest, "m.piece").unwrap();
    assert_eq!(merged.pieces.len(), 1);
    assert_eq!(restore_rows(dir.path(), &merged, |_| true).unwrap(), all);
}

#[test]
fn a_damaged_piece_fails_its_checksum_and_the_previous_checkpoint_counts() {
    let dir = tempfile::tempdir().unwrap();
    let params = Params::default();
    let a = write_piece(dir.path(), "a.piece", vec![walkin("d", 1, Some(2))]).unwrap();
    let mut older = Manifest::new(10, Origin::Run, &params, 1);
    older.pieces = vec![a.clone()];
    write_manifest(dir.path(), &older).unwrap();
    let b = write_piece(dir.path(), "b.piece", vec![walkin("e", 1, Some(2))]).unwrap();
    let mut newer = Manifest::new(20, Origin::Run, &params, 1);
    newer.pieces = vec![a, b.clone()];
    write_manifest(dir.path(), &newer).unwrap();
    let mut skipped = Vec::new();
    assert_eq!(
        newest_complete(dir.path(), &mut skipped)
            .unwrap()
            .unwrap()
            .time,
        20
    );
    // Flip a byte of b.
    let path = dir.path().join(&b.name);
    let mut bytes = fs::read(&path).unwrap();
    bytes[10] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert_eq!(
        newest_complete(dir.path(), &mut skipped)
            .unwrap()
            .unwrap()
            .time,
        10
    );
    assert!(skipped[0].contains("checksum"), "{skipped:?}");
    // A half-written manifest (a crash) does not count either.
    fs::write(dir.path().join(manifest_name(30)), "{\"version\":").unwrap();
    let mut skipped = Vec::new();
    assert_eq!(
        newest_complete(dir.path(), &mut skipped)
            .unwrap()
            .unwrap()
            .time,
        10
    );
    assert_eq!(skipped.len(), 2, "{skipped:?}");
}

/// A folder with the checkpoints of times 1 to 5 of run 7, a piece each;
/// the pieces' names, oldest first.
fn five_checkpoints() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let params = Params::default();
    let mut names = Vec::new();
    for time in 1..=5u64 {
        let name = piece_name(Some(time), 7, 0);
        let piece = write_piece(dir.path(), &name, vec![walkin("d", time, Some(time))]).unwrap();
        let mut manifest = Manifest::new(time, Origin::Run, &params, 1);
        manifest.pieces = vec![piece];
        write_manifest(dir.path(), &manifest).unwrap();
        names.push(name);
    }
    (dir, names)
}

#[test]
fn prune_keeps_the_newest_manifests_and_what_they_name() {
    let (dir, names) = five_checkpoints();
    // An orphan of another run, and a piece of this run on its way.
    fs::write(dir.path().join(piece_name(Some(9), 3, 0)), "orphan").unwrap();
    fs::write(
        dir.path().join(format!(".{}.tmp", piece_name(None, 7, 1))),
        "half",
    )
    .unwrap();
    prune(dir.path(), &[7].into(), MANIFESTS_KEPT).unwrap();
    let left: Vec<u64> = manifests(dir.path())
        .unwrap()
        .into_iter()
        .map(|(_, m)| m.unwrap().time)
        .collect();
    assert_eq!(left, vec![5, 4, 3]);
    assert!(!dir.path().join(&names[0]).exists());
    assert!(dir.path().join(&names[4]).exists());
    assert!(!dir.path().join(piece_name(Some(9), 3, 0)).exists());
    assert!(dir
        .path()
        .join(format!(".{}.tmp", piece_name(None, 7, 1)))
        .exists());
}

#[test]
fn prune_keeps_as_many_complete_checkpoints_as_asked_and_at_least_one() {
    for (keep, expected) in [(1, vec![5]), (0, vec![5]), (4, vec![5, 4, 3, 2])] {
        let (dir, names) = five_checkpoints();
        prune(dir.path(), &[7].into(), keep).unwrap();
        let left: Vec<u64> = manifests(dir.path())
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.unwrap().time)
            .collect();
        assert_eq!(left, expected, "keep {keep}");
        for (time, name) in (1..=5u64).zip(&names) {
            assert_eq!(
                dir.path().join(name).exists(),
                expected.contains(&time),
                "keep {keep}: piece of {time}"
            );
        }
    }
}
