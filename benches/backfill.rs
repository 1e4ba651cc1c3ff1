//! End-to-end backfill benchmark (`cargo bench --bench backfill`).
//!
//! Generates a multi-day workload with `presence generate`, then times the
//! `presence` binary on it: the parse-only floor and the full pipeline at
//! `-w 1` and `-w 2`, and the full pipeline as two loopback processes
//! (`-n 2 -w 1`). Each configuration runs several times, interleaved; the
//! table gives the median and min wall time, accepted probes per second at
//! the median, peak RSS as the binary reports it (summed over processes),
//! and the ratio of each full run to the parse-only floor with the same
//! total number of workers. Every full run's output is checked against the
//! first `-w 1` run's (sorted line sets per collection folder).
//!
//! Sizing, through the environment:
//!   PRESENCE_BENCH_DAYS       days of data            (default 14)
//!   PRESENCE_BENCH_DEVICES    phones                  (default 60000)
//!   PRESENCE_BENCH_BUSINESSES stores                  (default 40)
//!   PRESENCE_BENCH_SEED       generator seed          (default 1)
//!   PRESENCE_BENCH_RUNS       runs per configuration  (default 3)
//!   PRESENCE_BENCH_RETRIES    repeats of a run disturbed by other load (default 3)
//!   PRESENCE_BENCH_MAX_OTHER_PERCENT  other processes' CPU, in % of a core,
//!                             above which a run counts as disturbed (default 15)
//!   PRESENCE_BENCH_QUIET_WAIT seconds to wait, before each run, for other
//!                             load to drop below that (default 120)
//!   PRESENCE_BENCH_QUICK=1    (or `-- --quick`) 3 days, 10000 phones, 1 run
//!   PRESENCE_BENCH_KEEP=1     keep the temporary folder and print its path

mod common;
use common::{
    cpu_model, cpu_ticks, env_flag, env_u64, median, source_version, Counted, TICKS_PER_SECOND,
};

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use presence::files::output::FOLDERS;

/// The binary cargo built for this benchmark.
const BUILT: &str = env!("CARGO_BIN_EXE_presence");

/// The binary the benchmark runs: a private copy of [`BUILT`], so that a
/// concurrent `cargo build` cannot swap it out between runs.
static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn bin() -> &'static Path {
    BIN.get().map_or(Path::new(BUILT), PathBuf::as_path)
}
const PROBE_FILES: u64 = 4;

/// A command line, printable exactly as run.
#[derive(Clone)]
struct Cmd {
    args: Vec<String>,
}

impl Cmd {
    fn new(args: impl IntoIterator<Item = String>) -> Self {
        Cmd {
            args: args.into_iter().collect(),
        }
    }

    fn display(&self) -> String {
        std::iter::once(bin().display().to_string())
            .chain(self.args.iter().cloned())
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn spawn(&self) -> Child {
        Command::new(bin())
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.display()))
    }
}

fn check(cmd: &Cmd, output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        panic!(
            "`{}` failed ({}); its stderr:\n{}\nits stdout:\n{}",
            cmd.display(),
            output.status,
            stderr,
            String::from_utf8_lossy(&output.stdout)
        );
    }
    // The summary is the command's result: on stdout.
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What one process's summary said.
#[derive(Clone, Debug, Default)]
struct Summary {
    accepted_probes: u64,
    peak_rss_mib: f64,
}

fn parse_summary(cmd: &Cmd, stdout: &str) -> Summary {
    let fail = |what: &str| -> ! {
        panic!(
            "cannot find {what} in the summary of `{}`; its stdout:\n{stdout}",
            cmd.display()
        )
    };
    let accepted = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("accepted "))
        .unwrap_or_else(|| fail("an `accepted N probes` line"));
    let accepted_probes = accepted
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fail("the accepted probe count"));
    let peak_rss_mib = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak RSS "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fail("a `peak RSS X MiB` line"));
    Summary {
        accepted_probes,
        peak_rss_mib,
    }
}

