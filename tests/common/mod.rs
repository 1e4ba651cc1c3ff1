//! Helpers shared by the Kafka tests: the same generated records to topics
//! and files, and the comparison of upsert topics with backfill output.
#![allow(dead_code)] // each test file uses its own subset

use presence::model::output::Output;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence::backfill::{self, Job, Progress};
use presence::files::output::read_collection;
use presence::harness::generator::{Workload, WorkloadConfig};
use presence::model::ingest::Kind;
use presence::service::Topics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

pub mod bucket;
pub mod crash;
pub mod input;
pub mod query;
pub mod s3;

pub const PROBE_PARTITIONS: i32 = 4;
/// One request to a broker.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for something that must happen before it fails
/// saying what it waited for: generous, so that a loaded machine makes a
/// test slower, never wrong. No test asserts how fast anything is.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Waits until `found` gives something, checking now and then (every
/// millisecond at first, backing off to every 100 ms: no spinning), and
/// fails naming `what` once `patience` has passed.
pub fn wait_for<T>(what: &str, patience: Duration, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {patience:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits (at most [`PATIENCE`]) until `done` holds; see [`wait_for`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    wait_for(what, PATIENCE, || done().then_some(()))
}

/// The lines `child` writes to its (piped) stderr, as they come, read by a
/// thread of their own; the channel ends when the pipe closes.
#[allow(dead_code)]
pub fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let pipe = child.stderr.take().expect("stderr is piped");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits (at most [`PATIENCE`]) for `child` to exit; past that, kills it
/// and fails naming `what`.
pub fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gave up after {PATIENCE:?} waiting for {what} to exit (killed it)");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Hands `payload` to `producer` for `topic`/`partition`, waiting while its
/// queue is full (at most [`PATIENCE`]); any other error fails the test.
pub fn send(producer: &BaseProducer, topic: &str, partition: i32, payload: &str) {
    let mut record = BaseRecord::<(), str>::to(topic)
        .partition(partition)
        .payload(payload);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                assert!(
                    Instant::now() < deadline,
                    "the producer's queue stayed full for {PATIENCE:?} (sending to {topic}/{partition})"
                );
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("sending to {topic}/{partition}: {error}"),
        }
    }
}

/// The newest complete checkpoint in `dir`; `None` while there is none (or
/// no folder yet). Any other failure to read the folder fails the test: it
/// is not "no checkpoint".
pub fn newest_checkpoint(dir: &Path) -> Option<presence::checkpoint::store::Manifest> {
    if !dir.exists() {
        return None;
    }
    presence::checkpoint::store::newest_complete(&store_at(dir), &mut Vec::new())
        .unwrap_or_else(|e| panic!("reading the checkpoints in {}: {e}", dir.display()))
        .map(|(manifest, _)| manifest)
}

/// The newest complete checkpoint at `location`, as `--checkpoint-dir`
/// takes it: a folder (as [`newest_checkpoint`]) or `s3://BUCKET/PREFIX`
/// (configured by the AWS variables of this process's environment); `None`
/// while there is none. Any other failure to read the store fails the
/// test: it is not "no checkpoint".
pub fn newest_checkpoint_at(location: &str) -> Option<presence::checkpoint::store::Manifest> {
    let place: presence::checkpoint::store::Location = location
        .parse()
        .unwrap_or_else(|e| panic!("{location:?} is no checkpoint location: {e}"));
    if let Some(dir) = place.local() {
        return newest_checkpoint(dir);
    }
    let store = presence::checkpoint::store::Store::at(place)
        .unwrap_or_else(|e| panic!("opening the checkpoint store {location}: {e}"));
    presence::checkpoint::store::newest_complete(&store, &mut Vec::new())
        .unwrap_or_else(|e| panic!("reading the checkpoints in {location}: {e}"))
        .map(|(manifest, _)| manifest)
}

/// The checkpoint store in the folder `dir`.
pub fn store_at(
    dir: impl Into<presence::checkpoint::store::Location>,
) -> presence::checkpoint::store::Store {
    presence::checkpoint::store::Store::at(dir).expect("a folder can be a checkpoint store")
}

/// librdkafka's in-process broker.
pub type Mock = rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// librdkafka's in-process broker with `topics` (name, partitions).
pub fn mock_with(topics: &[(&str, i32)]) -> Mock {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    for &(name, partitions) in topics {
        mock.create_topic(name, partitions, 1).unwrap();
    }
    mock
}

