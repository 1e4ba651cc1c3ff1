//! The `presence` command line: parses arguments, sets up logging and the
//! terminal, and calls the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};
use presence::backfill::{self, Job, Progress};
use presence::cluster::ClusterArgs;
use presence::harness::generator::{self, LiveConfig, WorkloadConfig};
use presence::model::params::{
    parse_at_least_one, parse_duration, parse_positive_duration, parse_topics, Params,
};
use presence::model::summary::Summary;

/// Walk-ins, device contacts, enriched walk-ins and walk-in counts from Wi-Fi
/// probes and CRM logins, as one timely/differential dataflow.
///
/// Start with `presence demo` (nothing to install). Each command's --help
/// lists its flags; the contract is in docs/ of the repository.
#[derive(Parser, Debug)]
#[command(
    name = "presence",
    version,
    disable_help_flag = true,
    disable_help_subcommand = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    /// Print help (only here: in a command, -h is timely's hostfile).
    #[arg(short = 'h', action = ArgAction::Help, hide = true)]
    short_help: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read input files to completion and write the final collections.
    #[command(
        disable_help_flag = true,
        override_usage = "presence backfill --probes FILE... [--logins FILE...] [--base-counts FILE...] --out DIR [OPTIONS]"
    )]
    Backfill(BackfillArgs),
    /// Write a generated, realistic multi-day workload as input files.
    #[command(disable_help_flag = true)]
    Generate(GenerateArgs),
    /// Everything in one process: a mock Kafka broker, shoppers arriving
    /// now, the pipeline, and live figures.
    #[command(disable_help_flag = true)]
    Demo(DemoArgs),
    /// Load generator: produce a generated workload to the input topics.
    #[command(disable_help_flag = true)]
    Produce(ProduceArgs),
    /// The streaming service: read the input topics, write the output topics.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Benchmark one point: open-loop load at a fixed rate through the
    /// pipeline; end-to-end, in-dataflow and bare-Kafka latencies.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    /// Generate a week of data into a folder and backfill it there.
    #[command(disable_help_flag = true)]
    Example(ExampleArgs),
    /// List the checkpoints in a checkpoint folder.
    #[command(disable_help_flag = true)]
    Checkpoints(CheckpointsArgs),
}

#[derive(Args, Debug)]
struct CheckpointsArgs {
    /// The checkpoint folder (as given to run or backfill).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: PathBuf,
}

