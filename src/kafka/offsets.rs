//! Consumer-group offsets for the tools operators already run
//! (`kafka-consumer-groups --describe`, Burrow, consumer-group exporters):
//! after each complete checkpoint — or, without `--checkpoint-dir`, each
//! published progress frontier — the input offsets that state reflects are
//! committed to `--group-id`, so that the group's lag is presence's lag.
//!
//! The committing consumer is assigned nothing and never subscribes: no
//! rebalance ever happens, and no member of the group exists. presence never
//! reads these offsets back to decide where to start; its checkpoints do.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::connection::Connection;
use crate::kafka::consumer::{consumer, ConsumerEvents};
use crate::kafka::error::KafkaFailure;

/// Commits offsets to the group of a [`Connection`].
pub struct GroupOffsets {
    consumer: BaseConsumer<ConsumerEvents>,
    group: String,
    /// What was last committed, so that an unchanged set is not sent again.
    last: Vec<(String, i32, i64)>,
}

impl GroupOffsets {
    /// A committer for `kafka`'s group.
    pub fn new(kafka: &Connection) -> Result<Self, KafkaFailure> {
        Ok(GroupOffsets {
            consumer: consumer(kafka)?,
            group: kafka.group_id.clone(),
            last: Vec::new(),
        })
    }

    /// Commits `offsets` (topic, partition, next offset to read), without
    /// waiting unless `last` (the final checkpoint or frontier: the client
    /// is dropped next); a failed commit is a warning (the next one carries
    /// newer offsets), never a failure of the service. Offsets of files
    /// (from a backfill hand-off) are not Kafka offsets and must not be passed.
    pub fn commit(&mut self, offsets: impl IntoIterator<Item = (String, i32, i64)>, last: bool) {
        let mut offsets: Vec<(String, i32, i64)> = offsets.into_iter().collect();
        offsets.sort();
        // Served first: the results of earlier commits, so none piles up.
        while let Some(result) = self.consumer.poll(Duration::ZERO) {
            if let Err(error) = result {
                tracing::warn!(group = %self.group, %error, "the consumer group reported an error");
            }
        }
        if offsets.is_empty() || offsets == self.last {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in &offsets {
            if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                tracing::warn!(topic, partition, %error, "cannot commit an offset");
                return;
            }
        }
        let mode = if last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match self.consumer.commit(&list, mode) {
            Ok(()) => self.last = offsets,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "could not commit offsets to the consumer group; the next checkpoint or frontier tries again")
            }
        }
    }
}
