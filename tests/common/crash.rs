//! The crash loop: the real binary as child processes, killed with SIGKILL
//! at seeded random moments while input keeps arriving, restarted at a
//! random cluster shape each time, and finally run to the end of its input.
//! The outputs must be what one uninterrupted run gives (see [`crash_loop`]).

use presence::model::output::Output;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use presence::checkpoint::store::{Manifest, Origin};
use presence::harness::generator::{Workload, WorkloadConfig};
use presence::service::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use super::{
    backfill_prefix, client, content, file_rows, finish, growing_frontiers, hostfile,
    newest_checkpoint_at, progress_messages, read_messages, reflected, row_topics, state_as_of,
    wait_child, wait_for, Feeder, PATIENCE, PROBE_PARTITIONS, TIMEOUT,
};

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

/// Where a loop keeps its checkpoints ([`CrashLoop::run_with`]; `run`
/// keeps them in the folder `DIR/state`).
pub struct Checkpoints<'a> {
    /// `--checkpoint-dir`: a folder, or `s3://BUCKET/PREFIX`.
    pub location: String,
    /// Environment every process of the service gets besides the test's
    /// (the store's settings).
    pub env: Vec<(&'static str, String)>,
    /// An outage of the store (a frozen server, say), once: in the first
    /// run but the loop's first that is not killed early, after its first
    /// checkpoint; it returns once the store is back. The run must survive
    /// it and complete a newer checkpoint after it before it is killed.
    pub outage: Option<&'a dyn Fn()>,
}

/// A run of the service: its processes, in one process group (so that one
/// signal stops or kills all of them at once), and their stderr, drained
/// as they write it.
struct Running {
    shape: u8,
    children: Vec<Child>,
    stderr: Vec<JoinHandle<String>>,
    group: i32,
}

impl Running {
    /// Sends `signal` to every process of the run at once.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a process group this test created and has
        // not reaped yet.
        let sent = unsafe { libc::kill(-self.group, signal) };
        assert_eq!(sent, 0, "signal {signal} to the run's process group");
    }

    /// Kills every process at once with SIGKILL and returns their stderr.
    /// Each must have been alive until then: one that exited by itself (a
    /// refusal, a lost process, a panic) fails the test with its stderr.
    fn kill(self, context: &str) -> String {
        self.signal(libc::SIGKILL);
        let statuses: Vec<_> = self
            .children
            .into_iter()
            .map(|mut child| wait_child(&mut child, "a killed process"))
            .collect();
        let stderr: String = self.stderr.into_iter().map(|r| r.join().unwrap()).collect();
        for status in statuses {
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{context} (shape {}): a process ended by itself before it was killed ({status}):\n{stderr}",
                self.shape
            );
        }
        stderr
    }

    /// Fails the test: a process of the run ended by itself. Kills the
    /// others and shows every process's status and stderr.
    fn ended_by_itself(self, context: &str) -> ! {
        // SAFETY: as in `signal`; the group may be gone already (every
        // process ended), so the result is not checked.
        unsafe { libc::kill(-self.group, libc::SIGKILL) };
        let statuses: Vec<String> = self
            .children
            .into_iter()
            .map(|mut child| wait_child(&mut child, "a process of a failed run").to_string())
            .collect();
        let stderr: String = self.stderr.into_iter().map(|r| r.join().unwrap()).collect();
        panic!(
            "{context} (shape {}): a process ended by itself ({statuses:?}):\n{stderr}",
            self.shape
        );
    }

    /// Whether a process of the run has ended (by itself: the test has sent
    /// no SIGKILL yet).
    fn ended(&mut self) -> bool {
        self.children.iter_mut().any(|child| {
            child
                .try_wait()
                .expect("the child can be waited for")
                .is_some()
        })
    }

    /// Waits for every process to end (bounded) and returns their stderr;
    /// each must succeed.
    fn finish(self, context: &str) -> String {
        let mut all = String::new();
        for (child, reader) in self.children.into_iter().zip(self.stderr) {
            let (status, _) = finish(child, "a run to the end of its input");
            let stderr = reader.join().unwrap();
            assert!(
                status.success(),
                "{context}: a process of the final run (shape {}) failed ({status}): {stderr}",
                self.shape
            );
            all += &stderr;
        }
        all
    }
}

