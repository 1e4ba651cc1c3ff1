//! The documentation's field lists are what the program writes and reads:
//! the tables of `docs/contract.md` (records, keys, progress) and of
//! `docs/operations.md` (metrics) against a backfill, a Kafka run and the
//! metrics it served.

use presence::model::output::Output;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod common;
use common::*;

use presence::harness::generator::WorkloadConfig;
use presence::model::ingest::{Ingested, Kind, PartitionIngest};
use presence::model::params::Params;
use presence::observe::metrics::Metrics;
use presence::service::{run, RunJob, Topics};
use serde_json::Value;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the table after `marker` (an HTML comment), as cells.
fn table(text: &str, marker: &str) -> Vec<Vec<String>> {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the docs"));
    text[at + marker.len()..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // header and rule
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The first column of the table after `<!-- fields: NAME -->`, unquoted.
fn fields(text: &str, name: &str) -> BTreeSet<String> {
    table(text, &format!("<!-- fields: {name} -->"))
        .into_iter()
        .map(|row| row[0].trim_matches('`').to_owned())
        .collect()
}

/// The top-level field names of the JSON object `text`, in the order
/// written (a `serde_json::Value` keeps them sorted).
fn field_order(text: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visitor)
        }
    }
    serde_json::from_str::<Keys>(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .0
}

/// The first column of the table after `<!-- fields: NAME -->`, unquoted,
/// in the documented order.
fn ordered_fields(text: &str, name: &str) -> Vec<String> {
    table(text, &format!("<!-- fields: {name} -->"))
        .into_iter()
        .map(|row| row[0].trim_matches('`').to_owned())
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is an object"))
        .keys()
        .cloned()
        .collect()
}

/// A valid value for an input field, by its name.
fn valid(field: &str) -> Value {
    match field {
        "ts" => 1_700_000_000_000u64.into(),
        "rssi" => (-50).into(),
        "count" => 3.into(),
        _ => format!("some-{field}").into(),
    }
}

#[test]
fn input_fields_are_exactly_what_is_required() {
    let contract = doc("contract.md");
    for (kind, name) in [
        (Kind::Probe, "probe"),
        (Kind::Login, "login"),
        (Kind::BaseCount, "base-count"),
    ] {
        let fields = fields(&contract, name);
        assert!(!fields.is_empty(), "{name}");
        let record = |fields: &BTreeSet<String>| -> Vec<u8> {
            let object: serde_json::Map<String, Value> =
                fields.iter().map(|f| (f.clone(), valid(f))).collect();
            Value::Object(object).to_string().into_bytes()
        };
        let ingest = |text: &[u8]| {
            PartitionIngest::new(kind, "docs", 0, &Params::default()).ingest(
                text,
                1,
                presence::model::clock::now_ms(),
            )
        };
        // The documented fields make a valid record...
        let accepted = ingest(&record(&fields));
        assert!(
            !matches!(accepted, Ingested::Rejected(_)),
            "{name}: the documented fields are not accepted: {accepted:?}"
        );
        // ...and each of them is required.
        for missing in &fields {
            let mut fewer = fields.clone();
            fewer.remove(missing);
            assert!(
                matches!(ingest(&record(&fewer)), Ingested::Rejected(_)),
                "{name}: {missing} is documented as required"
            );
        }
    }
}

