//! The pipeline against a batch reference implementation of SPEC sections 1,
//! 2, 5 and 8 ("Who is in the store now"), on seeded random workloads.
//!
//! The reference ([`reference`]) is written from the SPEC text alone, as
//! plainly as possible: it reads every line, decides acceptance per
//! partition, and computes the five collections from scratch, `present` at
//! the event-time frontier the lines read so far make
//! ([`event_time_frontier`]). None of its logic comes from `src/`: not the
//! JSON parser (the documented notion of an integer, "no fraction or
//! exponent", is about the number's text), not the lateness rule, not the
//! event-time promise it feeds the incremental runs with ([`promise`]),
//! and not the contract's default parameters
//! ([`contract_defaults`], checked against `Params::default()`). It uses
//! `src/`'s record types only to compare results, and `Params` only to
//! carry the values it chose to the pipeline.
//!
//! Workloads ([`Generator`]) are small and dense on purpose: few businesses
//! and devices so visits collide, timestamps in a few hundred milliseconds so
//! every threshold (session gap, dwell, probe count, RSSI, lateness) is hit
//! exactly and missed by one, duplicates, ties, and bad lines of every kind.
//! Every assertion names the seed; narrowing [`SEEDS`] to it replays a failure.
//!
//! Three runs are checked against the reference:
//! - file backfill on 1, 2 and 4 workers, final collections ([`backfill`]);
//! - the pipeline driven batch by batch on 1, 2 and 4 workers sharing one
//!   set of collections, checked after every batch ([`incremental`]);
//! - the output files of 1 and 2 workers, line for line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Debug, Write as _};
use std::ops::RangeInclusive;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use presence::backfill::{self, Job, Progress};
use presence::cluster::responsible_for;
use presence::files::input::kind_name;
use presence::files::output::read_collection;
use presence::model::ingest::{Kind, PartitionIngest};
use presence::model::params::Params;
use presence::model::records::{
    BaseCount, DeviceContact, EnrichedWalkIn, EventTime, Login, Present, Probe, Reason, Rejected,
    WalkIn, WalkinCount,
};
use presence::pipeline::{records, Collections, Keep, Pipeline};

// ---------------------------------------------------------------------------
// The reference: docs/contract.md, sections 1 to 4 and 8, as a batch computation.
// ---------------------------------------------------------------------------

/// docs/contract.md, section 1: "the record is at most 64 KiB".
const MAX_RECORD_BYTES: usize = 64 * 1024;
/// docs/contract.md, section 1: ids are "non-empty strings of at most 256 bytes".
const MAX_ID_BYTES: usize = 256;
/// docs/contract.md, section 1: `ts` and `count` are below 2^53.
const BELOW_2_53: RangeInclusive<i128> = 0..=(1 << 53) - 1;

/// docs/contract.md, section 2: the detection parameters' defaults,
/// `--rssi-min` [-75], `--session-gap` [15m], `--min-dwell` [5m],
/// `--min-probes` [3], `--allowed-lateness` [5m], `--max-future` [1d].
fn contract_defaults() -> Params {
    const MINUTE: u64 = 60 * 1000;
    Params {
        rssi_min: -75,
        session_gap: 15 * MINUTE,
        min_dwell: 5 * MINUTE,
        min_probes: 3,
        allowed_lateness: 5 * MINUTE,
        max_future: 24 * 60 * MINUTE,
    }
}

/// A minimal JSON parser (RFC 8259) that keeps each number's text, so that
/// `-0` (an integer) and `0.0` (not one) stay apart — the documented integer rule
/// is about how a number is written, which general-purpose parsers forget.
mod json {
    /// A JSON value. Records are objects of strings and numbers, so arrays
    /// and literals are checked but their contents are not kept.
    pub enum Value {
        Null,
        Bool,
        /// The number exactly as written.
        Number(String),
        String(String),
        Array,
        /// Fields in the order written, duplicates included.
        Object(Vec<(String, Value)>),
    }

    /// The value `text` holds, or `None` if it is not exactly one JSON value.
    pub fn parse(text: &[u8]) -> Option<Value> {
        // A JSON text is UTF-8 (RFC 8259 section 8.1), inside strings or not.
        let text = std::str::from_utf8(text).ok()?;
        let mut parser = Parser {
            text: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_whitespace();
        (parser.at == parser.text.len()).then_some(value)
    }

    struct Parser<'a> {
        text: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.text.get(self.at).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let byte = self.peek()?;
            self.at += 1;
            Some(byte)
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            (self.next()? == byte).then_some(())
        }

        fn skip_whitespace(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        fn value(&mut self) -> Option<Value> {
            self.skip_whitespace();
            match self.peek()? {
                b'{' => self.object(),
                b'[' => self.array(),
                b'"' => self.string().map(Value::String),
                b't' => self.literal("true", Value::Bool),
                b'f' => self.literal("false", Value::Bool),
                b'n' => self.literal("null", Value::Null),
                b'-' | b'0'..=b'9' => self.number(),
                _ => None,
            }
        }

        fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
            self.text[self.at..].starts_with(word.as_bytes()).then(|| {
                self.at += word.len();
                value
            })
        }

        fn object(&mut self) -> Option<Value> {
            self.expect(b'{')?;
            let mut fields = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Some(Value::Object(fields));
            }
            loop {
                self.skip_whitespace();
                let name = self.string()?;
                self.skip_whitespace();
                self.expect(b':')?;
                fields.push((name, self.value()?));
                self.skip_whitespace();
                match self.next()? {
                    b',' => {}
                    b'}' => return Some(Value::Object(fields)),
                    _ => return None,
                }
            }
        }

        fn array(&mut self) -> Option<Value> {
            self.expect(b'[')?;
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                self.at += 1;
                return Some(Value::Array);
            }
            loop {
                self.value()?;
                self.skip_whitespace();
                match self.next()? {
                    b',' => {}
                    b']' => return Some(Value::Array),
                    _ => return None,
                }
            }
        }

        fn number(&mut self) -> Option<Value> {
            let start = self.at;
            if self.peek() == Some(b'-') {
                self.at += 1;
            }
            match self.next()? {
                b'0' => {}
                b'1'..=b'9' => self.digits(),
                _ => return None,
            }
            if self.peek() == Some(b'.') {
                self.at += 1;
                self.digit()?;
                self.digits();
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.at += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.at += 1;
                }
                self.digit()?;
                self.digits();
            }
            let text = std::str::from_utf8(&self.text[start..self.at]).ok()?;
            Some(Value::Number(text.to_owned()))
        }

        fn digit(&mut self) -> Option<()> {
            self.next()?.is_ascii_digit().then_some(())
        }

        fn digits(&mut self) {
            while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
                self.at += 1;
            }
        }

        fn string(&mut self) -> Option<String> {
            self.expect(b'"')?;
            let mut bytes = Vec::new();
            loop {
                match self.next()? {
                    b'"' => return String::from_utf8(bytes).ok(),
                    b'\\' => {
                        let unescaped = match self.next()? {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => self.unicode_escape()?,
                            _ => return None,
                        };
                        bytes.extend_from_slice(unescaped.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    0x00..=0x1f => return None,
                    byte => bytes.push(byte),
                }
            }
        }

        /// The character of a `\uXXXX` escape (its `\u` already read),
        /// joining a surrogate pair. A lone surrogate is not a character, so
        /// a string holding one is not a string of text.
        fn unicode_escape(&mut self) -> Option<char> {
            let unit = self.hex4()?;
            if (0xD800..0xDC00).contains(&unit) {
                self.expect(b'\\')?;
                self.expect(b'u')?;
                let low = self.hex4()?;
                if !(0xDC00..0xE000).contains(&low) {
                    return None;
                }
                return char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00));
            }
            char::from_u32(unit)
        }

        fn hex4(&mut self) -> Option<u32> {
            let digits = self.text.get(self.at..self.at + 4)?;
            if !digits.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            self.at += 4;
            u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
        }
    }
}

/// A record that passed docs/contract.md, section 1.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Valid {
    Probe(Probe),
    Login(Login),
    BaseCount(BaseCount),
}

/// docs/contract.md, section 1 for one line of a partition of `kind`: `None` for a blank
/// line (not a record), else the valid record or why it is rejected.
fn validate(kind: Kind, line: &[u8]) -> Option<Result<Valid, Reason>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if line.len() > MAX_RECORD_BYTES {
        return Some(Err(Reason::TooLarge));
    }
    Some(parse_record(kind, line).ok_or(Reason::Malformed))
}

