//! The unit tests of [`super`]: the window state against the definition.

use super::*;

const CONFIG: WindowConfig = WindowConfig {
    session_gap: 10,
    min_dwell: 5,
    min_probes: 3,
};

/// The windows of a sorted set of distinct timestamps, straight from the definition.
fn reference(ts: &[u64], config: &WindowConfig) -> Vec<Window> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in 1..=ts.len() {
        if end == ts.len() || ts[end] - ts[end - 1] > config.session_gap {
            let visit = &ts[start..end];
            let f = visit[0];
            let min_index = (config.min_probes.max(1) - 1) as usize;
            if let Some(&d) = visit
                .iter()
                .enumerate()
                .find(|(i, s)| *i >= min_index && **s - f >= config.min_dwell)
                .map(|(_, s)| s)
            {
                out.push(Window {
                    start: f,
                    detected_at: d,
                });
            }
            start = end;
        }
    }
    out
}

fn accumulate(updates: &[(Window, isize)]) -> Vec<Window> {
    let mut counts: BTreeMap<Window, isize> = BTreeMap::new();
    for (w, d) in updates {
        *counts.entry(*w).or_default() += d;
    }
    assert!(
        counts.values().all(|&c| c == 0 || c == 1),
        "multiplicities {counts:?}"
    );
    counts
        .into_iter()
        .filter(|(_, c)| *c == 1)
        .map(|(w, _)| w)
        .collect()
}

#[test]
fn gap_dwell_and_count_thresholds_are_inclusive() {
    let mut windows = Windows::new(CONFIG);
    let mut out = Vec::new();
    // 0, 5 (dwell exactly 5 but only 2 probes), 15 (gap exactly 10): qualifies at 15.
    windows.apply(vec![((), 0), ((), 5), ((), 15)], |_, w, d| out.push((w, d)));
    assert_eq!(
        accumulate(&out),
        vec![Window {
            start: 0,
            detected_at: 15
        }]
    );
    // 26 is 11 after 15: a new visit.
    windows.apply(vec![((), 26)], |_, w, d| out.push((w, d)));
    assert_eq!(
        accumulate(&out),
        vec![Window {
            start: 0,
            detected_at: 15
        }]
    );
}

#[test]
fn late_probe_merges_visits_and_moves_detection() {
    let mut windows = Windows::new(CONFIG);
    let mut out = Vec::new();
    windows.apply(
        vec![((), 0), ((), 3), ((), 6), ((), 30), ((), 33), ((), 36)],
        |_, w, d| out.push((w, d)),
    );
    assert_eq!(
        accumulate(&out),
        vec![
            Window {
                start: 0,
                detected_at: 6
            },
            Window {
                start: 30,
                detected_at: 36
            }
        ]
    );
    // 15 and 25 bridge the two visits into one.
    windows.apply(vec![((), 15), ((), 25)], |_, w, d| out.push((w, d)));
    assert_eq!(
        accumulate(&out),
        vec![Window {
            start: 0,
            detected_at: 6
        }]
    );
    // A probe before the start moves the start and the detection.
    let mut early = Windows::new(CONFIG);
    let mut out = Vec::new();
    early.apply(vec![((), 10), ((), 13), ((), 16)], |_, w, d| {
        out.push((w, d))
    });
    early.apply(vec![((), 8)], |_, w, d| out.push((w, d)));
    assert_eq!(
        accumulate(&out),
        vec![Window {
            start: 8,
            detected_at: 13
        }]
    );
}

#[test]
fn random_orders_and_frontiers_match_the_definition() {
    let mut seed = 0x5eed_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..300 {
        let config = WindowConfig {
            session_gap: next(20),
            min_dwell: next(15),
            min_probes: next(5),
        };
        let mut windows = Windows::new(config);
        let mut out = Vec::new();
        let mut seen: Vec<u64> = Vec::new();
        let mut frontier = 0;
        for _ in 0..next(12) + 1 {
            let batch: Vec<((), u64)> = (0..next(6)).map(|_| ((), frontier + next(40))).collect();
            seen.extend(batch.iter().map(|(_, ts)| *ts));
            windows.apply(batch, |_, w, d| out.push((w, d)));
            frontier += next(15);
            windows.advance(frontier);
            let mut distinct = seen.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                accumulate(&out),
                reference(&distinct, &config),
                "case {case} config {config:?}"
            );
        }
    }
}

