//! The `presence` command line: parses arguments ([`args`]), sets up logging
//! and signal handling, and calls the library, one function per command.
//! Results a user asked for (summaries, tables, listings, paths written)
//! go to stdout; logs, progress and warnings to stderr (docs/operations.md,
//! "The command line").

mod args;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use presence::backfill::Job;
use presence::cluster::ClusterArgs;
use presence::console::terminal::{Console, Panel};
use presence::console::{live, text};
use presence::harness::generator;
use presence::model::output::Output;
use presence::model::params::Params;
use presence::model::summary::Summary;

use args::{
    BackfillArgs, BenchArgs, CheckpointsArgs, Cli, Command, DemoArgs, ExampleArgs, GenerateArgs,
    ProduceArgs, RunArgs,
};

/// glibc's allocator spends a third of a backfill's time freeing the
/// records that workers allocate and free in large batches; mimalloc's
/// per-thread free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    presence::kafka::keep_freed_memory();
    presence::kafka::no_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            // presence's own events (status lines, topics created, files
            // read); librdkafka logs every refused connection, and presence
            // reports the failure that matters itself (RUST_LOG=rdkafka=warn
            // shows them).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,presence=info,librdkafka=off,rdkafka=off".into()),
        )
        .with_writer(|| Console)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = match Cli::try_parse_from(short_help_without_hostfile(std::env::args_os())) {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: error: {}", one_line(&error));
            if is_usage(&error) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `-h` is timely's hostfile in the commands that form a cluster; given
/// without a file (last, or before another flag) it asks for help, as in
/// the other commands, rather than for a missing value.
fn short_help_without_hostfile(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.collect();
    for i in 0..args.len() {
        let next_is_value = args
            .get(i + 1)
            .is_some_and(|next| !next.to_string_lossy().starts_with('-'));
        if args[i] == "-h" && !next_is_value {
            args[i] = "--help".into();
        }
        if args[i] == "--" {
            break;
        }
    }
    args
}

/// Help and the version as clap prints them; any other refusal of the
/// flags as one line on stderr, exit status 2.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    // clap's first paragraph says what is wrong (a list of missing flags
    // follows its first line); the rest is usage and tips.
    let text = error.to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let line = first.join(" ");
    eprintln!(
        "presence: error: {} (see --help)",
        line.strip_prefix("error: ").unwrap_or(&line)
    );
    ExitCode::from(2)
}

/// Whether `error` is the flags' fault (exit status 2, as clap's own
/// refusals), not a failure while working (status 1).
fn is_usage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<args::Usage>()
            || cause
                .downcast_ref::<presence::kafka::settings::SettingsError>()
                .is_some_and(presence::kafka::settings::SettingsError::is_usage)
            || cause
                .downcast_ref::<presence::service::RunError>()
                .is_some_and(presence::service::RunError::is_usage)
            || cause
                .downcast_ref::<presence::cluster::ClusterError>()
                .is_some_and(presence::cluster::ClusterError::is_usage)
            || cause
                .downcast_ref::<presence::harness::bench::BenchError>()
                .is_some_and(presence::harness::bench::BenchError::is_usage)
    })
}

