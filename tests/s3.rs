//! Checkpoints in an S3-compatible store (`--checkpoint-dir
//! s3://BUCKET/PREFIX`, section 7 of the contract) against a real server,
//! moto, with librdkafka's in-process mock broker as the broker: the crash
//! loop with the store frozen once mid-run, fencing of an older run by a
//! newer one, the backfill hand-off and its guard, a store that does not
//! answer at start, and credentials never printed. Needs the server:
//! `scripts/s3.sh` starts one and `.ci/run` runs this with
//! `PRESENCE_S3=http://127.0.0.1:PORT PRESENCE_S3_PID=PID cargo test --release --test s3 -- --ignored`.
//!
//! The tests take the server one at a time ([`exclusive`]): some freeze it,
//! which would stall any other test using it meanwhile.

use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;
use common::crash::{Checkpoints, CrashLoop};
use common::input::{day, Input};
use common::s3::{url, S3};
use common::*;

use presence::checkpoint::store::{self, Manifest, Store};
use presence::harness::generator::WorkloadConfig;
use presence::service::Topics;

/// The secret key the service's processes get: moto takes any, and no
/// process may ever print it.
const SECRET: &str = "presence-test-secret-Zq7Xw2Kd9Lm4";

/// Held by the test using the server: one test at a time.
static SERVER: Mutex<()> = Mutex::new(());

/// The server (from `PRESENCE_S3`), taken for this test (waiting for the
/// one before to end), with the AWS variables of this process set for the
/// library calls the test makes itself (`Store::at` reads them from the
/// environment). Every test of this binary sets the same values for the
/// same server, and only while it holds the server, so setting them from a
/// test thread is safe here.
fn exclusive() -> (S3, MutexGuard<'static, ()>) {
    let Some(s3) = common::s3::s3() else {
        panic!("PRESENCE_S3 is not set: start scripts/s3.sh")
    };
    let guard = SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    for (name, value) in s3.env() {
        std::env::set_var(name, value);
    }
    (s3, guard)
}

/// The environment of a `presence` process using the server: `s3.env()`,
/// with [`SECRET`] as the secret key.
fn child_env(s3: &S3) -> Vec<(&'static str, String)> {
    s3.env()
        .into_iter()
        .map(|(name, value)| match name {
            "AWS_SECRET_ACCESS_KEY" => (name, SECRET.to_owned()),
            _ => (name, value),
        })
        .collect()
}

/// `presence` with the environment of [`child_env`].
fn presence(s3: &S3) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_presence"));
    command.envs(child_env(s3));
    command
}

/// A process's stdout and stderr, as text.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// No process printed the secret key: neither to stdout nor to stderr.
fn assert_no_secret(outputs: &[(&str, &Output)]) {
    for (what, output) in outputs {
        assert!(
            !said(output).contains(SECRET),
            "{what} printed the secret key:\n{}",
            said(output)
        );
    }
}

/// A refusal or failure by the binary: exit status 1, one error line, its
/// last (the lines before it are logs), no panic. Returns that line.
fn one_error_line(output: &Output) -> String {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("presence: error:").count(), 1, "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("presence: error:"), "{stderr}");
    last.to_owned()
}

