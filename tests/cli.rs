//! The `presence` binary as a user runs it: bad arguments and files fail
//! with one clear message, and one process, two workers and two processes
//! produce the same collections from the same files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use presence::files::output::FOLDERS;

mod common;
use common::{run_two_processes, store_at};

fn presence() -> Command {
    Command::new(env!("CARGO_BIN_EXE_presence"))
}

fn run(command: &mut Command) -> Output {
    common::output(command)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `presence backfill` of an empty probes file into `dir/out`, written in
/// `dir`: for flags that are refused, or a cluster that never forms.
fn backfill_of_nothing(dir: &std::path::Path) -> Command {
    let probes = dir.join("probes.jsonl");
    std::fs::write(&probes, "").unwrap();
    let mut command = presence();
    command
        .arg("backfill")
        .arg("--probes")
        .arg(&probes)
        .arg("--out")
        .arg(dir.join("out"));
    command
}

/// Generates a small workload (a few thousand probes over two days) in `dir`.
fn workload(dir: &Path) -> (Vec<PathBuf>, PathBuf, PathBuf) {
    let output = run(presence()
        .args([
            "generate",
            "--days",
            "2",
            "--devices",
            "400",
            "--businesses",
            "6",
            "--probe-files",
            "3",
            "--out",
        ])
        .arg(dir));
    assert!(
        output.status.success(),
        "generate failed: {}",
        stderr(&output)
    );
    let probes = (0..3)
        .map(|p| dir.join(format!("probes-{p}.jsonl")))
        .collect();
    (
        probes,
        dir.join("logins-0.jsonl"),
        dir.join("base-counts.jsonl"),
    )
}

fn backfill_command(inputs: &(Vec<PathBuf>, PathBuf, PathBuf), out: &Path) -> Command {
    let mut command = presence();
    command
        .arg("backfill")
        .arg("--probes")
        .args(&inputs.0)
        .arg("--logins")
        .arg(&inputs.1)
        .arg("--base-counts")
        .arg(&inputs.2)
        .arg("--out")
        .arg(out);
    command
}

/// Every collection in `out`, as sorted lines per folder.
fn collections(out: &Path) -> BTreeMap<&'static str, Vec<String>> {
    FOLDERS
        .iter()
        .map(|folder| {
            let mut lines = Vec::new();
            for entry in std::fs::read_dir(out.join(folder)).expect("the folder exists") {
                let path = entry.expect("readable folder").path();
                assert!(
                    path.extension().is_some_and(|e| e == "jsonl"),
                    "only published part files remain, found {}",
                    path.display()
                );
                lines.extend(
                    std::fs::read_to_string(&path)
                        .expect("readable part")
                        .lines()
                        .map(str::to_owned),
                );
            }
            lines.sort();
            (*folder, lines)
        })
        .collect()
}

#[test]
fn workers_and_processes_agree_with_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(&dir.path().join("input"));

    let single = dir.path().join("w1");
    let output = run(&mut backfill_command(&inputs, &single));
    assert!(output.status.success(), "-w 1 failed: {}", stderr(&output));
    let read_line = |stdout: &str, prefix: &str| -> BTreeMap<&'static str, u64> {
        let line = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(prefix)
                    .filter(|rest| rest.starts_with("read "))
            })
            .unwrap_or_else(|| panic!("no {prefix:?} line: {stdout}"))
            .to_owned();
        common::summary_numbers(&line)
    };
    let one = read_line(&String::from_utf8_lossy(&output.stdout), "");
    let expected = collections(&single);
    assert!(
        expected["walkins"].len() > 50,
        "the workload should produce walk-ins: {expected:?}"
    );
    assert!(!expected["enriched-walkins"].is_empty() && !expected["rejected"].is_empty());

    let two_workers = dir.path().join("w2");
    let output = run(backfill_command(&inputs, &two_workers).args(["-w", "2"]));
    assert!(output.status.success(), "-w 2 failed: {}", stderr(&output));
    assert_eq!(
        collections(&two_workers),
        expected,
        "-w 2 differs from -w 1"
    );

    // Two real processes on loopback, writing their parts into one folder.
    let two_processes = dir.path().join("n2");
    let stdouts = run_two_processes(dir.path(), || {
        let mut command = backfill_command(&inputs, &two_processes);
        command.args(["-w", "1"]);
        command
    });
    // Each process reports its share; process 0 also the cluster's total,
    // which is what one process read.
    let shares: Vec<_> = stdouts.iter().map(|out| read_line(out, "")).collect();
    assert!(shares.iter().all(|share| share["read"] > 0), "{stdouts:?}");
    let total = read_line(&stdouts[0], "cluster total: ");
    assert_eq!(total, one, "{stdouts:?}");
    assert_eq!(total["read"], shares[0]["read"] + shares[1]["read"]);
    assert!(!stdouts[1].contains("cluster total"), "{}", stdouts[1]);
    assert_eq!(
        collections(&two_processes),
        expected,
        "-n 2 differs from -w 1"
    );

    // A rerun with fewer workers into the same folder leaves no stale parts behind.
    let output = run(&mut backfill_command(&inputs, &two_workers));
    assert!(output.status.success(), "rerun failed: {}", stderr(&output));
    assert_eq!(
        collections(&two_workers),
        expected,
        "a -w 1 rerun over -w 2 output differs"
    );
}

