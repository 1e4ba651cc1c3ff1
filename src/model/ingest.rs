//! Parsing, validation and the lateness rule: raw input text to accepted
//! records or [`Rejected`] ones (docs/contract.md, sections 1 to 4).
//!
//! One [`PartitionIngest`] per input partition (a Kafka partition or one
//! file), fed that partition's records in order. Whether a record is accepted
//! depends only on the records before it in the same partition (and, for the
//! future rule, on the wall clock passed in) — never on batching or workers.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::params::Params;
use crate::model::records::{BaseCount, EventTime, Login, Probe, Reason, Rejected};

/// The largest accepted record, in bytes (SPEC: "at most 64 KiB").
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The longest accepted `device`, `business` or `contact`, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// `ts` and `count` must be below 2^53 (exact in a JSON double).
pub const MAX_INTEGER: u64 = 1 << 53;
/// How much of a rejected record's text is kept: a rejected record must not
/// cost unbounded memory, yet the SPEC wants the original text; 1 MiB keeps
/// every record up to 16 times the size limit whole.
pub const MAX_KEPT_RECORD_BYTES: usize = 1024 * 1024;

/// The kinds of input, one per input topic or `--probes/--logins/--base-counts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Probe requests seen by routers.
    Probe,
    /// Portal logins from the CRM.
    Login,
    /// Base walk-in counts from an earlier system.
    BaseCount,
}

impl Kind {
    /// All kinds, in the order their files are numbered for assignment.
    pub const ALL: [Kind; 3] = [Kind::Probe, Kind::Login, Kind::BaseCount];
}

/// What one input record became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ingested {
    /// An accepted probe.
    Probe(Probe),
    /// An accepted login.
    Login(Login),
    /// An accepted base count.
    BaseCount(BaseCount),
    /// A rejected record.
    Rejected(Rejected),
    /// An empty or all-whitespace line: not a record at all.
    Blank,
}

/// The per-partition state of ingestion: the lateness high-water mark.
#[derive(Clone, Debug)]
pub struct PartitionIngest {
    kind: Kind,
    source: String,
    partition: u64,
    allowed_lateness: u64,
    max_future: u64,
    /// The largest `ts` of the probes accepted so far (probe partitions only).
    high_water: Option<EventTime>,
    /// Probes below this are late whatever the high-water mark: what the
    /// source reading this partition promised for it (see
    /// [`crate::kafka::source`]); 0 until then.
    floor: EventTime,
}

impl PartitionIngest {
    /// A new partition of `kind`, named `source` (file path or topic) and
    /// numbered `partition` (file index or Kafka partition).
    pub fn new(kind: Kind, source: impl Into<String>, partition: u64, params: &Params) -> Self {
        PartitionIngest {
            kind,
            source: source.into(),
            partition,
            allowed_lateness: params.allowed_lateness,
            max_future: params.max_future,
            high_water: None,
            floor: 0,
        }
    }

    /// The kind of records in this partition.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The largest `ts` accepted so far from this partition (probes only).
    pub fn high_water(&self) -> Option<EventTime> {
        self.high_water
    }

    /// The event-time frontier this partition promises: no probe accepted
    /// from it from now on has a `ts` below this. `None` before the first
    /// accepted probe (the first probe may have any `ts`).
    pub fn watermark(&self) -> Option<EventTime> {
        self.high_water
            .map(|hwm| hwm.saturating_sub(self.allowed_lateness))
    }

    /// Probes below this are late whatever the high-water mark (see
    /// [`raise_floor`](Self::raise_floor)); 0 until it is raised.
    pub fn floor(&self) -> EventTime {
        self.floor
    }

    /// What this partition promises by itself: no probe accepted from it
    /// from now on is below this — the higher of its watermark and its
    /// floor; `None` before either exists.
    pub fn promise(&self) -> Option<EventTime> {
        let floor = (self.floor > 0).then_some(self.floor);
        self.watermark().max(floor)
    }