/// The error and its causes on one line, each said once: error types that
/// name their cause in their own message are not followed by it again.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Handles SIGINT and SIGTERM for every command. With `graceful` (the
/// commands that stop their work and report: run, produce, demo) the first
/// sets the returned flag and a second ends the process at once; without,
/// the first ends it at once. While the cluster is still connecting the
/// first ends it at once either way (timely's connection step would not
/// notice the flag). Ending at once is status 1, with a line saying so.
fn handle_signals(graceful: bool) -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                if presence::cluster::connecting() {
                    eprintln!(
                        "presence: stopped by {name} while connecting to the other processes of the cluster"
                    );
                    std::process::exit(1);
                }
                if !graceful {
                    eprintln!("presence: stopped by {name}; the work was not finished");
                    std::process::exit(1);
                }
                if flag.swap(true, Ordering::SeqCst) {
                    eprintln!("presence: stopped at once by a second signal ({name})");
                    std::process::exit(1);
                }
                eprintln!(
                    "presence: {name}: stopping (a second Ctrl-C or SIGTERM stops at once)"
                );
            }
        })
        .context("cannot start the signal thread")?;
    Ok(stop)
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Backfill(BackfillArgs { cluster, .. })
    | Command::Run(RunArgs { cluster, .. })
    | Command::Bench(BenchArgs { cluster, .. }) = &command
    {
        cluster.exit_on_lost_process();
    }
    let graceful = matches!(
        command,
        Command::Run(_) | Command::Produce(_) | Command::Demo(_)
    );
    let stop = handle_signals(graceful)?;
    match command {
        Command::Backfill(args) => backfill_with_progress(&args.cluster, args.job()),
        Command::Demo(args) => demo(args, stop),
        Command::Bench(args) => bench(args),
        Command::Produce(args) => produce(args, stop),
        Command::Run(args) => run_service(args, stop),
        Command::Checkpoints(args) => checkpoints(args),
        Command::Generate(args) => generate(args),
        Command::Example(args) => example(args),
    }
}

fn checkpoints(args: CheckpointsArgs) -> anyhow::Result<()> {
    use presence::checkpoint::store;
    let listing = store::Store::open(&args.checkpoint_dir, &Default::default())
        .and_then(|store| store::describe(&store))
        .with_context(|| format!("cannot list {}", args.checkpoint_dir))?;
    print!("{listing}");
    Ok(())
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let written = generator::write_files(&args.workload.config(), &args.out)
        .with_context(|| format!("cannot write the workload to {}", args.out.display()))?;
    println!(
        "wrote {} probes, {} logins, {} base counts to {} in {:.1?}",
        written.records[0],
        written.records[1],
        written.records[2],
        args.out.display(),
        started.elapsed()
    );
    Ok(())
}

fn example(args: ExampleArgs) -> anyhow::Result<()> {
    let input = args.out.join("input");
    let written = generator::write_files(&args.workload.config(), &input)
        .with_context(|| format!("cannot write the workload to {}", input.display()))?;
    println!(
        "generated {} probes, {} logins and {} base counts in {}",
        written.records[0],
        written.records[1],
        written.records[2],
        input.display()
    );
    let out = args.out.join("output");
    let job = Job {
        probes: written.probes,
        logins: written.logins,
        base_counts: written.base_counts,
        out: out.clone(),
        params: Params::default(),
        ..Job::default()
    };
    backfill_with_progress(&args.cluster, job)?;
    let counts: Vec<presence::model::records::WalkinCount> =
        presence::files::output::read_collection(&out.join(Output::WalkinCounts.folder()))
            .with_context(|| format!("cannot read {}", out.display()))?;
    let mut top = counts;
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
    println!("top walk-in counts (business, contact, count):");
    for count in top.iter().take(5) {
        println!("  {} {} {}", count.business, count.contact, count.count);
    }
    println!(
        "both folders are kept; run the backfill again with: presence backfill --probes {}/probes-*.jsonl --logins {}/logins-0.jsonl --base-counts {}/base-counts.jsonl --out {}",
        input.display(),
        input.display(),
        input.display(),
        out.display()
    );
    Ok(())
}

/// Runs a backfill with a progress bar on stderr (drawn only on a terminal)
/// and prints a summary.
fn backfill_with_progress(cluster: &ClusterArgs, job: Job) -> anyhow::Result<()> {
    let config = cluster.timely_config()?;
    let (summary, elapsed) = live::backfill(config, job.clone())?;
    report(&summary, elapsed, &job);
    if let Some(warning) = summary.mostly_rejected() {
        tracing::warn!("{warning}");
    }
    Ok(())
}

