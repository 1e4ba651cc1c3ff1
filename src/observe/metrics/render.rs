//! [`Metrics::render`]: the figures in Prometheus' text exposition format,
//! one function per group of families, in the order they are served.
//! `docs/operations.md` documents every family (tests/docs.rs checks the
//! two agree) and dashboards read them by name and label: a change here is
//! a change of the service's interface.
//!
//! Each render registers the families, with their help and type, in a
//! `prometheus-client` [`Registry`] (prefix `presence`) built from one
//! snapshot of the [`Figures`], and the crate encodes them. Where the
//! crate's own metric types would serve something else than these families
//! have always been, a small type of this module encodes through its
//! [`EncodeMetric`] trait instead:
//! - [`Total`], for counters: the crate's counters drop `_total` from the
//!   family's name (`# TYPE presence_records_read counter`, the OpenMetrics
//!   way), which tests/docs.rs, promtool's text parser and the docs' table
//!   read as another family;
//! - [`Samples`], for labelled families: the crate's `Family` is a live map
//!   that writes its samples in hash order and leaves an empty family out,
//!   where a family here is always declared, its samples in a fixed order;
//! - [`Maybe`], for a gauge with no value yet: declared, without a sample.
//!
//! The latency histogram is written by hand between two parts of the
//! registry: the crate writes `le` as a float (`le="1.0"`), which would
//! rename the buckets `le="1"`, `le="5"` and `le="30"`.
//!
//! So the text is Prometheus' format 0.0.4 as before (what `/metrics` says
//! it is), not OpenMetrics: no `# EOF`.

use std::fmt::{Debug, Write as _};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{
    EncodeGaugeValue, EncodeLabelSet, EncodeMetric, GaugeValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

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
            out.finish()
        })
    }
}

/// Every family's name starts `presence_`.
const PREFIX: &str = "presence";

/// The exposition being built: the families registered since the last
/// [`Exposition::by_hand`], then encoded after the text so far.
struct Exposition {
    text: String,
    registry: Registry,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition {
            text: String::new(),
            registry: Registry::with_prefix(PREFIX),
        }
    }
}

impl Exposition {
    /// Registers family `name` (without the prefix) with `help`, which ends
    /// with a full stop (the crate adds it).
    fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        debug_assert!(help.ends_with('.'), "{name}: {help}");
        let help = help.strip_suffix('.').unwrap_or(help);
        self.registry.register(name, help, metric);
    }

    /// A counter family of one sample without labels.
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.register(name, help, Total(value));
    }

    /// A counter family of the `samples` given, `(labels, value)`.
    fn counters<L: Labels>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) {
        let samples = samples.into_iter().map(|(l, n)| (l, Total(n)));
        self.register(name, help, Samples(samples.collect()));
    }

    /// A gauge family of one sample without labels, or none if `value` is `None`.
    fn gauge<N: Value>(&mut self, name: &str, help: &str, value: Option<N>) {
        self.register(name, help, Maybe(value.map(ConstGauge::new)));
    }

    /// A gauge family of the `samples` given, `(labels, value)`.
    fn gauges<L: Labels, N: Value>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, N)>,
    ) {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.register(name, help, Samples(samples.collect()));
    }

    /// The text so far, every family registered until now encoded, to
    /// write a family by hand after them.
    fn by_hand(&mut self) -> &mut String {
        let registry = std::mem::replace(&mut self.registry, Registry::with_prefix(PREFIX));
        // Writing to a String cannot fail, nor can encoding these metrics.
        encode_registry(&mut self.text, &registry).expect("the families encode");
        &mut self.text
    }

    /// The whole exposition.
    fn finish(mut self) -> String {
        self.by_hand();
        self.text
    }
}

/// A sample's label set, as registered.
trait Labels: EncodeLabelSet + Debug + Send + Sync + 'static {}
impl<L: EncodeLabelSet + Debug + Send + Sync + 'static> Labels for L {}

/// A gauge's value, as registered.
trait Value: EncodeGaugeValue + Debug + Send + Sync + 'static {}
impl<N: EncodeGaugeValue + Debug + Send + Sync + 'static> Value for N {}

