//! What production Kafka needs (docs/operations.md, "Kafka client
//! settings", "Health" and "Consumer-group offsets"): client settings from a
//! properties file and `-X`, refused and secret settings, several topics per
//! input, offsets committed to a consumer group, `/health` and `/ready`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence::checkpoint::store;
use presence::harness::generator::WorkloadConfig;
use presence::kafka::{Connection, REBALANCES};
use presence::model::ingest::Kind;
use presence::observe::metrics::Metrics;
use presence::service::{run, CheckpointSettings, RunJob, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

mod common;
use common::{
    check_outputs_placed, create_output_topics, get, mock_inputs, produce_and_backfill,
    produce_and_backfill_routed, progress_messages, store_at, Route, PROBE_PARTITIONS, TIMEOUT,
};

fn presence() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presence"))
}

fn small_workload() -> WorkloadConfig {
    WorkloadConfig {
        days: 1,
        devices: 300,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        ..WorkloadConfig::default()
    }
}

/// A refused setting, an unknown one, a malformed line and a topic named
/// for two kinds are each one line naming it (and where it was given), exit
/// status 1, before anything connects (the broker named does not exist).
#[test]
fn refused_unknown_and_malformed_settings_are_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client.properties");
    std::fs::write(
        &file,
        "# TLS\nsecurity.protocol=PLAINTEXT\n\nenable.auto.commit = true\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-X".into(), "enable.idempotence=false".into()],
            "-X: Kafka setting enable.idempotence cannot be changed: the output topics rest on an idempotent producer",
        ),
        (
            vec!["-X".into(), "check.crcs=false".into()],
            "-X: Kafka setting check.crcs cannot be changed",
        ),
        (
            vec!["--kafka-config".into(), file.display().to_string()],
            "client.properties line 4: Kafka setting enable.auto.commit cannot be changed",
        ),
        (
            vec!["-X".into(), "no.such.setting=1".into()],
            "-X: Kafka setting no.such.setting: No such configuration property",
        ),
        (
            vec!["-X".into(), "socket.timeout.ms".into()],
            "-X: expected key=value, found \"socket.timeout.ms\"",
        ),
        (
            vec!["--logins-topic".into(), "logins,probes".into()],
            "input topic probes is named twice",
        ),
    ];
    for (args, expected) in cases {
        // With a connect timeout longer than the test's patience: a line
        // that came only after trying the (absent) broker would not come.
        let output = common::output(
            presence()
                .args(["run", "--brokers", "127.0.0.1:1", "--connect-timeout"])
                .arg(format!("{}s", common::PATIENCE.as_secs() * 2))
                .args(&args),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Each is the flags' fault: status 2.
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // produce and bench read the same flags.
    for command in ["produce", "bench"] {
        let output =
            common::output(presence().args([command, "--brokers", "127.0.0.1:1", "-X", "acks=1"]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("Kafka setting acks cannot be changed"),
            "{command}: {stderr}"
        );
    }
}

/// `/health` answers while the process serves; `/ready` is 503 with its
/// reason while the broker is unreachable (starting), and 200 once the
/// backlog is consumed below `--ready-lag`, when `presence_state` says
/// running. Secret settings given in a file and with `-X` appear nowhere in
/// stderr or `/metrics`. No consumer group rebalance ever happens.
#[test]
fn ready_flips_once_the_backlog_is_consumed_and_secrets_stay_secret() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("ready-");
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(
        &brokers,
        &Topics::default(),
        &small_workload(),
        dir.path(),
        false,
    );
    let secrets = ["Fil3Secr3t-7781", "XSecr3t-4412"];
    let file = dir.path().join("client.properties");
    std::fs::write(
        &file,
        format!(
            "client.id=presence-ready\nssl.key.password={}\n",
            secrets[0]
        ),
    )
    .unwrap();
    // Not reachable yet: the service stays starting.
    mock.broker_down(1).unwrap();
    let mut child = presence()
        .args(["run", "--brokers", &brokers, "--output-prefix", "ready-"])
        .args(["--metrics-addr", "127.0.0.1:0", "--ready-lag", "1"])
        .args(["--connect-timeout", "60s", "--status-interval", "200ms"])
        .arg("--kafka-config")
        .arg(&file)
        .args(["-X", &format!("sasl.password={}", secrets[1])])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, stderr) = std::sync::mpsc::channel::<String>();
    let reader = {
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        })
    };
    let mut seen = Vec::new();
    let addr = loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(30))
            .expect("the metrics address is logged");
        seen.push(line.clone());
        // `--metrics-addr` is `--http-addr`'s alias: the queries are served too.
        if let Some(rest) = line.split("serving queries and metrics at http://").nth(1) {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let health = get(&addr, "/health").expect("an answer");
    assert_eq!(health.0, 200, "{health:?}");
    let (code, body) = get(&addr, "/ready").expect("an answer");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: starting"), "{body}");
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("presence_state{state=\"starting\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("presence_ready 0"), "{metrics}");

    mock.broker_up(1).unwrap();
    let deadline = Instant::now() + common::PATIENCE;
    let mut reasons = Vec::new();
    loop {
        let (code, body) = get(&addr, "/ready").expect("an answer");
        if code == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert_eq!(code, 503);
        if reasons.last() != Some(&body) {
            reasons.push(body);
        }
        assert!(Instant::now() < deadline, "never ready: {reasons:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    for reason in &reasons {
        assert!(
            reason.starts_with("not ready: starting")
                || reason.starts_with("not ready: catching up: consumer lag"),
            "{reason}"
        );
    }
    let metrics = get(&addr, "/metrics").unwrap().1;
    assert!(
        metrics.contains("presence_state{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("presence_ready 1"), "{metrics}");
    let lag: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("presence_consumer_lag{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
        .sum();
    assert!(lag < 1, "ready with lag {lag}");
    for secret in secrets {
        assert!(!metrics.contains(secret), "a secret in /metrics");
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        common::wait_child(&mut child, "the service after SIGTERM").code(),
        Some(0)
    );
    reader.join().unwrap();
    seen.extend(stderr.try_iter());
    let text = seen.join("\n");
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in stderr: {text}");
    }
    // One line per transition, in order.
    let transitions: Vec<&str> = seen
        .iter()
        .filter(|l| l.contains("state changed"))
        .filter_map(|l| l.split("to=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
        })
        .collect();
    assert_eq!(
        transitions,
        ["catching_up", "running", "stopping"],
        "{text}"
    );
}

/// Probes split across `probes` and `probes-backfill`, logins across
/// `logins` and `logins-backfill`: each partition of each topic is its own
/// input partition, and `run --stop-at-end` equals backfill of the same
/// records (one file per partition).
#[test]
fn several_topics_per_input_equal_backfill() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    for (name, partitions) in [
        ("probes", 2),
        ("probes-backfill", 2),
        ("logins", 1),
        ("logins-backfill", 1),
        ("base-counts", 1),
    ] {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    let topics = Topics {
        probes: "probes,probes-backfill".into(),
        logins: "logins,logins-backfill".into(),
        ..Topics::with_output_prefix("two-")
    };
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill_routed(
        &brokers,
        &WorkloadConfig {
            login_partitions: 2,
            login_chance: 0.3,
            ..small_workload()
        },
        dir.path(),
        false,
        |kind, partition, _| match kind {
            // Probe partitions 0 and 1 live, 2 and 3 in the backfill topic.
            Kind::Probe => Route {
                topic: if partition < 2 {
                    "probes"
                } else {
                    "probes-backfill"
                }
                .into(),
                partition: (partition % 2) as i32,
                file: partition,
            },
            // Logins of half the phones in the live topic, half in the
            // corrected one.
            Kind::Login => Route {
                topic: if partition == 0 {
                    "logins"
                } else {
                    "logins-backfill"
                }
                .into(),
                partition: 0,
                file: partition,
            },
            Kind::BaseCount => Route {
                topic: "base-counts".into(),
                partition: 0,
                file: 0,
            },
        },
    );
    let job = RunJob {
        stop_at_end: true,
        output_partitions: 2,
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    let metrics = Metrics::default();
    run(
        timely::Config::process(2),
        job,
        Arc::new(AtomicBool::new(false)),
        metrics.clone(),
    )
    .unwrap();
    check_outputs_placed(
        &brokers,
        &topics,
        &dir.path().join("out"),
        "two topics",
        |source, file| {
            if source.contains("Probe-") {
                let topic = if file < 2 {
                    "probes"
                } else {
                    "probes-backfill"
                };
                (topic.to_owned(), file % 2)
            } else if source.contains("Login-") {
                let topic = if file == 0 {
                    "logins"
                } else {
                    "logins-backfill"
                };
                (topic.to_owned(), 0)
            } else {
                ("base-counts".to_owned(), 0)
            }
        },
    );
    let read: BTreeMap<(String, i32), u64> = metrics.read(|f| {
        f.partitions
            .iter()
            .map(|(place, p)| (place.clone(), p.read))
            .collect()
    });
    for place in [
        ("probes", 0),
        ("probes", 1),
        ("probes-backfill", 0),
        ("probes-backfill", 1),
        ("logins", 0),
        ("logins-backfill", 0),
    ] {
        let n = read
            .get(&(place.0.to_owned(), place.1))
            .copied()
            .unwrap_or(0);
        assert!(n > 0, "{place:?} was read: {read:?}");
    }
}

/// The offsets committed to `group` for every input partition, read by a
/// client of the test's own (not presence's).
fn committed(brokers: &str, group: &str, places: &[(String, i32)]) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for (topic, partition) in places {
        list.add_partition(topic, *partition);
    }
    let found = consumer.committed_offsets(list, TIMEOUT).unwrap();
    found
        .elements()
        .into_iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some(((e.topic().to_owned(), e.partition()), n)),
            _ => None,
        })
        .collect()
}

/// With `--checkpoint-dir`, the group holds the newest checkpoint's offsets
/// after the run; without, the last progress frontier's. Read back by a
/// client that is not presence's; and no rebalance ever reached presence.
#[test]
fn the_consumer_group_holds_the_offsets_the_state_reflects() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(
        &brokers,
        &Topics::default(),
        &small_workload(),
        dir.path(),
        false,
    );
    let mut places: Vec<(String, i32)> = (0..PROBE_PARTITIONS)
        .map(|p| ("probes".to_owned(), p))
        .collect();
    places.push(("logins".into(), 0));
    places.push(("base-counts".into(), 0));

    // One run to the end, committing to `group`, optionally checkpointing.
    let run_to_end = |group: &str, checkpoint: Option<&std::path::Path>| {
        let topics = Topics::with_output_prefix(&format!("{group}-"));
        create_output_topics(&mock, &topics, 2);
        let job = RunJob {
            stop_at_end: true,
            output_partitions: 2,
            checkpoint: checkpoint.map(|dir| CheckpointSettings {
                dir: dir.into(),
                interval: Duration::from_millis(200),
                reset: false,
                kept: presence::checkpoint::store::MANIFESTS_KEPT,
            }),
            ..RunJob::new(
                Connection {
                    group_id: group.into(),
                    ..Connection::new(brokers.clone())
                },
                topics.clone(),
            )
        };
        run(
            timely::Config::process(2),
            job,
            Arc::new(AtomicBool::new(false)),
            Metrics::default(),
        )
        .unwrap();
        topics
    };

    // With checkpoints: the final checkpoint's offsets.
    let state = tempfile::tempdir().unwrap();
    run_to_end("lag-a", Some(state.path()));
    let manifest = store::newest_complete(&store_at(state.path()), &mut Vec::new())
        .map(|found| found.map(|(m, _)| m))
        .unwrap()
        .expect("a final checkpoint");
    let expected: BTreeMap<(String, i32), i64> = manifest
        .partitions
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.next))
        .collect();
    assert_eq!(expected.len(), places.len());
    assert!(expected.values().all(|&next| next > 0));
    assert_eq!(committed(&brokers, "lag-a", &places), expected);

    // Without: the last progress frontier's offsets.
    let topics = run_to_end("lag-b", None);
    let last = progress_messages(&brokers, &topics).pop().unwrap();
    let mut expected = BTreeMap::new();
    for (topic, partitions) in last["offsets"].as_object().unwrap() {
        for (partition, next) in partitions.as_object().unwrap() {
            expected.insert(
                (topic.clone(), partition.parse::<i32>().unwrap()),
                next.as_i64().unwrap(),
            );
        }
    }
    assert_eq!(expected.len(), places.len());
    assert_eq!(committed(&brokers, "lag-b", &places), expected);
    assert_eq!(REBALANCES.load(Ordering::Relaxed), 0);
}