/// The key template of a topic (`["business","device",start]`) as field names.
fn key_fields(template: &str) -> Vec<String> {
    template
        .trim_matches('`')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|part| part.trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn output_fields_keys_progress_and_metrics_are_documented_as_written() {
    let contract = doc("contract.md");
    let operations = doc("operations.md");
    let mock = mock_inputs();
    let brokers = mock.bootstrap_servers();
    let config = WorkloadConfig {
        days: 1,
        devices: 400,
        businesses: 6,
        probe_partitions: PROBE_PARTITIONS as u64,
        broken_chance: 0.01,
        ..WorkloadConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    produce_and_backfill(&brokers, &Topics::default(), &config, dir.path(), false);
    let topics = Topics::default();
    create_output_topics(&mock, &topics, 2);
    let metrics = Metrics::default();
    // With a checkpoint folder, so that the checkpoint families are served.
    let state = tempfile::tempdir().unwrap();
    let job = RunJob {
        output_partitions: 2,
        checkpoint: Some(presence::service::CheckpointSettings {
            dir: state.path().into(),
            interval: std::time::Duration::from_secs(10),
            reset: false,
            kept: presence::checkpoint::store::MANIFESTS_KEPT,
        }),
        ..RunJob::new(brokers.clone(), topics.clone())
    };
    // The service as it runs (some families are served only then: the
    // event-time frontier is everything once the input is exhausted),
    // until every input record is read and every output topic has records.
    let produced: u64 = read_topic(&brokers, &topics.probes).len() as u64
        + read_topic(&brokers, &topics.logins).len() as u64
        + read_topic(&brokers, &topics.base_counts).len() as u64;
    let shutdown = Arc::new(AtomicBool::new(false));
    let service = {
        let (job, shutdown, metrics) = (job.clone(), Arc::clone(&shutdown), metrics.clone());
        std::thread::spawn(move || run(timely::Config::process(2), job, shutdown, metrics))
    };
    wait_until("every record read and every output written", || {
        metrics.read(|f| f.workers.values().map(|w| w.summary.lines).sum::<u64>()) == produced
            && topics
                .outputs
                .values()
                .chain([&topics.progress])
                .all(|topic| !read_topic(&brokers, topic).is_empty())
    });
    let running = metrics.render();
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    service.join().unwrap().unwrap();
    // And once more, to the end: it restores the first run's checkpoint, so
    // that the restore's families are served too.
    let restarted = Metrics::default();
    run(
        timely::Config::process(2),
        RunJob {
            stop_at_end: true,
            ..job
        },
        Arc::new(AtomicBool::new(false)),
        restarted.clone(),
    )
    .unwrap();

    // Files: every record of every folder has exactly the documented fields.
    let out = dir.path().join("out");
    for folder in presence::files::output::FOLDERS {
        let documented = fields(&contract, folder);
        let records = presence::files::output::read_collection::<Value>(&out.join(folder)).unwrap();
        assert!(!records.is_empty(), "{folder}");
        for record in &records {
            assert_eq!(keys(record), documented, "{folder}: {record}");
        }
    }

    // Topics: values are the fields plus `time` (rejected: the fields),
    // keys are the documented template of the value's fields.
    let keys_table = table(&contract, "<!-- keys -->");
    let documented_topics: BTreeSet<String> = keys_table
        .iter()
        .map(|row| row[0].trim_matches('`').to_owned())
        .collect();
    let folder_of: BTreeMap<&str, (&str, &String)> = [
        ("walkins", ("walkins", &topics[Output::Walkins])),
        (
            "enriched-walkins",
            ("enriched-walkins", &topics[Output::EnrichedWalkins]),
        ),
        (
            "device-contacts",
            ("device-contacts", &topics[Output::DeviceContacts]),
        ),
        (
            "walkin-counts",
            ("walkin-counts", &topics[Output::WalkinCounts]),
        ),
        ("present", ("present", &topics[Output::Present])),
        ("presence-rejected", ("rejected", &topics[Output::Rejected])),
    ]
    .into();
    for (topic, (folder, name)) in &folder_of {
        assert!(documented_topics.contains(*topic), "{topic} is documented");
        let row = keys_table
            .iter()
            .find(|row| row[0].trim_matches('`') == *topic)
            .unwrap();
        let template = key_fields(&row[1]);
        // A row's fields in the documented order, then `time`.
        let mut expected = ordered_fields(&contract, folder);
        if *folder != "rejected" {
            expected.push("time".to_owned());
        }
        let messages = read_topic(&brokers, name);
        assert!(!messages.is_empty(), "{topic}");
        for (_, _, key, value) in messages {
            let key: Value = serde_json::from_str(&key.expect("a key")).unwrap();
            let Some(value) = value else { continue }; // a tombstone
            assert_eq!(field_order(&value), expected, "{topic}: {value}");
            let value: Value = serde_json::from_str(&value).unwrap();
            let from_value: Vec<Value> = template.iter().map(|f| value[f].clone()).collect();
            match &key {
                Value::Array(parts) => assert_eq!(parts, &from_value, "{topic}: key {key}"),
                single => assert_eq!(vec![single.clone()], from_value, "{topic}: key {key}"),
            }
        }
    }
    assert!(documented_topics.contains("presence-progress"));
    let progress = progress_messages(&brokers, &topics);
    assert!(!progress.is_empty());
    let documented = fields(&contract, "progress");
    for message in &progress {
        assert_eq!(keys(message), documented, "{message}");
    }

    // Metrics: the documented families are the ones served, with their labels.
    let text = running + &metrics.render() + &restarted.render();
    let served: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let documented: BTreeMap<String, (BTreeSet<String>, String)> =
        table(&operations, "<!-- metrics -->")
            .into_iter()
            .map(|row| {
                let cell = row[0].trim_matches('`');
                let (name, labels) = match cell.split_once('{') {
                    Some((name, labels)) => (
                        name,
                        labels
                            .trim_end_matches('}')
                            .split(',')
                            .map(str::to_owned)
                            .collect(),
                    ),
                    None => (cell, BTreeSet::new()),
                };
                (name.to_owned(), (labels, row[1].clone()))
            })
            .collect();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        served.keys().collect::<Vec<_>>(),
        "documented metrics against served ones"
    );
    // Every documented family has samples (a family with none would leave
    // its labels unchecked), each with exactly the documented labels.
    let sampled: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .map(|name| {
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            if documented.contains_key(base) {
                base
            } else {
                name
            }
        })
        .collect();
    let unsampled: Vec<&String> = documented
        .keys()
        .filter(|name| !sampled.contains(name.as_str()))
        .collect();
    assert!(
        unsampled.is_empty(),
        "documented, but no samples: {unsampled:?}"
    );
    for (name, (labels, kind)) in &documented {
        assert_eq!(&served[name], kind, "{name}'s type");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (sample, _) = line.rsplit_once(' ').unwrap();
            let (sample_name, sample_labels) = match sample.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (sample, ""),
            };
            let mut expected = labels.clone();
            if sample_name == format!("{name}_bucket") && kind == "histogram" {
                expected.insert("le".to_owned());
            } else if sample_name != name
                && !(kind == "histogram"
                    && [format!("{name}_sum"), format!("{name}_count")]
                        .contains(&sample_name.to_owned()))
            {
                continue;
            }
            let found: BTreeSet<String> = sample_labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| l.split_once('=').unwrap().0.to_owned())
                .collect();
            assert_eq!(found, expected, "{line}");
        }
    }
}