/// One label, `(name, value)`.
fn label<V>(name: &'static str, value: V) -> [(&'static str, V); 1] {
    [(name, value)]
}

/// The labels of a per-partition sample, in this order.
#[derive(Debug, prometheus_client::encoding::EncodeLabelSet)]
struct TopicPartition {
    topic: String,
    partition: i32,
}

impl TopicPartition {
    fn of((topic, partition): &(String, i32)) -> Self {
        TopicPartition {
            topic: topic.clone(),
            partition: *partition,
        }
    }
}

/// A whole number, written as one (the crate's `u64` gauge value fails
/// above `i64::MAX`: that far up it is written as a float).
#[derive(Debug)]
struct Whole(u64);

impl EncodeGaugeValue for Whole {
    fn encode(&self, encoder: &mut GaugeValueEncoder) -> Result<(), std::fmt::Error> {
        match i64::try_from(self.0) {
            Ok(n) => n.encode(encoder),
            Err(_) => (self.0 as f64).encode(encoder),
        }
    }
}

/// A counter's sample, in a family named with its `_total`: the crate's
/// counters append `_total` to the sample and leave it out of the family's
/// name, so this one writes its sample as is (as a gauge does).
#[derive(Debug)]
struct Total(u64);

impl TypedMetric for Total {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Total {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&Whole(self.0))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A family's samples, `(labels, metric)`, in this order; declared even
/// when there are none.
#[derive(Debug)]
struct Samples<L, M>(Vec<(L, M)>);

impl<L: EncodeLabelSet, M: EncodeMetric + TypedMetric> EncodeMetric for Samples<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, metric) in &self.0 {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// A family of one sample without labels, or of none (yet).
#[derive(Debug)]
struct Maybe<M>(Option<M>);

impl<M: EncodeMetric + TypedMetric> EncodeMetric for Maybe<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(metric) => metric.encode(encoder),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
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
    out.counters(
        "records_read_total",
        "Input records read, per topic and partition.",
        f.partitions
            .iter()
            .map(|(key, p)| (TopicPartition::of(key), p.read)),
    );
    out.counters(
        "records_accepted_total",
        "Input records accepted, by kind.",
        ["probe", "login", "base_count"]
            .into_iter()
            .zip(summary.accepted)
            .map(|(kind, n)| (label("kind", kind), n)),
    );
    out.counters(
        "records_rejected_total",
        "Input records rejected, by reason.",
        Reason::ALL.map(Reason::as_str).map(|reason| {
            let n = summary.rejected.get(reason).copied().unwrap_or(0);
            (label("reason", reason), n)
        }),
    );
    out.counter(
        "records_blank_total",
        "Input records that were empty or only whitespace (not records at all).",
        summary.blank,
    );
    out.gauges(
        "consumer_lag",
        "End offset minus next offset to read, per partition.",
        f.partitions
            .iter()
            .filter_map(|(key, p)| Some((TopicPartition::of(key), p.lag?))),
    );
    out.gauges(
        "event_time_high_water_timestamp_seconds",
        "Largest accepted probe ts per probe partition.",
        f.partitions
            .iter()
            .filter_map(|(key, p)| Some((TopicPartition::of(key), seconds(p.high_water?)))),
    );
}

/// Per worker: how far its event-time frontier lags, and its window state.
fn workers(out: &mut Exposition, f: &Figures) {
    out.gauges(
        "event_time_frontier_delay_seconds",
        "Wall clock minus the event-time frontier a worker promised (how far the freeing of window state lags).",
        f.workers
            .iter()
            .filter_map(|(&worker, w)| Some((label("worker", worker), seconds(w.frontier_delay_ms?)))),
    );
    out.gauges(
        "open_visits",
        "Keys with open visits held by the detection operator, per worker.",
        f.workers
            .iter()
            .map(|(&worker, w)| (label("worker", worker), Whole(w.window.keys as u64))),
    );
    out.gauges(
        "window_timestamps",
        "Probe timestamps held individually by the detection operator, per worker.",
        f.workers
            .iter()
            .map(|(&worker, w)| (label("worker", worker), Whole(w.window.timestamps as u64))),
    );
}

