//! The command line's flags: one clap struct per command, and each group of
//! flags that several commands take (Kafka client settings, input topics,
//! detection parameters, checkpoints; timely's cluster flags are the
//! library's [`ClusterArgs`]) defined once and flattened where used. The
//! `impl`s turn flags into the library's jobs and configurations.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use presence::backfill::Job;
use presence::checkpoint::store::Location;
use presence::cluster::ClusterArgs;
use presence::harness::bench::BenchConfig;
use presence::harness::generator::{LiveConfig, WorkloadConfig};
use presence::harness::load::{Load, Records};
use presence::kafka::connection::parse_brokers;
use presence::kafka::settings::ClientSettings;
use presence::kafka::Connection;
use presence::model::params::{
    parse_at_least_one, parse_duration, parse_positive_duration, parse_topics, Params,
};
use std::sync::Arc;

use presence::harness::hooks::Injected;
use presence::service::{CheckpointSettings, RunJob, Topics};

/// A refusal of flags that clap took but that do not fit together or mean
/// nothing: exit status 2, as clap's own refusals.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

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
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print help.
    #[arg(long, action = ArgAction::Help, global = true)]
    pub help: Option<bool>,
    /// Print help (`-h` too; in backfill, run, bench and example `-h FILE`
    /// is timely's hostfile, and `-h` with no file after it is help).
    #[arg(short = 'h', action = ArgAction::Help, hide = true)]
    pub short_help: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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

/// `-h` as help, in a command without a hostfile.
#[derive(Args, Debug)]
pub struct ShortHelp {
    /// Print help (as --help).
    #[arg(short = 'h', action = ArgAction::Help)]
    short_help: Option<bool>,
}

#[derive(Args, Debug)]
pub struct CheckpointsArgs {
    #[command(flatten)]
    pub short_help: ShortHelp,
    /// The checkpoint folder or s3://BUCKET/PREFIX (as given to run or backfill).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub checkpoint_dir: Location,
}

/// The detection flags of docs/contract.md, section 2.
#[derive(Args, Debug, Clone)]
pub struct ParamArgs {
    /// Probes weaker than this (dBm, -128 to 0) are ignored.
    #[arg(long, default_value_t = -75, allow_negative_numbers = true, value_name = "DBM",
          value_parser = clap::value_parser!(i32).range(-128..=0))]
    pub rssi_min: i32,
    /// Probes further apart than this split a visit.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub session_gap: u64,
    /// A walk-in lasts at least this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub min_dwell: u64,
    /// A walk-in has at least this many distinct probe times (at least 1).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub min_probes: u64,
    /// Probes more than this below their partition's newest are rejected as late.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub allowed_lateness: u64,
    /// Probes and logins more than this ahead of the wall clock are rejected as future.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub max_future: u64,
}

