//! What the output producers have in flight and what the broker has
//! acknowledged: per logical time the records still unacknowledged (a
//! sink holds its time until none are), the first record refused for good,
//! and per checkpoint cut where its records can be in the output
//! partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// The logical time of records whose acknowledgement holds nothing back
/// (progress messages).
pub const UNTRACKED: u64 = u64::MAX;

/// Per output topic and partition, an offset (see [`Deliveries::floors`]).
pub type Floors = BTreeMap<(String, i32), i64>;

/// Per output topic and partition, one past the greatest offset any
/// producer of the process has seen acknowledged (or the partition's end
/// when the run started, if greater): shared by the workers' producers, so
/// that a worker that has written nothing to a partition yet still knows
/// where the process's records there end.
pub type Acked = Arc<Mutex<HashMap<String, BTreeMap<i32, i64>>>>;

/// Outstanding output records per logical time, shared with the producer's
/// delivery callback; and where the records of later logical times can be
/// in the output partitions, for checkpoints.
#[derive(Debug, Default)]
pub struct Deliveries {
    pending: BTreeMap<u64, usize>,
    failure: Option<(String, KafkaError)>,
    /// What the process's producers have seen acknowledged.
    acked: Acked,
    /// Cuts are multiples of this logical time (with checkpoints).
    every: Option<u64>,
    /// The least cut not yet reached: every record sent so far has a time
    /// below it.
    uncrossed: u64,
    /// Per cut first reached by a record sent (and every cut between it
    /// and the one before), `acked` just before that record was sent.
    at_crossing: BTreeMap<u64, Floors>,
    /// Records produced and acknowledged since the metrics last had them.
    counts: crate::observe::metrics::OutputCounts,
}

impl Deliveries {
    /// Counts one more record of logical time `time` in flight.
    pub fn sent(&mut self, time: u64) {
        *self.pending.entry(time).or_default() += 1;
        if let Some(every) = self.every {
            if time >= self.uncrossed {
                let cut = time / every * every;
                self.at_crossing.insert(cut, self.current());
                self.uncrossed = cut.saturating_add(every);
            }
        }
    }

    /// Takes back one record of `time` counted by [`Deliveries::sent`] that
    /// the producer did not take.
    pub(super) fn unsent(&mut self, time: u64) {
        if let Some(count) = self.pending.get_mut(&time) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&time);
            }
        }
    }

    /// Counts one record of `topic` the producer took, for the metrics.
    pub(super) fn produced(&mut self, topic: &str) {
        self.counts.produced(topic);
    }

    /// Whether every record of `time` sent so far was acknowledged.
    pub fn acknowledged(&self, time: u64) -> bool {
        !self.pending.contains_key(&time)
    }

    /// Whether every record sent so far was acknowledged.
    pub fn all_acknowledged(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records a record that could not be sent at all.
    pub fn fail(&mut self, topic: &str, error: KafkaError) {
        self.failure
            .get_or_insert_with(|| (topic.to_owned(), error));
    }

    /// The first delivery that failed for good, if any.
    pub fn failure(&self) -> Option<&(String, KafkaError)> {
        self.failure.as_ref()
    }

    /// Notes the cuts (multiples of `every`) that [`Deliveries::floors`]
    /// will be asked for.
    pub fn track_cuts(&mut self, every: u64) {
        self.every = Some(every.max(1));
    }

    /// Shares `acked` with the other producers of the process: where the
    /// output partitions ended when the run started (this run writes
    /// nothing below), then what any of them saw acknowledged.
    pub fn share(&mut self, acked: Acked) {
        self.acked = acked;
    }

    fn delivered(&mut self, topic: &str, partition: i32, offset: i64) {
        let mut acked = self
            .acked
            .lock()
            .expect("no thread panics holding the lock");
        if !acked.contains_key(topic) {
            acked.insert(topic.to_owned(), BTreeMap::new());
        }
        let partitions = acked.get_mut(topic).expect("inserted above");
        let next = partitions.entry(partition).or_default();
        *next = (*next).max(offset + 1);
    }

    fn current(&self) -> Floors {
        let acked = self
            .acked
            .lock()
            .expect("no thread panics holding the lock");
        acked
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |(&partition, &next)| ((topic.clone(), partition), next))
            })
            .collect()
    }

    /// For the cut at `cut` (`None`: the final cut, after which nothing is
    /// sent), per output partition an offset at or above which is every
    /// record this producer sends at a time at or after the cut: what the
    /// process saw acknowledged before the first such record was sent. A
    /// partition missing has no such offset known.
    ///
    /// A broker appends a partition's records in the order it receives
    /// them, so a record sent after an acknowledgement lands above it.
    pub fn floors(&mut self, cut: Option<u64>) -> Floors {
        let Some(cut) = cut else {
            return self.current();
        };
        if self.uncrossed <= cut {
            return self.current(); // nothing at or after the cut sent yet
        }
        let floors = self
            .at_crossing
            .range(cut..)
            .next()
            .map(|(_, floors)| floors.clone())
            .unwrap_or_default();
        self.at_crossing = self.at_crossing.split_off(&cut);
        floors
    }
}