/// The number after `name=` in `line`, if any.
fn logged(line: &str, name: &str) -> Option<u64> {
    line.split(&format!("{name}="))
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A `presence` process whose stdout and stderr are drained as it writes.
struct Running {
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// Whether it has ended.
    fn ended(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the child can be waited for")
            .is_some()
    }

    /// Sends it `signal`.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test has not reaped.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signal {signal} to {}", self.child.id());
    }

    /// Waits (bounded, [`wait_child`]) for it to end; what it wrote.
    fn finish(mut self, what: &str) -> Output {
        let status = wait_child(&mut self.child, what);
        Output {
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }

    /// Kills it and returns what it wrote (for a failure's message).
    fn kill(mut self) -> String {
        let _ = self.child.kill();
        said(&self.finish("a process killed after a failure"))
    }
}

/// The mock broker with the default input topics and output topics of two
/// partitions.
fn mock_with_topics() -> Mock {
    let mock = mock_inputs();
    create_output_topics(&mock, &Topics::default(), 2);
    mock
}

/// `presence run` with one worker on the mock broker's default topics,
/// checkpointing every 300 ms to `location`, until SIGTERM.
fn service(s3: &S3, brokers: &str, location: &str) -> Command {
    let mut command = presence(s3);
    command
        .args(["run", "--brokers", brokers, "--output-partitions", "2"])
        .args(["--checkpoint-dir", location])
        .args(["--checkpoint-interval", "300ms", "--connect-timeout", "5s"])
        // Historical input: no partition may count as idle.
        .args(["--idle-timeout", "1h", "-w", "1"]);
    command
}

/// Whether `manifest` reflects every record of the default input topics
/// now on the broker: each partition's next offset is its end.
fn reflects_everything(brokers: &str, manifest: &Manifest) -> bool {
    let inputs = [
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ];
    inputs.iter().all(|&(topic, partitions)| {
        (0..partitions).all(|partition| {
            let end = end_offset(brokers, topic, partition);
            manifest
                .partitions
                .iter()
                .any(|p| p.topic == topic && p.partition == partition && p.next == end)
        })
    })
}

/// The checkpoint store at `location` (`s3://BUCKET/PREFIX`).
fn store_of(location: &str) -> Store {
    let place: store::Location = location
        .parse()
        .unwrap_or_else(|e| panic!("{location:?}: {e}"));
    Store::at(place).unwrap_or_else(|e| panic!("opening {location}: {e}"))
}

/// The manifests (claims included) in the store at `location`: each
/// object's name and content.
fn manifest_objects(location: &str) -> Vec<(String, Vec<u8>)> {
    let store = store_of(location);
    let mut found: Vec<(String, Vec<u8>)> = store
        .list()
        .unwrap()
        .into_iter()
        .filter(|o| o.name.starts_with("manifest-"))
        .map(|o| {
            let bytes = store.get(&o.name).unwrap();
            (o.name, bytes)
        })
        .collect();
    found.sort();
    found
}

/// The complete checkpoints in the store at `location`, newest first.
fn checkpoints_in(location: &str) -> Vec<Manifest> {
    store::manifests(&store_of(location))
        .unwrap()
        .iter()
        .filter_map(|l| l.checkpoint().cloned())
        .collect()
}

/// The crash loop of `tests/crash.rs` with its checkpoints in S3: ten
/// kills with SIGKILL at seeded random moments, restarts at `-w 1`, `-w 2`
/// and two processes, then a run to the end of the input, with the same
/// checks. Once, in a run after its first checkpoint, the server is frozen
/// for 3 s (ten checkpoint intervals): the run must survive it and
/// complete a newer checkpoint once the server is back. Another seed:
/// `PRESENCE_CRASH_SEED=N`.
#[test]
#[ignore = "needs an S3-compatible server: PRESENCE_S3 and PRESENCE_S3_PID (scripts/s3.sh)"]
fn killed_at_random_moments_with_checkpoints_in_s3_the_outputs_are_exact() {
    let (s3, _server) = exclusive();
    let seed = std::env::var("PRESENCE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    let mock = mock_with(&[
        ("probes", PROBE_PARTITIONS),
        ("logins", 1),
        ("base-counts", 1),
    ]);
    let topics = Topics::default();
    create_output_topics(&mock, &topics, 2);
    let bucket = s3.bucket("crash-loop");
    let dir = tempfile::tempdir().unwrap();
    let outage = || {
        let _frozen = s3.frozen();
        std::thread::sleep(Duration::from_secs(3));
    };
    CrashLoop {
        brokers: mock.bootstrap_servers(),
        topics,
        kills: 10,
        shapes: vec![1, 2, 0],
        seed,
        dir: dir.path().to_owned(),
        one_record_tail: false,
    }
    .run_with(
        WorkloadConfig {
            days: 3,
            devices: 500,
            businesses: 8,
            probe_partitions: PROBE_PARTITIONS as u64,
            ..WorkloadConfig::default()
        },
        Checkpoints {
            location: url(&bucket, "state"),
            env: s3.env(),
            outage: Some(&outage),
        },
    );
}