/// The detection flags of docs/contract.md, section 2.
#[derive(Args, Debug, Clone)]
struct ParamArgs {
    /// Probes weaker than this (dBm, -128 to 0) are ignored.
    #[arg(long, default_value_t = -75, allow_negative_numbers = true, value_name = "DBM",
          value_parser = clap::value_parser!(i32).range(-128..=0))]
    rssi_min: i32,
    /// Probes further apart than this split a visit.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    session_gap: u64,
    /// A walk-in lasts at least this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    min_dwell: u64,
    /// A walk-in has at least this many distinct probe times (at least 1).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = parse_at_least_one)]
    min_probes: u64,
    /// Probes more than this below their partition's newest are rejected as late.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    allowed_lateness: u64,
    /// Probes and logins more than this ahead of the wall clock are rejected as future.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
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
    /// Output folder (required): DIR/{walkins,device-contacts,enriched-walkins,walkin-counts,rejected}/*.jsonl.
    #[arg(long, value_name = "DIR", required_unless_present = "parse_only")]
    out: Option<PathBuf>,
    /// Only read, parse and validate (a benchmark floor): no dataflow, no output.
    #[arg(long)]
    parse_only: bool,
    /// Also write the final state as a checkpoint in DIR, for `presence run
    /// --checkpoint-dir DIR` to continue from (load history once, then go live).
    #[arg(long, value_name = "DIR", conflicts_with = "parse_only")]
    checkpoint_dir: Option<PathBuf>,
    /// In a cluster (-n), how long another process may show no sign of life
    /// before this one stops (heartbeats over UDP on the hostfile ports).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    connect_timeout: u64,
    /// Test hook: sleep this long before writing each piece of the final checkpoint.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true,
          requires = "checkpoint_dir")]
    inject_checkpoint_delay: Option<u64>,
    #[command(flatten)]
    params: ParamArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// How long to run (Ctrl-C ends it sooner, with the same summary).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    duration: u64,
    /// Input records produced per second (open loop).
    #[arg(long, default_value_t = 5_000, value_name = "N", value_parser = parse_at_least_one)]
    rate: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Offered input records per second (open loop: record i is due at start + i/rate).
    #[arg(long, default_value_t = 2_000, value_name = "N", value_parser = parse_at_least_one)]
    rate: u64,
    /// How long the generator runs, warm-up included.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    duration: u64,
    /// Samples due before this are not counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    warmup: u64,
    /// After the generator stops, how long the pipeline gets to deliver.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    drain: u64,
    /// An external broker (default: librdkafka's in-process mock broker).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: Option<String>,
    /// Prefix of every topic the bench uses (default: unique per run; every
    /// process of a -n 2+ run needs the same one).
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Distinct devices: the window operator holds one open visit per device.
    #[arg(long, default_value_t = 2_000, value_name = "N", value_parser = parse_at_least_one)]
    devices: u64,
    /// Businesses.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = parse_at_least_one)]
    businesses: u64,
    /// How long a device stays at one business before moving to another.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, value_name = "DURATION")]
    visit: u64,
    /// Partitions of each topic the bench creates.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
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
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    session_gap: u64,
    /// Minimum dwell.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    min_dwell: u64,
    /// Minimum probes per visit (at least 1).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = parse_at_least_one)]
    min_probes: u64,
    /// Allowed lateness.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    allowed_lateness: u64,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the report as CSV (a header and one row) here.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Checkpoint the pipeline's state in DIR (emptied first), to measure
    /// what checkpoints cost.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// The checkpoint interval with --checkpoint-dir.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    checkpoint_interval: u64,
    /// Harness check: hold every output this long before writing it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    inject_delay: Option<u64>,
    /// Harness check: AFTER:LENGTH stops every worker for LENGTH once AFTER into the load's schedule.
    #[arg(long, value_name = "AFTER:LENGTH", hide = true)]
    inject_stall: Option<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT")]
    brokers: String,
    /// Records per second, open loop (record i is due at start + i/rate); 0
    /// for as fast as possible (not with --live).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    rate: u64,
    /// Stop after this long (default: when the historical workload ends;
    /// with --live, at Ctrl-C).
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    duration: Option<u64>,
    /// Shoppers arriving now: every record is stamped with the wall-clock
    /// time it is due, phones stay --visit at a store. Without it, produce
    /// writes the generated historical week (from 2026-01-01, --days long)
    /// as fast as --rate allows, event times and all.
    #[arg(long)]
    live: bool,
    /// With --live: how long a phone stays at one store.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration, value_name = "DURATION")]
    visit: u64,
    /// How often to log progress when stderr is not a terminal.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    status_interval: u64,
    #[command(flatten)]
    inputs: InputTopicArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
}

/// Kafka client settings, for every client presence creates.
#[derive(Args, Debug)]
struct KafkaArgs {
    /// Client settings from a Java properties file (as Kafka's tools read
    /// with --command-config: key=value lines, # and ! comments), e.g.
    /// security.protocol, ssl.ca.location, sasl.mechanism, sasl.username.
    #[arg(long, value_name = "FILE")]
    kafka_config: Option<PathBuf>,
    /// A librdkafka client setting, over --kafka-config (repeatable; the
    /// later wins). Settings presence's guarantees rest on are refused.
    #[arg(short = 'X', value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    kafka_setting: Vec<String>,
}

impl KafkaArgs {
    /// The brokers with these settings (checked before any work).
    fn connection(&self, brokers: String) -> anyhow::Result<presence::kafka::Connection> {
        Ok(presence::kafka::Connection {
            settings: presence::kafka::settings::ClientSettings::load(
                self.kafka_config.as_deref(),
                &self.kafka_setting,
            )?,
            ..presence::kafka::Connection::new(brokers)
        })
    }
}