/// The row topics, then the rejected topic: what a restore reads back.
fn read_back_topics(t: &Topics) -> [&String; 5] {
    [
        &t[Output::Walkins],
        &t[Output::DeviceContacts],
        &t[Output::EnrichedWalkins],
        &t[Output::WalkinCounts],
        &t[Output::Rejected],
    ]
}

/// How many records a restore of `manifest` reads back at least: those
/// the output topics now hold at or above the checkpoint's floors (from
/// the start of a partition without one).
fn pending_after(brokers: &str, topics: &Topics, manifest: &Manifest) -> i64 {
    let consumer: BaseConsumer = client(brokers).create().unwrap();
    let floors: BTreeMap<(&str, i32), i64> = manifest
        .outputs
        .iter()
        .flatten()
        .filter(|_| manifest.origin == Origin::Run)
        .map(|f| ((f.topic.as_str(), f.partition), f.offset))
        .collect();
    let mut pending = 0;
    for topic in read_back_topics(topics) {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .unwrap_or_else(|e| panic!("reading the metadata of {topic}: {e}"));
        for partition in metadata.topics()[0].partitions() {
            let p = partition.id();
            let (low, high) = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .unwrap_or_else(|e| panic!("reading the end offsets of {topic}/{p}: {e}"));
            let from = floors.get(&(topic.as_str(), p)).copied().unwrap_or(low);
            pending += (high - from.max(low)).max(0);
        }
    }
    pending
}