/// The producer's context: acknowledgements decrement [`Deliveries`] and
/// feed the metrics (counted per producer, added to the metrics by
/// [`serve_outputs`](crate::kafka::producer::serve_outputs) and when the
/// producer goes).
#[derive(Clone, Debug, Default)]
pub struct DeliveryTracker(
    pub Arc<Mutex<Deliveries>>,
    pub crate::observe::metrics::Metrics,
);

impl DeliveryTracker {
    /// Adds what was produced and acknowledged since the last call to the
    /// metrics.
    pub fn publish(&self) {
        let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
        self.1.add(&mut deliveries.counts);
    }
}

impl Drop for DeliveryTracker {
    fn drop(&mut self) {
        if let Ok(mut deliveries) = self.0.lock() {
            self.1.add(&mut deliveries.counts);
        }
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, time: usize) {
        use rdkafka::message::Message;
        let time = time as u64;
        match result {
            Err((error, message)) => {
                // The time stays pending for good: a record that was never
                // acknowledged must not let the progress frontier pass it.
                let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
                deliveries
                    .failure
                    .get_or_insert_with(|| (message.topic().to_owned(), error.clone()));
                return;
            }
            Ok(_) if time == UNTRACKED => return,
            Ok(_) => {}
        }
        let mut deliveries = self.0.lock().expect("no thread panics holding the lock");
        if let Ok(message) = result {
            // A record's logical time is the millisecond its input was read.
            let latency = crate::model::clock::now_ms().saturating_sub(time);
            deliveries.counts.acknowledged(message.topic(), latency);
            deliveries.delivered(message.topic(), message.partition(), message.offset());
        }
        let count = deliveries
            .pending
            .get_mut(&time)
            .expect("a delivery of a record that was sent");
        *count -= 1;
        if *count == 0 {
            deliveries.pending.remove(&time);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(floors: &Floors, partition: i32) -> Option<i64> {
        floors.get(&("walkins".to_owned(), partition)).copied()
    }

    #[test]
    fn a_cut_s_floor_is_what_was_acknowledged_before_its_first_record_was_sent() {
        let mut d = Deliveries::default();
        d.track_cuts(10);
        d.share(Arc::new(Mutex::new(
            [("walkins".to_owned(), [(0, 5), (1, 0)].into())].into(),
        )));
        d.sent(3);
        d.delivered("walkins", 0, 5);
        d.sent(7);
        d.delivered("walkins", 0, 6);
        // Nothing at or after 10 sent yet: everything acknowledged so far.
        assert_eq!(floor(&d.floors(Some(10)), 0), Some(7));
        // The first record of time >= 20 comes now (crossing 10 and 20);
        // acknowledgements after it do not move those cuts' floors.
        d.sent(25);
        d.delivered("walkins", 0, 7);
        d.delivered("walkins", 1, 0);
        d.sent(15); // a later record of an earlier time crosses nothing
        d.sent(31);
        d.delivered("walkins", 0, 8);
        assert_eq!(floor(&d.floors(Some(20)), 0), Some(7));
        assert_eq!(floor(&d.floors(Some(20)), 1), Some(0), "the seed");
        assert_eq!(floor(&d.floors(Some(30)), 0), Some(8));
        assert_eq!(floor(&d.floors(Some(30)), 1), Some(1));
        // The final cut: everything acknowledged.
        assert_eq!(floor(&d.floors(None), 0), Some(9));
        assert!(!d.all_acknowledged());
    }

    #[test]
    fn a_producer_knows_what_the_process_s_others_saw_acknowledged() {
        let acked = Acked::default();
        let (mut a, mut b) = (Deliveries::default(), Deliveries::default());
        a.share(Arc::clone(&acked));
        b.share(Arc::clone(&acked));
        a.delivered("walkins", 0, 10);
        assert_eq!(floor(&b.floors(None), 0), Some(11));
    }

    #[test]
    fn a_cut_skipped_by_one_crossing_shares_its_floor() {
        let mut d = Deliveries::default();
        d.track_cuts(10);
        d.delivered("walkins", 0, 0);
        d.sent(35); // the first record at or after 10, 20 and 30
        d.delivered("walkins", 0, 1);
        assert_eq!(floor(&d.floors(Some(10)), 0), Some(1));
        assert_eq!(floor(&d.floors(Some(30)), 0), Some(1));
        assert_eq!(floor(&d.floors(Some(40)), 0), Some(2), "not reached yet");
    }
}