/// A backfill over two processes whose process 1 hangs (SIGSTOP) while
/// both are working: process 0 exits 1 within `--connect-timeout` with one
/// line naming process 1, instead of waiting for it forever; a rerun of
/// both writes the whole collections and a complete checkpoint.
#[test]
fn a_hung_backfill_process_ends_the_other_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(&dir.path().join("input"));
    let single = dir.path().join("w1");
    let output = run(&mut backfill_command(&inputs, &single));
    assert!(output.status.success(), "-w 1 failed: {}", stderr(&output));

    let out = dir.path().join("n2");
    let state = dir.path().join("state");
    let hosts = common::hostfile(dir.path());
    let command = |p: usize| {
        let mut command = backfill_command(&inputs, &out);
        command
            .args(["-w", "1", "--connect-timeout", "1s", "--checkpoint-dir"])
            .arg(&state)
            .args(["-n", "2", "-p", &p.to_string(), "-h"])
            .arg(&hosts);
        command
    };
    // The final checkpoint's pieces wait a minute: the backfill cannot end
    // before the survivor notices the hung process.
    let spawn = |p: usize| {
        command(p)
            .args(["--inject-checkpoint-delay", "60s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut survivor = spawn(0);
    let mut victim = spawn(1);
    // Each worker opens its part of the rejected records once the cluster
    // is connected.
    let parts = [0, 1].map(|i| {
        out.join("rejected")
            .join(format!("{}.tmp", presence::files::output::part_name(i, 2)))
    });
    common::wait_until("the cluster to start", || {
        for child in [&mut survivor, &mut victim] {
            if let Some(status) = child.try_wait().unwrap() {
                let mut message = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut message)
                    .unwrap();
                panic!("a process ended before the cluster started ({status}): {message}");
            }
        }
        parts.iter().all(|part| part.exists())
    });
    let stopped = Command::new("kill")
        .args(["-STOP", &victim.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let message = common::assert_survivor_reports_process_1(
        &mut survivor,
        &mut victim,
        std::time::Instant::now(),
    );
    assert!(
        message.contains("no sign of life from it within --connect-timeout (1s)"),
        "{message}"
    );

    // Both again, unhindered: whole collections and a complete checkpoint.
    run_two_processes(dir.path(), || {
        let mut command = backfill_command(&inputs, &out);
        command.args(["-w", "1", "--checkpoint-dir"]).arg(&state);
        command
    });
    assert_eq!(collections(&out), collections(&single), "the rerun differs");
    assert!(
        presence::checkpoint::store::newest_complete(&store_at(&state), &mut Vec::new())
            .map(|found| found.map(|(m, _)| m))
            .unwrap()
            .is_some(),
        "the rerun wrote no complete checkpoint"
    );
}

#[test]
fn missing_input_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(presence()
        .args(["backfill", "--probes"])
        .arg(dir.path().join("nope.jsonl"))
        .arg("--out")
        .arg(dir.path().join("out")));
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("cannot open probes file") && message.contains("nope.jsonl"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(!message.contains("panicked"), "{message}");
    assert_eq!(
        message.matches("No such file").count(),
        1,
        "the cause, once: {message}"
    );
}

#[test]
fn unknown_flag_is_rejected() {
    let output = run(presence().args(["backfill", "--probes", "x", "--out", "y", "--frobnicate"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--frobnicate"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_duration_is_rejected_with_the_syntax() {
    let output = run(presence().args([
        "backfill",
        "--probes",
        "x",
        "--out",
        "y",
        "--session-gap",
        "15 minutes",
    ]));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("invalid duration") && message.contains("15m"),
        "{message}"
    );
}

#[test]
fn a_checkpoint_store_that_is_neither_a_folder_nor_s3_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["gs://state/x", "s3://Not_A_Bucket/x", "s3://state/a/../b"] {
        let output =
            run(presence()
                .current_dir(dir.path())
                .args(["checkpoints", "--checkpoint-dir", bad]));
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("s3://BUCKET/PREFIX"),
            "{bad}: {}",
            stderr(&output)
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{bad}: nothing is created"
        );
    }
}

#[test]
fn unwritable_out_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes.jsonl");
    std::fs::write(
        &probes,
        "{\"device\":\"d\",\"business\":\"b\",\"ts\":1,\"rssi\":-50}\n",
    )
    .unwrap();
    // A path below a regular file cannot be a folder, even for root.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let output = run(presence()
        .args(["backfill", "--probes"])
        .arg(&probes)
        .arg("--out")
        .arg(blocker.join("out")));
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("cannot write") && message.contains("out"),
        "{message}"
    );
    assert_eq!(
        message.matches("Not a directory").count(),
        1,
        "the cause, once: {message}"
    );
}