#[test]
fn restored_from_its_snapshots_the_state_goes_on_exactly_as_the_original() {
    let mut seed = 0x5eed_0001_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for case in 0..200 {
        let mut original = Windows::new(CONFIG);
        original.track_changes();
        // The checkpoint: every snapshot's changes, merged in order.
        let mut checkpoint: BTreeMap<u64, Option<KeySnapshot>> = BTreeMap::new();
        let mut emitted: BTreeMap<(u64, Window), isize> = BTreeMap::new();
        let mut frontier = 0;
        let cut = next(8) + 1;
        let mut batches = Vec::new();
        for _ in 0..12 {
            let batch: Vec<(u64, u64)> = (0..next(6))
                .map(|_| (next(3), frontier + next(40)))
                .collect();
            frontier += next(12);
            batches.push((batch, frontier));
        }
        let (before, after) = batches.split_at(cut as usize);
        for (batch, frontier) in before {
            original.apply(batch.clone(), |k, w, d| {
                *emitted.entry((*k, w)).or_default() += d
            });
            original.advance(*frontier);
            checkpoint.extend(original.take_changes());
        }
        let mut restored = Windows::new(CONFIG);
        for (key, state) in checkpoint.into_iter() {
            if let Some(state) = state {
                restored.restore(key, state);
            }
        }
        assert_eq!(restored.stats().keys, original.stats().keys, "case {case}");
        // The restored state starts at frontier 0: feeding both the same
        // later batches emits the same changes.
        for (batch, frontier) in after {
            let mut a = Vec::new();
            let mut b = Vec::new();
            original.apply(batch.clone(), |k, w, d| a.push((*k, w, d)));
            restored.apply(batch.clone(), |k, w, d| b.push((*k, w, d)));
            assert_eq!(a, b, "case {case}");
            original.advance(*frontier);
            restored.advance(*frontier);
            assert_eq!(restored.stats().keys, original.stats().keys, "case {case}");
        }
    }
}

#[test]
fn state_is_bounded_by_open_visits_over_many_days() {
    // 1,000 devices, 30 days, each device visits for an hour every day with a probe a minute.
    let minute = 60_000;
    let config = WindowConfig {
        session_gap: 15 * minute,
        min_dwell: 5 * minute,
        min_probes: 3,
    };
    let lateness = 5 * minute;
    let mut windows = Windows::new(config);
    let mut walkins = 0isize;
    for day in 0..30u64 {
        for m in 0..24 * 60u64 {
            let now = (day * 24 * 60 + m) * minute;
            let batch: Vec<(u32, u64)> = (0..1000u32)
                .filter(|device| (*device as u64 % 1380..*device as u64 % 1380 + 60).contains(&m))
                .map(|device| (device, now))
                .collect();
            windows.apply(batch, |_, _, d| walkins += d);
            windows.advance(now.saturating_sub(lateness));
        }
    }
    assert_eq!(walkins, 30 * 1000);
    let size = windows.stats();
    // A device's visit is open for its hour plus the gap and the lateness:
    // never more than ~60 devices at once, each with at most the lateness's probes.
    assert!(size.peak_keys <= 100, "{size:?}");
    assert!(size.peak_timestamps <= 100 * 6, "{size:?}");
    windows.advance(u64::MAX);
    assert_eq!(windows.stats().keys, 0);
    assert_eq!(windows.stats().timestamps, 0);
}

/// The open walk-in of a key follows its newest visit: it appears when the
/// visit qualifies, moves as it extends, goes when a newer visit starts
/// (not yet a walk-in) or when the frontier passes its last probe plus the
/// gap, and a restored key reports its own.
#[test]
fn the_open_walk_in_follows_the_newest_visit_until_the_frontier_closes_it() {
    let mut windows = Windows::new(CONFIG);
    let mut open = Vec::new();
    let apply = |windows: &mut Windows<&str>, ts: &[u64], open: &mut Vec<(Open, isize)>| {
        windows.apply_with(
            ts.iter().map(|&ts| ("k", ts)).collect::<Vec<_>>(),
            |_, _, _| {},
            |_, visit, diff| open.push((visit, diff)),
        )
    };
    let at = |since, last_seen| Open { since, last_seen };
    apply(&mut windows, &[0, 3], &mut open);
    assert!(open.is_empty(), "not a walk-in yet");
    apply(&mut windows, &[6], &mut open);
    assert_eq!(open, vec![(at(0, 6), 1)]);
    open.clear();
    apply(&mut windows, &[9], &mut open);
    assert_eq!(open, vec![(at(0, 6), -1), (at(0, 9), 1)], "it extends");
    open.clear();
    apply(&mut windows, &[30], &mut open);
    assert_eq!(open, vec![(at(0, 9), -1)], "a newer visit, not a walk-in");
    open.clear();
    apply(&mut windows, &[33, 36], &mut open);
    assert_eq!(open, vec![(at(30, 36), 1)]);
    open.clear();
    windows.advance_with(46, |_, visit, diff| open.push((visit, diff)));
    assert!(open.is_empty(), "36 + 10 >= 46: still open");
    windows.advance_with(47, |_, visit, diff| open.push((visit, diff)));
    assert_eq!(open, vec![(at(30, 36), -1)], "closed by the frontier");
    assert_eq!(windows.stats().keys, 0);

    let mut restored = Windows::new(CONFIG);
    let snapshot = KeySnapshot {
        head: Some(Visit {
            first: 100,
            last: 106,
            probes: 3,
            detected_at: Some(106),
        }),
        tail: vec![],
    };
    assert_eq!(restored.restore("k", snapshot), Some(at(100, 106)));
}