/// The input topics' names.
#[derive(Args, Debug)]
struct InputTopicArgs {
    /// Topic of probes (run: a comma-separated list reads each partition of
    /// each as its own, e.g. probes,probes-backfill).
    #[arg(long, default_value = "probes", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
    probes_topic: String,
    /// Topic of logins (run: a comma-separated list, as for probes).
    #[arg(long, default_value = "logins", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
    logins_topic: String,
    /// Topic of base counts (run: a comma-separated list, as for probes).
    #[arg(long, default_value = "base-counts", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
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
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The consumer group presence commits its offsets to after each
    /// checkpoint (or progress frontier without --checkpoint-dir), for lag
    /// tools; never joined, and never read back to decide where to start.
    #[arg(long, default_value = presence::kafka::GROUP_ID, value_name = "GROUP")]
    group_id: String,
    /// Prefix of every output topic (walkins, device-contacts, enriched-walkins,
    /// walkin-counts, presence-rejected, presence-progress).
    #[arg(long, default_value = "", value_name = "PREFIX")]
    output_prefix: String,
    /// How long to wait for the brokers before giving up; in a cluster, also
    /// how long another process may show no sign of life before this one
    /// stops (heartbeats over UDP on the hostfile ports).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    connect_timeout: u64,
    /// A caught-up probe partition silent this long is idle: it promises the
    /// wall clock minus --allowed-lateness, so window state is still freed;
    /// a probe it delivers later below that promise is late (0: idle as soon
    /// as it is caught up and silent).
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    idle_timeout: u64,
    /// At most one progress message per this interval while outputs change
    /// (one a second, or per this interval if longer, while they do not).
    #[arg(long, default_value = "100ms", value_parser = parse_positive_duration, value_name = "DURATION")]
    progress_interval: u64,
    /// How often to log a status line (and on a terminal, a live line is
    /// redrawn every second).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    status_interval: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, and /health and
    /// /ready for orchestrators (off by default).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// /ready answers 200 once the state is restored and this process's
    /// consumer lag is below this many records.
    #[arg(long, default_value_t = presence::service::READY_LAG as u64, value_name = "RECORDS", value_parser = parse_at_least_one)]
    ready_lag: u64,
    /// Partitions of the output topics run creates when they are missing.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    output_partitions: i32,
    /// Keep the state durable in DIR (every process of a cluster names the
    /// same): checkpoint it, and on start restore the newest complete
    /// checkpoint and resume the inputs at its offsets.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// A checkpoint every this much logical time (and one at a clean stop).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION",
          requires = "checkpoint_dir")]
    checkpoint_interval: u64,
    /// Discard the checkpoints in --checkpoint-dir and start from the
    /// earliest offsets.
    #[arg(long, requires = "checkpoint_dir")]
    reset_state: bool,
    /// Test hook: sleep this long before making each checkpoint piece durable.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    inject_checkpoint_delay: Option<u64>,
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
    /// Days of data (historical workload).
    #[arg(long, default_value_t = 7, value_parser = parse_at_least_one)]
    days: u64,
    /// Number of stores.
    #[arg(long, default_value_t = 40, value_parser = parse_at_least_one)]
    businesses: u64,
    /// Number of phones.
    #[arg(long, default_value_t = 20_000, value_parser = parse_at_least_one)]
    devices: u64,
    /// Probe files (or probe partitions) to spread the stores over.
    #[arg(long, default_value_t = 4, value_parser = parse_at_least_one)]
    probe_files: u64,
}

