//! What one bench point is asked to do, and how a bench fails.

use std::time::Duration;

use crate::kafka::KafkaFailure;
use crate::model::params::Params;
use crate::service::RunError;

/// One benchmark point.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Offered input records per second.
    pub rate: u64,
    /// How long the generator runs (warm-up included).
    pub duration: Duration,
    /// Samples due before this are not counted.
    pub warmup: Duration,
    /// After the generator stops, how long the pipeline gets to deliver.
    pub drain: Duration,
    /// An external broker; `None` starts librdkafka's in-process mock broker.
    pub brokers: Option<String>,
    /// The operator's client settings (`--kafka-config`, `-X`).
    pub kafka_settings: crate::kafka::settings::ClientSettings,
    /// Topic name prefix (default: unique per run; required with `-n 2+`).
    pub prefix: Option<String>,
    /// Distinct devices (the window operator's state is one visit per device).
    pub devices: u64,
    /// Businesses.
    pub businesses: u64,
    /// How long a device stays at one business before moving on.
    pub visit: Duration,
    /// Partitions of every topic the bench creates.
    pub partitions: i32,
    /// The producers' `linger.ms`.
    pub linger_ms: u64,
    /// Detection parameters.
    pub params: Params,
    /// Measure the bare-Kafka floor first.
    pub floor: bool,
    /// Synthetic delay of every output (tests the harness).
    pub delay_outputs: Duration,
    /// Synthetic stall of every worker: how long after the load's schedule
    /// starts, for how long (tests the harness).
    pub stall: Option<(Duration, Duration)>,
    /// Workers per process, processes, this process's index.
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// Checkpoint the pipeline's state here (every `checkpoint_interval`).
    pub checkpoint_dir: Option<crate::checkpoint::store::Location>,
    /// The checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Point queries per second offered over HTTP while the schedule runs
    /// (process 0; `None`: none).
    pub query_rate: Option<u64>,
    /// How long to wait for the brokers before giving up.
    pub connect_timeout: Duration,
}

impl BenchConfig {
    /// The small point the harness's own checks run (`tests/bench.rs`,
    /// `benches/harness.rs`): 1,000 records/s for `duration` after a 1 s
    /// warm-up on the in-process broker, one worker, 500 phones at 20
    /// stores staying 5 s, with detection parameters in seconds so that
    /// walk-ins come every few milliseconds.
    pub fn harness_check(duration: Duration) -> Self {
        BenchConfig {
            rate: 1_000,
            duration,
            warmup: Duration::from_secs(1),
            drain: Duration::from_millis(1_500),
            brokers: None,
            kafka_settings: Default::default(),
            prefix: None,
            devices: 500,
            businesses: 20,
            visit: Duration::from_secs(5),
            partitions: 4,
            linger_ms: 5,
            params: Params {
                session_gap: 2_000,
                min_dwell: 1_000,
                allowed_lateness: 1_000,
                ..Params::default()
            },
            floor: false,
            delay_outputs: Duration::ZERO,
            stall: None,
            workers: 1,
            processes: 1,
            process: 0,
            checkpoint_dir: None,
            checkpoint_interval: Duration::from_secs(10),
            query_rate: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Refuses a point that cannot run: several processes without an
    /// external broker and a shared prefix, no rate, or nothing measured
    /// after the warm-up.
    pub(super) fn check(&self) -> Result<(), BenchError> {
        if self.processes > 1 && (self.brokers.is_none() || self.prefix.is_none()) {
            return Err(BenchError::Usage(
                "several processes need an external broker (--brokers; scripts/tansu.sh starts one) \
                 and the same --prefix in every process"
                    .into(),
            ));
        }
        if self.rate == 0 {
            return Err(BenchError::Usage("--rate must be at least 1".into()));
        }
        if self.duration <= self.warmup {
            return Err(BenchError::Usage(format!(
                "--duration {} must be longer than --warmup {} (the warm-up is part of the duration)",
                crate::model::params::format_duration(self.duration.as_millis() as u64),
                crate::model::params::format_duration(self.warmup.as_millis() as u64),
            )));
        }
        Ok(())
    }
}

/// A failed bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The mock broker could not start.
    #[error("cannot start the in-process broker: {0}")]
    Mock(#[from] rdkafka::error::KafkaError),
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
    /// The query endpoints could not be served.
    #[error("cannot serve the query endpoints: {0}")]
    Http(#[from] std::io::Error),
}

impl BenchError {
    /// Whether the flags are at fault (exit status 2), as
    /// [`RunError::is_usage`] says for the pipeline's.
    pub fn is_usage(&self) -> bool {
        match self {
            BenchError::Usage(_) => true,
            BenchError::Run(error) => error.is_usage(),
            _ => false,
        }
    }
}