fn report(summary: &Summary, elapsed: Duration, job: &Job) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} ({:.1} MiB) in {:.2} s: {:.0} records/s",
        summary.describe(),
        summary.bytes as f64 / (1 << 20) as f64,
        seconds,
        summary.lines as f64 / seconds
    );
    if let Some(total) = &summary.cluster {
        println!("cluster total: {}", total.describe());
    }
    if let Some(peak) = presence::harness::bench::peak_rss_mib() {
        println!("peak RSS {peak:.1} MiB");
    }
    if !job.parse_only {
        println!(
            "wrote {} to {} (peak window state on a worker: {} visits, {} probes; \
             held at the end: {} walk-ins of {} devices, {} counts)",
            summary
                .written
                .iter()
                .map(|(folder, n)| format!("{n} {folder}"))
                .collect::<Vec<_>>()
                .join(", "),
            job.out.display(),
            summary.peak_window_keys,
            summary.peak_window_timestamps,
            summary.held_walkins,
            summary.held_devices,
            summary.held_counts
        );
    }
}

fn run_service(args: RunArgs, shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
    let config = args.cluster.timely_config()?;
    let job = args.job()?;
    // SIGINT or SIGTERM: stop reading, flush what was read, exit 0.
    let started = Instant::now();
    let metrics = presence::observe::metrics::Metrics::default();
    if let Some(addr) = args.http_addr {
        let bound = presence::http::serve(addr, metrics.clone(), job.queries.clone())
            .with_context(|| format!("cannot serve HTTP on {addr}"))?;
        tracing::info!(%bound, "serving queries and metrics at http://{bound}/");
    }
    let status = live::watch_status(metrics.clone(), Duration::from_millis(args.status_interval));
    let result = presence::service::run(config, job, shutdown, metrics.clone());
    drop(status);
    let summary = result?;
    if let Some(warning) = summary.mostly_rejected() {
        tracing::warn!("{warning}");
    }
    let progress = metrics.read(|f| f.progress);
    println!(
        "stopped after {:.1} s: {}; wrote {} walk-ins{}",
        started.elapsed().as_secs_f64(),
        summary.describe(),
        metrics.read(|f| f.walkins_emitted),
        if progress.messages > 0 {
            format!(
                "; final progress frontier {} ({} progress messages)",
                progress.frontier, progress.messages
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

fn produce(args: ProduceArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let load = args.load()?;
    let produced = live::produce(&load, &stop, Duration::from_millis(args.status_interval))?;
    println!("{produced}");
    Ok(())
}

fn demo(args: DemoArgs, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let config = presence::cluster::ClusterArgs {
        workers: args.workers,
        ..Default::default()
    }
    .timely_config()?;
    let mut panel = Panel::stderr();
    let outcome = presence::harness::demo::run(
        Duration::from_millis(args.duration),
        args.rate,
        config,
        args.http_addr,
        &stop,
        |status| panel.show(&text::demo_panel(status)),
    )?;
    print!("{}", text::demo_summary(&outcome));
    if outcome.status.walkins == 0 {
        anyhow::bail!("the demo produced no walk-ins: something is wrong");
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let config = args.cluster.timely_config()?;
    // Where the report goes is checked before measuring for minutes.
    for (flag, path) in [("--json", &args.json), ("--csv", &args.csv)] {
        if let Some(path) = path {
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
            if folder.is_some_and(|folder| !folder.is_dir()) || path.is_dir() {
                anyhow::bail!(
                    "cannot write {flag} {}: {} is not a folder",
                    path.display(),
                    if path.is_dir() {
                        path
                    } else {
                        folder.expect("a folder")
                    }
                    .display()
                );
            }
        }
    }
    let Some(report) = presence::harness::bench::bench(config, args.config()?)? else {
        eprintln!("bench: this process ran its share of the pipeline; process 0 reports");
        return Ok(());
    };
    print!("{}", text::bench_summary(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("a report serializes");
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote the report (JSON) to {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "wrote the report (CSV: a header and one row) to {}",
            path.display()
        );
    }
    if args.json.is_none() && args.csv.is_none() {
        eprintln!("(--json FILE and --csv FILE keep the report, with its timeline and CCDF)");
    }
    Ok(())
}
