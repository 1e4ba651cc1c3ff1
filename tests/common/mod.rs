//! Helpers shared by the Kafka tests: the same generated records to topics
//! and files, and the comparison of upsert topics with backfill output.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use presence::backfill::{self, Job, Progress};
use presence::io::generator::{Workload, WorkloadConfig};
use presence::io::ingest::Kind;
use presence::io::output::read_collection;
use presence::run::Topics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

pub const PROBE_PARTITIONS: i32 = 4;
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topic read past its reported end must stay quiet to be done.
pub const QUIET: Duration = Duration::from_millis(300);

/// Produces the workload `config` to the input topics of `topics` and writes
/// the same records, in the same order per partition, to files in `dir`,
/// then backfills those files into `dir/out`. With `one_record_tail`, every
/// partition ends with a blank record sent alone (tansu reports a partition's
/// end as its last batch's base offset + 1, so the last batch must be one
/// record for `--stop-at-end` to read everything); files get a blank line.
pub fn produce_and_backfill(
    brokers: &str,
    topics: &Topics,
    config: &WorkloadConfig,
    dir: &Path,
    one_record_tail: bool,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic_of = |kind: Kind| match kind {
        Kind::Probe => topics.probes.as_str(),
        Kind::Login => topics.logins.as_str(),
        Kind::BaseCount => topics.base_counts.as_str(),
    };
    let send = |topic: &str, partition: i32, line: &str| {
        while producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(partition)
                    .payload(line),
            )
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
    };
    let mut files: BTreeMap<(Kind, u64), String> = BTreeMap::new();
    for (kind, partitions) in [
        (Kind::Probe, config.probe_partitions),
        (Kind::Login, 1),
        (Kind::BaseCount, 1),
    ] {
        for p in 0..partitions {
            files.insert((kind, p), String::new());
        }
    }
    for record in Workload::new(config.clone()) {
        send(topic_of(record.kind), record.partition as i32, &record.line);
        let file = files
            .get_mut(&(record.kind, record.partition))
            .expect("a planned partition");
        file.push_str(&record.line);
        file.push('\n');
    }
    producer.flush(TIMEOUT).unwrap();
    if one_record_tail {
        for ((kind, p), file) in &mut files {
            send(topic_of(*kind), *p as i32, " ");
            producer.flush(TIMEOUT).unwrap();
            file.push_str(" \n");
        }
    }
    let path = |kind: Kind, p: u64| dir.join(format!("{kind:?}-{p}.jsonl"));
    for ((kind, p), text) in &files {
        std::fs::write(path(*kind, *p), text).unwrap();
    }
    let job = Job {
        probes: (0..config.probe_partitions)
            .map(|p| path(Kind::Probe, p))
            .collect(),
        logins: vec![path(Kind::Login, 0)],
        base_counts: vec![path(Kind::BaseCount, 0)],
        out: dir.join("out"),
        ..Job::default()
    };
    backfill::run(timely::Config::thread(), job, Arc::new(Progress::default())).unwrap();
}

/// Every message of `topic` (all partitions), as (partition, offset, key, value).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(i32, i64, Option<String>, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "presence-test")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut ends = BTreeMap::new();
    let mut list = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap();
        ends.insert(p, high);
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut next: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, 0)).collect();
    let mut messages = Vec::new();
    // tansu reports a partition's end as its last batch's base offset + 1, so
    // past the reported ends, read on until the topic has been quiet a while.
    let mut past_ends = false;
    loop {
        past_ends = past_ends || next.iter().all(|(p, n)| *n >= ends[p]);
        let Some(message) = consumer.poll(if past_ends { QUIET } else { TIMEOUT }) else {
            assert!(past_ends, "{topic} stopped before its end offsets {ends:?}");
            break;
        };
        let message = message.unwrap();
        next.insert(message.partition(), message.offset() + 1);
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
        messages.push((
            message.partition(),
            message.offset(),
            text(message.key()),
            text(message.payload()),
        ));
    }
    messages
}

/// The rows of an upsert topic: the last value per key, without `"time"`.
pub fn upsert_rows(brokers: &str, topic: &str) -> BTreeSet<String> {
    let mut last: BTreeMap<String, (u64, Option<Value>)> = BTreeMap::new();
    for (_, _, key, value) in read_topic(brokers, topic) {
        let key = key.expect("upsert records have keys");
        let value = value.map(|v| serde_json::from_str::<Value>(&v).unwrap());
        let time = value
            .as_ref()
            .map_or(0, |v| v["time"].as_u64().expect("a time"));
        if let Some((previous, _)) = last.get(&key) {
            assert!(
                time >= *previous || value.is_none(),
                "{topic} {key}: time went back"
            );
        }
        last.insert(key, (time, value));
    }
    last.into_values()
        .filter_map(|(_, value)| value)
        .map(|mut value| {
            value.as_object_mut().unwrap().remove("time");
            value.to_string()
        })
        .collect()
}