impl ParamArgs {
    /// The detection parameters.
    pub fn params(&self) -> Params {
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
pub struct BackfillArgs {
    /// Probe files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub probes: Vec<PathBuf>,
    /// Login files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub logins: Vec<PathBuf>,
    /// Base-count files (JSONL), each one partition.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub base_counts: Vec<PathBuf>,
    /// Output folder (required but with --parse-only): DIR/{walkins,device-contacts,enriched-walkins,walkin-counts,present,rejected}/*.jsonl.
    #[arg(long, value_name = "DIR", required_unless_present = "parse_only")]
    pub out: Option<PathBuf>,
    /// Only read, parse and validate (a benchmark floor): no dataflow, no output.
    #[arg(long)]
    pub parse_only: bool,
    /// Also write the final state as a checkpoint in DIR (a folder, or
    /// s3://BUCKET/PREFIX with the AWS_* environment), for `presence run
    /// --checkpoint-dir DIR` to continue from (load history once, then go live).
    #[arg(long, value_name = "DIR", conflicts_with = "parse_only")]
    pub checkpoint_dir: Option<Location>,
    /// Discard the checkpoints already in --checkpoint-dir first (a folder
    /// that holds any is refused otherwise).
    #[arg(long, requires = "checkpoint_dir")]
    pub reset_state: bool,
    /// In a cluster (-n), how long another process may show no sign of life
    /// before this one stops (heartbeats over UDP on the hostfile ports).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub connect_timeout: u64,
    /// Test hook: sleep this long before writing each piece of the final checkpoint.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true,
          requires = "checkpoint_dir")]
    pub inject_checkpoint_delay: Option<u64>,
    #[command(flatten)]
    pub params: ParamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl BackfillArgs {
    /// The backfill these flags ask for.
    pub fn job(&self) -> Job {
        Job {
            probes: self.probes.clone(),
            logins: self.logins.clone(),
            base_counts: self.base_counts.clone(),
            out: self.out.clone().unwrap_or_default(),
            params: self.params.params(),
            parse_only: self.parse_only,
            checkpoint_dir: self.checkpoint_dir.clone(),
            reset_state: self.reset_state,
            connect_timeout: Duration::from_millis(self.connect_timeout),
            hooks: Arc::new(Injected::checkpoint_write_delay(Duration::from_millis(
                self.inject_checkpoint_delay.unwrap_or(0),
            ))),
        }
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub short_help: ShortHelp,
    /// How long to run (Ctrl-C ends it sooner, with the same summary).
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: u64,
    /// Input records produced per second (open loop).
    #[arg(long, default_value_t = 5_000, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub rate: u64,
    /// Serve the queries (/v1/present, /v1/walkin-counts,
    /// /v1/device-contacts) and /metrics on ADDR (HOST:PORT), as `run
    /// --http-addr` does.
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,
    /// Worker threads (the demo is one process: its broker lives in it).
    #[arg(short = 'w', long = "threads", visible_alias = "workers", default_value_t = 1,
          value_name = "N", value_parser = presence::cluster::parse_count)]
    pub workers: usize,
}

