//! Input produced to the mock broker's default input topics and kept as
//! files, partition by partition, so that a test compares what a run wrote
//! with a backfill of the same records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use presence::backfill::{self, Job, Progress};
use presence::harness::generator::{Workload, WorkloadConfig};
use presence::model::ingest::Kind;
use rdkafka::producer::{BaseProducer, Producer};

use super::{client, send, PROBE_PARTITIONS, TIMEOUT};

/// The records produced so far, by kind and partition, and the folder
/// their files and backfills go in.
pub struct Input {
    brokers: String,
    /// Each partition's records, as lines, by kind and partition.
    pub files: BTreeMap<(Kind, u64), String>,
    dir: PathBuf,
}

impl Input {
    pub fn new(brokers: &str, dir: &Path) -> Self {
        Input {
            brokers: brokers.to_owned(),
            files: BTreeMap::new(),
            dir: dir.into(),
        }
    }

    /// Produces `config`'s workload and appends it to the files; returns
    /// how many records.
    pub fn add(&mut self, config: &WorkloadConfig) -> u64 {
        let producer: BaseProducer = client(&self.brokers).create().unwrap();
        let mut n = 0;
        for record in Workload::new(config.clone()) {
            let topic = match record.kind {
                Kind::Probe => "probes",
                Kind::Login => "logins",
                Kind::BaseCount => "base-counts",
            };
            send(&producer, topic, record.partition as i32, &record.line);
            let file = self
                .files
                .entry((record.kind, record.partition))
                .or_default();
            file.push_str(&record.line);
            file.push('\n');
            n += 1;
        }
        producer.flush(TIMEOUT).unwrap();
        n
    }

    /// The files, written in the folder, by kind.
    pub fn paths(&self, kind: Kind) -> Vec<PathBuf> {
        let path = |kind: Kind, p: u64| self.dir.join(format!("{kind:?}-{p}.jsonl"));
        for ((kind, p), text) in &self.files {
            std::fs::write(path(*kind, *p), text).unwrap();
        }
        self.files
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(k, p)| path(*k, *p))
            .collect()
    }

    /// Backfills, into the folder `name`, each partition's records after
    /// file `p` of `before` (history: files of each kind, one per
    /// partition `p`); returns it. The records continue the history's
    /// partitions, as a service that took over the history's checkpoint
    /// reads them: so the event-time frontier at the end, and `present`,
    /// are the run's, not held back where the history's files end.
    pub fn backfill_after(&self, before: [&[PathBuf]; 3], name: &str) -> PathBuf {
        let out = self.dir.join(name);
        let joined = self.dir.join(format!("{name}-input"));
        std::fs::create_dir_all(&joined).unwrap();
        let join = |kind: Kind, history: &[PathBuf]| -> Vec<PathBuf> {
            let live = self.paths(kind);
            if history.is_empty() {
                return live;
            }
            assert_eq!(history.len(), live.len(), "{kind:?}: the same partitions");
            history
                .iter()
                .zip(live)
                .enumerate()
                .map(|(p, (history, live))| {
                    let mut text = std::fs::read_to_string(history).unwrap();
                    text.push_str(&std::fs::read_to_string(live).unwrap());
                    let file = joined.join(format!("{kind:?}-{p}.jsonl"));
                    std::fs::write(&file, text).unwrap();
                    file
                })
                .collect()
        };
        let job = Job {
            probes: join(Kind::Probe, before[0]),
            logins: join(Kind::Login, before[1]),
            base_counts: join(Kind::BaseCount, before[2]),
            out: out.clone(),
            ..Job::default()
        };
        backfill::run(timely::Config::thread(), job, Arc::new(Progress::default())).unwrap();
        out
    }

    /// Backfills the files into the folder `name`; returns it.
    pub fn backfill(&self, name: &str) -> PathBuf {
        self.backfill_after([&[], &[], &[]], name)
    }
}

/// A day of workload: 400 phones at 6 businesses, day `day` of the
/// generator's calendar.
pub fn day(seed: u64, day: u64) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        days: 1,
        devices: 400,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        start_ms: WorkloadConfig::default().start_ms + day * 86_400_000,
        ..WorkloadConfig::default()
    }
}