/// Two runs pointed at one prefix: the older (A) stops with one line
/// saying it was superseded once the newer (B) has taken a generation, and
/// B goes on from A's checkpoint to outputs equal to backfill's.
#[test]
#[ignore = "needs an S3-compatible server: PRESENCE_S3 and PRESENCE_S3_PID (scripts/s3.sh)"]
fn a_newer_run_on_the_same_prefix_supersedes_the_older_one() {
    let (s3, _server) = exclusive();
    let mock = mock_with_topics();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let location = url(&s3.bucket("fencing"), "state");
    let mut input = Input::new(&brokers, dir.path());
    input.add(&day(1, 0));

    // A reads all of it and checkpoints it. (Only then does B start: B
    // reads the output topics back at its start, and rows A wrote after
    // that would be ones B cannot know of. The contract fences
    // checkpoints, not a zombie's outputs.)
    let mut a = Running::start(&mut service(&s3, &brokers, &location));
    let a_checkpoint = wait_for("a checkpoint of A reflecting its input", PATIENCE, || {
        if a.ended() {
            return Some(None);
        }
        newest_checkpoint_at(&location)
            .filter(|m| reflects_everything(&brokers, m))
            .map(Some)
    });
    let Some(a_checkpoint) = a_checkpoint else {
        panic!("A ended by itself:\n{}", a.kill())
    };
    let a_generation = a_checkpoint.generation;
    assert!(a_generation > 0, "{a_checkpoint:?}");

    // B takes a new generation: A's next manifest number is taken.
    let started = Instant::now();
    let mut b = Running::start(&mut service(&s3, &brokers, &location));
    let a = a.finish("A, superseded by B");
    eprintln!("A stopped {:?} after B started", started.elapsed());
    let a_stderr = stderr(&a);
    let line = one_error_line(&a);
    assert!(line.contains("superseded"), "{a_stderr}");
    let saying: Vec<&str> = a_stderr
        .lines()
        .filter(|l| l.contains("superseded"))
        .collect();
    assert_eq!(
        saying.len(),
        1,
        "one line says A was superseded: {saying:#?}\n{a_stderr}"
    );
    assert!(!b.ended(), "B ended by itself:\n{}", b.kill());

    // More input, which only B reads: B checkpoints all of it, then stops.
    input.add(&day(2, 1));
    let b_checkpoint = wait_for(
        "a checkpoint of B reflecting all the input",
        PATIENCE,
        || {
            if b.ended() {
                return Some(None);
            }
            newest_checkpoint_at(&location)
                .filter(|m| m.generation > a_generation && reflects_everything(&brokers, m))
                .map(Some)
        },
    );
    let Some(b_checkpoint) = b_checkpoint else {
        panic!("B ended by itself:\n{}", b.kill())
    };
    b.signal(libc::SIGTERM);
    let b = b.finish("B, told to stop");
    let b_stderr = stderr(&b);
    assert_eq!(b.status.code(), Some(0), "{b_stderr}");
    assert!(!b_stderr.contains("panicked"), "{b_stderr}");
    assert!(b_stderr.contains("restoring a checkpoint"), "{b_stderr}");
    let b_generation = b_stderr
        .lines()
        .find(|l| l.contains("took a checkpoint generation"))
        .and_then(|l| logged(l, "generation"))
        .unwrap_or_else(|| panic!("B names its generation: {b_stderr}"));
    assert_eq!(b_checkpoint.generation, b_generation);
    assert!(b_generation > a_generation, "{b_generation} {a_generation}");

    check_outputs(
        &brokers,
        &Topics::default(),
        &input.backfill("out"),
        "B after superseding A",
    );
    assert_no_repeats(&brokers, &Topics::default());

    // The listing shows B's checkpoints as complete.
    let listing = common::output(
        presence(&s3)
            .arg("checkpoints")
            .args(["--checkpoint-dir", &location]),
    );
    let listed = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.status.success(), "{}", said(&listing));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("checkpoint at logical time")
                && l.contains(&format!("by run, generation {b_generation},"))
                && l.ends_with(": complete")),
        "no complete checkpoint of generation {b_generation}:\n{listed}"
    );
    assert_no_secret(&[("A", &a), ("B", &b), ("the listing", &listing)]);
}