/// librdkafka's in-process broker with the input topics (`PROBE_PARTITIONS`
/// probe partitions, one of logins and of base counts).
pub fn mock_inputs() -> Mock {
    mock_with(&[
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ])
}

/// Topics named afresh for this run, inputs and outputs, created as the
/// inputs on `kafka` (a real broker may outlive the test and creates no
/// topic on first use; `run` creates the outputs).
#[allow(dead_code)]
pub fn fresh_topics(tag: &str, kafka: &presence::kafka::Connection) -> Topics {
    let unique = format!(
        "{tag}{}-{}-",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()
    );
    let mut topics = Topics::with_output_prefix(&unique);
    topics.probes = format!("{unique}probes");
    topics.logins = format!("{unique}logins");
    topics.base_counts = format!("{unique}base-counts");
    let inputs = [
        (topics.probes.as_str(), PROBE_PARTITIONS, false),
        (topics.logins.as_str(), 1, false),
        (topics.base_counts.as_str(), 1, false),
    ];
    presence::kafka::create_missing_topics(kafka, &inputs, TIMEOUT).unwrap();
    topics
}

/// `presence run --stop-at-end` on `brokers` with the input topics of
/// `topics` and output topics under `prefix` (two partitions each).
#[allow(dead_code)]
pub fn run_to_end_command(brokers: &str, topics: &Topics, prefix: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_presence"));
    command
        .args(["run", "--brokers", brokers, "--stop-at-end"])
        .args([
            "--probes-topic",
            &topics.probes,
            "--logins-topic",
            &topics.logins,
        ])
        .args(["--base-counts-topic", &topics.base_counts])
        .args(["--output-prefix", prefix, "--output-partitions", "2"]);
    command
}

/// The output prefix of topics made by [`fresh_topics`].
#[allow(dead_code)]
pub fn output_prefix(topics: &Topics) -> &str {
    topics[Output::Walkins].trim_end_matches("walkins")
}

/// Settings every client of the tests' own gets (the TLS test's).
static CLIENT_SETTINGS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Gives every client the tests create `settings` (once per test binary).
#[allow(dead_code)]
pub fn use_client_settings(settings: Vec<(String, String)>) {
    CLIENT_SETTINGS
        .set(settings)
        .expect("client settings are set once");
}

/// A client configuration for `brokers`, with [`use_client_settings`]'s settings.
pub fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in CLIENT_SETTINGS.get().into_iter().flatten() {
        config.set(key, value);
    }
    config
}

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
    let topic_of = |kind: Kind| match kind {
        Kind::Probe => topics.probes.clone(),
        Kind::Login => topics.logins.clone(),
        Kind::BaseCount => topics.base_counts.clone(),
    };
    produce_and_backfill_routed(brokers, config, dir, one_record_tail, |kind, p, _| Route {
        topic: topic_of(kind),
        partition: p as i32,
        file: p,
    });
}

/// Where a generated record goes: a topic's partition, and the file (its
/// index among its kind's files) the reference backfill reads it from.
pub struct Route {
    pub topic: String,
    pub partition: i32,
    pub file: u64,
}

/// As [`produce_and_backfill`], with each record's place chosen by `route`
/// from its kind, generated partition and index; every file is one Kafka
/// partition.
pub fn produce_and_backfill_routed(
    brokers: &str,
    config: &WorkloadConfig,
    dir: &Path,
    one_record_tail: bool,
    route: impl Fn(Kind, u64, usize) -> Route,
) {
    let producer: BaseProducer = client(brokers).create().unwrap();
    let send = |topic: &str, partition: i32, line: &str| send(&producer, topic, partition, line);
    // Per (kind, file): its topic and partition, and its text.
    let mut files: BTreeMap<(Kind, u64), (String, i32, String)> = BTreeMap::new();
    for (i, record) in Workload::new(config.clone()).enumerate() {
        let place = route(record.kind, record.partition, i);
        send(&place.topic, place.partition, &record.line);
        let file = files
            .entry((record.kind, place.file))
            .or_insert_with(|| (place.topic.clone(), place.partition, String::new()));
        assert_eq!(
            (&file.0, file.1),
            (&place.topic, place.partition),
            "a file is one partition"
        );
        file.2.push_str(&record.line);
        file.2.push('\n');
    }
    producer.flush(TIMEOUT).unwrap();
    if one_record_tail {
        for (topic, partition, text) in files.values_mut() {
            send(topic, *partition, " ");
            producer.flush(TIMEOUT).unwrap();
            text.push_str(" \n");
        }
    }
    let path = |kind: Kind, p: u64| dir.join(format!("{kind:?}-{p}.jsonl"));
    for ((kind, p), (_, _, text)) in &files {
        std::fs::write(path(*kind, *p), text).unwrap();
    }
    let of = |kind: Kind| -> Vec<_> {
        files
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|&(k, p)| path(k, p))
            .collect()
    };
    let job = Job {
        probes: of(Kind::Probe),
        logins: of(Kind::Login),
        base_counts: of(Kind::BaseCount),
        out: dir.join("out"),
        ..Job::default()
    };
    backfill::run(timely::Config::thread(), job, Arc::new(Progress::default())).unwrap();
}