#[test]
fn bad_cluster_flags_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(backfill_of_nothing(dir.path()).args(["-n", "2", "-p", "2"]));
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(stderr(&output).contains("-p 2"), "{}", stderr(&output));
}

#[test]
fn help_is_long_only_and_h_is_the_hostfile() {
    let output = run(presence().args(["backfill", "--help"]));
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--probes",
        "--logins",
        "--base-counts",
        "--out",
        "--session-gap",
        "-w",
        "-n",
        "-p",
        "-h, --hostfile",
    ] {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
    // `-h FILE` is the hostfile (a file that does not exist is a failure
    // to read it, not help).
    let output = run(presence().args([
        "backfill",
        "-n",
        "2",
        "-h",
        "/nonexistent/hosts",
        "--probes",
        "/nonexistent/probes.jsonl",
        "--out",
        "/nonexistent/out",
    ]));
    assert_ne!(output.status.code(), Some(0), "-h takes the hostfile");
    assert!(stderr(&output).contains("hostfile"), "{}", stderr(&output));
}

#[test]
fn empty_files_produce_empty_collections() {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes.jsonl");
    std::fs::write(&probes, "\n   \n").unwrap();
    let out = dir.path().join("out");
    let output = run(presence()
        .args(["backfill", "--probes"])
        .arg(&probes)
        .arg("--out")
        .arg(&out));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(collections(&out).values().all(Vec::is_empty));
}

#[test]
fn bench_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:1\n127.0.0.1:2\n").unwrap();
    let hosts = hosts.to_str().unwrap();
    for (args, expected) in [
        (&["--duration", "2s", "--warmup", "5s"][..], "--warmup"),
        (&["-n", "2", "-p", "0", "-h", hosts][..], "--brokers"),
        (&["--inject-stall", "5s"][..], "AFTER:LENGTH"),
    ] {
        let output = run(presence().arg("bench").args(args));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains(expected), "{args:?}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    }
}