fn parse_record(kind: Kind, line: &[u8]) -> Option<Valid> {
    let json::Value::Object(fields) = json::parse(line)? else {
        return None;
    };
    // A field given twice is ambiguous, and the SPEC never guesses.
    let field = |name: &str| {
        let mut values = fields
            .iter()
            .filter(|(field, _)| field == name)
            .map(|(_, value)| value);
        let value = values.next()?;
        values.next().is_none().then_some(value)
    };
    let id = |name: &str| match field(name)? {
        json::Value::String(id) if !id.is_empty() && id.len() <= MAX_ID_BYTES => Some(id.clone()),
        _ => None,
    };
    let integer = |name: &str, range: RangeInclusive<i128>| match field(name)? {
        json::Value::Number(text) if !text.contains(['.', 'e', 'E']) => text
            .parse::<i128>()
            .ok()
            .filter(|value| range.contains(value)),
        _ => None,
    };
    Some(match kind {
        Kind::Probe => Valid::Probe(Probe {
            device: id("device")?.into(),
            business: id("business")?.into(),
            ts: integer("ts", BELOW_2_53)? as u64,
            rssi: integer("rssi", -128..=0)? as i32,
        }),
        Kind::Login => Valid::Login(Login {
            device: id("device")?,
            business: id("business")?,
            contact: id("contact")?,
            ts: integer("ts", BELOW_2_53)? as u64,
        }),
        Kind::BaseCount => Valid::BaseCount(BaseCount {
            business: id("business")?,
            contact: id("contact")?,
            count: integer("count", BELOW_2_53)? as u64,
        }),
    })
}

/// A rejected record as compared: where it was, why, and its text. The
/// `detail` is free-form prose, so it is only checked to be there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RejectedRow {
    source: String,
    partition: u64,
    offset: u64,
    reason: Reason,
    record: String,
}

impl From<&Rejected> for RejectedRow {
    fn from(rejected: &Rejected) -> Self {
        RejectedRow {
            source: rejected.source.clone(),
            partition: rejected.partition,
            offset: rejected.offset,
            reason: rejected.reason,
            record: rejected.record.clone(),
        }
    }
}

/// Everything the pipeline outputs, each collection sorted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    walkins: Vec<WalkIn>,
    device_contacts: Vec<DeviceContact>,
    enriched_walkins: Vec<EnrichedWalkIn>,
    walkin_counts: Vec<WalkinCount>,
    present: Vec<Present>,
    rejected: Vec<RejectedRow>,
}

/// One input partition (a file) of a workload: its lines, without terminators.
#[derive(Clone, Debug)]
struct Partition {
    kind: Kind,
    /// Its index among the partitions of its kind.
    index: u64,
    lines: Vec<Vec<u8>>,
    /// Whether its file ends with a newline (the last line is a line either way).
    trailing_newline: bool,
}

/// A workload: parameters and partitions, in plan order (probe partitions,
/// then login partitions, then base-count partitions).
#[derive(Clone, Debug)]
struct Workload {
    seed: u64,
    params: Params,
    partitions: Vec<Partition>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// docs/contract.md, section 2 ("Which records are accepted"), for the
/// first `fed` lines of `partition`: each record's line number (from 1) and
/// its verdict, the valid record accepted or why it is rejected. Blank
/// lines are not records.
fn verdicts(
    partition: &Partition,
    fed: usize,
    params: &Params,
    future_limit: EventTime,
) -> Vec<(u64, Result<Valid, Reason>)> {
    let mut largest_accepted_ts: Option<EventTime> = None;
    let mut verdicts = Vec::new();
    for (line, offset) in partition.lines[..fed].iter().zip(1..) {
        let Some(verdict) = validate(partition.kind, line) else {
            continue;
        };
        let verdict = verdict.and_then(|record| match &record {
            Valid::Probe(Probe { ts, .. }) | Valid::Login(Login { ts, .. })
                if *ts > future_limit =>
            {
                Err(Reason::Future)
            }
            Valid::Probe(Probe { ts, .. })
                if largest_accepted_ts.is_some_and(|largest| {
                    largest > *ts && largest - ts > params.allowed_lateness
                }) =>
            {
                Err(Reason::Late)
            }
            _ => Ok(record),
        });
        if let Ok(Valid::Probe(probe)) = &verdict {
            largest_accepted_ts = largest_accepted_ts.max(Some(probe.ts));
        }
        verdicts.push((offset, verdict));
    }
    verdicts
}

/// What a probe partition promises about the probes it may still deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Promise {
    /// Nothing yet: no probe of the lines read so far is accepted, and
    /// there are more lines to read.
    Nothing,
    /// Every probe accepted from it from now on has a `ts` at or above this.
    AtLeast(EventTime),
    /// Read to its end without an accepted probe: it promises nothing of
    /// its own, and does not hold the event-time frontier back.
    Ended,
}

/// What a probe partition of which `fed` lines are read promises, as
/// docs/contract.md has it for backfill: its largest accepted `ts` minus
/// `allowed-lateness` (saturating). The end of input is not the passing of
/// time: a partition read to its end still promises just that, not
/// everything; one read to its end without an accepted probe has
/// [`Promise::Ended`]; before its first accepted probe, [`Promise::Nothing`].
fn partition_promise(partition: &Partition, fed: usize, params: &Params) -> Promise {
    let future_limit = now_ms() + params.max_future;
    let largest = verdicts(partition, fed, params, future_limit)
        .into_iter()
        .filter_map(|(_, verdict)| match verdict {
            Ok(Valid::Probe(probe)) => Some(probe.ts),
            _ => None,
        })
        .max();
    match largest {
        Some(largest) => Promise::AtLeast(largest.saturating_sub(params.allowed_lateness)),
        None if fed == partition.lines.len() => Promise::Ended,
        None => Promise::Nothing,
    }
}

/// The event-time frontier `W` once the first `fed[i]` lines of each
/// partition `i` are read: the smallest promise over the probe partitions,
/// one that promises nothing yet counting as 0 and one that ended without
/// an accepted probe not counting; `MAX` if none counts.
fn event_time_frontier(workload: &Workload, fed: &[usize]) -> EventTime {
    workload
        .partitions
        .iter()
        .zip(fed)
        .filter(|(partition, _)| partition.kind == Kind::Probe)
        .filter_map(
            |(partition, &fed)| match partition_promise(partition, fed, &workload.params) {
                Promise::Nothing => Some(0),
                Promise::AtLeast(promise) => Some(promise),
                Promise::Ended => None,
            },
        )
        .min()
        .unwrap_or(EventTime::MAX)
}