    /// Restores a checkpointed partition's lateness state.
    pub fn restore(&mut self, high_water: Option<EventTime>, floor: EventTime) {
        self.high_water = high_water;
        self.floor = floor;
    }

    /// Makes probes below `floor` late from now on: the source reading this
    /// partition has promised the rest of the dataflow that no probe below
    /// `floor` will come (which it may do while the partition is idle).
    pub fn raise_floor(&mut self, floor: EventTime) {
        self.floor = self.floor.max(floor);
    }

    /// Ingests one record: its bytes (without the line terminator), its
    /// offset (file line number or Kafka offset), and the wall clock now.
    pub fn ingest(&mut self, text: &[u8], offset: u64, now_ms: u64) -> Ingested {
        self.ingest_sized(text, text.len(), offset, now_ms)
    }

    /// As [`ingest`](Self::ingest), for a record of `size` bytes of which a
    /// reader kept only the first `text.len()` (it is too large either way).
    pub fn ingest_sized(&mut self, text: &[u8], size: usize, offset: u64, now_ms: u64) -> Ingested {
        // A byte order mark (editors write one at the start of a file) is
        // not part of the record.
        let (text, size) = match text.strip_prefix(BYTE_ORDER_MARK) {
            Some(rest) => (rest, size - BYTE_ORDER_MARK.len()),
            None => (text, size),
        };
        if size == text.len() && text.iter().all(u8::is_ascii_whitespace) {
            return Ingested::Blank;
        }
        let reject = |reason: Reason, detail: String| {
            Ingested::Rejected(self.rejected(text, offset, reason, detail))
        };
        if size > MAX_RECORD_BYTES {
            let kept = if size > text.len() {
                format!(" (the first {} are kept here)", text.len())
            } else {
                String::new()
            };
            return reject(
                Reason::TooLarge,
                format!("record is {size} bytes; the limit is {MAX_RECORD_BYTES}{kept}"),
            );
        }
        let parsed = match self.kind {
            Kind::Probe => parse_probe(text).map(Ingested::Probe),
            Kind::Login => parse_login(text).map(Ingested::Login),
            Kind::BaseCount => parse_base_count(text).map(Ingested::BaseCount),
        };
        let ingested = match parsed {
            Ok(ingested) => ingested,
            Err(detail) => return reject(Reason::Malformed, detail),
        };
        let future_limit = now_ms.saturating_add(self.max_future);
        match &ingested {
            Ingested::Probe(Probe { ts, .. }) | Ingested::Login(Login { ts, .. })
                if *ts > future_limit =>
            {
                reject(
                    Reason::Future,
                    format!(
                        "ts {ts} is more than max-future ({} ms) ahead of the wall clock {now_ms}",
                        self.max_future
                    ),
                )
            }
            Ingested::Probe(Probe { ts, .. }) => {
                if let Some(watermark) = self.watermark() {
                    if *ts < watermark {
                        return reject(
                            Reason::Late,
                            format!(
                                "ts {ts} is more than allowed-lateness ({} ms) below the partition's \
                                 high-water mark {}",
                                self.allowed_lateness,
                                self.high_water.expect("a watermark comes from a high-water mark")
                            ),
                        );
                    }
                }
                if *ts < self.floor {
                    return reject(
                        Reason::Late,
                        format!(
                            "ts {ts} is below event time {}, which was promised while this \
                             partition was idle (see --idle-timeout)",
                            self.floor
                        ),
                    );
                }
                self.high_water = Some(self.high_water.map_or(*ts, |hwm| hwm.max(*ts)));
                ingested
            }
            _ => ingested,
        }
    }

    fn rejected(&self, text: &[u8], offset: u64, reason: Reason, detail: String) -> Rejected {
        let kept = &text[..text.len().min(MAX_KEPT_RECORD_BYTES)];
        Rejected {
            source: self.source.clone(),
            partition: self.partition,
            offset,
            reason,
            detail,
            record: String::from_utf8_lossy(kept).into_owned(),
        }
    }
}