/// The refused client settings documented are exactly the ones refused.
#[test]
fn refused_client_settings_are_documented() {
    let operations = doc("operations.md");
    let documented: BTreeSet<String> = table(&operations, "<!-- refused settings -->")
        .into_iter()
        .flat_map(|row| {
            row[0]
                .split(',')
                .map(|key| key.trim().trim_matches('`').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let refused: BTreeSet<String> = presence::kafka::settings::REFUSED
        .iter()
        .map(|(key, _)| (*key).to_owned())
        .collect();
    assert_eq!(documented, refused);
}

/// The defaults docs/contract.md gives the detection parameters
/// (`--flag` [default]) are the program's.
#[test]
fn documented_defaults_are_the_program_s() {
    let contract = doc("contract.md");
    let at = contract
        .find("Detection parameters")
        .expect("the contract lists the detection parameters");
    let text: String = contract[at..]
        .split("\n\n")
        .next()
        .unwrap()
        .replace('\n', " ");
    let default = |flag: &str| -> String {
        let after = text
            .split(&format!("`{flag}` ["))
            .nth(1)
            .unwrap_or_else(|| panic!("no default for {flag} in {text:?}"));
        after.split(']').next().unwrap().to_owned()
    };
    let duration = |flag: &str| presence::model::params::parse_duration(&default(flag)).unwrap();
    let documented = Params {
        rssi_min: default("--rssi-min").parse().unwrap(),
        session_gap: duration("--session-gap"),
        min_dwell: duration("--min-dwell"),
        min_probes: default("--min-probes").parse().unwrap(),
        allowed_lateness: duration("--allowed-lateness"),
        max_future: duration("--max-future"),
    };
    assert_eq!(documented, Params::default());
}