/// The SPEC's outcome of the first `fed[i]` lines of each partition `i`,
/// named `sources[i]` in rejections.
///
/// The future rule reads the wall clock; workloads keep every timestamp
/// either near 0 or near 2^53, so when the clock is read does not matter.
fn reference(workload: &Workload, sources: &[String], fed: &[usize]) -> Outcome {
    let params = &workload.params;
    let future_limit = now_ms() + params.max_future;
    let mut probes = Vec::new();
    let mut logins = Vec::new();
    let mut base_counts = Vec::new();
    let mut rejected = Vec::new();

    // SPEC sections 1, 2 (partitions and lateness) and 5.
    for ((partition, source), &fed) in workload.partitions.iter().zip(sources).zip(fed) {
        for (offset, verdict) in verdicts(partition, fed, params, future_limit) {
            match verdict {
                Ok(Valid::Probe(probe)) => probes.push(probe),
                Ok(Valid::Login(login)) => logins.push(login),
                Ok(Valid::BaseCount(base_count)) => base_counts.push(base_count),
                Err(reason) => rejected.push(RejectedRow {
                    source: source.clone(),
                    partition: partition.index,
                    offset,
                    reason,
                    record: String::from_utf8_lossy(&partition.lines[offset as usize - 1])
                        .into_owned(),
                }),
            }
        }
    }

    // Walk-ins: per (business, device), the distinct timestamps of strong
    // enough probes, split into visits at gaps larger than session-gap.
    let mut timestamps: BTreeMap<(String, String), BTreeSet<EventTime>> = BTreeMap::new();
    for probe in probes.iter().filter(|probe| probe.rssi >= params.rssi_min) {
        timestamps
            .entry((probe.business.to_string(), probe.device.to_string()))
            .or_default()
            .insert(probe.ts);
    }
    let visits = |timestamps: &BTreeSet<EventTime>| -> Vec<Vec<EventTime>> {
        let timestamps: Vec<EventTime> = timestamps.iter().copied().collect();
        timestamps
            .chunk_by(|earlier, later| later - earlier <= params.session_gap)
            .map(<[EventTime]>::to_vec)
            .collect()
    };
    let is_walkin = |visit: &[EventTime]| {
        let (first, last) = (visit[0], visit[visit.len() - 1]);
        visit.len() as u64 >= params.min_probes && last - first >= params.min_dwell
    };
    let mut walkins = Vec::new();
    for ((business, device), timestamps) in &timestamps {
        for visit in visits(timestamps) {
            let first = visit[0];
            if !is_walkin(&visit) {
                continue;
            }
            let detected_at = visit
                .iter()
                .enumerate()
                .find(|&(i, &ts)| {
                    i as u64 + 1 >= params.min_probes && ts - first >= params.min_dwell
                })
                .map(|(_, &ts)| ts)
                .expect("the last probe of a walk-in qualifies");
            walkins.push(WalkIn {
                business: business.clone(),
                device: device.clone(),
                start: first,
                detected_at,
            });
        }
    }

    // Device contacts: the contact of the greatest (ts, contact) per device.
    let mut latest_login: BTreeMap<&str, (EventTime, &str)> = BTreeMap::new();
    for login in &logins {
        let candidate = (login.ts, login.contact.as_str());
        let latest = latest_login.entry(&login.device).or_insert(candidate);
        *latest = (*latest).max(candidate);
    }
    let device_contacts: Vec<DeviceContact> = latest_login
        .iter()
        .map(|(device, (_, contact))| DeviceContact {
            device: device.to_string(),
            contact: contact.to_string(),
        })
        .collect();

    // Present: per (business, device), the newest visit (the one holding its
    // largest timestamp) if it is a walk-in still open at the event-time
    // frontier W (its last probe plus session-gap at or above W), with the
    // device's contact or none.
    let frontier = event_time_frontier(workload, fed);
    let mut present = Vec::new();
    for ((business, device), timestamps) in &timestamps {
        let visits = visits(timestamps);
        let newest = visits.last().expect("a key has a timestamp");
        let (since, last_seen) = (newest[0], newest[newest.len() - 1]);
        if is_walkin(newest) && last_seen.saturating_add(params.session_gap) >= frontier {
            present.push(Present {
                business: business.clone(),
                device: device.clone(),
                since,
                last_seen,
                contact: latest_login
                    .get(device.as_str())
                    .map(|(_, contact)| contact.to_string()),
            });
        }
    }

    let enriched_walkins: Vec<EnrichedWalkIn> = walkins
        .iter()
        .filter_map(|walkin| {
            latest_login
                .get(walkin.device.as_str())
                .map(|(_, contact)| EnrichedWalkIn {
                    business: walkin.business.clone(),
                    device: walkin.device.clone(),
                    start: walkin.start,
                    detected_at: walkin.detected_at,
                    contact: contact.to_string(),
                })
        })
        .collect();

    // Walk-in counts: the largest base count plus the enriched walk-ins.
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for base in &base_counts {
        let count = counts
            .entry((base.business.clone(), base.contact.clone()))
            .or_default();
        *count = (*count).max(base.count);
    }
    for enriched in &enriched_walkins {
        *counts
            .entry((enriched.business.clone(), enriched.contact.clone()))
            .or_default() += 1;
    }
    let walkin_counts = counts
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .map(|((business, contact), count)| WalkinCount {
            business,
            contact,
            count,
        })
        .collect();

    sorted(Outcome {
        walkins,
        device_contacts,
        enriched_walkins,
        walkin_counts,
        present,
        rejected,
    })
}

fn sorted(mut outcome: Outcome) -> Outcome {
    outcome.walkins.sort();
    outcome.device_contacts.sort();
    outcome.enriched_walkins.sort();
    outcome.walkin_counts.sort();
    outcome.present.sort();
    outcome.rejected.sort();
    outcome
}

// ---------------------------------------------------------------------------
// Comparison.
// ---------------------------------------------------------------------------

/// Panics, naming `context`, unless `actual` is `expected`; the message lists
/// only the differences, since whole collections would bury them.
fn assert_same_records<T: Ord + Debug>(what: &str, actual: &[T], expected: &[T], context: &str) {
    if actual == expected {
        return;
    }
    let mut unexpected: Vec<&T> = Vec::new();
    let mut missing: Vec<&T> = Vec::new();
    let (mut a, mut e) = (actual.iter().peekable(), expected.iter().peekable());
    loop {
        match (a.peek(), e.peek()) {
            (Some(x), Some(y)) if x == y => {
                a.next();
                e.next();
            }
            (Some(x), Some(y)) if x < y => unexpected.push(a.next().expect("peeked")),
            (_, Some(_)) => missing.push(e.next().expect("peeked")),
            (Some(_), None) => unexpected.push(a.next().expect("peeked")),
            (None, None) => break,
        }
    }
    let mut message = format!("{context}: {what} differ from the documented\n");
    for (heading, records) in [("missing", missing), ("unexpected", unexpected)] {
        let _ = writeln!(message, "  {heading} ({}):", records.len());
        for record in records {
            // A too-large record's text would drown the rest.
            let record = format!("{record:?}");
            let shown: String = record.chars().take(300).collect();
            let cut = if shown.len() < record.len() {
                "…"
            } else {
                ""
            };
            let _ = writeln!(message, "    {shown}{cut}");
        }
    }
    panic!("{message}");
}

fn assert_same_outcome(actual: &Outcome, expected: &Outcome, context: &str) {
    assert_same_records(
        "rejected records",
        &actual.rejected,
        &expected.rejected,
        context,
    );
    assert_same_records("walk-ins", &actual.walkins, &expected.walkins, context);
    assert_same_records(
        "device contacts",
        &actual.device_contacts,
        &expected.device_contacts,
        context,
    );
    assert_same_records(
        "enriched walk-ins",
        &actual.enriched_walkins,
        &expected.enriched_walkins,
        context,
    );
    assert_same_records(
        "walk-in counts",
        &actual.walkin_counts,
        &expected.walkin_counts,
        context,
    );
    assert_same_records("present rows", &actual.present, &expected.present, context);
}

fn rejected_rows(rejected: &[Rejected], context: &str) -> Vec<RejectedRow> {
    for record in rejected {
        assert!(
            !record.detail.is_empty(),
            "{context}: a rejection without detail: {record:?}"
        );
    }
    let mut rows: Vec<RejectedRow> = rejected.iter().map(RejectedRow::from).collect();
    rows.sort();
    rows
}

// ---------------------------------------------------------------------------
// Workloads.
// ---------------------------------------------------------------------------