/// The bench's visits last seconds, not hours: its detection defaults are
/// scaled down (the flags are the same as `run`'s). Its checkpoints are
/// measured, not kept: their flags say so (help without the period, as
/// clap shows a doc comment's).
#[derive(Args, Debug)]
#[command(
    mut_arg("session_gap", |a| a.default_value("2s")),
    mut_arg("min_dwell", |a| a.default_value("1s")),
    mut_arg("allowed_lateness", |a| a.default_value("1s")),
    mut_arg("checkpoint_dir", |a| a.help(
        "Checkpoint the pipeline's state in DIR (emptied first), to measure what checkpoints cost"
    )),
    mut_arg("checkpoint_interval", |a| a.help("The checkpoint interval with --checkpoint-dir"))
)]
pub struct BenchArgs {
    /// Offered input records per second (open loop: record i is due at start + i/rate).
    #[arg(long, default_value_t = 2_000, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub rate: u64,
    /// How long the generator runs, warm-up included.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: u64,
    /// Samples due before this are not counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub warmup: u64,
    /// After the generator stops, how long the pipeline gets to deliver.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub drain: u64,
    /// An external broker (default: librdkafka's in-process mock broker).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_brokers)]
    pub brokers: Option<String>,
    /// How long to wait for the external broker before giving up.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub connect_timeout: u64,
    /// Prefix of every topic the bench uses (default: unique per run; every
    /// process of a -n 2+ run needs the same one).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Distinct devices: the window operator holds one open visit per device.
    #[arg(long, default_value_t = 2_000, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub devices: u64,
    /// Businesses.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub businesses: u64,
    /// How long a device stays at one business before moving to another.
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub visit: u64,
    /// Partitions of each topic the bench creates.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,
    /// The generator's linger.ms (5, as the pipeline's producer: librdkafka's
    /// in-process broker scans its batches linearly per fetch, so 1 ms batches
    /// make it the bottleneck within seconds at 8000 records/s).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    pub linger_ms: u64,
    /// Skip the bare-Kafka floor measurement.
    #[arg(long)]
    pub no_floor: bool,
    /// Also offer this many point queries per second over HTTP while the
    /// schedule runs (half device contacts, half walk-in counts; open loop,
    /// measured from their due times), to measure their latency and what
    /// they cost the ingest.
    #[arg(long, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub query_rate: Option<u64>,
    /// Detection parameters (bench defaults: visits of seconds, not hours).
    #[command(flatten)]
    pub params: ParamArgs,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as CSV (a header and one row) here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Harness check: hold every output this long before writing it.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub inject_delay: Option<u64>,
    /// Harness check: AFTER:LENGTH stops every worker for LENGTH once AFTER into the load's schedule.
    #[arg(long, value_name = "AFTER:LENGTH", hide = true)]
    pub inject_stall: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl BenchArgs {
    /// The bench point these flags ask for (the Kafka settings checked).
    pub fn config(&self) -> anyhow::Result<BenchConfig> {
        let ms = Duration::from_millis;
        let stall = match &self.inject_stall {
            None => None,
            Some(text) => {
                let refused = || {
                    Usage(format!(
                        "--inject-stall {text}: expected AFTER:LENGTH, e.g. 5s:1s"
                    ))
                };
                let (after, length) = text.split_once(':').ok_or_else(refused)?;
                let after =
                    parse_duration(after).map_err(|e| Usage(format!("--inject-stall: {e}")))?;
                let length =
                    parse_duration(length).map_err(|e| Usage(format!("--inject-stall: {e}")))?;
                Some((ms(after), ms(length)))
            }
        };
        Ok(BenchConfig {
            rate: self.rate,
            duration: ms(self.duration),
            warmup: ms(self.warmup),
            drain: ms(self.drain),
            kafka_settings: self.kafka.settings()?,
            brokers: self.brokers.clone(),
            prefix: self.prefix.clone(),
            devices: self.devices,
            businesses: self.businesses,
            visit: ms(self.visit),
            partitions: self.partitions,
            linger_ms: self.linger_ms,
            params: self.params.params(),
            floor: !self.no_floor,
            delay_outputs: ms(self.inject_delay.unwrap_or(0)),
            stall,
            workers: self.cluster.workers,
            processes: self.cluster.processes,
            process: self.cluster.process,
            checkpoint_dir: self.checkpoint.checkpoint_dir.clone(),
            checkpoint_interval: ms(self.checkpoint.checkpoint_interval),
            query_rate: self.query_rate,
            connect_timeout: ms(self.connect_timeout),
        })
    }
}

/// produce writes each kind to one topic (run reads lists).
#[derive(Args, Debug)]
#[command(
    mut_arg("probes_topic", |a| a.help("Topic to write probes to").value_name("TOPIC")),
    mut_arg("logins_topic", |a| a.help("Topic to write logins to").value_name("TOPIC")),
    mut_arg("base_counts_topic", |a| a.help("Topic to write base counts to").value_name("TOPIC"))
)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub short_help: ShortHelp,
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_brokers)]
    pub brokers: String,
    /// Records per second, open loop (record i is due at start + i/rate); 0
    /// for as fast as possible (not with --live).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rate: u64,
    /// Stop after this long (default: when the historical workload ends;
    /// with --live, at Ctrl-C).
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<u64>,
    /// Shoppers arriving now: every record is stamped with the wall-clock
    /// time it is due, phones stay --visit at a store. Without it, produce
    /// writes the generated historical week (from 2026-01-01, --days long)
    /// as fast as --rate allows, event times and all.
    #[arg(long)]
    pub live: bool,
    /// With --live: how long a phone stays at one store.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub visit: u64,
    /// How often to log progress when stderr is not a terminal.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub status_interval: u64,
    /// How long to wait for the brokers before giving up.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub connect_timeout: u64,
    #[command(flatten)]
    pub inputs: InputTopicArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

impl ProduceArgs {
    /// The load these flags ask for (the Kafka settings checked).
    pub fn load(&self) -> anyhow::Result<Load> {
        if self.live && self.rate == 0 {
            return Err(Usage("--live needs a rate: records are stamped with the time they are due, so --rate 0 (as fast as possible) means nothing".into()).into());
        }
        let records = if self.live {
            Records::Live(LiveConfig {
                seed: self.workload.seed,
                devices: self.workload.devices,
                businesses: self.workload.businesses,
                visit_ms: self.visit,
                probe_partitions: self.workload.probe_files,
                ..LiveConfig::default()
            })
        } else {
            Records::Historical(self.workload.config())
        };
        let inputs = &self.inputs;
        for (flag, list) in [
            ("probes", &inputs.probes_topic),
            ("logins", &inputs.logins_topic),
            ("base-counts", &inputs.base_counts_topic),
        ] {
            if list.contains(',') {
                return Err(Usage(format!(
                    "--{flag}-topic {list}: produce writes one topic per kind"
                ))
                .into());
            }
        }
        Ok(Load {
            kafka: self.kafka.connection(self.brokers.clone())?,
            topics: [
                inputs.probes_topic.clone(),
                inputs.logins_topic.clone(),
                inputs.base_counts_topic.clone(),
            ],
            rate: (self.rate > 0).then_some(self.rate),
            duration: self.duration.map(Duration::from_millis),
            records,
            connect_timeout: Duration::from_millis(self.connect_timeout),
        })
    }
}

