//! The query endpoints of `run --http-addr` (docs/contract.md, "Queries"),
//! through librdkafka's in-process mock broker: every answer is exactly the
//! state the upsert topics hold at the answer's frontier, whichever process
//! holds the key, during ingestion and during a restore; bad requests are
//! 400 with one line, and a query before the first frontier is 503.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::query::{
    ask, expected_of_backfill, until_caught_up, without_as_of, Asked, Keys, TopicState,
};
use common::*;

use presence::dataflow::query::{Inbox, Query};
use presence::harness::generator::{Generated, Workload, WorkloadConfig};
use presence::observe::metrics::Metrics;
use presence::service::{run, CheckpointSettings, RunJob, Topics};

fn workload() -> WorkloadConfig {
    WorkloadConfig {
        days: 2,
        devices: 600,
        businesses: 8,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    }
}

/// A run that never idles its partitions (an idle partition's promise is
/// the wall clock, which would close every visit of the generated history).
fn job(brokers: &str, topics: &Topics) -> RunJob {
    RunJob {
        output_partitions: 2,
        idle_timeout: Duration::from_secs(3600),
        ..RunJob::new(brokers.to_owned(), topics.clone())
    }
}

fn serve(metrics: &Metrics, queries: &Inbox) -> String {
    presence::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        queries.clone(),
    )
    .unwrap()
    .to_string()
}

#[test]
fn bad_requests_are_400_and_a_query_before_the_first_frontier_is_503() {
    let addr = serve(&Metrics::default(), &Inbox::default());
    let (status, body) = get(&addr, "/v1/present?business=store-0001").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    for (path, status, line) in [
        (
            "/v1/present",
            400,
            "missing parameter `business`: /v1/present takes `business`",
        ),
        (
            "/v1/walkin-counts?contact=ann",
            400,
            "missing parameter `business`: /v1/walkin-counts takes `business` and `contact`",
        ),
        (
            "/v1/device-contacts?device=a&business=b",
            400,
            "unknown parameter `business`: /v1/device-contacts takes `device`",
        ),
        (
            "/v1/device-contacts?device=a&device=b",
            400,
            "parameter `device` is given twice",
        ),
        (
            "/v1/present?business=",
            400,
            "parameter `business` is empty",
        ),
    ] {
        assert_eq!(
            get(&addr, path).unwrap(),
            (status, format!("{line}\n")),
            "{path}"
        );
    }
    let (status, body) = get(&addr, "/v1/nothing").unwrap();
    assert_eq!((status, body.lines().count()), (404, 1), "{body}");
    assert_eq!(get(&addr, "/health").unwrap().0, 200);
    let (status, body) = get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("presence_walkins_emitted_total 0"), "{body}");
}

/// While the service ingests on two workers (the input produced over a few
/// seconds as it runs), answers to every endpoint are exactly the topics'
/// state at their frontier, at many frontiers; once it has caught up they
/// are what backfill wrote.
#[test]
fn answers_are_exactly_the_topics_state_at_their_frontier() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("q-");
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<Generated> = Workload::new(workload()).collect();
    let mut files = Files::new();
    for record in &records {
        files
            .entry((record.kind, record.partition))
            .or_default()
            .push(record.line.clone());
    }
    let out = backfill_prefix(&files, &BTreeMap::new(), &dir.path().join("reference"));
    let keys = Keys::of_backfill(&out, 10);
    let paths = keys.paths();

    let job = job(&brokers, &topics);
    let metrics = Metrics::default();
    let addr = serve(&metrics, &job.queries);
    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    let mut asked = Vec::new();
    wait_until("the first frontier", || {
        let answer = ask(&addr, &paths[0]);
        let answered = answer.status == 200;
        asked.push(answer);
        answered
    });
    // While it reads.
    let feeder = Feeder::start(
        &brokers,
        &Topics::default(),
        records,
        Duration::from_secs(4),
        false,
    );
    let feeding = std::time::Instant::now();
    while feeding.elapsed() < Duration::from_secs(4) {
        asked.extend(paths.iter().map(|path| ask(&addr, path)));
    }
    assert_eq!(feeder.finish(), files, "the feeder sent the workload");
    let during = asked.len();
    until_caught_up(&addr, &paths, &out, &mut asked);
    shutdown.store(true, Ordering::Relaxed);
    service.join().unwrap().unwrap();

    let state = TopicState::read(&brokers, &topics);
    let checked = state.check(&asked, "-w 2");
    let frontiers: BTreeSet<u64> = asked
        .iter()
        .filter(|a| a.status == 200)
        .map(Asked::frontier)
        .collect();
    // Answers while it read that differ from the end's: the state moved.
    let partial = asked[..during]
        .iter()
        .filter(|a| a.status == 200 && without_as_of(a) != expected_of_backfill(&out, &a.path))
        .count();
    eprintln!(
        "{checked} answers checked at {} frontiers, {partial} of them before the end's state",
        frontiers.len()
    );
    assert!(checked >= paths.len(), "{checked} answers checked");
    assert!(partial > 0, "answers while the state changes");
    assert!(
        keys.businesses.iter().any(|b| !expected_of_backfill(
            &out,
            &format!("/v1/present?business={b}")
        )["devices"]
            .as_array()
            .unwrap()
            .is_empty()),
        "someone is in a store at the end"
    );
}

