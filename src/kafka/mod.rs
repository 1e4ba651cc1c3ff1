//! Kafka: the input partitions each worker reads, and the upsert, rejected
//! and progress topics the outputs are written to (docs/contract.md, section 3).
//!
//! Every librdkafka setting presence changes is set in [`client_config`],
//! [`consumer()`] or [`producer()`], each with its reason.
//!
//! - [`error`]: the failures that stop the service ([`KafkaFailure`]).
//! - [`connection`]: how presence reaches Kafka ([`Connection`]) and the
//!   settings every client shares.
//! - [`settings`]: the operator's client settings (`--kafka-config`, `-X`).
//! - [`consumer`](mod@consumer): the input consumer, the input partitions
//!   it is assigned, and their offsets.
//! - [`fetch`]: reading the consumer's queue of messages and errors.
//! - [`source`]: one worker's input partitions, read and ingested.
//! - [`deliveries`]: what the output producers have in flight and what was
//!   acknowledged.
//! - [`producer`](mod@producer): the output producer, handing it records
//!   and serving its delivery reports.
//! - [`upsert`]: the sinks to the upsert topics and the rejected topic.
//! - [`progress`]: the progress topic.
//! - [`offsets`]: committing the input offsets to the consumer group.
//! - [`admin`]: creating missing topics, dropping clients.
//! - [`memory`]: keeping the memory librdkafka frees.
//!
//! The items most callers need are re-exported here.

pub mod admin;
pub mod connection;
pub mod consumer;
pub mod deliveries;
pub mod error;
pub mod fetch;
pub mod memory;
pub mod offsets;
pub mod producer;
pub mod progress;
pub mod settings;
pub mod source;
pub mod upsert;

pub use admin::{
    create_missing_topics, create_missing_topics_with, drop_in_background, NewTopicSpec,
};
pub use connection::{client_config, Connection, GROUP_ID};
pub use consumer::{
    assign, cached_end_offset, consumer, input_partitions, watermarks, ConsumerEvents,
    InputPartition, FETCH_WAIT_MAX_MS, REBALANCES,
};
pub use deliveries::{Acked, Deliveries, DeliveryTracker, Floors, UNTRACKED};
pub use error::KafkaFailure;
pub use memory::{
    give_back_freed, keep_freed_memory, no_huge_pages, purge_freed_at_once, purge_freed_later,
};
pub use producer::{
    flush, offer, offer_or_fail, producer, send, send_or_fail, serve, serve_outputs,
    PRODUCER_LINGER_MS,
};
