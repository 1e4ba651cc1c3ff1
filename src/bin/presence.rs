//! The `presence` command line: parses arguments and calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};
use presence::backfill::{self, Job, Progress, Summary};
use presence::cluster::ClusterArgs;
use presence::io::generator::{self, WorkloadConfig};
use presence::params::{parse_duration, Params};

/// Walk-ins, device contacts, enriched walk-ins and walk-in counts from Wi-Fi
/// probes and CRM logins, as one timely/differential dataflow.
#[derive(Parser, Debug)]
#[command(
    name = "presence",
    version,
    disable_help_flag = true,
    disable_help_subcommand = true
)]
struct Cli {
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read input files to completion and write the final collections.
    #[command(disable_help_flag = true)]
    Backfill(BackfillArgs),
    /// Write a generated, realistic multi-day workload as input files.
    #[command(disable_help_flag = true)]
    Generate(GenerateArgs),
    /// Everything in one process: a mock Kafka broker, generated shoppers, the
    /// pipeline, and live figures.
    #[command(disable_help_flag = true)]
    Demo(DemoArgs),
    /// Load generator: produce the generated workload to the input topics.
    #[command(disable_help_flag = true)]
    Produce(ProduceArgs),
    /// The streaming service: read the input topics, write the output topics.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Benchmark one point: open-loop load at a fixed rate through the
    /// pipeline; end-to-end, in-dataflow and bare-Kafka latencies.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    /// Generate a week of data into a temporary folder and backfill it.
    #[command(disable_help_flag = true)]
    Example(ExampleArgs),
}

/// The detection flags of SPEC section 2.
#[derive(Args, Debug, Clone)]
struct ParamArgs {
    /// Probes weaker than this (dBm) are ignored.
    #[arg(long, default_value_t = -75, allow_negative_numbers = true, value_name = "DBM")]
    rssi_min: i32,
    /// Probes further apart than this split a visit.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    session_gap: u64,
    /// A walk-in lasts at least this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    min_dwell: u64,
    /// A walk-in has at least this many distinct probe times.
    #[arg(long, default_value_t = 3, value_name = "N")]
    min_probes: u64,
    /// Probes more than this below their partition's newest are rejected as late.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    allowed_lateness: u64,
    /// Probes and logins more than this ahead of the wall clock are rejected as future.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    max_future: u64,
}

impl ParamArgs {
    fn params(&self) -> Params {
        Params {
            rssi_min: self.rssi_min,
            session_gap: self.session_gap,
            min_dwell: self.min_dwell,
            min_probes: self.min_probes,
            allowed_lateness: self.allowed_lateness,
            max_future: self.max_future,
        }
    }
}

#[derive(Args, Debug)]
struct BackfillArgs {
    /// Probe files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    probes: Vec<PathBuf>,
    /// Login files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    logins: Vec<PathBuf>,
    /// Base-count files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    base_counts: Vec<PathBuf>,
    /// Output folder: DIR/{walkins,device-contacts,enriched-walkins,walkin-counts,rejected}/*.jsonl.
    #[arg(long, value_name = "DIR", required_unless_present = "parse_only")]
    out: Option<PathBuf>,
    /// Only read, parse and validate (a benchmark floor): no dataflow, no output.
    #[arg(long)]
    parse_only: bool,
    #[command(flatten)]
    params: ParamArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    duration: u64,
    /// Input records produced per second (open loop).
    #[arg(long, default_value_t = 5_000, value_name = "N")]
    rate: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Offered input records per second (open loop: record i is due at start + i/rate).
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    rate: u64,
    /// How long the generator runs, warm-up included.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    duration: u64,
    /// Samples due before this are not counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    warmup: u64,
    /// After the generator stops, how long the pipeline gets to deliver.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    drain: u64,
    /// An external broker (default: librdkafka's in-process mock broker).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Prefix of every topic the bench uses (default: unique per run; every
    /// process of a -n 2+ run needs the same one).
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Distinct devices: the window operator holds one open visit per device.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    devices: u64,
    /// Businesses.
    #[arg(long, default_value_t = 50, value_name = "N")]
    businesses: u64,
    /// How long a device stays at one business before moving to another.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    visit: u64,
    /// Partitions of each topic the bench creates.
    #[arg(long, default_value_t = 4, value_name = "N")]
    partitions: i32,
    /// The generator's linger.ms (5, as the pipeline's producer: librdkafka's
    /// in-process broker scans its batches linearly per fetch, so 1 ms batches
    /// make it the bottleneck within seconds at 8000 records/s).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Skip the bare-Kafka floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Session gap (bench default: visits of seconds, not hours).
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    session_gap: u64,
    /// Minimum dwell.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    min_dwell: u64,
    /// Minimum probes per visit.
    #[arg(long, default_value_t = 3, value_name = "N")]
    min_probes: u64,
    /// Allowed lateness.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    allowed_lateness: u64,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as CSV (a header and one row) here.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Harness check: hold every output this long before writing it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    inject_delay: Option<u64>,
    /// Harness check: AFTER:LENGTH stops every worker for LENGTH once AFTER into the run.
    #[arg(long, value_name = "AFTER:LENGTH", hide = true)]
    inject_stall: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: String,
    /// Records per second, open loop (record i is due at start + i/rate); 0 for as fast as possible.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    rate: u64,
    /// Stop after this long (default: when the generated workload ends).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<u64>,
    #[command(flatten)]
    inputs: InputTopicArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
}