/// Kafka client settings, for every client presence creates.
#[derive(Args, Debug)]
pub struct KafkaArgs {
    /// Client settings from a Java properties file (as Kafka's tools read
    /// with --command-config: key=value lines, # and ! comments), e.g.
    /// security.protocol, ssl.ca.location, sasl.mechanism, sasl.username.
    #[arg(long, value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// A librdkafka client setting, over --kafka-config (repeatable; the
    /// later wins). Settings presence's guarantees rest on are refused.
    #[arg(short = 'X', value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    pub kafka_setting: Vec<String>,
}

impl KafkaArgs {
    /// The client settings: the file's, then the `-X` ones (checked before
    /// any work).
    pub fn settings(&self) -> anyhow::Result<ClientSettings> {
        Ok(ClientSettings::load(
            self.kafka_config.as_deref(),
            &self.kafka_setting,
        )?)
    }

    /// The brokers with these settings (checked before any work).
    pub fn connection(&self, brokers: String) -> anyhow::Result<Connection> {
        Ok(Connection {
            settings: self.settings()?,
            ..Connection::new(brokers)
        })
    }
}

/// Where and how often the pipeline checkpoints its state (`run`'s wording;
/// `backfill` writes one final checkpoint, with its own `--checkpoint-dir`).
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Keep the state durable in DIR, a folder or s3://BUCKET/PREFIX
    /// (configured by AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL, ...; every process of a cluster names the same):
    /// checkpoint it, and on start restore the newest complete checkpoint
    /// and resume the inputs at its offsets.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<Location>,
    /// A checkpoint every this much logical time (and one at a clean stop).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub checkpoint_interval: u64,
}

/// The input topics' names.
#[derive(Args, Debug)]
pub struct InputTopicArgs {
    /// Topic of probes (run: a comma-separated list reads each partition of
    /// each as its own, e.g. probes,probes-backfill).
    #[arg(long, default_value = "probes", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
    pub probes_topic: String,
    /// Topic of logins (run: a comma-separated list, as for probes).
    #[arg(long, default_value = "logins", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
    pub logins_topic: String,
    /// Topic of base counts (run: a comma-separated list, as for probes).
    #[arg(long, default_value = "base-counts", value_name = "TOPIC[,TOPIC...]", value_parser = parse_topics)]
    pub base_counts_topic: String,
}