/// SplitMix64: a tiny, good-enough generator, so workloads need no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, range: RangeInclusive<u64>) -> u64 {
        range.start() + self.below(range.end() - range.start() + 1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Few of each, so that visits and logins collide. Non-ASCII names are
/// written raw or `\u`-escaped at random (the same string either way), and
/// the emoji needs a surrogate pair.
const BUSINESSES: [&str; 3] = ["shop", "café", "bar \"42\""];
const DEVICES: [&str; 4] = ["phone-a", "phone-b", "ö-tablet", "📱"];
/// A device that logs in but no router ever sees.
const STRANGER: &str = "stranger";
/// "bob" > "bo" in byte order: ties on login `ts` are broken between them.
const CONTACTS: [&str; 3] = ["ann", "bo", "bob"];
/// Logins, and the records bad lines are made from, have a `ts` below this
/// (probes follow their visits, which reach about as far).
const HORIZON: u64 = 250;

/// Writes `text` as a JSON string, escaping non-ASCII characters at random.
fn json_string(rng: &mut Rng, text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() || rng.one_in(2) => out.push(c),
            c => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

/// A JSON object of `fields` (name, JSON text), in random order, sometimes
/// with an unknown field or extra whitespace.
fn json_object(rng: &mut Rng, mut fields: Vec<(&str, String)>) -> String {
    if rng.one_in(3) {
        let unknown = rng.pick(&[
            r#"{"router":[1,{"x":null}],"ok":true}"#,
            r#""r-7""#,
            "-1.5e3",
            "1e999",
        ]);
        fields.push(("extra", unknown.to_string()));
    }
    for i in (1..fields.len()).rev() {
        if rng.one_in(3) {
            fields.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    let spaced = rng.one_in(4);
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| {
            if spaced {
                format!(" \"{name}\" : {value} ")
            } else {
                format!("\"{name}\":{value}")
            }
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

/// `object` padded with whitespace inside its braces to exactly `size` bytes.
fn padded(object: &str, size: usize) -> Vec<u8> {
    let mut line = object.as_bytes().to_vec();
    let brace = line.pop().expect("an object ends with a brace");
    line.resize(size - 1, b' ');
    line.push(brace);
    line
}

/// An integer as JSON; zero is sometimes written `-0`, which is still an
/// integer (no fraction, no exponent).
fn json_integer(rng: &mut Rng, value: i64) -> String {
    if value == 0 && rng.one_in(3) {
        "-0".to_owned()
    } else {
        value.to_string()
    }
}

fn probe_fields(rng: &mut Rng, probe: &Probe) -> Vec<(&'static str, String)> {
    vec![
        ("device", json_string(rng, &probe.device)),
        ("business", json_string(rng, &probe.business)),
        ("ts", json_integer(rng, probe.ts as i64)),
        ("rssi", json_integer(rng, probe.rssi.into())),
    ]
}

fn login_fields(rng: &mut Rng, login: &Login) -> Vec<(&'static str, String)> {
    vec![
        ("device", json_string(rng, &login.device)),
        ("business", json_string(rng, &login.business)),
        ("contact", json_string(rng, &login.contact)),
        ("ts", json_integer(rng, login.ts as i64)),
    ]
}

fn base_count_fields(rng: &mut Rng, base: &BaseCount) -> Vec<(&'static str, String)> {
    vec![
        ("business", json_string(rng, &base.business)),
        ("contact", json_string(rng, &base.contact)),
        ("count", json_integer(rng, base.count as i64)),
    ]
}

/// A valid record's line: usually plain, rarely exactly at the size limit.
fn valid_line(rng: &mut Rng, fields: Vec<(&str, String)>) -> Vec<u8> {
    let object = json_object(rng, fields);
    if rng.one_in(80) {
        padded(&object, MAX_RECORD_BYTES)
    } else {
        object.into_bytes()
    }
}

/// A line that must be rejected as malformed or too large, made from the
/// fields of a valid record of `kind`.
fn flawed_line(rng: &mut Rng, kind: Kind, mut fields: Vec<(&'static str, String)>) -> Vec<u8> {
    let integer_field = if kind == Kind::BaseCount {
        "count"
    } else {
        "ts"
    };
    let id_field = fields[0].0;
    // The fields with `name`'s value replaced.
    let mut with = |name: &str, value: String| {
        fields
            .iter_mut()
            .filter(|(field, _)| *field == name)
            .for_each(|(_, old)| *old = value.clone());
        fields.clone()
    };
    match rng.below(17) {
        0 => b"not json".to_vec(),
        1 => {
            let object = json_object(rng, fields);
            object.as_bytes()[..object.len() / 2].to_vec()
        }
        2 => json_object(rng, with(integer_field, "\"5\"".into())).into_bytes(),
        3 => json_object(rng, with(integer_field, "5.0".into())).into_bytes(),
        4 => json_object(rng, with(integer_field, "5e1".into())).into_bytes(),
        5 => json_object(rng, with(id_field, "\"\"".into())).into_bytes(),
        // 257 bytes once unescaped, however it is written.
        6 => {
            let long = json_string(rng, &format!("{}é", "x".repeat(MAX_ID_BYTES - 1)));
            json_object(rng, with(id_field, long)).into_bytes()
        }
        7 if kind == Kind::Probe => {
            let rssi = rng.pick(&["1", "-129"]).to_string();
            json_object(rng, with("rssi", rssi)).into_bytes()
        }
        7 => json_object(rng, with(integer_field, "-1".into())).into_bytes(),
        8 => {
            let mut fields = fields;
            fields.remove(rng.below(fields.len() as u64) as usize);
            json_object(rng, fields).into_bytes()
        }
        9 => json_object(rng, with(integer_field, (1u64 << 53).to_string())).into_bytes(),
        10 => padded(
            &json_object(rng, fields),
            MAX_RECORD_BYTES + 1 + rng.below(100) as usize,
        ),
        // The values of a valid record, but not as an object.
        11 => {
            let values: Vec<String> = fields.into_iter().map(|(_, value)| value).collect();
            format!("[{}]", values.join(",")).into_bytes()
        }
        // Not UTF-8, so not JSON, even inside a field nobody reads.
        12 => {
            let object = json_object(rng, fields);
            let mut line = object.as_bytes()[..object.len() - 1].to_vec();
            line.extend_from_slice(b",\"note\":\"caf\xe9\"}");
            line
        }
        13 => json_object(rng, with(id_field, "\"\\ud83d\"".into())).into_bytes(),
        14 => json_object(rng, with(id_field, "null".into())).into_bytes(),
        15 => b"\xff\xfe{}".to_vec(),
        _ => json_object(rng, with(id_field, "\"tab\there\"".into())).into_bytes(),
    }
}

/// A blank line: skipped, but it still counts in line numbers.
fn blank_line(rng: &mut Rng) -> Vec<u8> {
    rng.pick(&["", "   ", "\t", " \t "]).as_bytes().to_vec()
}

/// A timestamp far beyond any wall clock (max-future stays small), yet valid.
fn future_ts(rng: &mut Rng) -> EventTime {
    (1 << 53) - 1 - rng.below(1000)
}

struct Generator {
    seed: u64,
    rng: Rng,
    params: Params,
}

/// Parameters small enough that every threshold is hit by small timestamps.
fn dense_params() -> Params {
    Params {
        session_gap: 10,
        min_dwell: 5,
        min_probes: 3,
        allowed_lateness: 7,
        rssi_min: -75,
        ..contract_defaults()
    }
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let params = if seed == 0 {
            dense_params()
        } else {
            Params {
                session_gap: rng.range(1..=20),
                min_dwell: rng.range(0..=15),
                min_probes: rng.range(0..=5),
                allowed_lateness: rng.range(0..=30),
                rssi_min: -(rng.range(60..=90) as i32),
                ..contract_defaults()
            }
        };
        Generator { seed, rng, params }
    }

    fn workload(mut self) -> Workload {
        let mut partitions = Vec::new();
        let counts = [
            (Kind::Probe, self.rng.range(1..=3)),
            (Kind::Login, self.rng.below(6).min(2)),
            (Kind::BaseCount, self.rng.range(0..=2)),
        ];
        for (kind, count) in counts {
            for index in 0..count {
                let lines = match kind {
                    // An empty file is a partition too.
                    _ if self.rng.one_in(20) => Vec::new(),
                    Kind::Probe => self.probe_lines(),
                    Kind::Login => self.login_lines(),
                    Kind::BaseCount => self.base_count_lines(),
                };
                let trailing_newline = !self.rng.one_in(3);
                partitions.push(Partition {
                    kind,
                    index,
                    lines,
                    trailing_newline,
                });
            }
        }
        Workload {
            seed: self.seed,
            params: self.params,
            partitions,
        }
    }

    /// One of the few devices, now and then the one with the longest valid
    /// id: 64 four-byte characters, 256 bytes.
    fn device(&mut self) -> String {
        if self.rng.one_in(10) {
            "📱".repeat(MAX_ID_BYTES / 4)
        } else {
            self.rng.pick(&DEVICES).to_string()
        }
    }

    /// An RSSI that is often exactly at `rssi-min`, or one below it.
    fn rssi(&mut self) -> i32 {
        match self.rng.below(12) {
            0 => self.params.rssi_min,
            1 => self.params.rssi_min - 1,
            2 => *self.rng.pick(&[-128, 0]),
            _ => -(self.rng.range(30..=70) as i32),
        }
    }

    /// The offsets from its start of one visit's probes, shaped to sit on
    /// the thresholds; `on_thresholds` picks the first shape (a walk-in, or
    /// one millisecond short of one).
    fn visit_offsets(&mut self, on_thresholds: bool) -> Vec<u64> {
        let Params {
            session_gap: gap,
            min_dwell: dwell,
            min_probes,
            ..
        } = self.params;
        let shape = if on_thresholds { 0 } else { self.rng.below(6) };
        match shape {
            // Exactly min-probes timestamps spanning exactly min-dwell, or one less.
            0 | 1 => {
                let probes = min_probes.max(2);
                let span = dwell.saturating_sub(self.rng.below(2));
                (0..probes).map(|i| span * i / (probes - 1)).collect()
            }
            // Neighbours exactly session-gap apart, or one more.
            2 => {
                let mut ts = 0;
                (0..self.rng.range(2..=5))
                    .map(|_| {
                        let at = ts;
                        ts += gap + self.rng.below(2);
                        at
                    })
                    .collect()
            }
            // One timestamp short of min-probes, however long the dwell.
            3 => {
                let step = self.rng.range(1..=gap.max(1));
                (0..min_probes.saturating_sub(1).max(1))
                    .map(|i| i * step)
                    .collect()
            }
            // A random walk, with repeated timestamps.
            _ => {
                let mut ts = 0;
                (0..self.rng.range(1..=min_probes + 4))
                    .map(|_| {
                        let step = [0, 1, gap, gap + 1, self.rng.below(gap + 1)];
                        ts += self.rng.pick(&step);
                        ts
                    })
                    .collect()
            }
        }
    }

    fn probe_lines(&mut self) -> Vec<Vec<u8>> {
        let mut planned = Vec::new();
        let mut clock = self.rng.below(20);
        let visits = self.rng.range(5..=12);
        for visit in 0..visits {
            let business = self.rng.pick(&BUSINESSES).to_string();
            let device = self.device();
            let start = clock + self.rng.below(self.params.session_gap + 2);
            // The last visit is often on the walk-in thresholds: it ends near
            // the partition's end, so it is often still open there (in the
            // store when the input ends).
            let last_on_thresholds = visit + 1 == visits && self.rng.one_in(2);
            for offset in self.visit_offsets(last_on_thresholds) {
                let rssi = self.rssi();
                planned.push(Probe {
                    device: device.as_str().into(),
                    business: business.as_str().into(),
                    ts: start + offset,
                    rssi,
                });
            }
            clock = start + self.rng.below(4 * self.params.session_gap + 4);
        }
        // Each probe is delivered up to allowed-lateness + 1 after its ts: out
        // of order, usually within the lateness, sometimes one past it.
        let lateness = self.params.allowed_lateness;
        planned.sort_by_cached_key(|probe| probe.ts + self.rng.below(lateness + 2));

        let mut lines = Vec::new();
        // The largest ts of the valid probes written so far, which is exactly
        // the largest accepted ts: a smaller one cannot raise it.
        let mut largest: Option<EventTime> = None;
        for probe in planned {
            self.extras(Kind::Probe, &mut lines);
            if let (Some(largest), true) = (largest, self.rng.one_in(5)) {
                // A straggler exactly at the lateness limit, one past it, or far behind.
                let behind = *self.rng.pick(&[lateness, lateness + 1, 3 * lateness + 5]);
                let straggler = Probe {
                    device: self.device().into(),
                    business: (*self.rng.pick(&BUSINESSES)).into(),
                    ts: largest.saturating_sub(behind),
                    rssi: self.rssi(),
                };
                let fields = probe_fields(&mut self.rng, &straggler);
                lines.push(valid_line(&mut self.rng, fields));
            }
            largest = largest.max(Some(probe.ts));
            let fields = probe_fields(&mut self.rng, &probe);
            let line = valid_line(&mut self.rng, fields);
            lines.push(line.clone());
            if self.rng.one_in(10) {
                // The same delivery twice.
                lines.push(line);
            }
            if self.rng.one_in(10) {
                let echo = Probe {
                    rssi: self.rssi(),
                    ..probe
                };
                let fields = probe_fields(&mut self.rng, &echo);
                lines.push(valid_line(&mut self.rng, fields));
            }
        }
        lines
    }

    fn login_lines(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut previous: Option<Login> = None;
        for _ in 0..self.rng.range(2..=10) {
            self.extras(Kind::Login, &mut lines);
            let contact = self.rng.pick(&CONTACTS).to_string();
            let login = match previous {
                // The same device at the same ts: a tie, broken by the larger contact.
                Some(previous) if self.rng.one_in(3) => Login {
                    contact,
                    ..previous
                },
                _ => Login {
                    device: if self.rng.one_in(6) {
                        STRANGER.to_owned()
                    } else {
                        self.device()
                    },
                    business: self.rng.pick(&BUSINESSES).to_string(),
                    contact,
                    ts: self.rng.below(HORIZON),
                },
            };
            let fields = login_fields(&mut self.rng, &login);
            let line = valid_line(&mut self.rng, fields);
            if self.rng.one_in(8) {
                lines.push(line.clone());
            }
            lines.push(line);
            previous = Some(login);
        }
        lines
    }

    fn base_count_lines(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for _ in 0..self.rng.range(1..=6) {
            self.extras(Kind::BaseCount, &mut lines);
            // A pair that never has walk-ins, now and then.
            let (business, contact) = if self.rng.one_in(5) {
                ("elsewhere", "dan")
            } else {
                (*self.rng.pick(&BUSINESSES), *self.rng.pick(&CONTACTS))
            };
            // The same pair again with another count: the largest wins.
            for _ in 0..self.rng.range(1..=2) {
                let count = *self.rng.pick(&[0, 0, 1, 2, 3, 40]);
                let base = BaseCount {
                    business: business.to_string(),
                    contact: contact.to_string(),
                    count,
                };
                let fields = base_count_fields(&mut self.rng, &base);
                lines.push(valid_line(&mut self.rng, fields));
            }
        }
        lines
    }

    /// Now and then, before a record: a bad line, a blank line, or a
    /// record from the future.
    fn extras(&mut self, kind: Kind, lines: &mut Vec<Vec<u8>>) {
        let template = self.template(kind);
        if self.rng.one_in(6) {
            lines.push(flawed_line(&mut self.rng, kind, template.clone()));
        }
        if self.rng.one_in(10) {
            lines.push(blank_line(&mut self.rng));
        }
        if kind != Kind::BaseCount && self.rng.one_in(25) {
            let ts = future_ts(&mut self.rng).to_string();
            let fields = template
                .into_iter()
                .map(|(name, value)| (name, if name == "ts" { ts.clone() } else { value }))
                .collect();
            lines.push(json_object(&mut self.rng, fields).into_bytes());
        }
    }

    /// The fields of some valid record of `kind`.
    fn template(&mut self, kind: Kind) -> Vec<(&'static str, String)> {
        let device = self.device();
        let business = self.rng.pick(&BUSINESSES).to_string();
        let contact = self.rng.pick(&CONTACTS).to_string();
        let ts = self.rng.below(HORIZON);
        match kind {
            Kind::Probe => probe_fields(
                &mut self.rng,
                &Probe {
                    device: device.into(),
                    business: business.into(),
                    ts,
                    rssi: -50,
                },
            ),
            Kind::Login => login_fields(
                &mut self.rng,
                &Login {
                    device,
                    business,
                    contact,
                    ts,
                },
            ),
            Kind::BaseCount => base_count_fields(
                &mut self.rng,
                &BaseCount {
                    business,
                    contact,
                    count: 1,
                },
            ),
        }
    }
}

fn workload(seed: u64) -> Workload {
    Generator::new(seed).workload()
}

// ---------------------------------------------------------------------------
// Running the pipeline.
// ---------------------------------------------------------------------------

/// Writes `workload` as files in `dir`: the `Job` to backfill them into
/// `dir/out`, and each partition's source name (its path).
fn write_files(workload: &Workload, dir: &Path) -> (Job, Vec<String>) {
    let mut job = Job {
        out: dir.join("out"),
        params: workload.params,
        ..Job::default()
    };
    let mut sources = Vec::new();
    for partition in &workload.partitions {
        let path = dir.join(format!(
            "{}-{}.jsonl",
            kind_name(partition.kind),
            partition.index
        ));
        let mut text = partition.lines.join(&b'\n');
        if partition.trailing_newline {
            text.push(b'\n');
        }
        std::fs::write(&path, text).expect("the temporary directory is writable");
        sources.push(path.to_string_lossy().into_owned());
        match partition.kind {
            Kind::Probe => job.probes.push(path),
            Kind::Login => job.logins.push(path),
            Kind::BaseCount => job.base_counts.push(path),
        }
    }
    (job, sources)
}

/// Backfills `workload` from files on `config`; returns the output and the
/// reference's outcome for the same files.
fn backfill(workload: &Workload, config: timely::Config, context: &str) -> (Outcome, Outcome) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (job, sources) = write_files(workload, dir.path());
    let out = job.out.clone();
    backfill::run(config, job, Arc::new(Progress::default()))
        .unwrap_or_else(|error| panic!("{context}: backfill failed: {error}"));
    let folder = |name: &str| out.join(name);
    let walkin_fields = ["business", "device", "start", "detected_at"];
    let rejected_fields = [
        "source",
        "partition",
        "offset",
        "reason",
        "detail",
        "record",
    ];
    let rejected: Vec<Rejected> = read_folder(&folder("rejected"), &rejected_fields, context);
    let actual = sorted(Outcome {
        walkins: read_folder(&folder("walkins"), &walkin_fields, context),
        device_contacts: read_folder(&folder("device-contacts"), &["device", "contact"], context),
        enriched_walkins: read_folder(
            &folder("enriched-walkins"),
            &[&walkin_fields[..], &["contact"]].concat(),
            context,
        ),
        walkin_counts: read_folder(
            &folder("walkin-counts"),
            &["business", "contact", "count"],
            context,
        ),
        present: read_folder(
            &folder("present"),
            &["business", "device", "since", "last_seen", "contact"],
            context,
        ),
        rejected: rejected_rows(&rejected, context),
    });
    let fed: Vec<usize> = workload
        .partitions
        .iter()
        .map(|partition| partition.lines.len())
        .collect();
    (actual, reference(workload, &sources, &fed))
}

/// The records of an output folder, each checked to have exactly `fields`
/// (deserializing alone would ignore extra ones).
fn read_folder<T: serde::de::DeserializeOwned>(
    folder: &Path,
    fields: &[&str],
    context: &str,
) -> Vec<T> {
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = read_collection(folder)
        .unwrap_or_else(|error| panic!("{context}: cannot read {}: {error}", folder.display()));
    let fields: BTreeSet<&str> = fields.iter().copied().collect();
    lines
        .into_iter()
        .map(|line| {
            let names: BTreeSet<&str> = line.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                fields,
                "{context}: a line of {} has other fields",
                folder.display()
            );
            serde_json::from_value(line.into()).unwrap_or_else(|error| {
                panic!(
                    "{context}: a line of {} does not read: {error}",
                    folder.display()
                )
            })
        })
        .collect()
}

/// The collections accumulated so far, as an [`Outcome`] (panics if a record
/// has a multiplicity other than 1).
fn snapshot(collections: &Collections, context: &str) -> Outcome {
    Outcome {
        walkins: records(&collections.walkins),
        device_contacts: records(&collections.device_contacts),
        enriched_walkins: records(&collections.enriched_walkins),
        walkin_counts: records(&collections.walkin_counts),
        present: records(&collections.present),
        rejected: rejected_rows(&collections.rejected, context),
    }
}

/// How many lines of each partition have been fed after each batch: each
/// batch takes a random number of the next lines of every partition.
fn batch_plan(workload: &Workload) -> Vec<Vec<usize>> {
    // A stream of its own, so that the workload does not depend on batching.
    let mut rng = Rng(workload.seed ^ 0x0BA7_C4E5);
    let largest_step = rng.range(1..=8);
    let total: Vec<usize> = workload
        .partitions
        .iter()
        .map(|partition| partition.lines.len())
        .collect();
    let mut fed = vec![0; total.len()];
    let mut plan = Vec::new();
    while fed != total {
        for (fed, total) in fed.iter_mut().zip(&total) {
            *fed = (*fed + rng.below(largest_step + 1) as usize).min(*total);
        }
        plan.push(fed.clone());
    }
    plan
}

/// One partition a worker feeds, and how far.
struct Feed {
    position: usize,
    ingest: PartitionIngest,
    fed: usize,
}

/// The event-time promise of a worker's probe partitions, as backfill makes
/// it: the least of their promises ([`partition_promise`], computed by the
/// reference, not by the pipeline's ingestion), leaving out those that
/// ended without an accepted probe; `u64::MAX` if that leaves none, `None`
/// while one promises nothing yet.
fn promise(feeds: &[Feed], workload: &Workload) -> Option<EventTime> {
    let mut least = EventTime::MAX;
    for feed in feeds
        .iter()
        .filter(|feed| feed.ingest.kind() == Kind::Probe)
    {
        let partition = &workload.partitions[feed.position];
        match partition_promise(partition, feed.fed, &workload.params) {
            Promise::Nothing => return None,
            Promise::AtLeast(promise) => least = least.min(promise),
            Promise::Ended => {}
        }
    }
    Some(least)
}

/// Lets worker 0 run `check` while every worker waits, so that no worker
/// changes the shared collections meanwhile. A failed check is recorded, not
/// raised, since a panicking worker 0 would leave the others waiting
/// forever; returns whether every check so far passed.
fn checkpoint(
    barrier: &Barrier,
    index: usize,
    failure: &Mutex<Option<String>>,
    check: impl FnOnce(),
) -> bool {
    barrier.wait();
    if index == 0 {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(check)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| {
                    panic
                        .downcast_ref::<&str>()
                        .map(|message| message.to_string())
                })
                .unwrap_or_else(|| "a check panicked".to_owned());
            *failure.lock().expect("the failure is only written here") = Some(message);
        }
    }
    barrier.wait();
    failure
        .lock()
        .expect("the failure is only written here")
        .is_none()
}

/// Drives a [`Pipeline`] per worker over `workload`, batch by batch, and
/// checks the shared collections against the reference after every batch
/// and after closing.
fn incremental(workload: &Workload, workers: usize) {
    let workload = Arc::new(workload.clone());
    let plan = Arc::new(batch_plan(&workload));
    let sources: Arc<Vec<String>> = Arc::new(
        workload
            .partitions
            .iter()
            .map(|partition| format!("{}-{}", kind_name(partition.kind), partition.index))
            .collect(),
    );
    let collections = Arc::new(Mutex::new(Collections::default()));
    let barrier = Arc::new(Barrier::new(workers));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let context = format!(
        "seed {} (incremental, {workers} workers, {} batches)",
        workload.seed,
        plan.len()
    );

    let shared_failure = Arc::clone(&failure);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (workload, plan, sources, failure) = (&*workload, &*plan, &*sources, &*shared_failure);
        let (index, peers) = (worker.index(), worker.peers());
        let mut pipeline = Pipeline::new(
            worker,
            &workload.params,
            Arc::clone(&collections),
            Keep::Collections,
            None,
            Default::default(),
        );
        let mut feeds: Vec<Feed> = workload
            .partitions
            .iter()
            .enumerate()
            .filter(|&(position, _)| responsible_for(position, peers) == index)
            .map(|(position, partition)| Feed {
                position,
                ingest: PartitionIngest::new(
                    partition.kind,
                    &sources[position],
                    partition.index,
                    &workload.params,
                ),
                fed: 0,
            })
            .collect();
        let check = |fed: &[usize], when: &str| {
            let actual = snapshot(
                &collections
                    .lock()
                    .expect("no worker panics holding the lock"),
                &context,
            );
            assert_same_outcome(
                &actual,
                &reference(workload, sources, fed),
                &format!("{context}, {when}"),
            );
        };

        for (batch, upto) in plan.iter().enumerate() {
            let now = now_ms();
            for feed in &mut feeds {
                let lines = &workload.partitions[feed.position].lines;
                for (line, offset) in lines[feed.fed..upto[feed.position]]
                    .iter()
                    .zip(feed.fed as u64 + 1..)
                {
                    pipeline.give(feed.ingest.ingest(line, offset, now));
                }
                feed.fed = upto[feed.position];
            }
            if let Some(frontier) = promise(&feeds, workload) {
                pipeline.promise(frontier);
            }
            pipeline.advance();
            while !pipeline.caught_up() {
                worker.step_or_park(None);
            }
            if !checkpoint(&barrier, index, failure, || {
                check(upto, &format!("after batch {batch} {upto:?}"))
            }) {
                return;
            }
        }
        let probe = pipeline.close();
        while !probe.done() {
            worker.step_or_park(None);
        }
        let all: Vec<usize> = workload
            .partitions
            .iter()
            .map(|partition| partition.lines.len())
            .collect();
        checkpoint(&barrier, index, failure, || check(&all, "after closing"));
    })
    .expect("timely starts");
    for result in guards.join() {
        result.expect("no worker panics");
    }
    let failure = failure.lock().expect("the workers are done").take();
    if let Some(message) = failure {
        panic!("{message}");
    }
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

/// Seeds of the random workloads: seed 0 has fixed small parameters (gap 10,
/// dwell 5, 3 probes, lateness 7, RSSI -75), the others random ones.
const SEEDS: std::ops::Range<u64> = 0..300;

#[test]
fn backfill_matches_the_reference_on_1_2_and_4_workers() {
    for seed in SEEDS {
        let workload = workload(seed);
        for (workers, config) in [
            (1, timely::Config::thread()),
            (2, timely::Config::process(2)),
            (4, timely::Config::process(4)),
        ] {
            let context = format!(
                "seed {seed} (backfill, {workers} workers, {:?})",
                workload.params
            );
            let (actual, expected) = backfill(&workload, config, &context);
            assert_same_outcome(&actual, &expected, &context);
        }
    }
}

#[test]
fn incremental_matches_the_reference_after_every_batch() {
    for seed in SEEDS {
        let workload = workload(seed);
        for workers in [1, 2, 4] {
            incremental(&workload, workers);
        }
    }
}

/// Each output folder's lines, parsed and sorted. A `future` rejection's
/// detail quotes the wall clock, so it is left out.
fn output_lines(out: &Path) -> BTreeMap<&'static str, Vec<serde_json::Value>> {
    presence::files::output::FOLDERS
        .into_iter()
        .map(|folder| {
            let mut lines: Vec<serde_json::Value> =
                read_collection(&out.join(folder)).expect("the output is readable");
            for line in lines.iter_mut().filter(|line| line["reason"] == "future") {
                line.as_object_mut()
                    .expect("a rejection is an object")
                    .remove("detail");
            }
            lines.sort_by_key(|line| line.to_string());
            (folder, lines)
        })
        .collect()
}