/// The files of the input as produced, per (kind, partition), in order.
pub type Files = BTreeMap<(Kind, u64), Vec<String>>;

/// Backfills the first `lengths` lines of each of `files` (all of those
/// not named) from files written in `dir`; returns the output folder.
pub fn backfill_prefix(
    files: &Files,
    lengths: &BTreeMap<(Kind, u64), usize>,
    dir: &Path,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = |kind: Kind, p: u64| dir.join(format!("{kind:?}-{p}.jsonl"));
    let mut by_kind: BTreeMap<Kind, Vec<PathBuf>> = BTreeMap::new();
    for ((kind, p), lines) in files {
        let n = lengths.get(&(*kind, *p)).copied().unwrap_or(lines.len());
        let mut text = lines[..n.min(lines.len())].join("\n");
        text.push('\n');
        std::fs::write(path(*kind, *p), text).unwrap();
        by_kind.entry(*kind).or_default().push(path(*kind, *p));
    }
    let out = dir.join("out");
    let job = Job {
        probes: by_kind.remove(&Kind::Probe).unwrap_or_default(),
        logins: by_kind.remove(&Kind::Login).unwrap_or_default(),
        base_counts: by_kind.remove(&Kind::BaseCount).unwrap_or_default(),
        out: out.clone(),
        ..Job::default()
    };
    backfill::run(timely::Config::thread(), job, Arc::new(Progress::default())).unwrap();
    out
}

/// A workload produced to the input topics in a thread, paced over a span
/// of time (a record is due at its index's share of it), each record kept,
/// per (kind, partition) in order, as the files of a reference backfill.
pub struct Feeder {
    files: Arc<std::sync::Mutex<Files>>,
    hurry: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Feeder {
    /// Produces `records` to the input topics of `topics` over `span`.
    /// With `one_record_tail`, every partition then ends with a batch of one
    /// blank record (tansu reports a partition's end as its last batch's
    /// base offset + 1: only then is its end where its last record is).
    pub fn start(
        brokers: &str,
        topics: &Topics,
        records: Vec<presence::harness::generator::Generated>,
        span: Duration,
        one_record_tail: bool,
    ) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let files: Arc<std::sync::Mutex<Files>> = Arc::default();
        let hurry: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let topic_of = {
            let names = [
                topics.probes.clone(),
                topics.logins.clone(),
                topics.base_counts.clone(),
            ];
            move |kind: Kind| match kind {
                Kind::Probe => names[0].clone(),
                Kind::Login => names[1].clone(),
                Kind::BaseCount => names[2].clone(),
            }
        };
        let thread = {
            let (brokers, files, hurry, stop) = (
                brokers.to_owned(),
                Arc::clone(&files),
                Arc::clone(&hurry),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let producer: BaseProducer =
                    client(&brokers).set("linger.ms", "1").create().unwrap();
                let pace = span.as_secs_f64() / records.len().max(1) as f64;
                let started = Instant::now();
                for (i, record) in records.into_iter().enumerate() {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let due = Duration::from_secs_f64(i as f64 * pace);
                    while started.elapsed() < due && !hurry.load(Relaxed) && !stop.load(Relaxed) {
                        producer.poll(Duration::from_millis(1));
                    }
                    send(
                        &producer,
                        &topic_of(record.kind),
                        record.partition as i32,
                        &record.line,
                    );
                    files
                        .lock()
                        .unwrap()
                        .entry((record.kind, record.partition))
                        .or_default()
                        .push(record.line);
                }
                producer.flush(TIMEOUT).unwrap();
                if one_record_tail && !stop.load(Relaxed) {
                    let keys: Vec<(Kind, u64)> = files.lock().unwrap().keys().copied().collect();
                    for (kind, partition) in keys {
                        send(&producer, &topic_of(kind), partition as i32, " ");
                        producer.flush(TIMEOUT).unwrap();
                        files
                            .lock()
                            .unwrap()
                            .get_mut(&(kind, partition))
                            .unwrap()
                            .push(" ".to_owned());
                    }
                }
            })
        };
        Feeder {
            files,
            hurry,
            stop,
            thread,
        }
    }

    /// Sends the rest at once, waits until all is acknowledged, and returns
    /// the files.
    pub fn finish(self) -> Files {
        self.hurry.store(true, std::sync::atomic::Ordering::Relaxed);
        self.join()
    }

    /// Sends no more, and returns the files of what was sent.
    pub fn stop(self) -> Files {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.join()
    }

    fn join(self) -> Files {
        self.thread.join().expect("the feeder does not panic");
        let files = self.files.lock().unwrap().clone();
        files
    }
}