/// Two processes, one worker each: each answers every key, those the other
/// process's worker holds included, with what backfill wrote.
#[test]
fn any_process_answers_any_key() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("q2-");
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &Topics::default(), &workload(), dir.path(), false);
    let out = dir.path().join("out");
    let keys = Keys::of_backfill(&out, 10);
    let owners: std::collections::BTreeSet<Option<usize>> = keys
        .devices
        .iter()
        .map(|device| {
            Query::Contact {
                device: device.clone(),
            }
            .owner(2)
        })
        .collect();
    assert_eq!(
        owners,
        [Some(0), Some(1)].into(),
        "devices held by each process"
    );

    let hostfile = hostfile(dir.path());
    let ports = free_ports(2);
    let mut children: Vec<_> = (0..2)
        .map(|p| {
            std::process::Command::new(env!("CARGO_BIN_EXE_presence"))
                .args(["run", "--brokers", &brokers, "--output-prefix", "q2-"])
                .args(["--idle-timeout", "1h", "--output-partitions", "2"])
                .args(["--http-addr", &format!("127.0.0.1:{}", ports[p])])
                .args(["-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut asked = Vec::new();
    for port in &ports {
        let addr = format!("127.0.0.1:{port}");
        wait_for("the HTTP server", PATIENCE, || get(&addr, "/health"));
        until_caught_up(&addr, &keys.paths(), &out, &mut asked);
    }
    for child in &children {
        // SIGTERM: the processes flush and exit 0.
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    for child in children.drain(..) {
        let (status, stderr) = finish(child, "a -n 2 process");
        assert!(status.success(), "{stderr}");
    }
    let state = TopicState::read(&brokers, &topics);
    assert!(state.check(&asked, "-n 2") >= 2 * keys.paths().len());
}

/// A restart restores a checkpoint while queries keep coming: each is
/// refused (503) until the restored state is complete, then answered
/// exactly, never from a partly restored state.
#[test]
fn queries_during_a_restore_are_refused_or_exact() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("qr-");
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &Topics::default(), &workload(), dir.path(), false);
    let out = dir.path().join("out");
    let paths = Keys::of_backfill(&out, 10).paths();
    let state_dir = tempfile::tempdir().unwrap();
    let checkpointed = || RunJob {
        checkpoint: Some(CheckpointSettings {
            dir: state_dir.path().into(),
            interval: Duration::from_secs(1),
            reset: false,
            kept: presence::checkpoint::store::MANIFESTS_KEPT,
        }),
        ..job(&brokers, &topics)
    };
    run(
        timely::Config::process(2),
        RunJob {
            stop_at_end: true,
            ..checkpointed()
        },
        Arc::new(AtomicBool::new(false)),
        Metrics::default(),
    )
    .unwrap();
    let before = TopicState::read(&brokers, &topics);

    // The restart: asked from before it starts until it answers everything.
    let job = checkpointed();
    let metrics = Metrics::default();
    let addr = serve(&metrics, &job.queries);
    let shutdown = Arc::new(AtomicBool::new(false));
    let asking = {
        let (addr, paths, shutdown) = (addr.clone(), paths.clone(), Arc::clone(&shutdown));
        std::thread::spawn(move || {
            let mut asked = Vec::new();
            while !shutdown.load(Ordering::Relaxed) {
                asked.extend(paths.iter().map(|path| ask(&addr, path)));
            }
            asked
        })
    };
    let service = {
        let (shutdown, metrics) = (Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    let mut asked = Vec::new();
    until_caught_up(&addr, &paths, &out, &mut asked);
    shutdown.store(true, Ordering::Relaxed);
    service.join().unwrap().unwrap();
    asked.extend(asking.join().unwrap());

    let refused = asked.iter().filter(|a| a.status == 503).count();
    assert!(
        asked.iter().all(|a| a.status == 200 || a.status == 503),
        "only answers and refusals: {:?}",
        asked.iter().find(|a| a.status != 200 && a.status != 503)
    );
    let first_run_end = before.last_frontier();
    eprintln!(
        "{} answers, {refused} refused during the restore",
        asked.len() - refused
    );
    for answer in asked.iter().filter(|a| a.status == 200) {
        assert!(
            answer.frontier() > first_run_end,
            "{} answered as of {}, before the restart's first frontier (the first run ended at {first_run_end})",
            answer.path,
            answer.frontier()
        );
        // Nothing new was read: every answer is the whole restored state.
        assert_eq!(
            without_as_of(answer),
            expected_of_backfill(&out, &answer.path),
            "{} as of {} ({refused} refused before)",
            answer.path,
            answer.frontier()
        );
    }
    let state = TopicState::read(&brokers, &topics);
    assert!(state.check(&asked, "restart") >= paths.len());
}
