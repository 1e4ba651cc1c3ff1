//! The Kafka failures that stop the service, each saying what to check.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A Kafka failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    /// A client could not be created or a request failed.
    #[error("Kafka at {brokers}: {action}: {source}{}", hint(.source))]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// What was being done.
        action: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
    /// An input topic does not exist.
    #[error("input topic {topic:?} does not exist at {brokers}; create it, or name another with --{flag}-topic")]
    MissingTopic {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The flag that names it.
        flag: &'static str,
    },
    /// The client reported an error it cannot recover from.
    #[error("Kafka at {brokers}: the client cannot go on: {detail}")]
    Fatal {
        /// The bootstrap servers.
        brokers: String,
        /// The client's explanation.
        detail: String,
    },
    /// The broker refused an output record for good.
    #[error("Kafka at {brokers}: could not write to {topic}: {source}")]
    Delivery {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// The client's error.
        source: Box<KafkaError>,
    },
}

impl KafkaFailure {
    /// For `map_err`: a [`KafkaFailure::Client`] of `action` at `brokers`.
    pub fn client(brokers: &str, action: String) -> impl FnOnce(KafkaError) -> Self + use<> {
        let brokers = brokers.to_owned();
        move |source| KafkaFailure::Client {
            brokers,
            action,
            source: Box::new(source),
        }
    }
}

/// What to check when a client could not talk to the brokers at all.
fn hint(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
            " (is the broker up at that address, and does it need TLS or SASL? set security.protocol and its companions with --kafka-config or -X)"
        }
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            " (check sasl.mechanism, sasl.username and sasl.password)"
        }
        Some(RDKafkaErrorCode::SSL) => " (check ssl.ca.location and the broker's certificate)",
        _ => "",
    }
}