/// Parameters that mean nothing are refused with a line that says why,
/// before any work (clap's usage errors: exit status 2).
#[test]
fn parameters_that_mean_nothing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes.jsonl");
    std::fs::write(&probes, "").unwrap();
    let probes = probes.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for (args, expected) in [
        (
            &[
                "backfill",
                "--probes",
                probes,
                "--out",
                out,
                "--min-probes",
                "0",
            ][..],
            "at least 1",
        ),
        (
            &[
                "backfill",
                "--probes",
                probes,
                "--out",
                out,
                "--session-gap",
                "-5m",
            ][..],
            "cannot be negative",
        ),
        (
            &[
                "backfill",
                "--probes",
                probes,
                "--out",
                out,
                "--allowed-lateness=-1s",
            ][..],
            "cannot be negative",
        ),
        (
            &[
                "backfill",
                "--probes",
                probes,
                "--out",
                out,
                "--rssi-min",
                "5",
            ][..],
            "--rssi-min",
        ),
        (
            &["run", "--brokers", "127.0.0.1:1", "--connect-timeout", "0s"][..],
            "more than 0",
        ),
        (
            &[
                "run",
                "--brokers",
                "127.0.0.1:1",
                "--output-partitions",
                "0",
            ][..],
            "--output-partitions",
        ),
        (&["bench", "--rate", "0"][..], "at least 1"),
        (
            &["generate", "--out", out, "--businesses", "0"][..],
            "at least 1",
        ),
        (
            &[
                "produce",
                "--brokers",
                "127.0.0.1:1",
                "--live",
                "--rate",
                "0",
            ][..],
            "--live needs a rate",
        ),
    ] {
        let output = run(presence().args(args));
        let message = stderr(&output);
        assert!(
            matches!(output.status.code(), Some(1 | 2)),
            "{args:?}: {message}"
        );
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
    assert!(!Path::new(out).exists(), "nothing was written");
}

#[test]
fn help_without_a_command_and_usage_lines_name_required_flags() {
    let output = run(presence().arg("-h"));
    assert!(output.status.success(), "{}", stderr(&output));
    let help = String::from_utf8_lossy(&output.stdout);
    for command in [
        "backfill", "run", "demo", "produce", "bench", "example", "generate",
    ] {
        assert!(help.contains(command), "{help}");
    }
    let output = run(presence().arg("--help"));
    assert!(output.status.success());
    let output = run(presence().args(["backfill", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(
        usage.contains("--out DIR") && usage.contains("--probes"),
        "{usage}"
    );
    let output = run(presence().args(["run", "--help"]));
    let help = String::from_utf8_lossy(&output.stdout);
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(usage.contains("--brokers"), "{usage}");
}

/// `example` keeps what it generated and wrote, where it says.
#[test]
fn example_keeps_its_input_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ex");
    let output = run(presence()
        .args(["example", "--days", "1", "--devices", "300", "--out"])
        .arg(&folder));
    assert!(output.status.success(), "{}", stderr(&output));
    // What it did is its result: on stdout.
    let message = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        message.contains(&folder.join("input").display().to_string()),
        "{message}"
    );
    assert!(folder.join("input/probes-0.jsonl").is_file());
    let walkins = collections(&folder.join("output"))["walkins"].len();
    assert!(walkins > 0, "{message}");
    // The backfill summary adds up.
    let line = message.lines().find(|l| l.starts_with("read ")).unwrap();
    let n = common::summary_numbers(line);
    assert_eq!(
        n["read"],
        n["accepted"] + n["rejected"] + n["blank"],
        "{line}"
    );
}

/// The detection flags are defined once: every command that takes them
/// shows the same six, `run`'s and `backfill`'s defaults are the model's
/// (`Params::default()`), and `bench` only scales its durations down.
#[test]
fn detection_flags_and_defaults_are_the_models() {
    use presence::model::params::{parse_duration, Params};
    let defaults = |command: &str| -> Vec<(String, String)> {
        let help = String::from_utf8(run(presence().args([command, "--help"])).stdout).unwrap();
        Params::FLAGS
            .iter()
            .map(|flag| {
                // Long help: the flag's line, then its description's lines.
                let lines: Vec<&str> = help.lines().collect();
                let at = lines
                    .iter()
                    .position(|line| line.trim_start().starts_with(&format!("{flag} ")))
                    .unwrap_or_else(|| panic!("{command} --help lacks {flag}:\n{help}"));
                let entry = lines[at..]
                    .iter()
                    .take_while(|line| *line == &lines[at] || !line.trim_start().starts_with('-'))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                let default = entry
                    .split("[default: ")
                    .nth(1)
                    .and_then(|rest| rest.split(']').next())
                    .unwrap_or_else(|| panic!("{command}: no default for {flag}: {entry}"));
                (flag.to_string(), default.to_owned())
            })
            .collect()
    };
    let model = Params::default();
    for command in ["run", "backfill"] {
        let shown = defaults(command);
        let parsed = Params {
            rssi_min: shown[0].1.parse().unwrap(),
            session_gap: parse_duration(&shown[1].1).unwrap(),
            min_dwell: parse_duration(&shown[2].1).unwrap(),
            min_probes: shown[3].1.parse().unwrap(),
            allowed_lateness: parse_duration(&shown[4].1).unwrap(),
            max_future: parse_duration(&shown[5].1).unwrap(),
        };
        assert_eq!(parsed, model, "{command}: {shown:?}");
    }
    let bench = defaults("bench");
    assert_eq!(bench[1].1, "2s", "{bench:?}");
    assert_eq!(
        (&bench[0].1, &bench[3].1),
        (&"-75".to_owned(), &"3".to_owned())
    );
}

/// A backfill into a folder that holds checkpoints is refused (its
/// checkpoint would be pruned at once behind a run's, or would replace
/// another backfill's, without a word); `--reset-state` discards them first.
#[test]
fn a_backfill_into_a_folder_holding_checkpoints_is_refused_unless_reset() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(dir.path());
    let state = dir.path().join("state");
    // The checkpoints' manifests (not the claims each backfill makes of a
    // generation first).
    let manifests = || -> Vec<(String, Vec<u8>)> {
        let mut found: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("manifest-")
            })
            .map(|p| {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .filter(|(_, bytes)| {
                let manifest: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                manifest["claim"] != true
            })
            .collect();
        found.sort();
        found
    };
    let first = run(backfill_command(&inputs, &dir.path().join("out-1"))
        .arg("--checkpoint-dir")
        .arg(&state));
    assert!(first.status.success(), "{}", stderr(&first));
    let before = manifests();
    assert_eq!(before.len(), 1, "one checkpoint");

    let again = run(backfill_command(&inputs, &dir.path().join("out-2"))
        .arg("--checkpoint-dir")
        .arg(&state));
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    let text = stderr(&again);
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    assert!(
        text.contains("already holds 1 checkpoint") && text.contains("--reset-state"),
        "{text}"
    );
    assert_eq!(manifests(), before, "the refused backfill changed nothing");
    assert!(
        !dir.path().join("out-2").exists(),
        "refused before any output"
    );

    let reset = run(backfill_command(&inputs, &dir.path().join("out-3"))
        .arg("--checkpoint-dir")
        .arg(&state)
        .arg("--reset-state"));
    assert!(reset.status.success(), "{}", stderr(&reset));
    let after = manifests();
    assert_eq!(after.len(), 1, "the old checkpoint discarded: {after:?}");
    assert_ne!(after, before, "a new checkpoint");

    let orphan = run(backfill_command(&inputs, &dir.path().join("out-4")).arg("--reset-state"));
    assert_eq!(
        orphan.status.code(),
        Some(2),
        "--reset-state needs --checkpoint-dir"
    );
}