/// A backfill's checkpoint in S3 is taken over by a run (mirroring the
/// hand-off of `tests/state.rs`); a second backfill into the prefix is
/// refused unless told to discard it; no process prints the secret key.
#[test]
#[ignore = "needs an S3-compatible server: PRESENCE_S3 and PRESENCE_S3_PID (scripts/s3.sh)"]
fn a_backfill_in_s3_is_guarded_and_handed_over_to_run() {
    let (s3, _server) = exclusive();
    let mock = mock_with_topics();
    let brokers = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let location = url(&s3.bucket("hand-off"), "history/state");
    let mut outputs = Vec::new();

    // History as files, backfilled by two workers into a checkpoint.
    let history = dir.path().join("history");
    let written = presence::harness::generator::write_files(&day(1, 0), &history).unwrap();
    let backfill = |out: &str| {
        let mut command = presence(&s3);
        command
            .args(["backfill", "-w", "2", "--probes"])
            .args(&written.probes)
            .arg("--logins")
            .args(&written.logins)
            .arg("--base-counts")
            .args(&written.base_counts)
            .arg("--out")
            .arg(dir.path().join(out))
            .args(["--checkpoint-dir", &location]);
        command
    };
    let first = common::output(&mut backfill("history-out"));
    assert!(first.status.success(), "{}", said(&first));
    let before = manifest_objects(&location);
    let checkpoints = checkpoints_in(&location);
    assert_eq!(checkpoints.len(), 1, "one checkpoint: {before:?}");
    outputs.push(("the backfill", first));

    // Again into the same prefix: refused, in one line, changing nothing.
    let again = common::output(&mut backfill("out-again"));
    let line = one_error_line(&again);
    assert_eq!(stderr(&again).trim().lines().count(), 1, "{}", said(&again));
    assert!(
        line.contains(&format!("{location} already holds 1 checkpoint"))
            && line.contains("--reset-state"),
        "{line}"
    );
    assert_eq!(
        manifest_objects(&location),
        before,
        "the refused backfill changed nothing"
    );
    assert!(
        !dir.path().join("out-again").exists(),
        "refused before any output"
    );
    outputs.push(("the refused backfill", again));

    // With --reset-state it discards the checkpoint and writes its own.
    let reset = common::output(backfill("history-out").arg("--reset-state"));
    assert!(reset.status.success(), "{}", said(&reset));
    let after = checkpoints_in(&location);
    assert_eq!(after.len(), 1, "the old checkpoint discarded: {after:?}");
    assert!(
        after[0].generation > checkpoints[0].generation,
        "a new checkpoint: {after:?}"
    );
    outputs.push(("the backfill with --reset-state", reset));

    // Live input in the topics, the next day; a run of one worker
    // continues from the checkpoint, to the end of the topics.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut input = Input::new(&brokers, &live);
    let read = input.add(&day(2, 1));
    let run = common::output(
        presence(&s3)
            .args(["run", "--brokers", &brokers, "--stop-at-end", "-w", "1"])
            .args(["--output-partitions", "2", "--checkpoint-dir", &location]),
    );
    let run_stderr = stderr(&run);
    assert!(run.status.success(), "{run_stderr}");
    assert!(
        run_stderr.contains("restoring a checkpoint"),
        "{run_stderr}"
    );
    let summary = String::from_utf8_lossy(&run.stdout)
        .lines()
        .find(|l| l.starts_with("stopped after"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("a summary: {run_stderr}"));
    assert_eq!(
        summary_numbers(&summary)["read"],
        read,
        "the topics are read from their start: {summary}"
    );
    outputs.push(("the run", run));
    assert_no_repeats(&brokers, &Topics::default());
    // One backfill over the history files and the live records.
    let both = input.backfill_after(
        [&written.probes, &written.logins, &written.base_counts],
        "both",
    );
    for (topic, folder) in row_topics(&Topics::default()) {
        let expected = file_rows(&both.join(folder));
        assert!(!expected.is_empty(), "{folder}");
        assert_eq!(
            upsert_rows(&brokers, topic),
            expected,
            "after the hand-off: {topic}"
        );
    }
    // The run's final checkpoint is in the prefix, after the backfill's.
    let newest = newest_checkpoint_at(&location).expect("a checkpoint");
    assert!(
        newest.generation > after[0].generation && reflects_everything(&brokers, &newest),
        "{newest:?}"
    );

    let listing = common::output(
        presence(&s3)
            .arg("checkpoints")
            .args(["--checkpoint-dir", &location]),
    );
    assert!(listing.status.success(), "{}", said(&listing));
    outputs.push(("the listing", listing));
    let outputs: Vec<(&str, &Output)> = outputs.iter().map(|(w, o)| (*w, o)).collect();
    assert_no_secret(&outputs);
}

/// With the server frozen (it accepts connections and answers nothing), a
/// run stops at start with one line naming the store, exit status 1, and
/// without printing the secret key.
#[test]
#[ignore = "needs an S3-compatible server: PRESENCE_S3 and PRESENCE_S3_PID (scripts/s3.sh)"]
fn a_store_that_does_not_answer_at_start_stops_the_run_with_one_line() {
    let (s3, _server) = exclusive();
    let mock = mock_with_topics();
    let brokers = mock.bootstrap_servers();
    let location = url(&s3.bucket("frozen"), "x");
    let output = {
        let _frozen = s3.frozen();
        let started = Instant::now();
        let output = common::output(
            presence(&s3)
                .args(["run", "--brokers", &brokers, "--checkpoint-dir", &location])
                .args(["--connect-timeout", "3s"]),
        );
        eprintln!(
            "with --connect-timeout 3s, the run stopped {:?} after it started",
            started.elapsed()
        );
        output
    };
    let line = one_error_line(&output);
    eprintln!("the run said: {line}");
    assert!(line.contains(&location), "{line}");
    assert_no_secret(&[("the run", &output)]);
    // Thawed, the prefix holds no checkpoint: the run made none.
    let listing = common::output(
        presence(&s3)
            .arg("checkpoints")
            .args(["--checkpoint-dir", &location]),
    );
    assert!(listing.status.success(), "{}", said(&listing));
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("no checkpoints in"),
        "{}",
        said(&listing)
    );
}
