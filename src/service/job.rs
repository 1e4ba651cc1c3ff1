//! What `run` is asked to do ([`RunJob`]: the topics, the client
//! settings, detection parameters, checkpointing, the harness's hooks) and
//! how it fails ([`RunError`]).

use std::time::Duration;

use crate::checkpoint::store::{self, Location};
use crate::dataflow::query::Inbox;
use crate::kafka::source::SourceOptions;
use crate::kafka::{Connection, KafkaFailure};
use crate::model::ingest::Kind;
use crate::model::output::{Output, PerOutput};
use crate::model::params::Params;
use crate::observe::hooks::{no_hooks, SharedHooks};

/// The default of `--progress-interval`: ten frontiers a second at most is
/// fresh enough for readers that wait on one and cheap for the topic.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// The default of `--idle-timeout`: routers that batch their uploads go
/// quiet for tens of seconds without being idle.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The topics, by role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Input: probes.
    pub probes: String,
    /// Input: logins.
    pub logins: String,
    /// Input: base counts.
    pub base_counts: String,
    /// The output topics, by output (also `topics[output]`).
    pub outputs: PerOutput<String>,
    /// Output: progress.
    pub progress: String,
}

impl Default for Topics {
    /// The documented names.
    fn default() -> Self {
        Topics::with_output_prefix("")
    }
}

impl Topics {
    /// The documented input topics, and its output topics with `prefix` before each name.
    pub fn with_output_prefix(prefix: &str) -> Self {
        Topics {
            probes: "probes".into(),
            logins: "logins".into(),
            base_counts: "base-counts".into(),
            outputs: PerOutput::from_fn(|output| format!("{prefix}{}", output.topic())),
            progress: format!("{prefix}presence-progress"),
        }
    }
}

impl std::ops::Index<Output> for Topics {
    type Output = String;
    /// The topic of `output`.
    fn index(&self, output: Output) -> &String {
        &self.outputs[output]
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunJob {
    /// The brokers, the consumer group and the operator's client settings.
    pub kafka: Connection,
    /// Topic names (an input's may be a comma-separated list).
    pub topics: Topics,
    /// Detection parameters.
    pub params: Params,
    /// Stop once every input partition is read up to its end offset at start.
    pub stop_at_end: bool,
    /// How long to wait for the broker's metadata before giving up.
    pub connect_timeout: Duration,
    /// Partitions of the output topics `run` creates (the progress topic has one).
    pub output_partitions: i32,
    /// A caught-up probe partition with no message for this long is idle
    /// (see [`crate::kafka::source`]).
    pub idle_timeout: Duration,
    /// The progress topic gets at most one message per this interval while
    /// outputs change (and one a second while they do not).
    pub progress_interval: Duration,
    /// Durable state: checkpoints and restarts (`None`: every start reads
    /// every input from its earliest offset).
    pub checkpoint: Option<CheckpointSettings>,
    /// Ready (`/ready`, `presence_ready`) once the consumer lag is below this.
    pub ready_lag: i64,
    /// Where a harness measures or disturbs the run (the product: none).
    pub hooks: SharedHooks,
    /// Queries for the workers to answer (`--http-addr` serves them); the
    /// service opens it once the first frontier is complete.
    pub queries: Inbox,
}

/// The default of `--ready-lag`: records behind the input's end.
pub const READY_LAG: i64 = 10_000;

/// `--checkpoint-dir` and its companions.
#[derive(Clone, Debug)]
pub struct CheckpointSettings {
    /// The checkpoint folder or prefix (every process names the same).
    pub dir: Location,
    /// A checkpoint every this much logical time.
    pub interval: Duration,
    /// Discard the checkpoints and start from the earliest offsets.
    pub reset: bool,
    /// How many complete checkpoints are kept (`--checkpoints-kept`).
    pub kept: usize,
}

/// The default of `--checkpoint-interval`: a restart re-reads at most this
/// much input, and a checkpoint writes ten seconds of changes.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

impl RunJob {
    /// The service on `brokers` with `topics` and every other setting at its
    /// default (the command line's).
    pub fn new(kafka: impl Into<Connection>, topics: Topics) -> Self {
        RunJob {
            kafka: kafka.into(),
            topics,
            params: Params::default(),
            stop_at_end: false,
            connect_timeout: Duration::from_secs(10),
            output_partitions: 4,
            idle_timeout: IDLE_TIMEOUT,
            progress_interval: PROGRESS_INTERVAL,
            checkpoint: None,
            ready_lag: READY_LAG,
            hooks: no_hooks(),
            queries: Inbox::default(),
        }
    }

    pub(super) fn source_options(&self) -> SourceOptions {
        SourceOptions {
            kafka: self.kafka.clone(),
            params: self.params,
            stop_at_end: self.stop_at_end,
            idle_timeout: self.idle_timeout,
            connect_timeout: self.connect_timeout,
        }
    }

    /// The input topics as a checkpoint records them: each kind's list,
    /// comma-separated, as given.
    pub fn recorded_inputs(&self) -> [String; 3] {
        let t = &self.topics;
        [&t.probes, &t.logins, &t.base_counts]
            .map(|list| topic_list(list).collect::<Vec<_>>().join(","))
    }

    /// The input topics by kind, in assignment order: each kind's list
    /// (`--probes-topic probes,probes-backfill`) in the order given.
    pub fn inputs(&self) -> Vec<(Kind, String)> {
        let t = &self.topics;
        [
            (Kind::Probe, &t.probes),
            (Kind::Login, &t.logins),
            (Kind::BaseCount, &t.base_counts),
        ]
        .into_iter()
        .flat_map(|(kind, list)| topic_list(list).map(move |topic| (kind, topic.to_owned())))
        .collect()
    }
}

/// The topics of a comma-separated list (`probes,probes-backfill`).
pub fn topic_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// A run that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// Timely could not start.
    #[error("cannot start the workers: {0}")]
    Timely(String),
    /// A worker panicked: a bug.
    #[error("a worker failed: {0}")]
    Worker(String),
    /// The checkpoint folder could not be used.
    #[error("checkpoint store: {0}")]
    Checkpoint(store::StoreError),
    /// A newer run took the checkpoint store: this one stops.
    #[error("{0}")]
    Superseded(String),
    /// The restore was refused (see [`crate::service::restore`]).
    #[error("{0}")]
    Refused(String),
    /// The flags do not fit together (an input topic named for two kinds):
    /// the caller's mistake, known before any work.
    #[error("{0}")]
    Usage(String),
}

impl RunError {
    /// Whether this is the flags' fault (exit status 2) rather than a
    /// failure while working.
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Usage(_))
    }
}