pub fn file_rows(dir: &std::path::Path) -> BTreeSet<String> {
    read_collection::<Value>(dir)
        .unwrap()
        .into_iter()
        .map(|v| v.to_string())
        .collect()
}

/// The output topics hold, as last values per key, exactly backfill's
/// collections in `out`; rejections and progress are as specified.
pub fn check_outputs(brokers: &str, topics: &Topics, out: &std::path::Path, run: &str) {
    for (topic, folder) in [
        (&topics.walkins, "walkins"),
        (&topics.device_contacts, "device-contacts"),
        (&topics.enriched_walkins, "enriched-walkins"),
        (&topics.walkin_counts, "walkin-counts"),
    ] {
        let expected = file_rows(&out.join(folder));
        assert!(!expected.is_empty(), "{folder} should not be empty");
        let actual = upsert_rows(brokers, topic);
        let missing: Vec<_> = expected.difference(&actual).take(3).collect();
        let extra: Vec<_> = actual.difference(&expected).take(3).collect();
        assert!(
            actual == expected,
            "{run}: {topic} differs from backfill's {folder}: {} rows against {}; missing {missing:?}; extra {extra:?}",
            actual.len(),
            expected.len()
        );
    }

    // Rejections carry the topic, the partition and the Kafka offset (a
    // file's line number is its offset + 1).
    let rejected: BTreeSet<(String, u64, u64, String)> = read_topic(brokers, &topics.rejected)
        .into_iter()
        .map(|(_, _, _, value)| {
            let v: Value = serde_json::from_str(&value.unwrap()).unwrap();
            let field = |name: &str| v[name].as_u64().unwrap();
            (
                v["source"].as_str().unwrap().to_owned(),
                field("partition"),
                field("offset") + 1,
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, u64, u64, String)> =
        read_collection::<Value>(&out.join("rejected"))
            .unwrap()
            .into_iter()
            .map(|v| {
                let source = v["source"].as_str().unwrap();
                let topic = if source.contains("Probe-") {
                    &topics.probes
                } else if source.contains("Login-") {
                    &topics.logins
                } else {
                    &topics.base_counts
                };
                (
                    topic.to_owned(),
                    v["partition"].as_u64().unwrap(),
                    v["offset"].as_u64().unwrap(),
                    v["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    assert!(!expected.is_empty());
    assert_eq!(rejected, expected, "{run}: rejected records differ");

    // Progress only grows, and ends with everything acknowledged.
    let frontiers: Vec<u64> = read_topic(brokers, &topics.progress)
        .into_iter()
        .map(|(_, _, _, value)| {
            serde_json::from_str::<Value>(&value.unwrap()).unwrap()["frontier"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        frontiers.windows(2).all(|w| w[0] < w[1]),
        "{run}: progress {frontiers:?}"
    );
    assert_eq!(
        frontiers.last(),
        Some(&u64::MAX),
        "{run}: progress {frontiers:?}"
    );
}

/// Runs `command` (a `presence` invocation without cluster flags) as two
/// real processes of one cluster on two free loopback ports, and asserts
/// that both succeed. Each process gets `-n 2 -p I -h HOSTFILE`.
pub fn run_two_processes(dir: &Path, command: impl Fn() -> std::process::Command) {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let hostfile = dir.join("hosts");
    std::fs::write(
        &hostfile,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let children: Vec<_> = (0..2)
        .map(|p| {
            command()
                .args(["-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "a -n 2 process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Creates the output topics of `topics` on librdkafka's mock broker, which
/// has no CreateTopics call (`run` would wait a bounded time for it).
pub fn create_output_topics(
    mock: &rdkafka::mocking::MockCluster<'_, impl rdkafka::ClientContext>,
    topics: &Topics,
    partitions: i32,
) {
    for topic in [
        &topics.walkins,
        &topics.device_contacts,
        &topics.enriched_walkins,
        &topics.walkin_counts,
        &topics.rejected,
    ] {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    mock.create_topic(&topics.progress, 1, 1).unwrap();
}