/// Output: walk-ins, records produced, held back and acknowledged.
fn outputs(out: &mut Exposition, f: &Figures) {
    out.counter(
        "walkins_emitted_total",
        "Walk-in rows written to the walk-ins topic.",
        f.walkins_emitted,
    );
    out.counters(
        "output_records_produced_total",
        "Output records handed to the producer.",
        f.produced
            .iter()
            .map(|(topic, &n)| (label("topic", topic.clone()), n)),
    );
    out.counter(
        "output_queue_full_total",
        "Times a sink found the producer's queue full and kept its records to send later (the broker is slower than the output).",
        f.output_queue_full,
    );
    out.gauges(
        "output_records_waiting",
        "Output records a worker's sinks hold because the producer's queue was full.",
        f.workers
            .iter()
            .map(|(&worker, w)| (label("worker", worker), Whole(w.output_waiting as u64))),
    );
    out.counters(
        "output_records_acknowledged_total",
        "Output records acknowledged by the broker.",
        f.acknowledged
            .iter()
            .map(|(topic, &n)| (label("topic", topic.clone()), n)),
    );
}

/// How long the broker took to acknowledge outputs (a histogram with
/// cumulative buckets), and below which time it acknowledged them all.
fn acknowledgements(out: &mut Exposition, f: &Figures) {
    // By hand: the crate would write `le="1.0"` where it has always been
    // `le="1"` (and so for 5 and 30).
    let text = out.by_hand();
    let name = format!("{PREFIX}_end_to_end_latency_seconds");
    let _ = writeln!(
        text,
        "# HELP {name} From reading an input to the broker acknowledging an output it caused.\n\
         # TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cumulative += f.latency_buckets[i];
        let le = seconds(*bound);
        let _ = writeln!(text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += f.latency_buckets[LATENCY_BUCKETS_MS.len()];
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(text, "{name}_sum {}", seconds(f.latency_sum_ms));
    let _ = writeln!(text, "{name}_count {cumulative}");
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
    out.gauges(
        "state",
        "1 for the state the process is in (starting, restoring, catching_up, running, stopping), 0 for the others.",
        ServiceState::ALL.map(|state| {
            (
                label("state", state.name()),
                i64::from(f.life.state == state),
            )
        }),
    );
    out.gauge(
        "ready",
        "1 when /ready answers 200: state restored and consumer lag below --ready-lag.",
        Some(i64::from(f.readiness().is_ok())),
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
        c.last_time.map(|_| Whole(c.bytes)),
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
        out.counters(
            name,
            help,
            STORE_OPS.map(|op| {
                let figures = c.store.get(op).copied().unwrap_or_default();
                (label("op", op), value(&figures))
            }),
        );
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

    /// What the crate's own types would write otherwise (see the module's
    /// documentation): counter families named with their `_total`, buckets
    /// `le="1"`, a whole number beyond `i64` written, every family declared.
    #[test]
    fn families_keep_their_names_labels_and_values() {
        let text = populated().render();
        for line in [
            "# HELP presence_records_read_total Input records read, per topic and partition.\n",
            "# TYPE presence_records_read_total counter\n",
            "# TYPE presence_checkpoint_store_retries_total counter\n",
            "presence_end_to_end_latency_seconds_bucket{le=\"1\"} 2\n",
            "presence_end_to_end_latency_seconds_bucket{le=\"30\"} 2\n",
            "presence_output_records_waiting{worker=\"1\"} 7\n",
            "presence_state{state=\"running\"} 1\n",
            "presence_ready 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("_total_total") && !text.contains("# EOF"));
        let huge = Metrics::default();
        huge.update(|f| f.walkins_emitted = u64::MAX);
        let text = huge.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("presence_walkins_emitted_total "))
            .unwrap();
        let value: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
        assert_eq!(value, u64::MAX as f64, "{line}");
    }
}