/// A rejection of something that is not a record at all (e.g. a Kafka
/// message the client could not read), for sources that have no text.
pub fn corrupt(source: &str, partition: u64, offset: u64, detail: String) -> Rejected {
    Rejected {
        source: source.to_owned(),
        partition,
        offset,
        reason: Reason::Corrupt,
        detail,
        record: String::new(),
    }
}

// The raw shapes borrow their strings from the input where no escapes force a
// copy. serde ignores unknown fields and rejects duplicates and missing ones.
// Integers are taken as their raw JSON text, because the documented rule is about
// how a number is written: `-0` is an integer, `5.0` and `5e0` are not — a
// distinction serde_json's numbers do not keep.

#[derive(Deserialize)]
struct RawProbe<'a> {
    #[serde(borrow)]
    device: Cow<'a, str>,
    #[serde(borrow)]
    business: Cow<'a, str>,
    #[serde(borrow)]
    ts: &'a RawValue,
    #[serde(borrow)]
    rssi: &'a RawValue,
}

#[derive(Deserialize)]
struct RawLogin<'a> {
    #[serde(borrow)]
    device: Cow<'a, str>,
    #[serde(borrow)]
    business: Cow<'a, str>,
    #[serde(borrow)]
    contact: Cow<'a, str>,
    #[serde(borrow)]
    ts: &'a RawValue,
}

#[derive(Deserialize)]
struct RawBaseCount<'a> {
    #[serde(borrow)]
    business: Cow<'a, str>,
    #[serde(borrow)]
    contact: Cow<'a, str>,
    #[serde(borrow)]
    count: &'a RawValue,
}

/// Parses a record that must be a JSON object in UTF-8.
fn from_json<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, String> {
    // serde_json checks UTF-8 only in the strings it decodes, not in skipped
    // unknown fields; JSON text must be UTF-8 throughout.
    let text = std::str::from_utf8(text)
        .map_err(|error| format!("invalid record: not UTF-8 ({error})"))?;
    // A derived struct also accepts a JSON array of its fields in order.
    if !text.trim_start().starts_with('{') {
        return Err("invalid record: not a JSON object".to_owned());
    }
    serde_json::from_str(text).map_err(|error| format!("invalid record: {error}"))
}