/// Debian's `promtool` accepts a live `/metrics` (`check metrics`: names,
/// units, types, help) and the alerting rules in `deploy/` (`check rules`,
/// and their unit tests with `test rules`); every metric the rules and the
/// dashboard query is one presence exports (`scripts/check_deploy.sh`).
/// `.ci/run` installs `prometheus` for it.
#[test]
#[ignore = "needs promtool (Debian's prometheus package); .ci/run installs it"]
fn promtool_accepts_the_metrics_and_the_rules() {
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let topics = Topics::with_output_prefix("prom-");
    create_output_topics(&mock, &topics, 2);
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(
        &brokers,
        &Topics::default(),
        &small_workload(),
        dir.path(),
        false,
    );
    let metrics = Metrics::default();
    let addr = presence::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        Default::default(),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let job = RunJob {
        stop_at_end: true,
        output_partitions: 2,
        checkpoint: Some(CheckpointSettings {
            dir: state.path().into(),
            interval: Duration::from_secs(1),
            reset: false,
            kept: presence::checkpoint::store::MANIFESTS_KEPT,
        }),
        ..RunJob::new(brokers.clone(), topics)
    };
    run(
        timely::Config::process(2),
        job,
        Arc::new(AtomicBool::new(false)),
        metrics.clone(),
    )
    .unwrap();
    let (code, text) = get(&addr.to_string(), "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("presence_checkpoints_total"), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = common::collect(promtool, "promtool check metrics");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_deploy.sh");
    let output = common::output(Command::new("bash").arg(script));
    assert!(
        output.status.success(),
        "check_deploy.sh: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
