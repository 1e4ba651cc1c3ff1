//! The crash loop: the real binary as child processes, killed with SIGKILL
//! at seeded random moments while input keeps arriving, restarted at a
//! random cluster shape each time, and finally run to the end of its input.
//! The outputs must be what one uninterrupted run gives (see [`crash_loop`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence::backfill::{self, Job, Progress};
use presence::io::generator::{Workload, WorkloadConfig};
use presence::io::ingest::Kind;
use presence::io::store;
use presence::run::Topics;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

use super::{content, file_rows, hostfile, read_messages, read_topic, PROBE_PARTITIONS, TIMEOUT};

/// A tiny seeded generator (xorshift), so that a failure names its seed.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Seeded(seed.max(1))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How the loop is run.
pub struct CrashLoop {
    pub brokers: String,
    pub topics: Topics,
    pub kills: usize,
    /// Cluster shapes to draw from: 1 = `-w 1`, 2 = `-w 2`, 0 = two processes.
    pub shapes: Vec<u8>,
    pub seed: u64,
    pub dir: PathBuf,
    /// End every partition with a batch of one blank record: tansu reports
    /// a partition's end as its last batch's base offset + 1, so the final
    /// `--stop-at-end` run reads everything only then.
    pub one_record_tail: bool,
}

/// The files of the input as produced, per (kind, partition), in order.
type Files = BTreeMap<(Kind, u64), Vec<String>>;