/// The input topics' names.
#[derive(Args, Debug)]
struct InputTopicArgs {
    /// Topic of probes.
    #[arg(long, default_value = "probes", value_name = "TOPIC")]
    probes_topic: String,
    /// Topic of logins.
    #[arg(long, default_value = "logins", value_name = "TOPIC")]
    logins_topic: String,
    /// Topic of base counts.
    #[arg(long, default_value = "base-counts", value_name = "TOPIC")]
    base_counts_topic: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: String,
    /// Stop once every input partition is read up to the end offsets seen at start.
    #[arg(long)]
    stop_at_end: bool,
    #[command(flatten)]
    inputs: InputTopicArgs,
    /// Prefix of every output topic (walkins, device-contacts, enriched-walkins,
    /// walkin-counts, presence-rejected, presence-progress).
    #[arg(long, default_value = "", value_name = "PREFIX")]
    output_prefix: String,
    /// How long to wait for the brokers before giving up.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    connect_timeout: u64,
    /// A probe partition silent this long stops holding back the freeing of
    /// window state; its later probes below what was freed are late.
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION")]
    idle_timeout: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Partitions of the output topics run creates when they are missing.
    #[arg(long, default_value_t = 4, value_name = "N")]
    output_partitions: i32,
    #[command(flatten)]
    params: ParamArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct WorkloadArgs {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of data.
    #[arg(long, default_value_t = 7)]
    days: u64,
    /// Number of stores.
    #[arg(long, default_value_t = 40)]
    businesses: u64,
    /// Number of phones.
    #[arg(long, default_value_t = 20_000)]
    devices: u64,
    /// Probe files to spread the stores over.
    #[arg(long, default_value_t = 4)]
    probe_files: u64,
}

impl WorkloadArgs {
    fn config(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            days: self.days,
            businesses: self.businesses.max(1),
            devices: self.devices,
            probe_partitions: self.probe_files.max(1),
            ..WorkloadConfig::default()
        }
    }
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Folder to write probes-*.jsonl, logins-0.jsonl and base-counts.jsonl into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    workload: WorkloadArgs,
}