/// An interval means nothing without a checkpoint folder here (`bench`
/// lets it pass).
#[derive(Args, Debug)]
#[command(mut_arg("checkpoint_interval", |a| a.requires("checkpoint_dir")))]
pub struct RunArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_brokers)]
    pub brokers: String,
    /// Stop once every input partition is read up to the end offsets seen at start.
    #[arg(long)]
    pub stop_at_end: bool,
    #[command(flatten)]
    pub inputs: InputTopicArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group presence commits its offsets to after each
    /// checkpoint (or progress frontier without --checkpoint-dir), for lag
    /// tools; never joined, and never read back to decide where to start.
    #[arg(long, default_value = presence::kafka::GROUP_ID, value_name = "GROUP")]
    pub group_id: String,
    /// Prefix of every output topic (walkins, device-contacts, enriched-walkins,
    /// walkin-counts, present, presence-rejected, presence-progress).
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub output_prefix: String,
    /// How long to wait for the brokers (and to retry the checkpoint store at
    /// start) before giving up; in a cluster, also how long another process
    /// may show no sign of life before this one stops (heartbeats over UDP
    /// on the hostfile ports).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub connect_timeout: u64,
    /// A caught-up probe partition silent this long is idle: it promises the
    /// wall clock minus --allowed-lateness, so window state is still freed;
    /// a probe it delivers later below that promise is late (0: idle as soon
    /// as it is caught up and silent).
    #[arg(long, default_value = "1m", value_parser = parse_duration, value_name = "DURATION",
          allow_hyphen_values = true)]
    pub idle_timeout: u64,
    /// At most one progress message per this interval while outputs change
    /// (one a second, or per this interval if longer, while they do not).
    #[arg(long, default_value = "100ms", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub progress_interval: u64,
    /// How often to log a status line (and on a terminal, a live line is
    /// redrawn every second).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub status_interval: u64,
    /// Serve HTTP on ADDR (HOST:PORT; off by default): queries over the
    /// state (/v1/present, /v1/walkin-counts, /v1/device-contacts),
    /// Prometheus metrics (/metrics), and /health and /ready for
    /// orchestrators. `--metrics-addr` is the same flag.
    #[arg(long, visible_alias = "metrics-addr", value_name = "ADDR")]
    pub http_addr: Option<std::net::SocketAddr>,
    /// /ready answers 200 once the state is restored and this process's
    /// consumer lag is below this many records.
    #[arg(long, default_value_t = presence::service::READY_LAG as u64, value_name = "RECORDS", value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub ready_lag: u64,
    /// Partitions of the output topics run creates when they are missing.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub output_partitions: i32,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Discard the checkpoints in --checkpoint-dir and start from the
    /// earliest offsets.
    #[arg(long, requires = "checkpoint_dir")]
    pub reset_state: bool,
    /// How many complete checkpoints are kept (the newest, and the ones to
    /// fall back to if it is damaged); older ones and the pieces only they
    /// name are deleted.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = parse_at_least_one, allow_negative_numbers = true,
          requires = "checkpoint_dir")]
    pub checkpoints_kept: u64,
    /// Test hook: sleep this long before making each checkpoint piece durable.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", hide = true)]
    pub inject_checkpoint_delay: Option<u64>,
    #[command(flatten)]
    pub params: ParamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl RunArgs {
    /// The service job these flags ask for (the Kafka settings checked).
    pub fn job(&self) -> anyhow::Result<RunJob> {
        let kafka = Connection {
            group_id: self.group_id.clone(),
            ..self.kafka.connection(self.brokers.clone())?
        };
        let topics = Topics {
            probes: self.inputs.probes_topic.clone(),
            logins: self.inputs.logins_topic.clone(),
            base_counts: self.inputs.base_counts_topic.clone(),
            ..Topics::with_output_prefix(&self.output_prefix)
        };
        let checkpoint = &self.checkpoint;
        Ok(RunJob {
            params: self.params.params(),
            stop_at_end: self.stop_at_end,
            connect_timeout: Duration::from_millis(self.connect_timeout),
            output_partitions: self.output_partitions,
            idle_timeout: Duration::from_millis(self.idle_timeout),
            progress_interval: Duration::from_millis(self.progress_interval),
            ready_lag: self.ready_lag.min(i64::MAX as u64) as i64,
            checkpoint: checkpoint
                .checkpoint_dir
                .clone()
                .map(|dir| CheckpointSettings {
                    dir,
                    interval: Duration::from_millis(checkpoint.checkpoint_interval),
                    reset: self.reset_state,
                    kept: self.checkpoints_kept as usize,
                }),
            hooks: Arc::new(Injected::checkpoint_write_delay(Duration::from_millis(
                self.inject_checkpoint_delay.unwrap_or(0),
            ))),
            ..RunJob::new(kafka, topics)
        })
    }
}

#[derive(Args, Debug)]
pub struct WorkloadArgs {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of data (historical workload).
    #[arg(long, default_value_t = 7, value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub days: u64,
    /// Number of stores.
    #[arg(long, default_value_t = 40, value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub businesses: u64,
    /// Number of phones.
    #[arg(long, default_value_t = 20_000, value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub devices: u64,
    /// Probe files (or probe partitions) to spread the stores over.
    #[arg(long, default_value_t = 4, value_parser = parse_at_least_one, allow_negative_numbers = true)]
    pub probe_files: u64,
}

impl WorkloadArgs {
    /// The historical workload.
    pub fn config(&self) -> WorkloadConfig {
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
pub struct GenerateArgs {
    #[command(flatten)]
    pub short_help: ShortHelp,
    /// Folder to write probes-*.jsonl, logins-0.jsonl and base-counts.jsonl into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

#[derive(Args, Debug)]
pub struct ExampleArgs {
    /// Folder for the example: DIR/input (the generated files) and DIR/output
    /// (what backfill wrote); both are kept.
    #[arg(long, default_value = "presence-example", value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}
