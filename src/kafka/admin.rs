//! Administration: creating the topics that do not exist yet, and dropping
//! clients without waiting for librdkafka to tear them down.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::kafka::connection::{client_config, Connection};
use crate::kafka::consumer::{consumer, ConsumerEvents};
use crate::kafka::error::KafkaFailure;

/// How long to wait for a broker to create topics.
const CREATE_TOPICS_TIMEOUT: Duration = Duration::from_secs(3);

/// A topic to create: its name, partitions, and whether it is compacted
/// (`cleanup.policy=compact`: the last value per key is kept, which is what
/// an upsert topic means; topics without keys cannot be compacted).
pub type NewTopicSpec<'a> = (&'a str, i32, bool);

/// Creates those of `topics` that do not exist yet. A broker without the
/// CreateTopics call (librdkafka's mock) auto-creates topics on first use
/// instead, so "unsupported" is not an error.
pub fn create_missing_topics(
    kafka: &Connection,
    topics: &[NewTopicSpec<'_>],
    timeout: Duration,
) -> Result<(), KafkaFailure> {
    let consumer = consumer(kafka)?;
    let created = create_missing_topics_with(&consumer, kafka, topics, timeout);
    drop_in_background(consumer);
    created
}

/// Drops a Kafka client on a thread of its own: librdkafka takes about
/// 100 ms to tear one down, and nothing needs to wait for that (a restart
/// paid it three times before its workers started).
pub fn drop_in_background<T: Send + 'static>(client: T) {
    // If no thread can be made, the closure and the client are dropped here.
    let _ = std::thread::Builder::new()
        .name("presence:drop-client".into())
        .spawn(move || drop(client));
}

/// [`create_missing_topics`], reading the topic list with `consumer`.
pub fn create_missing_topics_with(
    consumer: &BaseConsumer<ConsumerEvents>,
    kafka: &Connection,
    topics: &[NewTopicSpec<'_>],
    timeout: Duration,
) -> Result<(), KafkaFailure> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let failure = |action: &str| KafkaFailure::client(&kafka.brokers, action.to_owned());
    // All topics' metadata: asking for one by name would auto-create it.
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(failure("reading the topic list"))?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<NewTopic> = topics
        .iter()
        .filter(|(name, _, _)| !existing.contains(name))
        .map(|&(name, partitions, compacted)| {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            if compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = kafka.create(
        client_config(kafka),
        DefaultClientContext,
        "an admin client",
    )?;
    // A broker without CreateTopics (librdkafka's mock) never answers it, so
    // the attempt is bounded and a time-out is not fatal: such brokers create
    // topics on first use, and a broker that does not will fail the first
    // write with a clear message.
    let attempt = timeout.min(CREATE_TOPICS_TIMEOUT);
    let options = AdminOptions::new()
        .request_timeout(Some(attempt))
        .operation_timeout(Some(attempt));
    let results = match block_on(admin.create_topics(&missing, &options)) {
        Err(KafkaError::AdminOp(
            code @ (RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut),
        )) => {
            tracing::warn!(%code, "the broker did not create the output topics; assuming it creates them on first use");
            return Ok(());
        }
        other => other.map_err(failure("creating the output topics"))?,
    };
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, "created an output topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {} // another process was first
            Err((_, RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::InvalidRequest)) => {}
            Err((topic, code)) => {
                return Err(KafkaFailure::Client {
                    brokers: kafka.brokers.clone(),
                    action: format!("creating output topic {topic}"),
                    source: Box::new(KafkaError::AdminOp(code)),
                })
            }
        }
    }
    Ok(())
}

/// Runs a future to completion on this thread (librdkafka's own threads do
/// the work; the admin API only hands back a future).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