#[derive(Args, Debug)]
struct ExampleArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// glibc's allocator spends a third of a backfill's time freeing the
/// records that workers allocate and free in large batches; mimalloc's
/// per-thread free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // librdkafka logs every refused connection; presence reports the
            // failure that matters itself (RUST_LOG=rdkafka=warn shows them).
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,librdkafka=off,rdkafka=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Backfill(args) => {
            let job = Job {
                probes: args.probes,
                logins: args.logins,
                base_counts: args.base_counts,
                out: args.out.unwrap_or_default(),
                params: args.params.params(),
                parse_only: args.parse_only,
            };
            backfill_with_progress(&args.cluster, job)
        }
        Command::Demo(args) => {
            let config = args.cluster.timely_config()?;
            let terminal = std::io::stderr().is_terminal();
            let mut lines_shown = 0;
            let status = presence::demo::run(
                Duration::from_millis(args.duration),
                args.rate,
                config,
                |status| {
                    let text = demo_status(status);
                    if terminal && lines_shown > 0 {
                        eprint!("\x1b[{lines_shown}A\x1b[J"); // redraw in place
                    }
                    eprint!("{text}");
                    lines_shown = text.lines().count();
                },
            )?;
            if status.walkins == 0 {
                anyhow::bail!("the demo produced no walk-ins: something is wrong");
            }
            Ok(())
        }
        Command::Bench(args) => {
            let config = args.cluster.timely_config()?;
            let ms = Duration::from_millis;
            let stall = match &args.inject_stall {
                None => None,
                Some(text) => {
                    let (after, length) = text
                        .split_once(':')
                        .context("--inject-stall takes AFTER:LENGTH, e.g. 5s:1s")?;
                    Some((ms(parse_duration(after)?), ms(parse_duration(length)?)))
                }
            };
            let bench = presence::bench::BenchConfig {
                rate: args.rate,
                duration: ms(args.duration),
                warmup: ms(args.warmup),
                drain: ms(args.drain),
                brokers: args.brokers,
                prefix: args.prefix,
                devices: args.devices,
                businesses: args.businesses,
                visit: ms(args.visit),
                partitions: args.partitions.max(1),
                linger_ms: args.linger_ms,
                params: Params {
                    session_gap: args.session_gap,
                    min_dwell: args.min_dwell,
                    min_probes: args.min_probes,
                    allowed_lateness: args.allowed_lateness,
                    ..Params::default()
                },
                floor: !args.no_floor,
                delay_outputs: ms(args.inject_delay.unwrap_or(0)),
                stall,
                workers: args.cluster.workers,
                processes: args.cluster.processes,
                process: args.cluster.process,
            };
            let Some(report) = presence::bench::bench(config, bench)? else {
                return Ok(()); // not process 0: no report
            };
            eprint!("{}", bench_summary(&report));
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report).expect("a report serializes");
                std::fs::write(path, text + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if let Some(path) = &args.csv {
                std::fs::write(path, report.csv())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Command::Produce(args) => {
            let load = presence::io::load::Load {
                brokers: args.brokers,
                topics: [
                    args.inputs.probes_topic,
                    args.inputs.logins_topic,
                    args.inputs.base_counts_topic,
                ],
                rate: (args.rate > 0).then_some(args.rate),
                duration: args.duration.map(Duration::from_millis),
                workload: args.workload.config(),
            };
            let (stop, produced) = (
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
                std::sync::atomic::AtomicU64::new(0),
            );
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("cannot install signal handlers")?;
            }
            let started = Instant::now();
            presence::io::load::produce(&load, &stop, &produced)?;
            let n = produced.load(Ordering::Relaxed);
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "produced {n} records in {seconds:.2} s ({:.0} records/s)",
                n as f64 / seconds.max(1e-9)
            );
            Ok(())
        }
        Command::Run(args) => {
            let config = args.cluster.timely_config()?;
            let prefix = &args.output_prefix;
            let topics = presence::run::Topics {
                probes: args.inputs.probes_topic,
                logins: args.inputs.logins_topic,
                base_counts: args.inputs.base_counts_topic,
                ..presence::run::Topics::with_output_prefix(prefix)
            };
            let job = presence::run::RunJob {
                brokers: args.brokers,
                topics,
                params: args.params.params(),
                stop_at_end: args.stop_at_end,
                connect_timeout: Duration::from_millis(args.connect_timeout),
                output_partitions: args.output_partitions.max(1),
                idle_timeout: Duration::from_millis(args.idle_timeout),
                instrument: Default::default(),
            };
            // SIGINT or SIGTERM: stop reading, flush what was read, exit 0.
            let shutdown = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, Arc::clone(&shutdown))
                    .context("cannot install signal handlers")?;
            }
            let started = Instant::now();
            let metrics = presence::metrics::Metrics::default();
            if let Some(addr) = args.metrics_addr {
                let bound = metrics
                    .serve(addr)
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                eprintln!("metrics at http://{bound}/metrics");
            }
            let summary = presence::run::run(config, job.clone(), shutdown, metrics)?;
            let elapsed = started.elapsed();
            eprintln!(
                "read {} messages in {:.2} s; accepted {} probes, {} logins, {} base counts; rejected {}",
                summary.lines,
                elapsed.as_secs_f64(),
                summary.accepted[0],
                summary.accepted[1],
                summary.accepted[2],
                backfill::reasons()
                    .map(|reason| format!("{} {reason}", summary.rejected.get(reason).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Generate(args) => {
            let started = Instant::now();
            let written = generator::write_files(&args.workload.config(), &args.out)
                .with_context(|| format!("cannot write the workload to {}", args.out.display()))?;
            eprintln!(
                "wrote {} probes, {} logins, {} base counts to {} in {:.1?}",
                written.records[0],
                written.records[1],
                written.records[2],
                args.out.display(),
                started.elapsed()
            );
            Ok(())
        }
        Command::Example(args) => {
            let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
            let written =
                generator::write_files(&args.workload.config(), &dir.path().join("input"))
                    .context("cannot write the generated workload")?;
            eprintln!(
                "generated {} probes, {} logins and {} base counts in {}",
                written.records[0],
                written.records[1],
                written.records[2],
                dir.path().join("input").display()
            );
            let out = dir.path().join("output");
            let job = Job {
                probes: written.probes,
                logins: written.logins,
                base_counts: written.base_counts,
                out: out.clone(),
                params: Params::default(),
                parse_only: false,
            };
            backfill_with_progress(&args.cluster, job)?;
            let counts: Vec<presence::records::WalkinCount> =
                presence::io::output::read_collection(&out.join("walkin-counts"))?;
            let mut top = counts;
            top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
            eprintln!("top walk-in counts (business, contact, count):");
            for count in top.iter().take(5) {
                eprintln!("  {} {} {}", count.business, count.contact, count.count);
            }
            Ok(())
        }
    }
}

/// Runs a backfill with a progress bar on stderr (drawn only on a terminal)
/// and prints a summary.
fn backfill_with_progress(cluster: &ClusterArgs, job: Job) -> anyhow::Result<()> {
    let config = cluster.timely_config()?;
    let (_, bytes) = backfill::inputs(&job)?;
    let progress = Arc::new(Progress::default());
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    // Dropping `done` ends the painter at once, not at its next tick.
    let (done, ticks) = std::sync::mpsc::channel::<()>();
    let painter = {
        let (bar, progress) = (bar.clone(), Arc::clone(&progress));
        std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) =
                ticks.recv_timeout(Duration::from_millis(200))
            {
                let lines = progress.lines.load(Ordering::Relaxed);
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                let rate = lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{lines} records, {rate:.0} records/s"));
            }
        })
    };
    let result = backfill::run(config, job.clone(), progress);
    let elapsed = started.elapsed();
    drop(done);
    painter.join().expect("the progress thread does not panic");
    bar.finish_and_clear();
    let summary = result?;
    report(&summary, elapsed, &job);
    Ok(())
}