fn backfill_prefix(files: &Files, lengths: &BTreeMap<(Kind, u64), usize>, dir: &Path) -> PathBuf {
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

impl CrashLoop {
    fn command(&self, state: &Path, stop_at_end: bool) -> Command {
        let t = &self.topics;
        let mut command = Command::new(env!("CARGO_BIN_EXE_presence"));
        command
            .args([
                "run",
                "--brokers",
                &self.brokers,
                "--output-partitions",
                "2",
            ])
            .args(["--probes-topic", &t.probes, "--logins-topic", &t.logins])
            .args(["--base-counts-topic", &t.base_counts])
            .args(["--output-prefix", t.walkins.trim_end_matches("walkins")])
            .arg("--checkpoint-dir")
            .arg(state)
            // Cuts every 300 ms, each piece 100 ms slower to become durable:
            // many kills land inside a checkpoint write.
            .args([
                "--checkpoint-interval",
                "300ms",
                "--inject-checkpoint-delay",
                "100ms",
            ])
            // Historical input: no partition may count as idle.
            .args(["--idle-timeout", "1h", "--connect-timeout", "5s"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if stop_at_end {
            command.arg("--stop-at-end");
        }
        command
    }

    /// Starts a run at `shape`.
    fn start(&self, state: &Path, shape: u8, stop_at_end: bool) -> Vec<Child> {
        match shape {
            0 => {
                let hosts = hostfile(&self.dir);
                (0..2)
                    .map(|p| {
                        let mut command = self.command(state, stop_at_end);
                        command
                            .args(["-n", "2", "-p", &p.to_string(), "-h"])
                            .arg(&hosts);
                        command.spawn().unwrap()
                    })
                    .collect()
            }
            w => {
                let mut command = self.command(state, stop_at_end);
                command.args(["-w", &w.to_string()]);
                vec![command.spawn().unwrap()]
            }
        }
    }

    /// Runs the loop and checks everything; see the module docs.
    pub fn run(&self, config: WorkloadConfig) {
        let seed = self.seed;
        let mut rng = Seeded::new(seed);
        let state = self.dir.join("state");
        let t = &self.topics;
        // The input, produced at a steady pace while the service is killed
        // and restarted, and kept as files for the reference.
        let records: Vec<_> = Workload::new(config).collect();
        let files: Arc<Mutex<Files>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (brokers, files, stop) =
                (self.brokers.clone(), Arc::clone(&files), Arc::clone(&stop));
            let topics = [t.probes.clone(), t.logins.clone(), t.base_counts.clone()];
            let one_record_tail = self.one_record_tail;
            std::thread::spawn(move || {
                let producer: BaseProducer = ClientConfig::new()
                    .set("bootstrap.servers", &brokers)
                    .set("linger.ms", "5")
                    .create()
                    .unwrap();
                let started = Instant::now();
                // Spread over about 20 s.
                let per_ms = (records.len() as f64 / 20_000.0).max(0.1);
                for (i, record) in records.into_iter().enumerate() {
                    let due = Duration::from_millis((i as f64 / per_ms) as u64);
                    while started.elapsed() < due && !stop.load(Ordering::Relaxed) {
                        producer.poll(Duration::from_millis(1));
                    }
                    let topic = match record.kind {
                        Kind::Probe => &topics[0],
                        Kind::Login => &topics[1],
                        Kind::BaseCount => &topics[2],
                    };
                    while producer
                        .send(
                            BaseRecord::<(), str>::to(topic)
                                .partition(record.partition as i32)
                                .payload(&record.line),
                        )
                        .is_err()
                    {
                        producer.poll(Duration::from_millis(10));
                    }
                    files
                        .lock()
                        .unwrap()
                        .entry((record.kind, record.partition))
                        .or_default()
                        .push(record.line);
                }
                producer.flush(TIMEOUT).unwrap();
                if one_record_tail {
                    let keys: Vec<(Kind, u64)> = files.lock().unwrap().keys().copied().collect();
                    for (kind, partition) in keys {
                        let topic = match kind {
                            Kind::Probe => &topics[0],
                            Kind::Login => &topics[1],
                            Kind::BaseCount => &topics[2],
                        };
                        producer
                            .send(
                                BaseRecord::<(), str>::to(topic)
                                    .partition(partition as i32)
                                    .payload(" "),
                            )
                            .unwrap();
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

        // Kill at random moments, restart at random shapes.
        let mut resumed: Vec<(Option<store::Manifest>, String)> = Vec::new();
        let mut early: Vec<bool> = Vec::new();
        for kill in 0..self.kills {
            let shape = self.shapes[rng.below(self.shapes.len() as u64) as usize];
            let manifest = store::newest_complete(&state, &mut Vec::new())
                .ok()
                .flatten();
            let mut children = self.start(&state, shape, false);
            // A third of the kills land early (while connecting, restoring
            // or reconciling); the others after this run's first complete
            // checkpoint, at a random moment of its checkpointing.
            let is_early = rng.below(3) == 0;
            early.push(is_early);
            if is_early {
                std::thread::sleep(Duration::from_millis(300 + rng.below(1_200)));
            } else {
                let before = manifest.as_ref().map(|m| m.time);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let now = store::newest_complete(&state, &mut Vec::new())
                        .ok()
                        .flatten()
                        .map(|m| m.time);
                    if now.is_some() && now != before {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "seed {seed}, kill {kill} (shape {shape}): no checkpoint within a minute"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(rng.below(1_200)));
            }
            for child in &mut children {
                let _ = child.kill();
            }
            let mut stderr = String::new();
            for mut child in children {
                child.wait().unwrap();
                let mut text = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
                stderr += &text;
            }
            assert!(
                !stderr.contains("panicked"),
                "seed {seed}, kill {kill} (shape {shape}): {stderr}"
            );
            resumed.push((manifest, stderr));
        }
        producer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        // To the end of the input.
        let shape = self.shapes[rng.below(self.shapes.len() as u64) as usize];
        let manifest = store::newest_complete(&state, &mut Vec::new()).unwrap();
        let mut stderr = String::new();
        for child in self.start(&state, shape, true) {
            let output = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(
                output.status.success(),
                "seed {seed}: the final run (shape {shape}) failed: {text}"
            );
            stderr += &text;
        }
        resumed.push((manifest, stderr));
        early.push(false);

        let files = files.lock().unwrap().clone();
        let context = |what: &str| format!("seed {seed}: {what}");

        // Each restart resumed every partition at its checkpoint's offsets.
        let mut restored = 0;
        // Restarts that read the row topics back only after the checkpoint,
        // and of those, ones that found something there to reconcile.
        let (mut tails, mut tails_read) = (0, 0);
        let mut restore_lines = Vec::new();
        let mut with_rows = 0;
        for (run, (manifest, stderr)) in resumed.iter().enumerate() {
            let Some(manifest) = manifest else { continue };
            let Some(line) = stderr
                .lines()
                .find(|l| l.contains("restoring a checkpoint"))
            else {
                continue; // killed before it restored
            };
            restored += 1;
            // A checkpoint records where a row topic's records after it
            // begin once the topic has any before it; then, only the tail
            // is read. (A partition no process wrote to before the cut has
            // no offset, and its topic is read in full.)
            let walkins = &self.topics.walkins;
            with_rows += usize::from(
                manifest
                    .outputs
                    .iter()
                    .flatten()
                    .any(|f| &f.topic == walkins && f.offset > 0),
            );
            if line.contains("tails=[") && line.split("tails=[").nth(1).unwrap().contains("true") {
                tails += 1;
                tails_read += usize::from(!line.contains("read_back=0 "));
            }
            restore_lines.push(line.to_owned());
            // Where it resumed (no line: killed before it opened its
            // partitions, or a checkpoint from before anything was read).
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("resuming input partitions"))
                .collect();
            let mut resumed_at = BTreeMap::new();
            for line in lines {
                let list = line
                    .split("partitions=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                for item in list.split(',') {
                    let (place, offset) = item.rsplit_once('@').unwrap();
                    resumed_at.insert(place.to_owned(), offset.parse::<i64>().unwrap());
                }
            }
            for p in &manifest.partitions {
                let place = format!("{}/{}", p.topic, p.partition);
                if let Some(offset) = resumed_at.get(&place) {
                    assert_eq!(
                        *offset,
                        p.next,
                        "{}",
                        context(&format!("run {run} resumed {place}"))
                    );
                }
            }
        }

        // A run killed after its checkpoint leaves one to the next run,
        // which restores it unless it is killed before opening its inputs.
        let expected = (1..resumed.len())
            .filter(|&run| !early[run - 1] && !early[run])
            .count()
            .max(1);
        assert!(
            restored >= expected,
            "{}",
            context(&format!(
                "only {restored} of {} runs restored a checkpoint ({expected} must); early kills {early:?}; their logs:\n{}",
                resumed.len(),
                resumed
                    .iter()
                    .map(|(m, stderr)| format!(
                        "-- restoring {:?}:\n{}",
                        m.as_ref().map(|m| m.time),
                        stderr.lines().filter(|l| !l.contains("status")).take(12).collect::<Vec<_>>().join("\n")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        );

        // Kills land at random moments: with many, some land between a
        // checkpoint and the next, with rows written in between.
        assert!(
            (with_rows == 0 || tails > 0) && (self.kills < 10 || tails_read > 0),
            "{}",
            context(&format!(
                "of {restored} restores, {with_rows} of checkpoints with walk-ins, {tails} read only tails after their checkpoint, {tails_read} found records there:\n{}",
                restore_lines.join("\n")
            ))
        );

        // For a failure: each restore's checkpoint time and where it read
        // `topic` back from, and its log line.
        let restores = |topic: &str| -> String {
            resumed
                .iter()
                .filter_map(|(m, stderr)| {
                    let m = m.as_ref()?;
                    let line = stderr
                        .lines()
                        .find(|l| l.contains("restoring a checkpoint"))?;
                    let floors: Vec<String> = m
                        .outputs
                        .iter()
                        .flatten()
                        .filter(|f| f.topic == topic)
                        .map(|f| format!("{}@{}", f.partition, f.offset))
                        .collect();
                    Some(format!("checkpoint {} floors {floors:?}: {line}", m.time))
                })
                .collect::<Vec<_>>()
                .join("\n")
        };

        // The final state is one uninterrupted run's: every row topic's last
        // value per key equals backfill of all the records.
        let all = backfill_prefix(&files, &BTreeMap::new(), &self.dir.join("reference-all"));
        let topics = [
            (&t.walkins, "walkins"),
            (&t.device_contacts, "device-contacts"),
            (&t.enriched_walkins, "enriched-walkins"),
            (&t.walkin_counts, "walkin-counts"),
        ];
        let mut messages = BTreeMap::new();
        for (topic, folder) in topics {
            let read = read_messages(&self.brokers, topic);
            // No message repeats its key's current value.
            let mut current: BTreeMap<(i32, String), (Option<String>, i64, i64)> = BTreeMap::new();
            for m in &read {
                let key = (m.partition, m.key.clone().expect("rows have keys"));
                let now = m.value.as_deref().map(content);
                if let Some((previous, offset, time)) = current.get(&key) {
                    assert_ne!(
                        previous,
                        &now,
                        "{}",
                        context(&format!(
                            "{topic} repeats {key:?} at offset {} (time {}), after offset {offset} (time {time}); restores:\n{}",
                            m.offset,
                            m.timestamp,
                            restores(topic)
                        ))
                    );
                }
                current.insert(key, (now, m.offset, m.timestamp));
            }
            let current: BTreeMap<_, _> =
                current.into_iter().map(|(k, (v, _, _))| (k, v)).collect();
            let last: BTreeSet<String> = current.into_values().flatten().collect();
            let expected = file_rows(&all.join(folder));
            assert!(!expected.is_empty(), "{}", context(folder));
            assert_eq!(
                last.len(),
                expected.len(),
                "{}",
                context(&format!("{topic} rows"))
            );
            assert_eq!(
                last,
                expected,
                "{}",
                context(&format!("{topic} against backfill"))
            );
            messages.insert(folder, read);
        }

        // Each rejected record appears once, and they are backfill's.
        let rejected = read_messages(&self.brokers, &t.rejected);
        let mut keys: BTreeMap<String, Vec<(i32, i64, i64)>> = BTreeMap::new();
        for m in &rejected {
            keys.entry(m.key.clone().unwrap()).or_default().push((
                m.partition,
                m.offset,
                m.timestamp,
            ));
        }
        let twice: Vec<_> = keys.iter().filter(|(_, at)| at.len() > 1).collect();
        assert!(
            twice.is_empty(),
            "{}",
            context(&format!(
                "rejected twice (partition, offset, time): {twice:?}; restores:\n{}",
                restores(&t.rejected)
            ))
        );
        let expected_rejected =
            presence::io::output::read_collection::<Value>(&all.join("rejected"))
                .unwrap()
                .len();
        assert_eq!(
            keys.len(),
            expected_rejected,
            "{}",
            context("rejected records")
        );

        // Frontiers grow across every run, and end at a real time.
        let progress: Vec<Value> = read_topic(&self.brokers, &t.progress)
            .into_iter()
            .map(|(_, _, _, v)| serde_json::from_str(&v.unwrap()).unwrap())
            .collect();
        let frontiers: Vec<u64> = progress
            .iter()
            .map(|p| p["frontier"].as_u64().unwrap())
            .collect();
        assert!(
            frontiers.windows(2).all(|w| w[0] < w[1]),
            "{}",
            context(&format!("frontiers {frontiers:?}"))
        );
        assert!(*frontiers.last().unwrap() < u64::MAX);

        // A sample of frontiers: the state as of each is backfill of the
        // records before its offsets.
        let kind_of = |topic: &str| {
            if topic == t.probes {
                Kind::Probe
            } else if topic == t.logins {
                Kind::Login
            } else {
                Kind::BaseCount
            }
        };
        let picks: BTreeSet<usize> = (0..5)
            .map(|_| rng.below(progress.len() as u64) as usize)
            .collect();
        let mut checked = 0;
        for &pick in &picks {
            let message = &progress[pick];
            let frontier = message["frontier"].as_i64().unwrap();
            let mut lengths = BTreeMap::new();
            for (topic, partitions) in message["offsets"].as_object().unwrap() {
                for (partition, next) in partitions.as_object().unwrap() {
                    lengths.insert(
                        (kind_of(topic), partition.parse::<u64>().unwrap()),
                        next.as_u64().unwrap() as usize,
                    );
                }
            }
            if lengths.len() < PROBE_PARTITIONS as usize + 2 {
                continue; // an early frontier, before every partition was noted
            }
            checked += 1;
            let reference = backfill_prefix(
                &files,
                &lengths,
                &self.dir.join(format!("reference-{pick}")),
            );
            for (folder, read) in &messages {
                let mut current: BTreeMap<(i32, String), Option<String>> = BTreeMap::new();
                for m in read.iter().filter(|m| m.timestamp < frontier) {
                    current.insert(
                        (m.partition, m.key.clone().unwrap()),
                        m.value.as_deref().map(content),
                    );
                }
                let state: BTreeSet<String> = current.into_values().flatten().collect();
                assert_eq!(
                    state,
                    file_rows(&reference.join(folder)),
                    "{}",
                    context(&format!(
                        "{folder} as of frontier {frontier} (progress message {pick})"
                    ))
                );
            }
        }
        assert!(checked > 0, "{}", context("no frontier sample was checked"));
    }
}
