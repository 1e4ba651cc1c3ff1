//! How presence reaches Kafka: the brokers, the consumer group and the
//! operator's client settings, and the settings every client shares.

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;

use crate::kafka::error::KafkaFailure;
use crate::kafka::settings::ClientSettings;
use crate::model::params::is_host_port;

/// How presence reaches Kafka: the bootstrap servers (`--brokers`), the
/// consumer group it reports its offsets to (`--group-id`) and the
/// operator's client settings (`--kafka-config`, `-X`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The bootstrap servers.
    pub brokers: String,
    /// The consumer group presence commits its offsets to.
    pub group_id: String,
    /// Applied over presence's own settings of every client.
    pub settings: ClientSettings,
}

/// `--brokers`: a comma-separated list of `HOST:PORT` (each may carry a
/// `SCHEME://` prefix, as librdkafka allows), checked before any work: a
/// list librdkafka cannot use would only show as a timeout.
///
/// ```
/// use presence::kafka::connection::parse_brokers;
/// assert_eq!(parse_brokers("a:9092, b:9092").as_deref(), Ok("a:9092,b:9092"));
/// assert!(parse_brokers("").is_err());
/// assert!(parse_brokers("garbage").is_err());
/// ```
pub fn parse_brokers(text: &str) -> Result<String, String> {
    let list: Vec<&str> = text.split(',').map(str::trim).collect();
    for broker in &list {
        let address = broker
            .split_once("://")
            .map_or(*broker, |(_, address)| address);
        if !is_host_port(address) {
            return Err(format!(
                "{broker:?} is not HOST:PORT (a comma-separated list of them, e.g. 127.0.0.1:9092)"
            ));
        }
    }
    Ok(list.join(","))
}

/// The default of `--group-id`.
pub const GROUP_ID: &str = "presence";

impl Connection {
    /// `brokers`, the default group and no settings of the operator's.
    pub fn new(brokers: impl Into<String>) -> Self {
        Connection {
            brokers: brokers.into(),
            group_id: GROUP_ID.to_owned(),
            settings: Default::default(),
        }
    }

    /// A client of `config` with the operator's settings applied over it.
    pub fn create<C, T>(
        &self,
        mut config: ClientConfig,
        context: C,
        what: &str,
    ) -> Result<T, KafkaFailure>
    where
        C: ClientContext,
        T: rdkafka::config::FromClientConfigAndContext<C>,
    {
        self.settings.apply(&mut config);
        config
            .create_with_context(context)
            .map_err(|source| KafkaFailure::Client {
                brokers: self.brokers.clone(),
                action: format!("creating {what}"),
                source: Box::new(source),
            })
    }
}

impl From<&str> for Connection {
    fn from(brokers: &str) -> Self {
        Connection::new(brokers)
    }
}

impl From<String> for Connection {
    fn from(brokers: String) -> Self {
        Connection::new(brokers)
    }
}

impl From<&String> for Connection {
    fn from(brokers: &String) -> Self {
        Connection::new(brokers.as_str())
    }
}

/// The settings every client shares (the operator's are applied over them
/// by [`Connection::create`]).
pub fn client_config(kafka: &Connection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    // librdkafka logs through its own callback; presence reports errors itself.
    config.set("log_level", "3");
    config
}