/// The value of a JSON number written as an integer (no fraction, no exponent).
fn integer(field: &str, raw: &RawValue) -> Result<i128, String> {
    let text = raw.get();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{field}` must be an integer, found {text}"));
    }
    // 39 digits overflow i128; anything that long is out of every range anyway.
    let magnitude: i128 = if digits.len() > 38 {
        i128::MAX
    } else {
        digits.parse().expect("ASCII digits")
    };
    Ok(if negative { -magnitude } else { magnitude })
}

fn id<S: for<'a> From<&'a str>>(field: &str, value: Cow<'_, str>) -> Result<S, String> {
    if value.is_empty() {
        Err(format!("`{field}` is empty"))
    } else if value.len() > MAX_ID_BYTES {
        Err(format!(
            "`{field}` is {} bytes; the limit is {MAX_ID_BYTES}",
            value.len()
        ))
    } else {
        Ok(S::from(value.as_ref()))
    }
}

fn below_2_53(field: &str, raw: &RawValue) -> Result<u64, String> {
    let value = integer(field, raw)?;
    u64::try_from(value)
        .ok()
        .filter(|&value| value < MAX_INTEGER)
        .ok_or_else(|| format!("`{field}` is {value}; it must be in [0, 2^53)"))
}

/// UTF-8's byte order mark, ignored at the start of a record.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Parses and validates a probe (docs/contract.md, section 1).
pub fn parse_probe(text: &[u8]) -> Result<Probe, String> {
    let raw: RawProbe = from_json(text)?;
    let rssi = integer("rssi", raw.rssi)?;
    if !(-128..=0).contains(&rssi) {
        return Err(format!("`rssi` is {rssi}; it must be in [-128, 0]"));
    }
    Ok(Probe {
        device: id("device", raw.device)?,
        business: id("business", raw.business)?,
        ts: below_2_53("ts", raw.ts)?,
        rssi: rssi as i32,
    })
}

/// Parses and validates a login (docs/contract.md, section 1).
pub fn parse_login(text: &[u8]) -> Result<Login, String> {
    let raw: RawLogin = from_json(text)?;
    Ok(Login {
        device: id("device", raw.device)?,
        business: id("business", raw.business)?,
        contact: id("contact", raw.contact)?,
        ts: below_2_53("ts", raw.ts)?,
    })
}

/// Parses and validates a base count (docs/contract.md, section 1).
pub fn parse_base_count(text: &[u8]) -> Result<BaseCount, String> {
    let raw: RawBaseCount = from_json(text)?;
    Ok(BaseCount {
        business: id("business", raw.business)?,
        contact: id("contact", raw.contact)?,
        count: below_2_53("count", raw.count)?,
    })
}

/// Where reading an input partition has got to, and its lateness state:
/// what a checkpoint records of it, and what a restart resumes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The topic (or, from a backfill, the file).
    pub topic: String,
    /// The partition (or the file's index among its kind).
    pub partition: i32,
    /// The offset of the first record not reflected.
    pub next: i64,
    /// The largest accepted probe `ts` (probe partitions).
    pub high_water: Option<EventTime>,
    /// Probes below this are late (what was promised for the partition).
    pub floor: EventTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn probes() -> PartitionIngest {
        PartitionIngest::new(Kind::Probe, "p.jsonl", 0, &Params::default())
    }

    fn reason(ingested: Ingested) -> Option<Reason> {
        match ingested {
            Ingested::Rejected(rejected) => Some(rejected.reason),
            _ => None,
        }
    }

    #[test]
    fn accepts_valid_probe_with_unknown_fields_and_escapes() {
        let line = br#"{"device":"d\u00e9\"/","business":"caf\u00e9 \u2615","ts":5,"rssi":-60,"x":[1,{}]}"#;
        match probes().ingest(line, 1, NOW) {
            Ingested::Probe(p) => {
                assert_eq!(p.device, "d\u{e9}\"/");
                assert_eq!(p.business, "caf\u{e9} \u{2615}");
                assert_eq!((p.ts, p.rssi), (5, -60));
            }
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn rejects_each_invalid_field() {
        let cases: &[&[u8]] = &[
            br#"{"device":"","business":"b","ts":5,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":5.0,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":5e3,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":-1,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":9007199254740992,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":5,"rssi":1}"#,
            br#"{"device":"d","business":"b","ts":5,"rssi":-129}"#,
            br#"{"device":"d","business":"b","ts":5}"#,
            br#"{"device":7,"business":"b","ts":5,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":5,"rssi":-60} x"#,
            br#"[1,2]"#,
            b"\xff\xfe",
            br#"{"device":"\ud800","business":"b","ts":5,"rssi":-60}"#,
            br#"["d","b",5,-60]"#,
            b"{\"device\":\"d\",\"business\":\"b\",\"ts\":5,\"rssi\":-60,\"note\":\"\xff\"}",
            br#"{"device":"d","business":"b","ts":"5","rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":123456789012345678901234567890123456789012,"rssi":-60}"#,
            br#"{"device":"d","business":"b","ts":-0.0,"rssi":-60}"#,
        ];
        for case in cases {
            assert_eq!(
                reason(probes().ingest(case, 1, NOW)),
                Some(Reason::Malformed),
                "{}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn minus_zero_is_the_integer_zero() {
        let line = br#" {"device":"d","business":"b","ts":-0,"rssi":-0}"#;
        match probes().ingest(line, 1, NOW) {
            Ingested::Probe(p) => assert_eq!((p.ts, p.rssi), (0, 0)),
            other => panic!("expected a probe, got {other:?}"),
        }
        assert!(parse_base_count(br#"{"business":"b","contact":"c","count":-0}"#).is_ok());
    }

    #[test]
    fn id_length_is_counted_in_bytes() {
        let ok = format!(
            r#"{{"device":"{}","business":"b","ts":5,"rssi":-60}}"#,
            "é".repeat(128)
        );
        assert!(matches!(
            probes().ingest(ok.as_bytes(), 1, NOW),
            Ingested::Probe(_)
        ));
        let long = format!(
            r#"{{"device":"{}x","business":"b","ts":5,"rssi":-60}}"#,
            "é".repeat(128)
        );
        assert_eq!(
            reason(probes().ingest(long.as_bytes(), 1, NOW)),
            Some(Reason::Malformed)
        );
    }

    #[test]
    fn too_large_is_checked_first() {
        let pad = " ".repeat(MAX_RECORD_BYTES);
        let line = format!(r#"{{"device":"d","business":"b","ts":5,"rssi":-60}}{pad}"#);
        assert_eq!(
            reason(probes().ingest(line.as_bytes(), 1, NOW)),
            Some(Reason::TooLarge)
        );
    }

    #[test]
    fn blank_lines_are_not_records() {
        assert_eq!(probes().ingest(b"  \t\r", 1, NOW), Ingested::Blank);
        assert_eq!(probes().ingest(b"", 1, NOW), Ingested::Blank);
    }

    #[test]
    fn lateness_is_relative_to_accepted_probes_of_the_partition() {
        let lateness = Params::default().allowed_lateness;
        let mut part = probes();
        let probe = |ts: u64| format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":-100}}"#);
        let base = 10 * lateness;
        assert!(matches!(
            part.ingest(probe(base).as_bytes(), 1, NOW),
            Ingested::Probe(_)
        ));
        // Exactly allowed-lateness below is accepted; one more millisecond is late.
        assert!(matches!(
            part.ingest(probe(base - lateness).as_bytes(), 2, NOW),
            Ingested::Probe(_)
        ));
        assert_eq!(
            reason(part.ingest(probe(base - lateness - 1).as_bytes(), 3, NOW)),
            Some(Reason::Late)
        );
        // A future probe is rejected and does not raise the high-water mark.
        assert_eq!(
            reason(part.ingest(probe(NOW + 2 * 86_400_000).as_bytes(), 4, NOW)),
            Some(Reason::Future)
        );
        assert_eq!(part.high_water(), Some(base));
        assert_eq!(part.watermark(), Some(base - lateness));
    }

    #[test]
    fn a_raised_floor_makes_earlier_probes_late() {
        let mut part = probes();
        part.raise_floor(1_000);
        let probe = |ts: u64| format!(r#"{{"device":"d","business":"b","ts":{ts},"rssi":-60}}"#);
        assert_eq!(
            reason(part.ingest(probe(999).as_bytes(), 1, NOW)),
            Some(Reason::Late)
        );
        assert!(matches!(
            part.ingest(probe(1_000).as_bytes(), 2, NOW),
            Ingested::Probe(_)
        ));
    }

    #[test]
    fn rejected_records_keep_their_coordinates_and_text() {
        let mut part = PartitionIngest::new(Kind::Login, "logins.jsonl", 3, &Params::default());
        match part.ingest(b"{oops", 17, NOW) {
            Ingested::Rejected(r) => {
                assert_eq!(
                    (r.source.as_str(), r.partition, r.offset),
                    ("logins.jsonl", 3, 17)
                );
                assert_eq!(r.record, "{oops");
                assert!(!r.detail.is_empty());
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}