/// The number after `name=` in a log line, if any.
fn logged(line: &str, name: &str) -> Option<u64> {
    line.split(&format!("{name}="))
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What the loop saw of one run.
struct Seen {
    /// The newest complete checkpoint when it started.
    manifest: Option<Manifest>,
    /// The output records at or above that checkpoint's floors then.
    pending: i64,
    /// Killed before it could do anything (a third of the kills).
    early: bool,
    stderr: String,
}

impl CrashLoop {
    fn command(&self, state: &Checkpoints<'_>, stop_at_end: bool) -> Command {
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
            .args([
                "--output-prefix",
                t[Output::Walkins].trim_end_matches("walkins"),
            ])
            .arg("--checkpoint-dir")
            .arg(&state.location)
            .envs(state.env.iter().map(|(name, value)| (name, value)))
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
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if stop_at_end {
            command.arg("--stop-at-end");
        }
        command
    }

    /// Starts a run at `shape`, its processes in a process group of their own.
    fn start(&self, state: &Checkpoints<'_>, shape: u8, stop_at_end: bool) -> Running {
        let commands: Vec<Command> = match shape {
            0 => {
                let hosts = hostfile(&self.dir);
                (0..2)
                    .map(|p| {
                        let mut command = self.command(state, stop_at_end);
                        command
                            .args(["-n", "2", "-p", &p.to_string(), "-h"])
                            .arg(&hosts);
                        command
                    })
                    .collect()
            }
            w => {
                let mut command = self.command(state, stop_at_end);
                command.args(["-w", &w.to_string()]);
                vec![command]
            }
        };
        let mut group = 0;
        let mut children = Vec::new();
        let mut stderr = Vec::new();
        for mut command in commands {
            let mut child = command.process_group(group).spawn().unwrap();
            if group == 0 {
                group = child.id() as i32;
            }
            let mut pipe = child.stderr.take().unwrap();
            stderr.push(std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
                text
            }));
            children.push(child);
        }
        Running {
            shape,
            children,
            stderr,
            group,
        }
    }

    /// Lets `outage` happen to the store while `run` goes on, then waits
    /// (bounded) for a checkpoint newer than the newest before it: once the
    /// store is back, checkpoints complete again. Every process of the run
    /// must stay alive meanwhile.
    fn survive(&self, run: &mut Running, state: &str, outage: &dyn Fn(), context: &str) {
        let before = newest_checkpoint_at(state).map(|m| m.time);
        outage();
        let back = std::time::Instant::now();
        let resumed = wait_for(
            &format!("{context}: a checkpoint newer than {before:?} after it"),
            PATIENCE,
            || {
                if run.ended() {
                    return Some(None);
                }
                newest_checkpoint_at(state)
                    .map(|m| m.time)
                    .filter(|&time| Some(time) > before)
                    .map(Some)
            },
        );
        match resumed {
            Some(time) => eprintln!(
                "{context}: checkpoint {time} (after {before:?}) {:?} after the store was back",
                back.elapsed()
            ),
            None => {
                let ended = std::mem::replace(
                    run,
                    Running {
                        shape: run.shape,
                        children: Vec::new(),
                        stderr: Vec::new(),
                        group: run.group,
                    },
                );
                ended.ended_by_itself(context);
            }
        }
    }

    /// Runs the loop with its checkpoints in the folder `DIR/state` and
    /// checks everything; see the module docs.
    pub fn run(&self, config: WorkloadConfig) {
        let location = self
            .dir
            .join("state")
            .into_os_string()
            .into_string()
            .expect("the test's folder has a UTF-8 path");
        self.run_with(
            config,
            Checkpoints {
                location,
                env: Vec::new(),
                outage: None,
            },
        );
    }

    /// Runs the loop with its checkpoints at `checkpoints` and checks
    /// everything; see the module docs.
    pub fn run_with(&self, config: WorkloadConfig, checkpoints: Checkpoints<'_>) {
        let seed = self.seed;
        let mut rng = Seeded::new(seed);
        let state = checkpoints.location.as_str();
        let mut outage = checkpoints.outage;
        let t = &self.topics;
        // The input, produced at a steady pace (over about 20 s) while the
        // service is killed and restarted, and kept as files for the
        // reference.
        let feeder = Feeder::start(
            &self.brokers,
            t,
            Workload::new(config).collect(),
            Duration::from_secs(20),
            self.one_record_tail,
        );
        let context = |what: &str| format!("seed {seed}: {what}");

        // Kill at random moments, restart at random shapes. The first kill
        // comes once the run has written rows after its checkpoint, so that
        // the next run has a tail to reconcile; the others, a third early
        // (while connecting, restoring or reconciling), the rest after the
        // run's first complete checkpoint, at a random moment after it.
        let mut seen: Vec<Seen> = Vec::new();
        for kill in 0..self.kills {
            let context = |what: &str| context(&format!("kill {kill}: {what}"));
            let shape = self.shapes[rng.below(self.shapes.len() as u64) as usize];
            let manifest = newest_checkpoint_at(state);
            let pending = manifest
                .as_ref()
                .map_or(0, |m| pending_after(&self.brokers, t, m));
            let mut run = self.start(&checkpoints, shape, false);
            let early = kill > 0 && rng.below(3) == 0;
            if early {
                std::thread::sleep(Duration::from_millis(300 + rng.below(1_200)));
            } else {
                let before = manifest.as_ref().map(|m| m.time);
                wait_for(&context("a checkpoint of this run"), PATIENCE, || {
                    newest_checkpoint_at(state)
                        .map(|m| m.time)
                        .filter(|&time| Some(time) != before)
                });
                if kill > 0 {
                    if let Some(outage) = outage.take() {
                        self.survive(&mut run, state, outage, &context("the store's outage"));
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.below(1_200)));
            }
            if kill == 0 {
                // Stopped, the run writes nothing and completes no
                // checkpoint: look, and go on until rows follow the cut.
                wait_for(
                    &context("rows written after a checkpoint"),
                    PATIENCE,
                    || {
                        run.signal(libc::SIGSTOP);
                        let newest = newest_checkpoint_at(state).expect("a checkpoint");
                        if pending_after(&self.brokers, t, &newest) > 0 {
                            return Some(());
                        }
                        run.signal(libc::SIGCONT);
                        None
                    },
                );
            }
            let stderr = run.kill(&context("a run"));
            assert!(!stderr.contains("panicked"), "{}", context(&stderr));
            seen.push(Seen {
                manifest,
                pending,
                early,
                stderr,
            });
        }
        assert!(
            outage.is_none(),
            "{}",
            context("no run was killed late enough for the store's outage: more kills")
        );
        let files = feeder.finish();
        // To the end of the input.
        let shape = self.shapes[rng.below(self.shapes.len() as u64) as usize];
        let manifest = newest_checkpoint_at(state);
        assert!(
            manifest.is_some(),
            "{}",
            context("no checkpoint before the final run")
        );
        let pending = pending_after(&self.brokers, t, manifest.as_ref().unwrap());
        let stderr = self
            .start(&checkpoints, shape, true)
            .finish(&context("the final run"));
        seen.push(Seen {
            manifest,
            pending,
            early: false,
            stderr,
        });

        // Each restore resumed every partition at its checkpoint's offsets
        // and read back at least what the output topics held past the
        // checkpoint's floors.
        let mut restored = 0;
        // Restores that read the row topics back only after the checkpoint,
        // and of those, ones that found something there to reconcile.
        let (mut tails, mut tails_read) = (0, 0);
        let mut restore_lines = Vec::new();
        let mut with_rows = 0;
        for (run, this) in seen.iter().enumerate() {
            let last = run + 1 == seen.len();
            let Some(manifest) = &this.manifest else {
                continue;
            };
            let Some(line) = this
                .stderr
                .lines()
                .find(|l| l.contains("restoring a checkpoint"))
            else {
                assert!(
                    !last,
                    "{}",
                    context(&format!("the final run did not restore: {}", this.stderr))
                );
                continue; // killed before it restored
            };
            restored += 1;
            let read_back = logged(line, "read_back")
                .unwrap_or_else(|| panic!("{}", context(&format!("no read_back in {line}"))));
            assert!(
                read_back as i64 >= this.pending,
                "{}",
                context(&format!(
                    "run {run} read back {read_back} records, but the output topics held {} past its checkpoint's floors: {line}",
                    this.pending
                ))
            );
            tails_read += usize::from(this.pending > 0);
            // A checkpoint records where a row topic's records after it
            // begin once the topic has any before it; then, only the tail
            // is read. (A partition no process wrote to before the cut has
            // no offset, and its topic is read in full.)
            let walkins = &self.topics[Output::Walkins];
            with_rows += usize::from(
                manifest
                    .outputs
                    .iter()
                    .flatten()
                    .any(|f| &f.topic == walkins && f.offset > 0),
            );
            if line.contains("tails=[") && line.split("tails=[").nth(1).unwrap().contains("true") {
                tails += 1;
            }
            restore_lines.push(line.to_owned());
            // Where each worker resumed its partitions: at the checkpoint's
            // offsets, every one of them once the run got that far (the
            // final run always does; a killed one may have been killed
            // between its workers' lines).
            let mut resumed_at = BTreeMap::new();
            for line in this
                .stderr
                .lines()
                .filter(|l| l.contains("resuming input partitions"))
            {
                let list = line
                    .split("partitions=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                for item in list.split(',') {
                    let (place, offset) = item.rsplit_once('@').unwrap();
                    let again = resumed_at.insert(place.to_owned(), offset.parse::<i64>().unwrap());
                    assert!(
                        again.is_none(),
                        "{}",
                        context(&format!("run {run} resumed {place} twice"))
                    );
                }
            }
            let expected: BTreeMap<String, i64> = manifest
                .partitions
                .iter()
                .map(|p| (format!("{}/{}", p.topic, p.partition), p.next))
                .collect();
            for (place, offset) in &resumed_at {
                assert_eq!(
                    Some(offset),
                    expected.get(place),
                    "{}",
                    context(&format!("run {run} resumed {place}"))
                );
            }
            if last {
                assert_eq!(
                    resumed_at,
                    expected,
                    "{}",
                    context("the final run resumed every partition of its checkpoint")
                );
            }
        }

        // A run killed after its checkpoint leaves one to the next run,
        // which restores it unless it is killed before opening its inputs.
        let expected = (1..seen.len())
            .filter(|&run| !seen[run - 1].early && !seen[run].early)
            .count()
            .max(1);
        assert!(
            restored >= expected,
            "{}",
            context(&format!(
                "only {restored} of {} runs restored a checkpoint ({expected} must); their logs:\n{}",
                seen.len(),
                seen.iter()
                    .map(|seen| format!(
                        "-- restoring {:?} (early: {}):\n{}",
                        seen.manifest.as_ref().map(|m| m.time),
                        seen.early,
                        seen.stderr.lines().filter(|l| !l.contains("status")).take(12).collect::<Vec<_>>().join("\n")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        );
        // The first kill left rows after its checkpoint: the next restore
        // of it had a tail to reconcile (the check above: it read them).
        assert!(
            (with_rows == 0 || tails > 0) && tails_read > 0,
            "{}",
            context(&format!(
                "of {restored} restores, {with_rows} of checkpoints with walk-ins, {tails} read only tails after their checkpoint, {tails_read} had records there:\n{}",
                restore_lines.join("\n")
            ))
        );

        // For a failure: each restore's checkpoint time and where it read
        // `topic` back from, and its log line.
        let restores = |topic: &str| -> String {
            seen.iter()
                .filter_map(|this| {
                    let m = this.manifest.as_ref()?;
                    let line = this
                        .stderr
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
        let mut messages = BTreeMap::new();
        for (topic, folder) in row_topics(t) {
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
            if last != expected {
                // What differs, each restore, and what the runs warned of.
                let missing: Vec<_> = expected.difference(&last).collect();
                let extra: Vec<_> = last.difference(&expected).collect();
                let warnings: Vec<&str> = seen
                    .iter()
                    .flat_map(|this| this.stderr.lines())
                    .filter(|l| l.contains("WARN") || l.contains("checkpoint written"))
                    .collect();
                panic!(
                    "{}",
                    context(&format!(
                        "{topic} rows: {} against {}; missing {missing:?}; extra {extra:?}; restores:\n{}\nwarnings and checkpoints:\n{}",
                        last.len(),
                        expected.len(),
                        restores(topic),
                        warnings.join("\n")
                    ))
                );
            }
            assert_eq!(
                last,
                expected,
                "{}",
                context(&format!("{topic} against backfill"))
            );
            messages.insert(folder, read);
        }

        // Each rejected record appears once, and they are backfill's: the
        // same places (a file's line number is its offset + 1) and reasons.
        let rejected = read_messages(&self.brokers, &t[Output::Rejected]);
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
                restores(&t[Output::Rejected])
            ))
        );
        let written: BTreeSet<(String, u64, u64, String)> = rejected
            .iter()
            .map(|m| {
                let v: Value = serde_json::from_str(m.value.as_deref().unwrap()).unwrap();
                (
                    v["source"].as_str().unwrap().to_owned(),
                    v["partition"].as_u64().unwrap(),
                    v["offset"].as_u64().unwrap() + 1,
                    v["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let topic_of_file = |source: &str| {
            let name = Path::new(source).file_name().unwrap().to_str().unwrap();
            match name.split('-').next().unwrap() {
                "Probe" => t.probes.clone(),
                "Login" => t.logins.clone(),
                _ => t.base_counts.clone(),
            }
        };
        let expected_rejected: BTreeSet<(String, u64, u64, String)> =
            presence::files::output::read_collection::<Value>(&all.join("rejected"))
                .unwrap()
                .into_iter()
                .map(|v| {
                    (
                        topic_of_file(v["source"].as_str().unwrap()),
                        v["partition"].as_u64().unwrap(),
                        v["offset"].as_u64().unwrap(),
                        v["reason"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        assert!(
            !expected_rejected.is_empty(),
            "{}",
            context("the workload has broken records")
        );
        assert_eq!(
            written,
            expected_rejected,
            "{}",
            context("rejected records")
        );

        // Frontiers grow across every run, and end at a real time.
        let frontiers = growing_frontiers(&self.brokers, t, &context("every run"));
        assert!(*frontiers.last().unwrap() < u64::MAX);
        let progress = progress_messages(&self.brokers, t);

        // A sample of frontiers: the state as of each is backfill of the
        // records before its offsets.
        let picks: BTreeSet<usize> = (0..5)
            .map(|_| rng.below(progress.len() as u64) as usize)
            .collect();
        let mut checked = 0;
        for &pick in &picks {
            let message = &progress[pick];
            let frontier = message["frontier"].as_u64().unwrap();
            let lengths = reflected(message, t);
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
                let actual = state_as_of(read, frontier);
                let expected = file_rows(&reference.join(folder));
                let what = format!("{folder} as of frontier {frontier} (progress message {pick})");
                if *folder != "present" {
                    assert_eq!(actual, expected, "{}", context(&what));
                    continue;
                }
                // `present` also depends on the event-time frontier `W`,
                // which mid-stream is at most the prefix backfill's (there
                // every partition has ended: one not read yet holds `W` in
                // the run, not in the backfill). Rows open at a higher `W`
                // are open at a lower one; every row is open at the
                // message's `event_time`.
                let event_time = message["event_time"].as_u64().unwrap();
                let gap = presence::model::params::Params::default().session_gap;
                assert!(
                    expected.is_subset(&actual),
                    "{}",
                    context(&format!(
                        "{what}: missing {:?}",
                        expected.difference(&actual).collect::<Vec<_>>()
                    ))
                );
                for row in &actual {
                    let row: serde_json::Value = serde_json::from_str(row).unwrap();
                    let last_seen = row["last_seen"].as_u64().unwrap();
                    assert!(
                        last_seen + gap >= event_time,
                        "{}",
                        context(&format!("{what}: {row} closed at event time {event_time}"))
                    );
                }
            }
        }
        assert!(checked > 0, "{}", context("no frontier sample was checked"));
    }
}