/// How many records of each input partition a progress message's offsets
/// say the state reflects, by (kind, partition), for inputs named as in
/// `topics`.
pub fn reflected(message: &Value, topics: &Topics) -> BTreeMap<(Kind, u64), usize> {
    let kind_of = |topic: &str| {
        if topic == topics.probes {
            Kind::Probe
        } else if topic == topics.logins {
            Kind::Login
        } else {
            assert_eq!(topic, topics.base_counts, "an input topic");
            Kind::BaseCount
        }
    };
    let mut lengths = BTreeMap::new();
    for (topic, partitions) in message["offsets"].as_object().expect("offsets") {
        for (partition, next) in partitions.as_object().unwrap() {
            lengths.insert(
                (kind_of(topic), partition.parse::<u64>().unwrap()),
                next.as_u64().unwrap() as usize,
            );
        }
    }
    lengths
}

/// The input files `produce_and_backfill` wrote in `dir`, by (kind, partition).
pub fn files_in(dir: &Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((kind, partition)) = name
            .strip_suffix(".jsonl")
            .and_then(|stem| stem.split_once('-'))
        else {
            continue;
        };
        let kind = match kind {
            "Probe" => Kind::Probe,
            "Login" => Kind::Login,
            "BaseCount" => Kind::BaseCount,
            _ => continue,
        };
        let text = std::fs::read_to_string(&path).unwrap();
        files.insert(
            (kind, partition.parse().unwrap()),
            text.lines().map(str::to_owned).collect(),
        );
    }
    files
}

/// A message of a topic, with its Kafka timestamp (ms; -1 if none).
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub timestamp: i64,
}

