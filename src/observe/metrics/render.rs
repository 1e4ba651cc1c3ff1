//! [`Metrics::render`]: the figures in Prometheus' text exposition format,
//! one function per group of families, in the order they are served.
//! `docs/operations.md` documents every family (tests/docs.rs checks the
//! two agree) and dashboards read them by name and label: a change here is
//! a change of the service's interface.

use std::fmt::{Display, Write as _};

use super::{
    CheckpointFigures, Figures, Metrics, ServiceState, StoreOpFigures, LATENCY_BUCKETS_MS,
    STORE_OPS,
};
use crate::model::records::Reason;

impl Metrics {
    /// The figures in Prometheus' text format.
    pub fn render(&self) -> String {
        self.read(|f| {
            let mut out = Exposition::default();
            input(&mut out, f);
            workers(&mut out, f);
            outputs(&mut out, f);
            acknowledgements(&mut out, f);
            progress_and_life(&mut out, f);
            checkpoints(&mut out, &f.checkpoints);
            out.text
        })
    }
}

/// A sample's labels, `(name, value)`, in the order written.
type Labels<'a> = &'a [(&'a str, &'a dyn Display)];

/// Text in Prometheus' exposition format, written one family at a time:
/// its `# HELP` and `# TYPE` lines, then its samples. Every name is
/// prefixed `presence_`.
#[derive(Default)]
struct Exposition {
    text: String,
    /// The family being written (without the prefix).
    family: &'static str,
}

