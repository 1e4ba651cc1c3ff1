//! Queries over HTTP checked against the upsert topics: an answer as of
//! frontier `T` must be exactly the state the topics hold once the progress
//! topic reaches `T` (the last value per key of the messages below `T`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use presence::model::output::Output;
use presence::service::Topics;
use serde_json::Value;

use super::{
    file_rows, get, progress_messages, read_messages, state_as_of, wait_until, TopicMessage,
};

/// The keys a test asks about: businesses, (business, contact) pairs and
/// devices, from a backfill's output, plus some that exist nowhere.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    pub businesses: Vec<String>,
    pub pairs: Vec<(String, String)>,
    pub devices: Vec<String>,
}

impl Keys {
    /// The keys of a backfill's output folder `out`, at most `n` of each.
    pub fn of_backfill(out: &Path, n: usize) -> Keys {
        let rows = |folder: &str| -> Vec<Value> {
            file_rows(&out.join(folder))
                .iter()
                .map(|row| serde_json::from_str(row).unwrap())
                .collect()
        };
        let text = |row: &Value, field: &str| row[field].as_str().unwrap().to_owned();
        let counts = rows("walkin-counts");
        let mut businesses: BTreeSet<String> = counts.iter().map(|r| text(r, "business")).collect();
        businesses.extend(rows("present").iter().map(|r| text(r, "business")));
        let mut keys = Keys {
            businesses: businesses.into_iter().take(n).collect(),
            pairs: counts
                .iter()
                .map(|r| (text(r, "business"), text(r, "contact")))
                .take(n)
                .collect(),
            devices: rows("device-contacts")
                .iter()
                .map(|r| text(r, "device"))
                .take(n)
                .collect(),
        };
        keys.businesses.push("no-such-store".into());
        keys.pairs.push(("no-such-store".into(), "nobody".into()));
        keys.devices.push("no-such-phone".into());
        keys
    }

    /// Every request for these keys.
    pub fn paths(&self) -> Vec<String> {
        let q = |s: &str| {
            s.replace('%', "%25")
                .replace('&', "%26")
                .replace(' ', "%20")
        };
        let mut paths = Vec::new();
        for business in &self.businesses {
            paths.push(format!("/v1/present?business={}", q(business)));
            paths.push(format!("/v1/walkin-counts?business={}", q(business)));
        }
        for (business, contact) in &self.pairs {
            paths.push(format!(
                "/v1/walkin-counts?business={}&contact={}",
                q(business),
                q(contact)
            ));
        }
        for device in &self.devices {
            paths.push(format!("/v1/device-contacts?device={}", q(device)));
        }
        paths
    }
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub struct Asked {
    pub path: String,
    pub status: u16,
    pub body: String,
}

impl Asked {
    /// The answer as JSON (only for a 200).
    pub fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{} answered {}", self.path, self.body);
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} answered invalid JSON ({e}): {}", self.path, self.body))
    }

    /// The frontier the answer is exactly as of.
    pub fn frontier(&self) -> u64 {
        self.json()["as_of"]["frontier"].as_u64().unwrap()
    }
}

/// Asks `path` of the server at `addr`.
pub fn ask(addr: &str, path: &str) -> Asked {
    let (status, body) =
        get(addr, path).unwrap_or_else(|| panic!("no HTTP answer from {addr} to {path}"));
    Asked {
        path: path.to_owned(),
        status,
        body,
    }
}

/// The current rows of an upsert topic's messages below `frontier`, as JSON.
fn rows_as_of(messages: &[TopicMessage], frontier: u64) -> Vec<Value> {
    state_as_of(messages, frontier)
        .iter()
        .map(|row| serde_json::from_str(row).unwrap())
        .collect()
}

/// The state of the three queried topics, read once.
pub struct TopicState {
    present: Vec<TopicMessage>,
    counts: Vec<TopicMessage>,
    contacts: Vec<TopicMessage>,
    /// `(frontier, event_time)` of every progress message, in order.
    progress: Vec<(u64, u64)>,
}

impl TopicState {
    pub fn read(brokers: &str, topics: &Topics) -> TopicState {
        TopicState {
            present: read_messages(brokers, &topics[Output::Present]),
            counts: read_messages(brokers, &topics[Output::WalkinCounts]),
            contacts: read_messages(brokers, &topics[Output::DeviceContacts]),
            progress: progress_messages(brokers, topics)
                .iter()
                .map(|p| {
                    (
                        p["frontier"].as_u64().unwrap(),
                        p["event_time"]
                            .as_u64()
                            .expect("progress carries event_time"),
                    )
                })
                .collect(),
        }
    }

    /// What the topics say `path` must answer as of `frontier`, without
    /// `as_of`.
    pub fn expected(&self, path: &str, frontier: u64) -> Value {
        expected(
            path,
            rows_as_of(&self.present, frontier),
            rows_as_of(&self.counts, frontier),
            rows_as_of(&self.contacts, frontier),
        )
    }