/// Every message of `topic` (all partitions), up to the end offsets the
/// broker reports, and the rest of the batch each partition ends in; the
/// ends are asked again once reached, until they stay put. A read that does
/// not get there within [`PATIENCE`] fails, saying where it stopped (a
/// broker down all that time included).
pub fn read_messages(brokers: &str, topic: &str) -> Vec<TopicMessage> {
    // Fetches return at once (not after the default 500 ms wait for data),
    // and the ends are asked by a client of their own, whose requests do
    // not queue behind the reader's fetches.
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", "presence-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.error.backoff.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let asker: BaseConsumer = client(brokers).create().unwrap();
    let metadata = asker
        .fetch_metadata(Some(topic), TIMEOUT)
        .unwrap_or_else(|e| panic!("reading the metadata of {topic}: {e}"));
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let ends = || -> BTreeMap<i32, (i64, i64)> {
        partitions
            .iter()
            .map(|&p| {
                let watermarks = asker
                    .fetch_watermarks(topic, p, TIMEOUT)
                    .unwrap_or_else(|e| panic!("reading the end offsets of {topic}/{p}: {e}"));
                (p, watermarks)
            })
            .collect()
    };
    // Per partition: the next offset to read, and where it ends.
    let mut spans: BTreeMap<i32, (i64, i64)> = ends();
    let mut list = TopicPartitionList::new();
    for (&p, &(low, _)) in &spans {
        list.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut messages = Vec::new();
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
    let keep = |message: &rdkafka::message::BorrowedMessage<'_>,
                spans: &mut BTreeMap<i32, (i64, i64)>,
                messages: &mut Vec<TopicMessage>| {
        if let Some((next, _)) = spans.get_mut(&message.partition()) {
            // tansu repeats batches within one fetch answer: a record
            // below the next offset was read already.
            if message.offset() < *next {
                return;
            }
            *next = message.offset() + 1;
        }
        messages.push(TopicMessage {
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()),
            value: text(message.payload()),
            timestamp: message.timestamp().to_millis().unwrap_or(-1),
        });
    };
    let transient = |error: &KafkaError| {
        // The client reports a lost connection to the broker (it
        // reconnects by itself) as an error event: not the topic's.
        matches!(
            error,
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            )
        )
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        while spans.values().any(|(next, end)| next < end) {
            assert!(
                Instant::now() < deadline,
                "reading {topic}: after {PATIENCE:?}, at (next, end) {spans:?}"
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => keep(&message, &mut spans, &mut messages),
                Some(Err(error)) if transient(&error) => {}
                Some(Err(error)) => panic!("reading {topic}: {error}"),
            }
        }
        // A broker may report an end short of its last batch (tansu: the
        // batch's first offset + 1). A batch reaches the client whole, so
        // the rest of it is in the client's queue already: take what is
        // there.
        while let Some(message) = consumer.poll(Duration::ZERO) {
            match message {
                Ok(message) => keep(&message, &mut spans, &mut messages),
                Err(error) if transient(&error) => {}
                Err(error) => panic!("reading {topic} past its end offsets: {error}"),
            }
        }
        // Done when the ends, asked again, are where the read is.
        let mut moved = false;
        for (p, (_, high)) in ends() {
            let (next, end) = spans.get_mut(&p).expect("every partition has a span");
            if high > *next {
                *end = high;
                moved = true;
            }
        }
        if !moved {
            return messages;
        }
    }
}

/// A row's content without its `"time"`.
pub fn content(value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(value).unwrap();
    v.as_object_mut().unwrap().remove("time");
    v.to_string()
}

/// The messages of upsert topic `topic` that repeat their key's value
/// before them (its content, tombstones included), as text.
pub fn repeats(brokers: &str, topic: &str) -> Vec<String> {
    let mut current: BTreeMap<(i32, Option<String>), Option<String>> = BTreeMap::new();
    let mut found = Vec::new();
    for m in read_messages(brokers, topic) {
        let now = m.value.as_deref().map(content);
        let key = (m.partition, m.key.clone());
        if current.get(&key) == Some(&now) {
            found.push(format!(
                "{topic}/{} offset {}: {:?} again",
                m.partition, m.offset, m.key
            ));
        }
        current.insert(key, now);
    }
    found
}

/// The keys of the rejected-records topic `topic` written more than once,
/// with where (partition, offset).
pub fn rejected_twice(brokers: &str, topic: &str) -> Vec<(String, Vec<(i32, i64)>)> {
    let mut places: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for m in read_messages(brokers, topic) {
        places
            .entry(m.key.expect("rejected records have keys"))
            .or_default()
            .push((m.partition, m.offset));
    }
    places.into_iter().filter(|(_, at)| at.len() > 1).collect()
}

/// The state of row topics as of `frontier`: the last value per key of the
/// messages below it (a message's timestamp is its logical time).
pub fn state_as_of(messages: &[TopicMessage], frontier: u64) -> BTreeSet<String> {
    let mut current: BTreeMap<(i32, String), Option<String>> = BTreeMap::new();
    for m in messages.iter().filter(|m| m.timestamp < frontier as i64) {
        current.insert(
            (m.partition, m.key.clone().expect("rows have keys")),
            m.value.as_deref().map(content),
        );
    }
    current.into_values().flatten().collect()
}