/// One measured run: wall time and the summaries of all processes summed.
#[derive(Clone, Debug)]
struct Run {
    wall: Duration,
    probes: u64,
    rss_mib: f64,
    /// CPU used by other processes on the machine during the run, in cores
    /// (average): the benchmark shares the machine with whatever else runs.
    other_cores: f64,
}

/// Waits (up to `timeout`) until other processes use at most `max_other`
/// cores over a half-second sample, so runs start on an idle machine.
fn wait_for_quiet(max_other: f64, timeout: Duration) {
    let started = Instant::now();
    let mut told = false;
    loop {
        let before = cpu_ticks(Counted::Children).0;
        std::thread::sleep(Duration::from_millis(500));
        let busy = (cpu_ticks(Counted::Children).0.saturating_sub(before)).saturating_sub(1) as f64
            / TICKS_PER_SECOND
            / 0.5;
        if busy <= max_other || started.elapsed() >= timeout {
            if told {
                eprintln!(
                    "  ... started after {:.0} s (other load now {busy:.2} cores)",
                    started.elapsed().as_secs_f64()
                );
            }
            return;
        }
        if !told {
            eprintln!("  waiting for other load ({busy:.2} cores) to drop below {max_other:.2}");
            told = true;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    ParseOnly,
    Full,
}

struct Config {
    name: String,
    mode: Mode,
    /// Total workers (for choosing the floor).
    workers: usize,
    processes: usize,
    out: Option<PathBuf>,
    /// The command line of each process.
    cmds: Vec<Cmd>,
    runs: Vec<Run>,
    /// The exact command lines of the last run.
    last_cmds: Vec<Cmd>,
    /// The hostfile of the last run (ports change between runs).
    last_hosts: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

fn loopback_hostfile(path: &Path) {
    let (a, mut b) = (free_port(), free_port());
    while b == a {
        b = free_port();
    }
    fs::write(path, format!("127.0.0.1:{a}\n127.0.0.1:{b}\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Runs every process of `config` once, concurrently; wall time lasts until
/// all have exited.
fn run_once(config: &mut Config, hostfile: &Path) -> Run {
    if let Some(out) = &config.out {
        if out.exists() {
            fs::remove_dir_all(out)
                .unwrap_or_else(|e| panic!("cannot clear {}: {e}", out.display()));
        }
    }
    // Two attempts for clusters: a freshly chosen port can be taken by
    // someone else between choosing it and binding it.
    for attempt in 0.. {
        if config.processes > 1 {
            loopback_hostfile(hostfile);
        }
        let ticks_before = cpu_ticks(Counted::Children);
        let started = Instant::now();
        let children: Vec<Child> = config.cmds.iter().map(Cmd::spawn).collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .zip(&config.cmds)
            .map(|(child, cmd)| {
                child
                    .wait_with_output()
                    .unwrap_or_else(|e| panic!("cannot wait for `{}`: {e}", cmd.display()))
            })
            .collect();
        let wall = started.elapsed();
        let ticks_after = cpu_ticks(Counted::Children);
        let other_ticks = (ticks_after.0.saturating_sub(ticks_before.0))
            .saturating_sub(ticks_after.1.saturating_sub(ticks_before.1));
        // Two ticks of slack for the sampling granularity.
        let other_cores =
            other_ticks.saturating_sub(2) as f64 / TICKS_PER_SECOND / wall.as_secs_f64().max(1e-3);
        let port_clash = config.processes > 1
            && outputs.iter().any(|o| {
                !o.status.success()
                    && String::from_utf8_lossy(&o.stderr).contains("Address already in use")
            });
        if port_clash && attempt == 0 {
            eprintln!("{}: a loopback port was taken; retrying", config.name);
            continue;
        }
        config.last_cmds = config.cmds.clone();
        if config.processes > 1 {
            config.last_hosts = fs::read_to_string(hostfile).unwrap_or_default();
        }
        let mut run = Run {
            wall,
            probes: 0,
            rss_mib: 0.0,
            other_cores,
        };
        for (cmd, output) in config.cmds.iter().zip(outputs) {
            let stdout = check(cmd, output);
            let summary = parse_summary(cmd, &stdout);
            run.probes += summary.accepted_probes;
            run.rss_mib += summary.peak_rss_mib;
        }
        return run;
    }
    unreachable!()
}

type Lines = BTreeMap<&'static str, Vec<String>>;

/// Compares the output in `out` with the reference (the first full run),
/// or makes it the reference.
fn check_output(
    name: &str,
    round: usize,
    out: &Path,
    reference: &mut Option<Lines>,
    mismatches: &mut Vec<(String, usize, Vec<String>)>,
    compared: &mut BTreeMap<String, usize>,
) {
    let got = read_output(out);
    match reference {
        None => *reference = Some(got),
        Some(want) => {
            *compared.entry(name.to_string()).or_default() += 1;
            let problems = differences(want, &got);
            if !problems.is_empty() {
                mismatches.push((name.to_string(), round + 1, problems));
            }
        }
    }
}

/// Every collection folder's lines, sorted.
fn read_output(out: &Path) -> BTreeMap<&'static str, Vec<String>> {
    FOLDERS
        .iter()
        .map(|&folder| {
            let dir = out.join(folder);
            let mut lines = Vec::new();
            let entries = fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot list output folder {}: {e}", dir.display()));
            for entry in entries {
                let path = entry.expect("a readable folder entry").path();
                if path.extension().is_some_and(|e| e == "jsonl") {
                    let text = fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                    lines.extend(text.lines().map(str::to_owned));
                }
            }
            lines.sort_unstable();
            (folder, lines)
        })
        .collect()
}

/// Describes how `got` differs from `want`, folder by folder; empty if equal.
fn differences(
    want: &BTreeMap<&'static str, Vec<String>>,
    got: &BTreeMap<&'static str, Vec<String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for folder in FOLDERS {
        let (a, b) = (&want[folder], &got[folder]);
        if a == b {
            continue;
        }
        let (mut only_a, mut only_b) = (0usize, 0usize);
        let (mut example_a, mut example_b) = (None, None);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x == y => {
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x < y => {
                    only_a += 1;
                    example_a.get_or_insert_with(|| x.clone());
                    i += 1;
                }
                (Some(x), None) => {
                    only_a += 1;
                    example_a.get_or_insert_with(|| x.clone());
                    i += 1;
                }
                (_, Some(y)) => {
                    only_b += 1;
                    example_b.get_or_insert_with(|| y.clone());
                    j += 1;
                }
                (None, None) => unreachable!(),
            }
        }
        problems.push(format!(
            "{folder}: {} vs {} lines; {only_a} only in the -w 1 output (e.g. {}), {only_b} only in this one (e.g. {})",
            a.len(),
            b.len(),
            example_a.as_deref().unwrap_or("-"),
            example_b.as_deref().unwrap_or("-"),
        ));
    }
    problems
}

fn main() {
    // `cargo bench` passes `--bench`; accept `--quick` too, ignore the rest.
    let quick = env_flag("PRESENCE_BENCH_QUICK") || std::env::args().any(|a| a == "--quick");
    let days = env_u64("PRESENCE_BENCH_DAYS", if quick { 3 } else { 14 });
    let devices = env_u64(
        "PRESENCE_BENCH_DEVICES",
        if quick { 10_000 } else { 60_000 },
    );
    let businesses = env_u64("PRESENCE_BENCH_BUSINESSES", 40);
    let seed = env_u64("PRESENCE_BENCH_SEED", 1);
    let runs = env_u64("PRESENCE_BENCH_RUNS", if quick { 1 } else { 3 }).max(1) as usize;
    let retries = env_u64("PRESENCE_BENCH_RETRIES", if quick { 0 } else { 3 }) as usize;
    let max_other = env_u64("PRESENCE_BENCH_MAX_OTHER_PERCENT", 15) as f64 / 100.0;
    let quiet_wait = Duration::from_secs(env_u64(
        "PRESENCE_BENCH_QUIET_WAIT",
        if quick { 0 } else { 120 },
    ));

    let tmp = tempfile::Builder::new()
        .prefix("presence-bench-")
        .tempdir()
        .expect("cannot create a temporary folder");
    let root = tmp.path().to_path_buf();
    let input = root.join("input");
    let s = |p: &Path| p.display().to_string();

    println!("# presence backfill benchmark");
    println!();
    let copy = root.join("presence");
    fs::copy(BUILT, &copy)
        .unwrap_or_else(|e| panic!("cannot copy {BUILT} to {}: {e}", copy.display()));
    BIN.set(copy).expect("set once");
    println!("binary: {} (a copy of {BUILT})", bin().display());
    println!(
        "machine: {} logical CPUs available; CPU {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!("source: {}", source_version());
    println!("runs per configuration: {runs} (interleaved; median and min reported)");
    println!();

    // 1. The workload.
    let generate = Cmd::new(
        [
            "generate",
            "--out",
            &s(&input),
            "--days",
            &days.to_string(),
            "--devices",
            &devices.to_string(),
            "--businesses",
            &businesses.to_string(),
            "--probe-files",
            &PROBE_FILES.to_string(),
            "--seed",
            &seed.to_string(),
        ]
        .map(String::from),
    );
    let started = Instant::now();
    let gen_result = check(
        &generate,
        generate.spawn().wait_with_output().expect("wait"),
    );
    let gen_time = started.elapsed();
    let probe_files: Vec<String> = (0..PROBE_FILES)
        .map(|p| s(&input.join(format!("probes-{p}.jsonl"))))
        .collect();
    let input_bytes: u64 = fs::read_dir(&input)
        .expect("the input folder exists")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    println!("## workload");
    println!();
    println!("    {}", generate.display());
    println!(
        "    -> {} ({:.1} MiB of input, generated in {:.1} s)",
        gen_result.trim(),
        input_bytes as f64 / (1 << 20) as f64,
        gen_time.as_secs_f64()
    );
    println!();

    let mut inputs: Vec<String> = vec!["--probes".into()];
    inputs.extend(probe_files.iter().cloned());
    inputs.extend([
        "--logins".into(),
        s(&input.join("logins-0.jsonl")),
        "--base-counts".into(),
        s(&input.join("base-counts.jsonl")),
    ]);
    let backfill = |extra: &[String]| {
        Cmd::new(
            std::iter::once("backfill".to_string())
                .chain(inputs.iter().cloned())
                .chain(extra.iter().cloned()),
        )
    };
    let hostfile = root.join("hosts");
    let strs = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    // 2. The configurations.
    let mut configs = Vec::new();
    for workers in [1usize, 2] {
        configs.push(Config {
            name: format!("parse-only -w {workers}"),
            mode: Mode::ParseOnly,
            workers,
            processes: 1,
            out: None,
            cmds: vec![backfill(&strs(&[
                "--parse-only",
                "-w",
                &workers.to_string(),
            ]))],
            runs: Vec::new(),
            last_cmds: Vec::new(),
            last_hosts: String::new(),
        });
    }
    for workers in [1usize, 2] {
        let out = root.join(format!("out-w{workers}"));
        configs.push(Config {
            name: format!("full -w {workers}"),
            mode: Mode::Full,
            workers,
            processes: 1,
            cmds: vec![backfill(&strs(&[
                "--out",
                &s(&out),
                "-w",
                &workers.to_string(),
            ]))],
            out: Some(out),
            runs: Vec::new(),
            last_cmds: Vec::new(),
            last_hosts: String::new(),
        });
    }
    for mode in [Mode::ParseOnly, Mode::Full] {
        let out = root.join("out-n2");
        let cmds = (0..2)
            .map(|p| {
                let mut extra = match mode {
                    Mode::ParseOnly => strs(&["--parse-only"]),
                    Mode::Full => strs(&["--out", &s(&out)]),
                };
                extra.extend(strs(&[
                    "-n",
                    "2",
                    "-w",
                    "1",
                    "-p",
                    &p.to_string(),
                    "-h",
                    &s(&hostfile),
                ]));
                backfill(&extra)
            })
            .collect();
        configs.push(Config {
            name: match mode {
                Mode::ParseOnly => "parse-only -n 2 -w 1".into(),
                Mode::Full => "full -n 2 -w 1".into(),
            },
            mode,
            workers: 2,
            processes: 2,
            out: (mode == Mode::Full).then_some(out),
            cmds,
            runs: Vec::new(),
            last_cmds: Vec::new(),
            last_hosts: String::new(),
        });
    }

    // Warm the page cache so the first timed run is not the one that reads
    // the files from disk.
    {
        let warm = backfill(&strs(&["--parse-only", "-w", "2"]));
        check(&warm, warm.spawn().wait_with_output().expect("wait"));
    }

    let mut reference: Option<BTreeMap<&'static str, Vec<String>>> = None;
    // (configuration, round, problems)
    let mut mismatches: Vec<(String, usize, Vec<String>)> = Vec::new();
    let mut compared: BTreeMap<String, usize> = BTreeMap::new();
    let mut contended_runs = 0usize;
    for round in 0..runs {
        for config in configs.iter_mut() {
            // A run during which other processes used more than
            // `max_other` cores is repeated (after a pause), up to `retries`
            // times; the least disturbed attempt is kept.
            let mut kept: Option<Run> = None;
            for attempt in 0..=retries {
                wait_for_quiet(max_other, quiet_wait);
                let run = run_once(config, &hostfile);
                eprintln!(
                    "round {}/{runs}: {:<22} {:>7.2} s  {:>7.1} MiB  other load {:.2} cores{}",
                    round + 1,
                    config.name,
                    run.wall.as_secs_f64(),
                    run.rss_mib,
                    run.other_cores,
                    if attempt > 0 { " (repeat)" } else { "" }
                );
                let quiet = run.other_cores <= max_other;
                if kept
                    .as_ref()
                    .is_none_or(|k| run.other_cores < k.other_cores)
                {
                    kept = Some(run);
                }
                if let Some(out) = &config.out {
                    check_output(
                        &config.name,
                        round,
                        out,
                        &mut reference,
                        &mut mismatches,
                        &mut compared,
                    );
                }
                if quiet {
                    break;
                }
                if attempt < retries {
                    std::thread::sleep(Duration::from_secs(3));
                }
            }
            let run = kept.expect("at least one attempt");
            if run.other_cores > max_other {
                contended_runs += 1;
            }
            config.runs.push(run);
        }
    }

    // 3. The table.
    let floor = |workers: usize, processes: usize| {
        configs
            .iter()
            .find(|c| c.mode == Mode::ParseOnly && c.workers == workers && c.processes == processes)
            .map(|c| median(c.runs.iter().map(|r| r.wall.as_secs_f64()).collect()))
    };
    println!("## results");
    println!();
    println!(
        "| configuration | wall s (median) | wall s (min) | accepted probes/s | peak RSS MiB | vs parse-only floor (median) | other load, cores (max) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for config in &configs {
        let walls: Vec<f64> = config.runs.iter().map(|r| r.wall.as_secs_f64()).collect();
        let med = median(walls.clone());
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let probes = config.runs[0].probes;
        let rss = config.runs.iter().map(|r| r.rss_mib).fold(0.0f64, f64::max);
        let ratio = match config.mode {
            Mode::ParseOnly => "(floor)".to_string(),
            Mode::Full => {
                // The floor with the same total workers in one process, and
                // for a cluster also the floor with the same cluster shape.
                let mut ratios = Vec::new();
                if let Some(f) = floor(config.workers, 1) {
                    ratios.push(format!("{:.2}x parse-only -w {}", med / f, config.workers));
                }
                if config.processes > 1 {
                    if let Some(f) = floor(config.workers, config.processes) {
                        ratios.push(format!(
                            "{:.2}x parse-only -n {} -w {}",
                            med / f,
                            config.processes,
                            config.workers / config.processes
                        ));
                    }
                }
                ratios.join("; ")
            }
        };
        let other = config
            .runs
            .iter()
            .map(|r| r.other_cores)
            .fold(0.0f64, f64::max);
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.1}{} | {} | {:.2} |",
            config.name,
            med,
            min,
            probes as f64 / med,
            rss,
            if config.processes > 1 {
                " (sum of 2)"
            } else {
                ""
            },
            ratio,
            other
        );
    }
    println!();
    println!(
        "Wall time is measured around the process(es), from spawn to exit (both exits for -n 2). \
         Probes/s = accepted probes / median wall time. Peak RSS is the binary's own VmHWM report, \
         the highest over the runs, summed over processes for -n 2. The -n 2 rows include timely's \
         cluster start-up: process 0 polls for the connection once a second, so up to ~1 s of fixed \
         cost that the parse-only -n 2 floor contains too. Other load is the CPU that other processes \
         on the machine used during a run (from /proc/stat, minus the benchmark's children); each run \
         waits (up to {} s) for the machine to be idle first, and a run \
         with more than {:.2} cores of it is repeated up to {retries} times and the least disturbed \
         attempt is kept.",
        quiet_wait.as_secs(),
        max_other
    );
    println!();
    if contended_runs > 0 {
        println!(
            "WARNING: {contended_runs} kept run(s) still had more than {max_other:.2} cores of \
             other load: the machine was busy; treat those numbers (and medians) with care."
        );
        println!();
    }
    let probe_counts: Vec<u64> = configs.iter().map(|c| c.runs[0].probes).collect();
    if probe_counts.windows(2).any(|w| w[0] != w[1]) {
        println!(
            "WARNING: accepted probe counts differ between configurations: {:?}",
            configs
                .iter()
                .map(|c| (c.name.as_str(), c.runs[0].probes))
                .collect::<Vec<_>>()
        );
        println!();
    }

    println!("## output equality");
    println!();
    if let Some(reference) = &reference {
        println!(
            "reference: first full -w 1 run ({})",
            FOLDERS
                .iter()
                .map(|f| format!("{} {f}", reference[f].len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (name, n) in &compared {
        let bad = mismatches.iter().filter(|(m, _, _)| m == name).count();
        if bad == 0 {
            println!(
                "{name}: all {n} checked run(s) EQUAL to the -w 1 output (sorted lines, every folder)"
            );
        } else {
            println!("{name}: {bad} of {n} checked run(s) DIFFER from the -w 1 output");
        }
    }
    for (name, round, problems) in &mismatches {
        for problem in problems {
            println!("  {name}, run {round}: {problem}");
        }
    }
    println!();

    // 4. The exact command lines.
    println!("## commands");
    println!();
    println!("    {}", generate.display());
    println!("    (then, untimed, one parse-only -w 2 run to warm the page cache)");
    for config in &configs {
        for cmd in &config.last_cmds {
            println!("    {}", cmd.display());
        }
        if config.processes > 1 {
            println!(
                "    (the {} processes above run concurrently; {} held, for the last run: {})",
                config.processes,
                s(&hostfile),
                config.last_hosts.trim().replace('\n', ", ")
            );
        }
    }
    println!();

    if env_flag("PRESENCE_BENCH_KEEP") {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    if !mismatches.is_empty() {
        eprintln!("outputs differ between configurations (see above)");
        std::process::exit(1);
    }
}