#[test]
fn two_workers_write_what_one_writes() {
    for seed in 1000..1050 {
        let workload = workload(seed);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (job, _) = write_files(&workload, dir.path());
        let mut outputs = Vec::new();
        for (name, config) in [
            ("one", timely::Config::thread()),
            ("two", timely::Config::process(2)),
        ] {
            let job = Job {
                out: dir.path().join(name),
                ..job.clone()
            };
            let out = job.out.clone();
            backfill::run(config, job, Arc::new(Progress::default())).unwrap_or_else(|error| {
                panic!("seed {seed}: backfill on {name} worker(s) failed: {error}")
            });
            outputs.push(output_lines(&out));
        }
        assert_eq!(
            outputs[0], outputs[1],
            "seed {seed}: one and two workers wrote different collections"
        );
    }
}

/// Lines on the edges of docs/contract.md, section 1, with the verdict the SPEC gives
/// them; both the reference and the pipeline's ingestion must agree.
#[test]
fn corner_lines_get_the_spec_verdict() {
    use Reason::{Malformed, TooLarge};
    let probe = |ts: &str, rssi: &str| {
        format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":{rssi}}}"#)
    };
    let long_id = format!(
        r#"{{"device":"{}","business":"b","ts":5,"rssi":-60}}"#,
        "x".repeat(257)
    );
    let longest_id = format!(
        r#"{{"device":"{}","business":"b","ts":5,"rssi":-60}}"#,
        "\\u00e9".repeat(128)
    );
    let cases: Vec<(Kind, Vec<u8>, Option<Reason>)> = vec![
        (Kind::Probe, probe("5", "-60").into(), None),
        (Kind::Probe, probe("-0", "-60").into(), None),
        (Kind::Probe, probe("5", "-0").into(), None),
        (Kind::Probe, probe("0", "0").into(), None),
        (Kind::Probe, probe("5", "-128").into(), None),
        (Kind::Probe, longest_id.into(), None),
        (
            Kind::Probe,
            padded(&probe("5", "-60"), MAX_RECORD_BYTES),
            None,
        ),
        (
            Kind::Probe,
            padded(&probe("5", "-60"), MAX_RECORD_BYTES + 1),
            Some(TooLarge),
        ),
        (Kind::Probe, long_id.into(), Some(Malformed)),
        (Kind::Probe, probe("5.0", "-60").into(), Some(Malformed)),
        (Kind::Probe, probe("5e0", "-60").into(), Some(Malformed)),
        (Kind::Probe, probe("-1", "-60").into(), Some(Malformed)),
        (
            Kind::Probe,
            probe("9007199254740992", "-60").into(),
            Some(Malformed),
        ),
        (Kind::Probe, probe("5", "1").into(), Some(Malformed)),
        (Kind::Probe, probe("5", "-129").into(), Some(Malformed)),
        (Kind::Probe, br#"["d","b",5,-60]"#.to_vec(), Some(Malformed)),
        (
            Kind::Probe,
            b"{\"device\":\"d\",\"business\":\"b\",\"ts\":5,\"rssi\":-60,\"note\":\"\xff\"}"
                .to_vec(),
            Some(Malformed),
        ),
        (
            Kind::Login,
            br#"{"device":"d","business":"b","contact":"c","ts":-0}"#.to_vec(),
            None,
        ),
        (Kind::Login, br#"["d","b","c",5]"#.to_vec(), Some(Malformed)),
        (
            Kind::BaseCount,
            br#"{"business":"b","contact":"c","count":-0}"#.to_vec(),
            None,
        ),
        (Kind::BaseCount, br#"["b","c",3]"#.to_vec(), Some(Malformed)),
    ];
    let mut wrong = Vec::new();
    for (kind, line, expected) in cases {
        let text = String::from_utf8_lossy(&line)
            .chars()
            .take(120)
            .collect::<String>();
        let reference = match validate(kind, &line) {
            Some(Ok(_)) => None,
            Some(Err(reason)) => Some(reason),
            None => panic!("{kind:?} {text} is not blank"),
        };
        assert_eq!(
            reference, expected,
            "the reference misjudges {kind:?} {text}"
        );
        let mut ingest = PartitionIngest::new(kind, "corner", 0, &contract_defaults());
        let pipeline = match ingest.ingest(&line, 1, now_ms()) {
            presence::model::ingest::Ingested::Rejected(rejected) => Some(rejected.reason),
            presence::model::ingest::Ingested::Blank => panic!("{kind:?} {text} is not blank"),
            _ => None,
        };
        if pipeline != expected {
            wrong.push(format!(
                "{kind:?} {text}: SPEC says {expected:?}, the pipeline says {pipeline:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the pipeline misjudges:\n{}",
        wrong.join("\n")
    );
}

/// A line of only whitespace is skipped however long it is, so it is not too large.
#[test]
fn a_huge_blank_line_is_skipped() {
    let workload = Workload {
        seed: 0,
        params: contract_defaults(),
        partitions: vec![Partition {
            kind: Kind::Probe,
            index: 0,
            lines: vec![
                vec![b' '; 2 << 20],
                br#"{"device":"d","business":"b","ts":5,"rssi":-60}"#.to_vec(),
            ],
            trailing_newline: true,
        }],
    };
    let context = "a 2 MiB blank line";
    let (actual, expected) = backfill(&workload, timely::Config::thread(), context);
    assert_same_outcome(&actual, &expected, context);
}

/// The reference itself, on cases worked out by hand from the SPEC.
/// The contract's defaults, as the reference reads them, are the program's.
#[test]
fn the_program_s_defaults_are_the_contract_s() {
    assert_eq!(Params::default(), contract_defaults());
}

#[test]
fn the_reference_follows_the_spec_by_hand() {
    let params = dense_params();
    let probe = |device: &str, ts: u64, rssi: i32| {
        format!(r#"{{"device":"{device}","business":"shop","ts":{ts},"rssi":{rssi}}}"#).into_bytes()
    };
    let probes = vec![
        // Visit 0, 5, 15 (gap exactly 10): three probes, qualifies at 15.
        probe("a", 0, -60),
        probe("a", 5, -60),
        probe("a", 5, -60),
        // 8 is 7 below 15: accepted. 26 is 11 after 15: a new visit.
        probe("a", 15, -60),
        probe("a", 8, -80),
        probe("a", 26, -75),
        // 18 is 8 below 26: late.
        probe("a", 18, -60),
        probe("a", 29, -60),
        // 26 (RSSI exactly at the minimum), 29, 31: three probes spanning
        // exactly min-dwell, qualifying at 31.
        probe("a", 31, -60),
        b"".to_vec(),
        // Two probes spanning 6: too few.
        probe("b", 30, -60),
        probe("b", 36, -60),
        // Below rssi-min: ignored, though it counts for lateness.
        probe("b", 40, -76),
    ];
    let logins = vec![
        br#"{"device":"a","business":"x","contact":"bo","ts":3}"#.to_vec(),
        br#"{"device":"a","business":"x","contact":"bob","ts":3}"#.to_vec(),
        br#"{"device":"a","business":"x","contact":"ann","ts":2}"#.to_vec(),
        br#"{"device":"b","business":"x","contact":"ann","ts":2}"#.to_vec(),
    ];
    let base_counts = vec![
        br#"{"business":"shop","contact":"bob","count":2}"#.to_vec(),
        br#"{"business":"shop","contact":"bob","count":1}"#.to_vec(),
        br#"{"business":"shop","contact":"ann","count":0}"#.to_vec(),
    ];
    let partition = |kind, lines| Partition {
        kind,
        index: 0,
        lines,
        trailing_newline: true,
    };
    let workload = Workload {
        seed: 0,
        params,
        partitions: vec![
            partition(Kind::Probe, probes),
            partition(Kind::Login, logins),
            partition(Kind::BaseCount, base_counts),
        ],
    };
    let sources = ["p".to_owned(), "l".to_owned(), "c".to_owned()];
    let outcome = reference(&workload, &sources, &[13, 4, 3]);
    let walkin = |start, detected_at| WalkIn {
        business: "shop".into(),
        device: "a".into(),
        start,
        detected_at,
    };
    assert_eq!(outcome.walkins, vec![walkin(0, 15), walkin(26, 31)]);
    let contact = |device: &str, contact: &str| DeviceContact {
        device: device.into(),
        contact: contact.into(),
    };
    assert_eq!(
        outcome.device_contacts,
        vec![contact("a", "bob"), contact("b", "ann")]
    );
    assert_eq!(outcome.enriched_walkins.len(), 2);
    assert!(outcome
        .enriched_walkins
        .iter()
        .all(|enriched| enriched.contact == "bob"));
    assert_eq!(
        outcome.walkin_counts,
        vec![WalkinCount {
            business: "shop".into(),
            contact: "bob".into(),
            count: 4
        }]
    );
    let late: Vec<(u64, Reason)> = outcome
        .rejected
        .iter()
        .map(|row| (row.offset, row.reason))
        .collect();
    assert_eq!(late, vec![(7, Reason::Late)]);
    // The promise: the largest accepted ts less the lateness (7), the late
    // probe 18 not counting, the weak probe 40 counting; still that once
    // every line is read (the end of input is not the passing of time).
    let probes = &workload.partitions[0];
    let promise = |fed| partition_promise(probes, fed, &params);
    assert_eq!(promise(0), Promise::Nothing);
    assert_eq!(promise(4), Promise::AtLeast(15 - 7));
    assert_eq!(promise(7), Promise::AtLeast(26 - 7));
    assert_eq!(promise(9), Promise::AtLeast(31 - 7));
    assert_eq!(promise(probes.lines.len()), Promise::AtLeast(40 - 7));
    assert_eq!(event_time_frontier(&workload, &[13, 4, 3]), 40 - 7);
    assert_eq!(event_time_frontier(&workload, &[0, 4, 3]), 0);
    // Present at W = 33: a's newest visit 26..31 is a walk-in, open since
    // 31 + 10 >= 33; b's newest visit (30, 36) is too short.
    assert_eq!(
        outcome.present,
        vec![Present {
            business: "shop".into(),
            device: "a".into(),
            since: 26,
            last_seen: 31,
            contact: Some("bob".into()),
        }]
    );
}

/// docs/contract.md, section 8 (`present`), on a workload worked out by
/// hand (gap 10, dwell 5, 3 probes, lateness 7): who is present when the
/// input ends, and who is not.
#[test]
fn present_is_who_is_in_the_store_when_input_ends() {
    let probe = |device: &str, ts: u64| {
        format!(r#"{{"device":"{device}","business":"shop","ts":{ts},"rssi":-60}}"#).into_bytes()
    };
    let login = |device: &str, contact: &str, ts: u64| {
        format!(r#"{{"device":"{device}","business":"x","contact":"{contact}","ts":{ts}}}"#)
            .into_bytes()
    };
    let partition = |kind, index, lines| Partition {
        kind,
        index,
        lines,
        trailing_newline: true,
    };
    let first = vec![
        // g: a walk-in 27..33, open while W <= 43, exactly; h: one
        // 26..32, open while W <= 42.
        probe("h", 26),
        probe("g", 27),
        probe("h", 29),
        probe("g", 30),
        probe("h", 32),
        probe("g", 33),
        // c: a walk-in 40..46, open while W <= 56.
        probe("c", 40),
        probe("c", 43),
        probe("c", 46),
        // b: a walk-in 60..66, but its newest visit (100 alone) is not one.
        probe("b", 60),
        probe("b", 63),
        probe("b", 66),
        // a: a walk-in 100..106 that a probe 7 late extends to 99; 98 is
        // 8 late, rejected.
        probe("a", 100),
        probe("a", 103),
        probe("a", 106),
        probe("a", 99),
        probe("a", 98),
        probe("b", 100),
        // d: a walk-in 104..110, its device never logs in.
        probe("d", 104),
        probe("d", 105),
        probe("d", 110),
    ];
    // e: never a walk-in; this partition's promise is 50 - 7 = 43, or
    // 80 - 7 = 73 with the last probe.
    let second = |upto_80: bool| {
        let mut lines = vec![probe("e", 30), probe("e", 50)];
        if upto_80 {
            lines.push(probe("e", 80));
        }
        lines
    };
    // Read to its end without an accepted probe (a bad line, a blank one,
    // a probe from the future): it does not hold W back.
    let quiet = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        probe("f", (1 << 53) - 1),
    ];
    // a logs in before its visit and after it; c before; d never.
    let logins = vec![
        login("a", "ann", 5),
        login("c", "cy", 1),
        login("a", "bob", 300),
    ];
    let workload = |seed, upto_80| Workload {
        seed,
        params: dense_params(),
        partitions: vec![
            partition(Kind::Probe, 0, first.clone()),
            partition(Kind::Probe, 1, second(upto_80)),
            partition(Kind::Probe, 2, quiet.clone()),
            partition(Kind::Login, 0, logins.clone()),
        ],
    };
    let present = |device: &str, since, last_seen, contact: Option<&str>| Present {
        business: "shop".into(),
        device: device.into(),
        since,
        last_seen,
        contact: contact.map(str::to_owned),
    };
    let a = present("a", 99, 106, Some("bob"));
    let c = present("c", 40, 46, Some("cy"));
    let d = present("d", 104, 110, None);
    let g = present("g", 27, 33, None);
    for (upto_80, frontier, expected_present) in [
        // W = min(110 - 7, 50 - 7) = 43 <= 46 + 10: c is still in the
        // store, and g just so (33 + 10 = 43); h left (32 + 10 < 43).
        (false, 43, vec![a.clone(), c, d.clone(), g]),
        // The other partition's probe at 80 raises W to 73 > 46 + 10.
        (true, 73, vec![a, d]),
    ] {
        let workload = workload(upto_80 as u64, upto_80);
        let all: Vec<usize> = workload
            .partitions
            .iter()
            .map(|partition| partition.lines.len())
            .collect();
        assert_eq!(event_time_frontier(&workload, &all), frontier);
        // Until the other partition delivers a probe, it holds W at 0.
        let mut before = all.clone();
        before[1] = 0;
        assert_eq!(event_time_frontier(&workload, &before), 0);
        for (workers, config) in [
            (1, timely::Config::thread()),
            (2, timely::Config::process(2)),
        ] {
            let context = format!("present by hand, W {frontier}, {workers} worker(s)");
            let (actual, expected) = backfill(&workload, config, &context);
            assert_eq!(
                expected.present, expected_present,
                "{context}: the reference"
            );
            assert_same_outcome(&actual, &expected, &context);
        }
        for workers in [1, 2] {
            incremental(&workload, workers);
        }
    }
}

/// W is the least promise over the probe partitions: a worker with no
/// file at all (more workers than files) has none, so it does not hold W
/// back, and a visit that W closed is not present on two workers either.
#[test]
fn a_worker_without_files_does_not_hold_the_frontier_back() {
    let probe = |device: &str, ts: u64| {
        format!(r#"{{"device":"{device}","business":"shop","ts":{ts},"rssi":-60}}"#).into_bytes()
    };
    // a: a walk-in 0..6, closed at W = 100 - 7 > 6 + 10; b: one probe.
    let workload = Workload {
        seed: 0,
        params: dense_params(),
        partitions: vec![Partition {
            kind: Kind::Probe,
            index: 0,
            lines: vec![probe("a", 0), probe("a", 3), probe("a", 6), probe("b", 100)],
            trailing_newline: true,
        }],
    };
    assert_eq!(event_time_frontier(&workload, &[4]), 93);
    for (workers, config) in [
        (1, timely::Config::thread()),
        (2, timely::Config::process(2)),
    ] {
        let context = format!("one probe file, {workers} worker(s)");
        let (actual, expected) = backfill(&workload, config, &context);
        assert!(expected.present.is_empty(), "{context}: the reference");
        assert_same_outcome(&actual, &expected, &context);
    }
}