/// The five row topics of `topics`, with their backfill folders.
pub fn row_topics(topics: &Topics) -> [(&String, &'static str); 5] {
    [
        (&topics[Output::Walkins], "walkins"),
        (&topics[Output::DeviceContacts], "device-contacts"),
        (&topics[Output::EnrichedWalkins], "enriched-walkins"),
        (&topics[Output::WalkinCounts], "walkin-counts"),
        (&topics[Output::Present], "present"),
    ]
}

/// No message of a row topic repeats its key's value before it.
pub fn assert_no_repeats(brokers: &str, topics: &Topics) {
    for (topic, _) in row_topics(topics) {
        let repeated = repeats(brokers, topic);
        assert!(repeated.is_empty(), "{repeated:?}");
    }
}

/// The frontiers of the progress topic, in order, checked to grow.
pub fn growing_frontiers(brokers: &str, topics: &Topics, what: &str) -> Vec<u64> {
    let frontiers: Vec<u64> = progress_messages(brokers, topics)
        .iter()
        .map(|p| p["frontier"].as_u64().unwrap())
        .collect();
    assert!(
        frontiers.windows(2).all(|w| w[0] < w[1]),
        "{what}: frontiers {frontiers:?}"
    );
    frontiers
}

/// Every message of `topic` (all partitions), as (partition, offset, key, value).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<(i32, i64, Option<String>, Option<String>)> {
    read_messages(brokers, topic)
        .into_iter()
        .map(|m| (m.partition, m.offset, m.key, m.value))
        .collect()
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
    check_outputs_placed(brokers, topics, out, run, |source, partition| {
        let topic = if source.contains("Probe-") {
            &topics.probes
        } else if source.contains("Login-") {
            &topics.logins
        } else {
            &topics.base_counts
        };
        (topic.to_owned(), partition)
    });
}