fn report(summary: &Summary, elapsed: Duration, job: &Job) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "read {} records ({:.1} MiB) in {:.2} s: {:.0} records/s",
        summary.lines,
        summary.bytes as f64 / (1 << 20) as f64,
        seconds,
        summary.lines as f64 / seconds
    );
    eprintln!(
        "accepted {} probes, {} logins, {} base counts; rejected {}",
        summary.accepted[0],
        summary.accepted[1],
        summary.accepted[2],
        backfill::reasons()
            .map(|reason| format!(
                "{} {reason}",
                summary.rejected.get(reason).copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(peak) = presence::bench::peak_rss_mib() {
        eprintln!("peak RSS {peak:.1} MiB");
    }
    if !job.parse_only {
        eprintln!(
            "wrote {} to {} (peak window state on a worker: {} visits, {} probes)",
            summary
                .written
                .iter()
                .map(|(folder, n)| format!("{n} {folder}"))
                .collect::<Vec<_>>()
                .join(", "),
            job.out.display(),
            summary.peak_window_keys,
            summary.peak_window_timestamps
        );
    }
}

/// The demo's figures, a few lines of text.
fn demo_status(status: &presence::demo::Status) -> String {
    let seconds = status.elapsed.as_secs_f64().max(1e-3);
    let latency = &status.latency;
    let mut text = format!(
        "presence demo  {:>5.1} s  input {} records ({:.0}/s)\n",
        seconds,
        status.produced,
        status.produced as f64 / seconds
    );
    text += &format!("walk-ins {}\n", status.walkins);
    text += &format!(
        "latency ingest -> walk-in readable (ms): p50 {} p90 {} p99 {} max {} (n={})\n",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.9),
        latency.value_at_quantile(0.99),
        latency.max(),
        latency.len()
    );
    let rejected: Vec<String> = status
        .rejected
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    text += &format!(
        "rejected {}\n",
        if rejected.is_empty() {
            "none".to_owned()
        } else {
            rejected.join(", ")
        }
    );
    text += "top walk-in counts:\n";
    for (business, contact, count) in &status.top_counts {
        text += &format!("  {count:>4}  {business}  {contact}\n");
    }
    text
}

/// The report of `presence bench`, as a table for a terminal.
fn bench_summary(report: &presence::bench::Report) -> String {
    let mut text = format!(
        "offered {}/s, achieved {:.0}/s, lag at end {}, {}\n{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        report.rate_offered,
        report.rate_achieved,
        report.lag_end,
        if report.sustainable { "sustainable" } else { "NOT sustainable" },
        "latency ms", "p50", "p90", "p99", "p99.9", "max", "samples"
    );
    for (name, l) in &report.latency_ms {
        text.push_str(&format!(
            "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        ));
    }
    text
}