    /// The last frontier of the progress topic.
    pub fn last_frontier(&self) -> u64 {
        self.progress.last().expect("a progress message").0
    }

    /// Checks every 200 answer of `asked` against the topics at its
    /// frontier, and its event time against the progress messages around
    /// it; returns how many were checked.
    pub fn check(&self, asked: &[Asked], what: &str) -> usize {
        let last = self.progress.last().expect("a progress message").0;
        let mut checked = 0;
        for answer in asked.iter().filter(|a| a.status == 200) {
            let as_of = answer.json()["as_of"].clone();
            let json = without_as_of(answer);
            let frontier = as_of["frontier"].as_u64().unwrap();
            let event_time = as_of["event_time"].as_u64().unwrap();
            assert!(
                frontier <= last,
                "{what}: {} is as of {frontier}, beyond the last progress frontier {last}",
                answer.path
            );
            assert_eq!(
                json,
                self.expected(&answer.path, frontier),
                "{what}: {} as of {frontier} against the topics",
                answer.path
            );
            // The event-time frontier only grows with the logical one.
            for &(published, published_event_time) in &self.progress {
                if published <= frontier {
                    assert!(published_event_time <= event_time, "{what}: {} as of {frontier} has event time {event_time}, below progress {published}'s {published_event_time}", answer.path);
                } else {
                    assert!(published_event_time >= event_time, "{what}: {} as of {frontier} has event time {event_time}, above progress {published}'s {published_event_time}", answer.path);
                }
            }
            checked += 1;
        }
        checked
    }
}

/// What a backfill's output `out` says `path` must answer at the end of
/// the input, without `as_of`.
pub fn expected_of_backfill(out: &Path, path: &str) -> Value {
    let rows = |folder: &str| -> Vec<Value> {
        file_rows(&out.join(folder))
            .iter()
            .map(|row| serde_json::from_str(row).unwrap())
            .collect()
    };
    expected(
        path,
        rows("present"),
        rows("walkin-counts"),
        rows("device-contacts"),
    )
}

/// An answer without its `as_of`.
pub fn without_as_of(asked: &Asked) -> Value {
    let mut json = asked.json();
    json.as_object_mut().unwrap().remove("as_of");
    json
}

/// What `path` must answer given the current rows of `present`,
/// `walkin-counts` and `device-contacts`, without `as_of`.
fn expected(path: &str, present: Vec<Value>, counts: Vec<Value>, contacts: Vec<Value>) -> Value {
    let (endpoint, query) = path.split_once('?').unwrap();
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let field = |row: &Value, name: &str| row[name].as_str().unwrap().to_owned();
    match endpoint {
        "/v1/present" => {
            let business = &params["business"];
            let mut devices: Vec<Value> = present
                .into_iter()
                .filter(|row| &field(row, "business") == business)
                .collect();
            devices.sort_by_key(|row| field(row, "device"));
            serde_json::json!({"business": business, "devices": devices})
        }
        "/v1/walkin-counts" => {
            let business = &params["business"];
            let rows: Vec<Value> = counts
                .into_iter()
                .filter(|row| &field(row, "business") == business)
                .collect();
            match params.get("contact") {
                Some(contact) => {
                    let count = rows
                        .iter()
                        .find(|row| &field(row, "contact") == contact)
                        .map_or(0, |row| row["count"].as_u64().unwrap());
                    serde_json::json!({"business": business, "contact": contact, "count": count})
                }
                None => {
                    let mut counts: Vec<(u64, String)> = rows
                        .iter()
                        .map(|row| (row["count"].as_u64().unwrap(), field(row, "contact")))
                        .collect();
                    counts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                    let counts: Vec<Value> = counts
                        .into_iter()
                        .map(|(count, contact)| serde_json::json!({"contact": contact, "count": count}))
                        .collect();
                    serde_json::json!({"business": business, "counts": counts})
                }
            }
        }
        "/v1/device-contacts" => {
            let device = &params["device"];
            let contact = contacts
                .into_iter()
                .find(|row| &field(row, "device") == device)
                .map(|row| row["contact"].clone())
                .unwrap_or(Value::Null);
            serde_json::json!({"device": device, "contact": contact})
        }
        other => panic!("not a query endpoint: {other}"),
    }
}

/// Asks every one of `paths` until each answers what the backfill wrote
/// (the run has caught up), keeping every answer.
pub fn until_caught_up(
    addr: &str,
    paths: &[String],
    out: &std::path::Path,
    asked: &mut Vec<Asked>,
) {
    wait_until("every query to answer what backfill wrote", || {
        let round: Vec<Asked> = paths.iter().map(|path| ask(addr, path)).collect();
        let done = round
            .iter()
            .all(|a| a.status == 200 && without_as_of(a) == expected_of_backfill(out, &a.path));
        asked.extend(round);
        done
    });
}