/// The command line's rules (docs/operations.md, "The command line"):
/// every refusal of the flags is status 2 and one line on stderr that names
/// the flag and what it accepts, before any work; nothing on stdout.
#[test]
fn usage_errors_are_status_2_and_one_line_naming_the_flag() {
    let files = ["--probes", "p.jsonl", "--out", "out"];
    let backfill = |flags: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["backfill"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&files);
        args
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (backfill(&["-w", "0"]), vec!["--threads", "1 to 1024"]),
        (backfill(&["-n", "0"]), vec!["--processes", "1 to 1024"]),
        (
            backfill(&["--min-probes", "-1"]),
            vec!["--min-probes", "at least 1"],
        ),
        (
            backfill(&["--min-probes", "0"]),
            vec!["--min-probes", "at least 1"],
        ),
        (
            backfill(&["--min-dwell", "99999999999999d"]),
            vec!["--min-dwell", "too long", "at most"],
        ),
        (backfill(&["-n", "2", "-p", "2"]), vec!["-p 2", "0 to 1"]),
        (
            vec!["bench", "--warmup", "20s", "--duration", "10s"],
            vec!["--duration 10s", "--warmup 20s"],
        ),
        (vec!["demo", "-n", "2"], vec!["-n"]),
        (
            vec!["produce", "--brokers", "x:1", "--live", "--rate", "0"],
            vec!["--live", "--rate"],
        ),
        (backfill(&[]).into_iter().take(1).collect(), vec!["--out"]),
        (vec!["run", "--brokers", ""], vec!["--brokers", "HOST:PORT"]),
        (
            vec!["produce", "--brokers", "garbage"],
            vec!["--brokers", "garbage", "HOST:PORT"],
        ),
    ];
    for (args, words) in cases {
        let output = run(presence().args(&args));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: one line: {message}");
        for word in words {
            assert!(message.contains(word), "{args:?} names {word}: {message}");
        }
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// `presence help [COMMAND]` and `-h` wherever `-h` is not the hostfile.
#[test]
fn help_is_at_hand() {
    let help = |args: &[&str]| -> String {
        let output = run(presence().args(args));
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(help(&["help"]).contains("backfill"));
    assert!(help(&["help", "backfill"]).contains("--probes"));
    for command in ["generate", "checkpoints", "demo", "produce"] {
        let text = help(&[command, "-h"]);
        assert!(
            text.contains(&format!("Usage: presence {command}")),
            "{command} -h: {text}"
        );
    }
    // Where `-h` is the hostfile, `-h` without a file (last, or before
    // another flag) is help too.
    for command in ["backfill", "run", "bench", "example"] {
        for args in [vec![command, "-h"], vec![command, "-h", "-w", "2"]] {
            let text = help(&args);
            assert!(
                text.contains(&format!("Usage: presence {command}")),
                "{args:?}: {text}"
            );
        }
    }
}

/// A hostfile line that is not HOST:PORT is refused at once (timely would
/// retry it forever), naming the line.
#[test]
fn a_bad_hostfile_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "garbage\nmore\n").unwrap();
    let output = run(backfill_of_nothing(dir.path())
        .args(["-n", "2", "-p", "0", "-h"])
        .arg(&hosts));
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("line 1") && message.contains("garbage") && message.contains("HOST:PORT"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

/// SIGTERM while the cluster is still connecting (its peer never comes)
/// ends the process at once with a line saying so; timely's connection
/// progress goes to stderr, not stdout.
#[test]
fn a_signal_while_connecting_ends_the_process_with_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = common::hostfile(dir.path());
    let mut child = backfill_of_nothing(dir.path())
        .args(["-n", "2", "-p", "0", "-h"])
        .arg(&hosts)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::stderr_lines(&mut child);
    // Connecting: process 0 waits for process 1, and says so (on stderr).
    let mut seen = String::new();
    while !seen.contains("awaiting connections") {
        match lines.recv_timeout(common::PATIENCE) {
            Ok(line) => seen += &(line + "\n"),
            Err(_) => {
                let _ = child.kill();
                panic!("no `awaiting connections` on stderr: {seen}");
            }
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = common::wait_child(&mut child, "a process stopped while connecting");
    let rest: Vec<String> = lines.iter().collect();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    assert!(
        rest.contains("stopped by SIGTERM while connecting"),
        "{rest}"
    );
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
}

/// Results on stdout, logs and progress on stderr: a backfill's summary and
/// what it wrote, generate's files, checkpoints' listing.
#[test]
fn results_go_to_stdout_and_logs_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(presence()
        .args(["generate", "--days", "1", "--devices", "50", "--out"])
        .arg(dir.path().join("in")));
    assert!(output.status.success(), "{}", stderr(&output));
    let result = String::from_utf8_lossy(&output.stdout);
    assert!(result.starts_with("wrote "), "{result}");
    let inputs = (
        vec![dir.path().join("in/probes-0.jsonl")],
        dir.path().join("in/logins-0.jsonl"),
        dir.path().join("in/base-counts.jsonl"),
    );
    let state = dir.path().join("state");
    let output = run(backfill_command(&inputs, &dir.path().join("out"))
        .arg("--checkpoint-dir")
        .arg(&state));
    let (result, log) = (String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert!(output.status.success(), "{log}");
    assert!(
        result.lines().any(|l| l.starts_with("read ")) && result.contains("wrote "),
        "the summary on stdout: {result}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("read ")),
        "not on stderr: {log}"
    );
    let output = run(presence()
        .arg("checkpoints")
        .arg("--checkpoint-dir")
        .arg(&state));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!output.stdout.is_empty(), "the listing on stdout");
}

/// Input that is mostly rejected is warned about at the end, with the top
/// reasons and a hint; a byte order mark is not a reason.
#[test]
fn mostly_rejected_input_is_warned_about_and_a_byte_order_mark_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(dir.path());
    // Logins given as probes (swapped): every record malformed.
    let swapped = (
        vec![inputs.1.clone()],
        inputs.0[0].clone(),
        inputs.2.clone(),
    );
    let output = run(&mut backfill_command(&swapped, &dir.path().join("swapped")));
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    let warning = log
        .lines()
        .find(|l| l.contains("were rejected"))
        .unwrap_or_else(|| panic!("a warning: {log}"));
    assert!(
        warning.contains("malformed") && warning.contains("swapped"),
        "{warning}"
    );
    // The same files the right way round: no warning.
    let output = run(&mut backfill_command(&inputs, &dir.path().join("right")));
    assert!(
        !stderr(&output).contains("were rejected"),
        "{}",
        stderr(&output)
    );
    // A byte order mark at the start of a file is not part of its first record.
    let probes = std::fs::read(&inputs.0[0]).unwrap();
    let marked = dir.path().join("marked.jsonl");
    std::fs::write(&marked, [b"\xEF\xBB\xBF".as_slice(), &probes].concat()).unwrap();
    let output = run(presence()
        .args(["backfill", "--probes"])
        .arg(&marked)
        .arg("--out")
        .arg(dir.path().join("marked")));
    let result = String::from_utf8_lossy(&output.stdout);
    let line = result.lines().find(|l| l.starts_with("read ")).unwrap();
    let n = common::summary_numbers(line);
    assert_eq!(n["rejected"], 0, "{line}");
}

/// Unfinished parts that an interrupted backfill of another shape left are
/// removed; a report path whose folder does not exist fails before work.
#[test]
fn stale_unfinished_parts_are_removed_and_report_paths_are_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("walkins")).unwrap();
    let stale = out.join("walkins/part-0001-of-0004.jsonl.tmp");
    std::fs::write(&stale, "{}\n").unwrap();
    let output = run(&mut backfill_command(&inputs, &out));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stale.exists(), "the stale part is gone");
    let output = run(presence().args([
        "bench",
        "--duration",
        "30s",
        "--json",
        "/nonexistent/folder/report.json",
    ]));
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("/nonexistent/folder"), "{message}");
    assert_eq!(
        message.lines().count(),
        1,
        "refused before measuring: {message}"
    );
}