impl WorkloadArgs {
    fn config(&self) -> WorkloadConfig {
        WorkloadConfig {
            seed: self.seed,
            days: self.days,
            businesses: self.businesses,
            devices: self.devices,
            probe_partitions: self.probe_files,
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
    /// Folder for the example: DIR/input (the generated files) and DIR/output
    /// (what backfill wrote); both are kept.
    #[arg(long, default_value = "presence-example", value_name = "DIR")]
    out: PathBuf,
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

/// The line drawn in place on a terminal (a progress bar or a live status),
/// if any: log lines are written above it.
static LIVE: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Writes log lines to stderr above the live line, if one is drawn.
struct Console;

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let live = LIVE.lock().expect("no panics holding the console").clone();
        match live {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A line redrawn in place on stderr, when stderr is a terminal.
fn live_line(template: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    *LIVE.lock().expect("no panics holding the console") = Some(bar.clone());
    Some(bar)
}

/// Clears the live line.
fn end_live(bar: Option<indicatif::ProgressBar>) {
    if let Some(bar) = bar {
        bar.finish_and_clear();
        *LIVE.lock().expect("no panics holding the console") = None;
    }
}

fn main() -> ExitCode {
    presence::kafka::keep_freed_memory();
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
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("presence: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
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

/// Installs SIGINT and SIGTERM handlers that set the returned flag.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    Ok(stop)
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Command::Backfill(BackfillArgs { cluster, .. })
    | Command::Run(RunArgs { cluster, .. })
    | Command::Bench(BenchArgs { cluster, .. }) = &command
    {
        cluster.exit_on_lost_process();
    }
    match command {
        Command::Backfill(args) => {
            let job = Job {
                probes: args.probes,
                logins: args.logins,
                base_counts: args.base_counts,
                out: args.out.unwrap_or_default(),
                params: args.params.params(),
                parse_only: args.parse_only,
                checkpoint_dir: args.checkpoint_dir,
                connect_timeout: Duration::from_millis(args.connect_timeout),
                checkpoint_write_delay: Duration::from_millis(
                    args.inject_checkpoint_delay.unwrap_or(0),
                ),
            };
            backfill_with_progress(&args.cluster, job)?;
            Ok(())
        }
        Command::Demo(args) => demo(args),
        Command::Bench(args) => bench(args),
        Command::Produce(args) => produce(args),
        Command::Run(args) => run_service(args),
        Command::Checkpoints(args) => {
            let listing = presence::checkpoint::store::describe(&args.checkpoint_dir)
                .with_context(|| format!("cannot list {}", args.checkpoint_dir.display()))?;
            print!("{listing}");
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
            let input = args.out.join("input");
            let written = generator::write_files(&args.workload.config(), &input)
                .with_context(|| format!("cannot write the workload to {}", input.display()))?;
            eprintln!(
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
                presence::files::output::read_collection(&out.join("walkin-counts"))
                    .with_context(|| format!("cannot read {}", out.display()))?;
            let mut top = counts;
            top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cmp(b)));
            eprintln!("top walk-in counts (business, contact, count):");
            for count in top.iter().take(5) {
                eprintln!("  {} {} {}", count.business, count.contact, count.count);
            }
            eprintln!(
                "both folders are kept; run the backfill again with: presence backfill --probes {}/probes-*.jsonl --logins {}/logins-0.jsonl --base-counts {}/base-counts.jsonl --out {}",
                input.display(),
                input.display(),
                input.display(),
                out.display()
            );
            Ok(())
        }
    }
}

fn run_service(args: RunArgs) -> anyhow::Result<()> {
    let config = args.cluster.timely_config()?;
    let kafka = presence::kafka::Connection {
        group_id: args.group_id.clone(),
        ..args.kafka.connection(args.brokers.clone())?
    };
    let prefix = &args.output_prefix;
    let topics = presence::service::Topics {
        probes: args.inputs.probes_topic,
        logins: args.inputs.logins_topic,
        base_counts: args.inputs.base_counts_topic,
        ..presence::service::Topics::with_output_prefix(prefix)
    };
    let job = presence::service::RunJob {
        params: args.params.params(),
        stop_at_end: args.stop_at_end,
        connect_timeout: Duration::from_millis(args.connect_timeout),
        output_partitions: args.output_partitions,
        idle_timeout: Duration::from_millis(args.idle_timeout),
        progress_interval: Duration::from_millis(args.progress_interval),
        ready_lag: args.ready_lag.min(i64::MAX as u64) as i64,
        checkpoint: args
            .checkpoint_dir
            .map(|dir| presence::service::CheckpointSettings {
                dir,
                interval: Duration::from_millis(args.checkpoint_interval),
                reset: args.reset_state,
            }),
        instrument: presence::service::Instrument {
            checkpoint_write_delay: Duration::from_millis(
                args.inject_checkpoint_delay.unwrap_or(0),
            ),
            ..Default::default()
        },
        ..presence::service::RunJob::new(kafka, topics)
    };
    // SIGINT or SIGTERM: stop reading, flush what was read, exit 0.
    let shutdown = stop_on_signals()?;
    let started = Instant::now();
    let metrics = presence::observe::metrics::Metrics::default();
    if let Some(addr) = args.metrics_addr {
        let bound = metrics
            .serve(addr)
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(%bound, "serving metrics at http://{bound}/metrics");
    }
    let status = watch_status(metrics.clone(), Duration::from_millis(args.status_interval));
    let result = presence::service::run(config, job, shutdown, metrics.clone());
    drop(status);
    let summary = result?;
    let progress = metrics.read(|f| f.progress);
    eprintln!(
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

/// A thread that reports the service's status: a structured log line every
/// `interval`, and on a terminal a line redrawn every second. It stops when
/// the returned handle is dropped.
fn watch_status(metrics: presence::observe::metrics::Metrics, interval: Duration) -> StatusWatch {
    let (done, ticks) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let bar = live_line("{spinner} {elapsed} {msg}");
        let mut log = presence::observe::status::Sampler::new(metrics.clone());
        let mut live = presence::observe::status::Sampler::new(metrics);
        let tick = if bar.is_some() {
            interval.min(Duration::from_secs(1))
        } else {
            interval
        };
        let mut next_log = Instant::now() + interval;
        while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(tick) {
            if let Some(bar) = &bar {
                bar.set_message(live.sample().to_string());
                bar.tick();
            }
            if Instant::now() >= next_log {
                log.sample().log();
                next_log += interval;
            }
        }
        end_live(bar);
    });
    StatusWatch {
        done: Some(done),
        thread: Some(thread),
    }
}

/// Stops the status thread when dropped.
struct StatusWatch {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if args.live && args.rate == 0 {
        anyhow::bail!("--live needs a rate: records are stamped with the time they are due, so --rate 0 (as fast as possible) means nothing");
    }
    let records = if args.live {
        presence::harness::load::Records::Live(LiveConfig {
            seed: args.workload.seed,
            devices: args.workload.devices,
            businesses: args.workload.businesses,
            visit_ms: args.visit,
            probe_partitions: args.workload.probe_files,
            ..LiveConfig::default()
        })
    } else {
        presence::harness::load::Records::Historical(args.workload.config())
    };
    for (flag, list) in [
        ("probes", &args.inputs.probes_topic),
        ("logins", &args.inputs.logins_topic),
        ("base-counts", &args.inputs.base_counts_topic),
    ] {
        if list.contains(',') {
            anyhow::bail!("--{flag}-topic {list}: produce writes one topic per kind");
        }
    }
    let load = presence::harness::load::Load {
        kafka: args.kafka.connection(args.brokers.clone())?,
        topics: [
            args.inputs.probes_topic,
            args.inputs.logins_topic,
            args.inputs.base_counts_topic,
        ],
        rate: (args.rate > 0).then_some(args.rate),
        duration: args.duration.map(Duration::from_millis),
        records,
    };
    let stop = stop_on_signals()?;
    let produced = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_millis(args.status_interval);
    let (done, ticks) = std::sync::mpsc::channel::<()>();
    let painter = {
        let produced = Arc::clone(&produced);
        std::thread::spawn(move || {
            let bar = live_line("{spinner} {elapsed} {msg}");
            let tick = if bar.is_some() {
                Duration::from_secs(1)
            } else {
                interval
            };
            let mut previous = (Instant::now(), 0);
            while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(tick) {
                let n = produced.load(Ordering::Relaxed);
                let rate = (n - previous.1) as f64 / previous.0.elapsed().as_secs_f64().max(1e-3);
                previous = (Instant::now(), n);
                match &bar {
                    Some(bar) => bar.set_message(format!("produced {n} records, {rate:.0}/s")),
                    None => tracing::info!(
                        target: "presence::produce",
                        produced = n,
                        records_per_second = rate.round() as u64,
                        "producing"
                    ),
                }
            }
            end_live(bar);
        })
    };
    let result = presence::harness::load::produce(&load, &stop, &produced);
    drop(done);
    painter.join().expect("the progress thread does not panic");
    result?;
    let n = produced.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {n} records in {seconds:.2} s ({:.0} records/s){}",
        n as f64 / seconds.max(1e-9),
        if stop.load(Ordering::Relaxed) {
            "; stopped by a signal"
        } else {
            ""
        }
    );
    Ok(())
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let config = args.cluster.timely_config()?;
    let stop = stop_on_signals()?;
    let terminal = std::io::stderr().is_terminal();
    let mut lines_shown = 0;
    let outcome = presence::harness::demo::run(
        Duration::from_millis(args.duration),
        args.rate,
        config,
        &stop,
        |status| {
            let text = demo_panel(status);
            if terminal && lines_shown > 0 {
                eprint!("\x1b[{lines_shown}A\x1b[J"); // redraw in place
            }
            eprint!("{text}");
            lines_shown = text.lines().count();
        },
    )?;
    eprint!("{}", demo_summary(&outcome));
    if outcome.status.walkins == 0 {
        anyhow::bail!("the demo produced no walk-ins: something is wrong");
    }
    Ok(())
}

/// The demo's live panel, a few lines of text.
fn demo_panel(status: &presence::harness::demo::Status) -> String {
    let seconds = status.elapsed.as_secs_f64().max(1e-3);
    let mut text = format!(
        "presence demo  {:>5.1} s  input {} records ({:.0}/s)  (Ctrl-C ends it)\n",
        seconds,
        status.produced,
        status.produced as f64 / seconds
    );
    text += &format!("phones in stores now (open visits): {}\n", status.in_stores);
    text += &format!(
        "walk-ins {}, in the last minute {}; busiest stores in the last minute:\n",
        status.walkins,
        status.recent_total()
    );
    let most = status.recent.first().map_or(1, |(_, n)| (*n).max(1));
    for (store, n) in status.recent.iter().take(6) {
        let bar = "#".repeat((n * 30 / most) as usize);
        text += &format!("  {store:<12} {n:>6} {bar}\n");
    }
    text += &latency_line(&status.latency);
    text += &format!("rejected {}\n", rejected_text(&status.rejected));
    text
}

fn latency_line(latency: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "latency ingest -> walk-in readable (ms): p50 {} p90 {} p99 {} max {} (n={})\n",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.9),
        latency.value_at_quantile(0.99),
        latency.max(),
        latency.len()
    )
}

fn rejected_text(rejected: &std::collections::BTreeMap<String, u64>) -> String {
    if rejected.is_empty() {
        return "none".to_owned();
    }
    rejected
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the demo did, once it ends.
fn demo_summary(outcome: &presence::harness::demo::Outcome) -> String {
    let status = &outcome.status;
    let seconds = status.elapsed.as_secs_f64().max(1e-3);
    let mut text = format!(
        "\ndemo summary: {} after {:.1} s\n",
        if outcome.interrupted {
            "stopped by Ctrl-C"
        } else {
            "finished"
        },
        seconds
    );
    text += &format!(
        "  produced {} records ({:.0}/s); the pipeline {}\n",
        status.produced,
        status.produced as f64 / seconds,
        outcome.pipeline.describe()
    );
    text += &format!(
        "  walk-ins {} ({} in the last minute, at {} stores)\n",
        status.walkins,
        status.recent_total(),
        status.recent.len()
    );
    text += &format!("  {}", latency_line(&status.latency));
    text
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
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
    let bench = presence::harness::bench::BenchConfig {
        rate: args.rate,
        duration: ms(args.duration),
        warmup: ms(args.warmup),
        drain: ms(args.drain),
        kafka_settings: presence::kafka::settings::ClientSettings::load(
            args.kafka.kafka_config.as_deref(),
            &args.kafka.kafka_setting,
        )?,
        brokers: args.brokers,
        prefix: args.prefix,
        devices: args.devices,
        businesses: args.businesses,
        visit: ms(args.visit),
        partitions: args.partitions,
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
        checkpoint_dir: args.checkpoint_dir,
        checkpoint_interval: ms(args.checkpoint_interval),
    };
    let Some(report) = presence::harness::bench::bench(config, bench)? else {
        eprintln!("bench: this process ran its share of the pipeline; process 0 reports");
        return Ok(());
    };
    eprint!("{}", bench_summary(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("a report serializes");
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote the report (JSON) to {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "wrote the report (CSV: a header and one row) to {}",
            path.display()
        );
    }
    if args.json.is_none() && args.csv.is_none() {
        eprintln!("(--json FILE and --csv FILE keep the report, with its timeline and CCDF)");
    }
    Ok(())
}

/// The report of `presence bench`, as a table for a terminal, with what
/// each row measures.
fn bench_summary(report: &presence::harness::bench::Report) -> String {
    let mut text = format!(
        "offered {}/s, achieved {:.0}/s, lag at end {}, {} (commit {})\n{:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        report.rate_offered,
        report.rate_achieved,
        report.lag_end,
        if report.sustainable { "sustainable" } else { "NOT sustainable" },
        report.commit,
        "latency ms", "p50", "p90", "p99", "p99.9", "max", "samples"
    );
    for (name, l) in &report.latency_ms {
        text.push_str(&format!(
            "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        ));
    }
    if let Some(c) = &report.checkpoints {
        text.push_str(&format!(
            "checkpoints: {} completed, {} failed, {:.0} bytes written per checkpoint, last {} bytes\n",
            c["completed"], c["failures"], c["bytes_per_checkpoint"].as_f64().unwrap_or(0.0), c["last_size_bytes"]
        ));
    }
    text.push_str("where:\n");
    for (name, meaning) in presence::harness::bench::LATENCIES {
        if report.latency_ms.contains_key(name) {
            text.push_str(&format!("  {name:<12} {meaning}\n"));
        }
    }
    text
}

/// Runs a backfill with a progress bar on stderr (drawn only on a terminal)
/// and prints a summary.
fn backfill_with_progress(cluster: &ClusterArgs, job: Job) -> anyhow::Result<Summary> {
    let config = cluster.timely_config()?;
    let (_, bytes) = backfill::inputs(&job)?;
    let progress = Arc::new(Progress::default());
    let bar = live_line("{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg}");
    if let Some(bar) = &bar {
        bar.set_length(bytes);
    }
    let started = Instant::now();
    // Dropping `done` ends the painter at once, not at its next tick.
    let (done, ticks) = std::sync::mpsc::channel::<()>();
    let painter = {
        let (bar, progress) = (bar.clone(), Arc::clone(&progress));
        std::thread::spawn(move || {
            // Without a terminal, a log line every 10 s for long backfills.
            let tick = if bar.is_some() {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(tick) {
                let lines = progress.lines.load(Ordering::Relaxed);
                let read = progress.bytes.load(Ordering::Relaxed);
                let rate = lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
                match &bar {
                    Some(bar) => {
                        bar.set_position(read);
                        bar.set_message(format!("{lines} records, {rate:.0} records/s"));
                    }
                    None => tracing::info!(
                        target: "presence::backfill",
                        records = lines,
                        bytes = read,
                        total_bytes = bytes,
                        records_per_second = rate.round() as u64,
                        "backfilling"
                    ),
                }
            }
        })
    };
    let result = backfill::run(config, job.clone(), progress);
    let elapsed = started.elapsed();
    drop(done);
    painter.join().expect("the progress thread does not panic");
    end_live(bar);
    let summary = result?;
    report(&summary, elapsed, &job);
    Ok(summary)
}

fn report(summary: &Summary, elapsed: Duration, job: &Job) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "{} ({:.1} MiB) in {:.2} s: {:.0} records/s",
        summary.describe(),
        summary.bytes as f64 / (1 << 20) as f64,
        seconds,
        summary.lines as f64 / seconds
    );
    if let Some(peak) = presence::harness::bench::peak_rss_mib() {
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