impl Exposition {
    /// Starts family `name` of `kind` (`counter`, `gauge`, `histogram`).
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        self.family = name;
        let _ = writeln!(
            self.text,
            "# HELP presence_{name} {help}\n# TYPE presence_{name} {kind}"
        );
    }

    /// One sample of the current family.
    fn sample(&mut self, labels: Labels, value: impl Display) {
        self.series("", labels, value);
    }

    /// One sample of the current family's series `suffix` (a histogram's
    /// `_bucket`, `_sum` and `_count`).
    fn series(&mut self, suffix: &str, labels: Labels, value: impl Display) {
        let _ = write!(self.text, "presence_{}{suffix}", self.family);
        for (i, (label, label_value)) in labels.iter().enumerate() {
            let open = if i == 0 { '{' } else { ',' };
            let _ = write!(self.text, "{open}{label}=\"{label_value}\"");
        }
        if !labels.is_empty() {
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A counter family of one sample without labels.
    fn counter(&mut self, name: &'static str, help: &str, value: impl Display) {
        self.family(name, "counter", help);
        self.sample(&[], value);
    }

    /// A gauge family of one sample without labels, or none if `value` is `None`.
    fn gauge(&mut self, name: &'static str, help: &str, value: Option<impl Display>) {
        self.family(name, "gauge", help);
        if let Some(value) = value {
            self.sample(&[], value);
        }
    }
}

/// Milliseconds as seconds, Prometheus' unit of time.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Input: records read, accepted, rejected and blank; per partition, the
/// consumer lag and the event-time high water.
fn input(out: &mut Exposition, f: &Figures) {
    let summary = f.summary();
    out.family(
        "records_read_total",
        "counter",
        "Input records read, per topic and partition.",
    );
    for ((topic, partition), p) in &f.partitions {
        out.sample(&[("topic", topic), ("partition", partition)], p.read);
    }
    out.family(
        "records_accepted_total",
        "counter",
        "Input records accepted, by kind.",
    );
    for (kind, n) in ["probe", "login", "base_count"]
        .iter()
        .zip(summary.accepted)
    {
        out.sample(&[("kind", kind)], n);
    }
    out.family(
        "records_rejected_total",
        "counter",
        "Input records rejected, by reason.",
    );
    for reason in Reason::ALL.map(Reason::as_str) {
        let n = summary.rejected.get(reason).copied().unwrap_or(0);
        out.sample(&[("reason", &reason)], n);
    }
    out.counter(
        "records_blank_total",
        "Input records that were empty or only whitespace (not records at all).",
        summary.blank,
    );
    out.family(
        "consumer_lag",
        "gauge",
        "End offset minus next offset to read, per partition.",
    );
    for ((topic, partition), p) in &f.partitions {
        if let Some(lag) = p.lag {
            out.sample(&[("topic", topic), ("partition", partition)], lag);
        }
    }
    out.family(
        "event_time_high_water_timestamp_seconds",
        "gauge",
        "Largest accepted probe ts per probe partition.",
    );
    for ((topic, partition), p) in &f.partitions {
        if let Some(hwm) = p.high_water {
            out.sample(&[("topic", topic), ("partition", partition)], seconds(hwm));
        }
    }
}

/// Per worker: how far its event-time frontier lags, and its window state.
fn workers(out: &mut Exposition, f: &Figures) {
    out.family(
        "event_time_frontier_delay_seconds",
        "gauge",
        "Wall clock minus the event-time frontier a worker promised (how far the freeing of window state lags).",
    );
    for (worker, w) in &f.workers {
        if let Some(delay) = w.frontier_delay_ms {
            out.sample(&[("worker", worker)], seconds(delay));
        }
    }
    out.family(
        "open_visits",
        "gauge",
        "Keys with open visits held by the detection operator, per worker.",
    );
    for (worker, w) in &f.workers {
        out.sample(&[("worker", worker)], w.window.keys);
    }
    out.family(
        "window_timestamps",
        "gauge",
        "Probe timestamps held individually by the detection operator, per worker.",
    );
    for (worker, w) in &f.workers {
        out.sample(&[("worker", worker)], w.window.timestamps);
    }
}

/// Output: walk-ins, records produced, held back and acknowledged.
fn outputs(out: &mut Exposition, f: &Figures) {
    out.counter(
        "walkins_emitted_total",
        "Walk-in rows written to the walk-ins topic.",
        f.walkins_emitted,
    );
    out.family(
        "output_records_produced_total",
        "counter",
        "Output records handed to the producer.",
    );
    for (topic, n) in &f.produced {
        out.sample(&[("topic", topic)], n);
    }
    out.counter(
        "output_queue_full_total",
        "Times a sink found the producer's queue full and kept its records to send later (the broker is slower than the output).",
        f.output_queue_full,
    );
    out.family(
        "output_records_waiting",
        "gauge",
        "Output records a worker's sinks hold because the producer's queue was full.",
    );
    for (worker, w) in &f.workers {
        out.sample(&[("worker", worker)], w.output_waiting);
    }
    out.family(
        "output_records_acknowledged_total",
        "counter",
        "Output records acknowledged by the broker.",
    );
    for (topic, n) in &f.acknowledged {
        out.sample(&[("topic", topic)], n);
    }
}

/// How long the broker took to acknowledge outputs (a histogram with
/// cumulative buckets), and below which time it acknowledged them all.
fn acknowledgements(out: &mut Exposition, f: &Figures) {
    out.family(
        "end_to_end_latency_seconds",
        "histogram",
        "From reading an input to the broker acknowledging an output it caused.",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += f.latency_buckets[i];
        out.series("_bucket", &[("le", &seconds(*bound))], cumulative);
    }
    cumulative += f.latency_buckets[LATENCY_BUCKETS_MS.len()];
    out.series("_bucket", &[("le", &"+Inf")], cumulative);
    out.series("_sum", &[], seconds(f.latency_sum_ms));
    out.series("_count", &[], cumulative);
    out.gauge(
        "output_frontier_timestamp_seconds",
        "Every output update below this logical time (ms of wall clock at ingestion) is acknowledged by the broker.",
        f.output_frontier().map(seconds),
    );
}

/// Progress messages written, the service's state and its readiness.
fn progress_and_life(out: &mut Exposition, f: &Figures) {
    out.counter(
        "progress_messages_total",
        "Messages written to the progress topic (by process 0).",
        f.progress.messages,
    );
    out.family(
        "state",
        "gauge",
        "1 for the state the process is in (starting, restoring, catching_up, running, stopping), 0 for the others.",
    );
    for state in ServiceState::ALL {
        out.sample(&[("state", &state.name())], u8::from(f.life.state == state));
    }
    out.gauge(
        "ready",
        "1 when /ready answers 200: state restored and consumer lag below --ready-lag.",
        Some(u8::from(f.readiness().is_ok())),
    );
}

/// Checkpoints written (by process 0) and restored.
fn checkpoints(out: &mut Exposition, c: &CheckpointFigures) {
    out.counter(
        "checkpoints_total",
        "Checkpoints completed: manifests written (process 0).",
        c.completed,
    );
    out.counter(
        "checkpoint_failures_total",
        "Checkpoints that could not be written (process 0).",
        c.failures,
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    out.gauge(
        "checkpoint_age_seconds",
        "Since the newest complete checkpoint was written (process 0).",
        c.last_wall_ms
            .map(|wall| seconds(now_ms.saturating_sub(wall))),
    );
    out.gauge(
        "checkpoint_duration_seconds",
        "How long the newest checkpoint's manifest took once its pieces were durable (process 0).",
        c.last_duration_seconds,
    );
    out.gauge(
        "checkpoint_size_bytes",
        "The newest complete checkpoint's pieces (process 0).",
        c.last_time.map(|_| c.bytes as f64),
    );
    out.counter(
        "checkpoint_written_bytes_total",
        "Checkpoint pieces written by this process's workers.",
        c.bytes_written,
    );
    out.gauge(
        "restore_duration_seconds",
        "From start until the restored state was in the dataflow.",
        c.restore_seconds,
    );
    out.counter(
        "restored_rows_total",
        "Checkpoint rows this process's workers restored.",
        c.restored_rows,
    );
    store_ops(out, c);
}

/// Requests to the checkpoint store, by operation.
fn store_ops(out: &mut Exposition, c: &CheckpointFigures) {
    type Family = (&'static str, &'static str, fn(&StoreOpFigures) -> u64);
    let families: [Family; 4] = [
        (
            "checkpoint_store_requests_total",
            "Requests to the checkpoint store (folder or object store), retries included, by operation.",
            |o| o.requests,
        ),
        (
            "checkpoint_store_bytes_total",
            "Bytes sent to (put) or received from (get) the checkpoint store, by operation.",
            |o| o.bytes,
        ),
        (
            "checkpoint_store_errors_total",
            "Requests to the checkpoint store that failed, by operation.",
            |o| o.errors,
        ),
        (
            "checkpoint_store_retries_total",
            "Requests to the checkpoint store that retried a failed one, by operation.",
            |o| o.retries,
        ),
    ];
    for (name, help, value) in families {
        out.family(name, "counter", help);
        for op in STORE_OPS {
            let figures = c.store.get(op).copied().unwrap_or_default();
            out.sample(&[("op", &op)], value(&figures));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::operators::windows::StateSize;
    use crate::model::summary::Summary;
    use crate::observe::metrics::{Life, OutputCounts, PartitionFigures, Published, WorkerFigures};

    /// Figures with a sample for every family: several partitions, workers
    /// and topics, some without a lag, a high water or a delay.
    fn populated() -> Metrics {
        let metrics = Metrics::default();
        metrics.update(|f| {
            for (topic, partition, read, lag, high_water) in [
                ("probes", 0, 7, Some(3), Some(99)),
                ("probes", 1, 12, None, Some(1_700_000_000_123)),
                ("logins", 0, 5, Some(0), None),
            ] {
                f.partitions.insert(
                    (topic.into(), partition),
                    PartitionFigures {
                        read,
                        lag,
                        high_water,
                    },
                );
            }
            for w in 0..2 {
                let summary = Summary {
                    accepted: [10, 2, 1],
                    rejected: [("late", 2)].into(),
                    blank: 4,
                    ..Summary::default()
                };
                f.workers.insert(
                    w,
                    WorkerFigures {
                        summary,
                        frontier_delay_ms: (w == 0).then_some(1_234),
                        window: StateSize {
                            keys: 5,
                            timestamps: 100,
                            ..StateSize::default()
                        },
                        output_frontier: Some(1_700_000_000_500),
                        output_waiting: w * 7,
                    },
                );
            }
            f.walkins_emitted = 42;
            f.progress = Published {
                frontier: 99,
                messages: 17,
            };
            f.life = Life {
                state: ServiceState::Running,
                ready_lag: 100,
                workers: 2,
                restored: 2,
            };
            f.checkpoints = CheckpointFigures {
                completed: 2,
                last_time: Some(1_000),
                last_wall_ms: Some(1_000),
                last_duration_seconds: Some(0.125),
                bytes: 4096,
                restore_seconds: Some(0.25),
                ..CheckpointFigures::default()
            };
        });
        let mut counts = OutputCounts::default();
        for (topic, ms) in [("walkins", 3), ("visits", 1_000), ("visits", 40_000)] {
            counts.produced(topic);
            counts.acknowledged(topic, ms);
        }
        metrics.add(&mut counts);
        metrics
    }

    /// The families of `text` in order, `(name, kind)`, after checking that
    /// each is declared once (HELP, then TYPE) and followed by its samples
    /// only, each with the same labels in the same order; and how many
    /// samples each has.
    fn families(text: &str) -> Vec<(String, String, usize)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut families: Vec<(String, String, usize)> = Vec::new();
        let mut labels: Option<Vec<String>> = None;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, help) = help.split_once(' ').expect("HELP has a text");
                assert!(name.starts_with("presence_") && !help.is_empty(), "{line}");
                let kind = lines
                    .get(i + 1)
                    .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                    .unwrap_or_else(|| panic!("no TYPE right after {line:?}"));
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
                assert!(
                    families.iter().all(|(seen, ..)| seen != name),
                    "{name} declared twice"
                );
                families.push((name.to_owned(), kind.to_owned(), 0));
                labels = None;
                i += 2;
                continue;
            }
            let (name, kind, samples) = families.last_mut().expect("a sample after a family");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{value:?} is no number: {line}"));
            let (series, names) = match series.split_once('{') {
                Some((series, rest)) => {
                    let rest = rest.strip_suffix('}').expect("labels end with }");
                    let names = rest
                        .split(',')
                        .map(|pair| {
                            let (label, quoted) = pair.split_once('=').expect("label=\"value\"");
                            assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
                            label.to_owned()
                        })
                        .collect();
                    (series, names)
                }
                None => (series, Vec::new()),
            };
            let suffix = series
                .strip_prefix(name.as_str())
                .unwrap_or_else(|| panic!("{line:?} is not of family {name}"));
            match (kind.as_str(), suffix) {
                (_, "") if kind != "histogram" => {
                    let expected = labels.get_or_insert_with(|| names.clone());
                    assert_eq!(*expected, names, "{name}: labels differ");
                }
                ("histogram", "_bucket") => assert_eq!(names, ["le"], "{line}"),
                ("histogram", "_sum" | "_count") => assert!(names.is_empty(), "{line}"),
                _ => panic!("{line:?} is not of family {name}"),
            }
            *samples += 1;
            i += 1;
        }
        families
    }

    #[test]
    fn every_family_is_declared_once_and_followed_by_its_samples() {
        let full = families(&populated().render());
        // docs/operations.md's table lists as many.
        assert_eq!(full.len(), 31, "{full:?}");
        for (name, _, samples) in &full {
            assert!(*samples > 0, "{name} has no sample");
        }
        // With nothing known yet, the same families in the same order: a
        // family's samples come and go, the family does not.
        let empty = families(&Metrics::default().render());
        let names = |families: &[(String, String, usize)]| -> Vec<(String, String)> {
            families
                .iter()
                .map(|(n, k, _)| (n.clone(), k.clone()))
                .collect()
        };
        assert_eq!(names(&full), names(&empty));
    }

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_sample() {
        let text = populated().render();
        let value = |line: &str| line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap();
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("presence_end_to_end_latency_seconds_bucket"))
            .map(value)
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        // 3 ms, 1 s and 40 s: in the 5 ms bucket, the 1 s bucket and +Inf.
        let expected = [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 3].map(f64::from);
        assert_eq!(buckets, expected);
        assert!(text.contains("presence_end_to_end_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("presence_end_to_end_latency_seconds_sum 41.003\n"));
        assert!(text.contains("presence_end_to_end_latency_seconds_count 3\n"));
    }

    #[test]
    fn renders_every_family_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.update(|f| {
            f.partitions.insert(
                ("probes".into(), 0),
                PartitionFigures {
                    read: 7,
                    lag: Some(3),
                    high_water: Some(99),
                },
            );
            let mut summary = Summary::default();
            summary.rejected.insert("late", 2);
            summary.blank = 4;
            f.workers.insert(
                0,
                WorkerFigures {
                    summary,
                    window: StateSize {
                        keys: 5,
                        ..StateSize::default()
                    },
                    ..WorkerFigures::default()
                },
            );
            f.checkpoints.completed = 2;
            f.checkpoints.last_time = Some(1_000);
            f.checkpoints.bytes = 4096;
            f.checkpoints.restore_seconds = Some(0.25);
        });
        metrics.acknowledged("walkins", 3);
        metrics.acknowledged("walkins", 40_000);
        let text = metrics.render();
        for line in [
            "presence_records_read_total{topic=\"probes\",partition=\"0\"} 7",
            "presence_consumer_lag{topic=\"probes\",partition=\"0\"} 3",
            "presence_records_rejected_total{reason=\"late\"} 2",
            "presence_records_rejected_total{reason=\"corrupt\"} 0",
            "presence_open_visits{worker=\"0\"} 5",
            "presence_records_blank_total 4",
            "presence_event_time_high_water_timestamp_seconds{topic=\"probes\",partition=\"0\"} 0.099",
            "presence_end_to_end_latency_seconds_bucket{le=\"0.002\"} 0",
            "presence_end_to_end_latency_seconds_bucket{le=\"0.005\"} 1",
            "presence_end_to_end_latency_seconds_bucket{le=\"+Inf\"} 2",
            "presence_end_to_end_latency_seconds_count 2",
            "presence_output_records_acknowledged_total{topic=\"walkins\"} 2",
            "presence_checkpoints_total 2",
            "presence_checkpoint_failures_total 0",
            "presence_checkpoint_size_bytes 4096",
            "presence_restore_duration_seconds 0.25",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
