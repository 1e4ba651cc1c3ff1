//! The crash loop against librdkafka's in-process mock broker: ten kills
//! with SIGKILL at seeded random moments (many inside a checkpoint write),
//! restarts at `-w 1`, `-w 2` and two processes, then a run to the end of
//! the input; see `tests/common/crash.rs` for what is checked. Another seed:
//! `PRESENCE_CRASH_SEED=N cargo test --release --test crash`.

mod common;
use common::crash::CrashLoop;
use common::*;

use presence::harness::generator::WorkloadConfig;
use presence::service::Topics;
use rdkafka::mocking::MockCluster;

#[test]
fn killed_at_random_moments_and_restarted_at_random_shapes_the_outputs_are_exact() {
    let seed = std::env::var("PRESENCE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let mock = MockCluster::new(1).unwrap();
    for (name, partitions) in [
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics::default();
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    CrashLoop {
        brokers: mock.bootstrap_servers(),
        topics,
        kills: 10,
        shapes: vec![1, 2, 0],
        seed,
        dir: dir.path().to_owned(),
        one_record_tail: false,
    }
    .run(WorkloadConfig {
        days: 3,
        devices: 500,
        businesses: 8,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    });
}