/// produce and bench take --connect-timeout (as run does), and an
/// unreachable broker is one line naming it.
#[test]
fn produce_gives_up_on_an_absent_broker_after_its_connect_timeout() {
    let output = run(presence().args([
        "produce",
        "--brokers",
        "127.0.0.1:1",
        "--connect-timeout",
        "1s",
        "--days",
        "1",
        "--devices",
        "10",
    ]));
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    let help = run(presence().args(["bench", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--connect-timeout"));
}

/// A command that stops gracefully (here `produce`, waiting for a broker
/// that is not there) takes a first SIGTERM as "stop", and a second ends it
/// at once, with a line saying so.
#[test]
fn a_second_signal_ends_a_stopping_command_at_once() {
    let mut child = presence()
        .args([
            "produce",
            "--brokers",
            "127.0.0.1:1",
            "--connect-timeout",
            "10m",
        ])
        .args(["--days", "1", "--devices", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::stderr_lines(&mut child);
    // Its handler is in place once the kernel says it catches SIGTERM.
    let caught = || {
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|status| {
                let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    };
    common::wait_until("the signal handler", caught);
    let term = |pid: u32| {
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    term(child.id());
    let mut seen = String::new();
    while !seen.contains("stopping") {
        match lines.recv_timeout(common::PATIENCE) {
            Ok(line) => seen += &(line + "\n"),
            Err(_) => panic!("no `stopping` line after the first SIGTERM: {seen}"),
        }
    }
    term(child.id());
    let status = common::wait_child(&mut child, "produce after a second SIGTERM");
    let rest: Vec<String> = lines.iter().collect();
    let text = seen + &rest.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("stopped at once by a second signal"),
        "{text}"
    );
}