/// As [`check_outputs`], with the Kafka place of each backfill file (by its
/// path and index among its kind) given by `place`.
pub fn check_outputs_placed(
    brokers: &str,
    topics: &Topics,
    out: &std::path::Path,
    run: &str,
    place: impl Fn(&str, u64) -> (String, u64),
) {
    for (topic, folder) in row_topics(topics) {
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
    // file's line number is its offset + 1); each is written once.
    let mut rejected: Vec<(String, u64, u64, String)> =
        read_topic(brokers, &topics[Output::Rejected])
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
    rejected.sort();
    let twice: Vec<_> = rejected.windows(2).filter(|w| w[0] == w[1]).collect();
    assert!(twice.is_empty(), "{run}: rejected twice: {twice:?}");
    let mut expected: Vec<(String, u64, u64, String)> =
        read_collection::<Value>(&out.join("rejected"))
            .unwrap()
            .into_iter()
            .map(|v| {
                let (topic, partition) = place(
                    v["source"].as_str().unwrap(),
                    v["partition"].as_u64().unwrap(),
                );
                (
                    topic,
                    partition,
                    v["offset"].as_u64().unwrap(),
                    v["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
    expected.sort();
    assert!(!expected.is_empty(), "{run}: backfill rejected nothing");
    assert_eq!(rejected, expected, "{run}: rejected records differ");

    // Progress only grows, and ends with a real logical time above every
    // output's, whose offsets are the input topics' ends.
    growing_frontiers(brokers, topics, run);
    let progress = progress_messages(brokers, topics);
    let last = progress.last().expect("a final progress message");
    let final_frontier = last["frontier"].as_u64().unwrap();
    assert!(final_frontier < u64::MAX, "{run}: a real final frontier");
    let latest = Output::UPSERTS
        .map(|output| &topics[output])
        .iter()
        .flat_map(|topic| read_topic(brokers, topic))
        .filter_map(|(_, _, _, value)| value)
        .map(|v| {
            serde_json::from_str::<Value>(&v).unwrap()["time"]
                .as_u64()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!(
        final_frontier > latest,
        "{run}: final frontier {final_frontier} <= output time {latest}"
    );
    // Every partition of every input topic (a kind may list several).
    let offsets = last["offsets"].as_object().expect("offsets");
    let named: BTreeSet<&str> = [&topics.probes, &topics.logins, &topics.base_counts]
        .into_iter()
        .flat_map(|list| list.split(','))
        .collect();
    assert_eq!(
        offsets.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        named,
        "{run}: final offsets {last}"
    );
    for (topic, partitions) in offsets {
        assert_eq!(
            partitions.as_object().unwrap().len(),
            partition_count(brokers, topic),
            "{run}: final offsets of {topic}: {last}"
        );
        for (partition, next) in partitions.as_object().unwrap() {
            assert_eq!(
                next.as_i64(),
                Some(end_offset(brokers, topic, partition.parse().unwrap())),
                "{run}: final offsets {last}"
            );
        }
    }
}

/// The values of the progress topic, in order.
pub fn progress_messages(brokers: &str, topics: &Topics) -> Vec<Value> {
    read_topic(brokers, &topics.progress)
        .into_iter()
        .map(|(_, _, _, value)| serde_json::from_str(&value.unwrap()).unwrap())
        .collect()
}

/// How many partitions `topic` has, as the broker says.
pub fn partition_count(brokers: &str, topic: &str) -> usize {
    let consumer: BaseConsumer = client(brokers).create().unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .unwrap_or_else(|e| panic!("reading the metadata of {topic}: {e}"));
    metadata.topics()[0].partitions().len()
}

/// The high watermark of `topic`/`partition`.
pub fn end_offset(brokers: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = client(brokers).create().unwrap();
    consumer
        .fetch_watermarks(topic, partition, TIMEOUT)
        .unwrap()
        .1
}

/// `n` loopback ports for a test cluster, each handed out once (until the
/// range wraps around) across every test thread and test binary running
/// now. Binding to port 0 and closing would race: the port is free again
/// for anyone until the cluster binds it. So ports come from a range below
/// the kernel's ephemeral ports (which no outgoing connection takes), in
/// turn, from a counter in a file that each caller locks; each port is
/// checked to be free when handed out.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::io::{Read, Seek, Write};
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let range = ephemeral.saturating_sub(8000)..ephemeral;
    assert!(range.len() > 1000, "too few ports below {ephemeral}");
    let path = std::env::temp_dir().join("presence-test-ports");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let mut last: u16 = text.trim().parse().unwrap_or(range.start);
    let mut ports = Vec::new();
    for _ in 0..range.len() {
        if ports.len() == n {
            break;
        }
        last = if last + 1 >= range.end || last < range.start {
            range.start
        } else {
            last + 1
        };
        if std::net::TcpListener::bind(("127.0.0.1", last)).is_ok() {
            ports.push(last);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in {range:?}");
    file.set_len(0).unwrap();
    file.rewind().unwrap();
    write!(file, "{last}").unwrap();
    // Unlocked when the file is closed.
    ports
}

/// A hostfile in `dir` for two processes on loopback ports of their own
/// ([`free_ports`]; a new file each call).
pub fn hostfile(dir: &Path) -> std::path::PathBuf {
    let ports = free_ports(2);
    let path = dir.join(format!("hosts-{}", ports[0]));
    std::fs::write(
        &path,
        ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    path
}

/// Process 1 of a two-process cluster was lost at `lost` (it died or
/// hangs): process 0 must exit 1 with one line naming process 1, its last
/// (the lines before it are logs), and no panic. How long that took is
/// printed, not judged (the contract's bound is the benchmarks' to
/// measure; the line says which timeout it applied). Kills process 1 and
/// returns process 0's stderr.
pub fn assert_survivor_reports_process_1(
    survivor: &mut std::process::Child,
    victim: &mut std::process::Child,
    lost: std::time::Instant,
) -> String {
    let status = wait_child(survivor, "the survivor of a lost process");
    eprintln!(
        "the survivor stopped {:?} after losing process 1",
        lost.elapsed()
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(survivor.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("presence: error: lost process 1 (127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("lost process").count(), 1, "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

/// Runs `command` (a `presence` invocation without cluster flags) as two
/// real processes of one cluster on two free loopback ports, and asserts
/// that both succeed. Each process gets `-n 2 -p I -h HOSTFILE`.
pub fn run_two_processes(dir: &Path, command: impl Fn() -> std::process::Command) -> Vec<String> {
    let hostfile = hostfile(dir);
    let children: Vec<_> = (0..2)
        .map(|p| {
            command()
                .args(["-n", "2", "-p", &p.to_string(), "-h"])
                .arg(&hostfile)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let output = collect(child, "a -n 2 process");
            assert!(
                output.status.success(),
                "a -n 2 process failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect()
}

/// Waits (bounded, [`wait_child`]) for `child`, whose stderr is piped, and
/// returns its status and stderr.
pub fn finish(child: Child, what: &str) -> (ExitStatus, String) {
    let output = collect(child, what);
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits (bounded, [`wait_child`]) for `child` and returns what it wrote to
/// its piped stdout and stderr, which are drained meanwhile so that a
/// talkative child never blocks on them.
pub fn collect(mut child: Child, what: &str) -> std::process::Output {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_child(&mut child, what);
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `command.output()`, bounded: it runs at most [`PATIENCE`], then it is
/// killed and the test fails naming it.
pub fn output(command: &mut std::process::Command) -> std::process::Output {
    let what = format!("{command:?}");
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    collect(child, &what)
}

/// Creates the output topics of `topics` on librdkafka's mock broker, which
/// has no CreateTopics call (`run` would wait a bounded time for it).
pub fn create_output_topics(
    mock: &rdkafka::mocking::MockCluster<'_, impl rdkafka::ClientContext>,
    topics: &Topics,
    partitions: i32,
) {
    for topic in Output::ALL.map(|output| &topics[output]) {
        mock.create_topic(topic, partitions, 1).unwrap();
    }
    mock.create_topic(&topics.progress, 1, 1).unwrap();
}

/// Appends to `topic`/`partition` at the single broker `broker` one record
/// batch holding `values` whose CRC is wrong, with a hand-written Produce
/// request (v3, record batch v2): no client library sends a corrupt batch,
/// and librdkafka's mock broker stores what it is given. Returns the batch's
/// first offset.
pub fn produce_corrupt_batch(broker: &str, topic: &str, partition: i32, values: &[&str]) -> i64 {
    use std::io::{Read, Write};
    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64; // zigzag
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as i16).to_be_bytes());
        out.extend(s.as_bytes());
    }
    // The batch after its length field.
    let mut batch = Vec::new();
    batch.extend(0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(0xdead_beef_u32.to_be_bytes()); // the wrong CRC
    batch.extend(0i16.to_be_bytes()); // attributes: no compression
    batch.extend((values.len() as i32 - 1).to_be_bytes()); // last offset delta
    batch.extend(1_000i64.to_be_bytes()); // first timestamp
    batch.extend(1_000i64.to_be_bytes()); // max timestamp
    batch.extend((-1i64).to_be_bytes()); // producer id
    batch.extend((-1i16).to_be_bytes()); // producer epoch
    batch.extend((-1i32).to_be_bytes()); // base sequence
    batch.extend((values.len() as i32).to_be_bytes());
    for (delta, value) in values.iter().enumerate() {
        let mut record = vec![0]; // attributes
        varint(&mut record, 0); // timestamp delta
        varint(&mut record, delta as i64); // offset delta
        varint(&mut record, -1); // null key
        varint(&mut record, value.len() as i64);
        record.extend(value.as_bytes());
        varint(&mut record, 0); // no headers
        varint(&mut batch, record.len() as i64);
        batch.extend(record);
    }
    let mut records = Vec::new();
    records.extend(0i64.to_be_bytes()); // base offset, assigned by the broker
    records.extend((batch.len() as i32).to_be_bytes());
    records.extend(batch);

    let mut request = Vec::new();
    request.extend(0i16.to_be_bytes()); // Produce
    request.extend(3i16.to_be_bytes()); // version
    request.extend(7i32.to_be_bytes()); // correlation id
    string(&mut request, "presence-test");
    request.extend((-1i16).to_be_bytes()); // no transactional id
    request.extend(1i16.to_be_bytes()); // acks
    request.extend(10_000i32.to_be_bytes()); // timeout
    request.extend(1i32.to_be_bytes()); // one topic
    string(&mut request, topic);
    request.extend(1i32.to_be_bytes()); // one partition
    request.extend(partition.to_be_bytes());
    request.extend((records.len() as i32).to_be_bytes());
    request.extend(records);

    let mut stream = std::net::TcpStream::connect(broker).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut size = [0; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    // correlation id, topic count, topic name, partition count, partition,
    // error code, base offset, ...
    let name_end = 4 + 4 + 2 + topic.len();
    let at = |from: usize, n: usize| &response[from..from + n];
    assert_eq!(at(0, 4), 7i32.to_be_bytes(), "correlation id");
    let error = i16::from_be_bytes(at(name_end + 8, 2).try_into().unwrap());
    assert_eq!(error, 0, "the broker refused the batch");
    i64::from_be_bytes(at(name_end + 10, 8).try_into().unwrap())
}

/// The numbers of a summary line (`read N records: accepted A (...),
/// rejected R (...), blank B`), by their word.
pub fn summary_numbers(line: &str) -> BTreeMap<&'static str, u64> {
    let after = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        line[at + word.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
    };
    ["read", "accepted", "rejected", "blank"]
        .into_iter()
        .map(|word| (word, after(&format!("{word} "))))
        .collect()
}

/// One HTTP GET: the status code and the body.
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}
