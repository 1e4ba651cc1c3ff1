//! A synthetic, seeded, realistic workload: shoppers' phones probing the
//! routers of a chain of stores over many days, some of them logging in to
//! the portal, with the imperfections real feeds have (router batching
//! reorders probes, a few arrive very late or twice, a few lines are broken).
//!
//! The same [`WorkloadConfig`] always yields the same records in the same
//! order, so benchmarks and tests are repeatable. Records come day by day;
//! memory is one day's records.

use std::fmt::Write as _;

use crate::model::ingest::Kind;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const DAY: u64 = 24 * 60 * MINUTE;

/// SplitMix64: a tiny, fast, well-distributed generator, stable across versions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `low..high` (`low < high`).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The shape of a generated workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Event time of the first day's midnight (ms since the epoch).
    pub start_ms: u64,
    /// Number of days.
    pub days: u64,
    /// Number of stores.
    pub businesses: u64,
    /// Number of phones.
    pub devices: u64,
    /// Probability that a phone visits some store on a given day.
    pub visit_chance: f64,
    /// Probability that a visit includes a portal login.
    pub login_chance: f64,
    /// Probe partitions (files or Kafka partitions); stores are spread over them.
    pub probe_partitions: u64,
    /// Login partitions.
    pub login_partitions: u64,
    /// Fraction of probes delivered a second time.
    pub duplicate_chance: f64,
    /// Fraction of probes delivered 10 minutes late (rejected as late by default).
    pub straggler_chance: f64,
    /// Fraction of lines that are broken.
    pub broken_chance: f64,
}

impl Default for WorkloadConfig {
    /// One week at 40 stores and 20,000 phones: about 1.3 million probes.
    fn default() -> Self {
        WorkloadConfig {
            seed: 1,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            days: 7,
            businesses: 40,
            devices: 20_000,
            visit_chance: 0.3,
            login_chance: 0.05,
            probe_partitions: 4,
            login_partitions: 1,
            duplicate_chance: 0.002,
            straggler_chance: 0.0005,
            broken_chance: 0.0001,
        }
    }
}

/// One generated input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Which input it belongs to.
    pub kind: Kind,
    /// Its partition among the partitions of its kind.
    pub partition: u64,
    /// Its event time (the order records are delivered in, within a partition).
    pub ts: u64,
    /// The JSON line (no newline).
    pub line: String,
}

/// The business name of store `b`.
pub fn business_name(b: u64) -> String {
    format!("store-{b:04}")
}

/// The device name of phone `d`.
pub fn device_name(d: u64) -> String {
    format!("phone-{d:06}")
}

/// The generated workload, as an iterator over records, day by day; within a
/// partition, records come in delivery order.
pub struct Workload {
    config: WorkloadConfig,
    rng: Rng,
    day: u64,
    pending: std::vec::IntoIter<Generated>,
    base_counts_done: bool,
}

impl Workload {
    /// The workload `config` describes.
    pub fn new(config: WorkloadConfig) -> Self {
        let rng = Rng::new(config.seed);
        Workload {
            config,
            rng,
            day: 0,
            pending: Vec::new().into_iter(),
            base_counts_done: false,
        }
    }

    /// A CRM backup: base counts for some of the contacts of each store.
    fn base_counts(&mut self) -> Vec<Generated> {
        let mut out = Vec::new();
        for d in (0..self.config.devices).step_by(50) {
            let business = self.home(d);
            out.push(Generated {
                kind: Kind::BaseCount,
                partition: 0,
                ts: 0,
                line: format!(
                    r#"{{"business":"{}","contact":"{}","count":{}}}"#,
                    business_name(business),
                    contact_name(d, 0),
                    self.rng.between(1, 40)
                ),
            });
        }
        out
    }

    /// The store phone `d` visits most.
    fn home(&self, d: u64) -> u64 {
        (d.wrapping_mul(0x9e37_79b9) >> 7) % self.config.businesses
    }

    fn generate_day(&mut self) -> Vec<Generated> {
        let c = self.config.clone();
        let midnight = c.start_ms + self.day * DAY;
        let mut out = Vec::new();
        for d in 0..c.devices {
            if !self.rng.chance(c.visit_chance) {
                continue;
            }
            // Mostly the home store, sometimes another one.
            let business = if self.rng.chance(0.8) {
                self.home(d)
            } else {
                self.rng.below(c.businesses)
            };
            let open = midnight + 8 * 60 * MINUTE;
            let start = self.rng.between(open, open + 13 * 60 * MINUTE);
            // A third walk past (a minute or two, weak signal); the rest shop.
            let passing = self.rng.chance(0.33);
            let dwell = if passing {
                self.rng.below(3 * MINUTE)
            } else {
                self.rng.between(3 * MINUTE, 70 * MINUTE)
            };
            let mut ts = start;
            while ts <= start + dwell {
                let rssi = if passing {
                    -(self.rng.between(70, 95) as i64)
                } else {
                    -(self.rng.between(35, 80) as i64)
                };
                let partition = business % c.probe_partitions;
                let line = format!(
                    r#"{{"device":"{}","business":"{}","ts":{ts},"rssi":{rssi}}}"#,
                    device_name(d),
                    business_name(business)
                );
                // Routers upload in batches: delivery is up to 30 s out of order.
                let delivered = ts + self.rng.below(30 * SECOND);
                if self.rng.chance(c.duplicate_chance) {
                    out.push(Generated {
                        kind: Kind::Probe,
                        partition,
                        ts: delivered + MINUTE,
                        line: line.clone(),
                    });
                }
                let delivered = if self.rng.chance(c.straggler_chance) {
                    delivered + 10 * MINUTE
                } else {
                    delivered
                };
                out.push(Generated {
                    kind: Kind::Probe,
                    partition,
                    ts: delivered,
                    line,
                });
                // Phones probe every 20 to 90 seconds.
                ts += self.rng.between(20 * SECOND, 90 * SECOND);
            }
            if !passing && self.rng.chance(c.login_chance) {
                // Now and then a phone changes hands (a new contact).
                let generation = u64::from(self.rng.chance(0.02));
                let at = start + self.rng.below(dwell.max(1));
                out.push(Generated {
                    kind: Kind::Login,
                    partition: d % c.login_partitions,
                    ts: at,
                    line: format!(
                        r#"{{"device":"{}","business":"{}","contact":"{}","ts":{at}}}"#,
                        device_name(d),
                        business_name(business),
                        contact_name(d, generation)
                    ),
                });
            }
        }
        for record in &mut out {
            if self.rng.chance(c.broken_chance) {
                record.line = broken(&mut self.rng, &record.line);
            }
        }
        out.sort_by_key(|record| record.ts);
        out
    }
}

/// The contact of phone `d`'s owner (a new owner per `generation`).
pub fn contact_name(d: u64, generation: u64) -> String {
    format!("customer-{d:06}-{generation}@example.com")
}

/// A line broken the ways real feeds break them.
fn broken(rng: &mut Rng, line: &str) -> String {
    match rng.below(4) {
        0 => line[..line.len() / 2].to_owned(),
        1 => line.replacen("\"ts\":", "\"ts\":\"", 1),
        2 => line.replacen(",\"rssi\":", ",\"rssi\":1", 1).replacen(
            ",\"contact\":\"",
            ",\"contact\":\"\",\"x\":\"",
            1,
        ),
        _ => {
            let mut garbage = String::from("\u{fffd}garbage ");
            let _ = write!(garbage, "{}", rng.next_u64());
            garbage
        }
    }
}

impl Iterator for Workload {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if !self.base_counts_done {
            self.base_counts_done = true;
            self.pending = self.base_counts().into_iter();
        }
        loop {
            if let Some(record) = self.pending.next() {
                return Some(record);
            }
            if self.day >= self.config.days {
                return None;
            }
            self.pending = self.generate_day().into_iter();
            self.day += 1;
        }
    }
}

/// The shape of a live workload: shoppers arriving now.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of phones; each is always at some store, moving on every `visit_ms`.
    pub devices: u64,
    /// Number of stores.
    pub businesses: u64,
    /// How long a phone stays at one store (staggered per phone).
    pub visit_ms: u64,
    /// Every this many records, one is a portal login instead of a probe.
    pub login_every: u64,
    /// Fraction of visits that only pass by: a signal weaker than the
    /// default `rssi-min`, so never a walk-in.
    pub passing_chance: f64,
    /// Fraction of lines that are broken.
    pub broken_chance: f64,
    /// Partitions phones are spread over (a record's partition is its
    /// phone's, for probes and logins alike).
    pub probe_partitions: u64,
}

impl Default for LiveConfig {
    /// 20,000 phones at 40 stores, ten-minute visits, a fifth of them
    /// passing by, one login in 20 records, one broken line in 10,000.
    fn default() -> Self {
        LiveConfig {
            seed: 7,
            devices: 20_000,
            businesses: 40,
            visit_ms: 10 * MINUTE,
            login_every: 20,
            passing_chance: 0.2,
            broken_chance: 0.0001,
            probe_partitions: 4,
        }
    }
}

/// A live workload: record `i` is stamped with the time it is due (the
/// wall clock, for a producer that sends it then), from a random phone
/// probing the store it is at now. Visits are staggered: phone `d` is at
/// store `f(d, k)` during the `k`-th visit-long span shifted by a phase of
/// its own, so walk-ins form continuously, the first ones `min-dwell` after
/// the start.
#[derive(Clone, Debug)]
pub struct LiveWorkload {
    config: LiveConfig,
    rng: Rng,
}

/// A stateless 64-bit mix (SplitMix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl LiveWorkload {
    /// The workload `config` describes.
    pub fn new(config: LiveConfig) -> Self {
        LiveWorkload {
            rng: Rng::new(config.seed),
            config,
        }
    }

    /// Record `i`, stamped `ts`.
    pub fn record(&mut self, i: u64, ts: u64) -> Generated {
        let c = &self.config;
        let device = self.rng.below(c.devices.max(1));
        let visit_ms = c.visit_ms.max(1);
        let visit = (ts + mix(device) % visit_ms) / visit_ms;
        let seed = mix(device ^ visit.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let business = seed % c.businesses.max(1);
        let partition = device % c.probe_partitions.max(1);
        let (kind, mut line) = if c.login_every > 0 && i % c.login_every == c.login_every - 1 {
            let contact = contact_name(device % (c.devices / 4 + 1), 0);
            let line = format!(
                r#"{{"device":"{}","business":"{}","contact":"{contact}","ts":{ts}}}"#,
                device_name(device),
                business_name(business)
            );
            (Kind::Login, line)
        } else {
            let passing = ((mix(seed) >> 11) as f64 / (1u64 << 53) as f64) < c.passing_chance;
            let rssi = if passing {
                -80 - self.rng.below(15) as i64
            } else {
                -40 - self.rng.below(30) as i64
            };
            let line = format!(
                r#"{{"device":"{}","business":"{}","ts":{ts},"rssi":{rssi}}}"#,
                device_name(device),
                business_name(business)
            );
            (Kind::Probe, line)
        };
        if c.broken_chance > 0.0 && self.rng.chance(c.broken_chance) {
            line = broken(&mut self.rng, &line);
        }
        Generated {
            kind,
            partition,
            ts,
            line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let config = WorkloadConfig {
            devices: 300,
            days: 2,
            ..WorkloadConfig::default()
        };
        let a: Vec<_> = Workload::new(config.clone()).collect();
        let b: Vec<_> = Workload::new(config).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|r| r.kind == Kind::Probe).count() > 1000);
        assert!(a.iter().any(|r| r.kind == Kind::Login));
        assert!(a.iter().any(|r| r.kind == Kind::BaseCount));
    }

    #[test]
    fn live_records_carry_their_stamp_and_phones_stay_a_visit() {
        let config = LiveConfig {
            devices: 50,
            broken_chance: 0.0,
            visit_ms: 60_000,
            ..LiveConfig::default()
        };
        let mut live = LiveWorkload::new(config);
        let mut stores: std::collections::HashMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for i in 0..2_000u64 {
            let ts = 1_800_000_000_000 + i * 10; // 20 s in all
            let record = live.record(i, ts);
            let v: serde_json::Value = serde_json::from_str(&record.line).unwrap();
            assert_eq!(v["ts"].as_u64(), Some(ts));
            assert_eq!(record.kind == Kind::Login, i % 20 == 19);
            let device = v["device"].as_str().unwrap().to_owned();
            stores
                .entry(device)
                .or_default()
                .insert(v["business"].as_str().unwrap().to_owned());
        }
        // 20 s of one-minute visits: a phone is at one store, or two when a
        // visit ends in the middle.
        assert!(stores.values().all(|s| s.len() <= 2), "{stores:?}");
        assert!(stores.values().filter(|s| s.len() == 1).count() > stores.len() / 2);
    }

    #[test]
    fn records_are_valid_json_unless_broken() {
        let config = WorkloadConfig {
            devices: 200,
            days: 1,
            broken_chance: 0.0,
            ..WorkloadConfig::default()
        };
        for record in Workload::new(config) {
            serde_json::from_str::<serde_json::Value>(&record.line)
                .expect("generated lines are JSON");
        }
    }
}

/// The files [`write_files`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenFiles {
    /// One per probe partition.
    pub probes: Vec<std::path::PathBuf>,
    /// One per login partition.
    pub logins: Vec<std::path::PathBuf>,
    /// One file of base counts.
    pub base_counts: Vec<std::path::PathBuf>,
    /// Records written per kind: probes, logins, base counts.
    pub records: [u64; 3],
}

/// Writes the workload as JSONL files in `dir`: `probes-<p>.jsonl`,
/// `logins-<p>.jsonl` and `base-counts.jsonl`.
pub fn write_files(
    config: &WorkloadConfig,
    dir: &std::path::Path,
) -> std::io::Result<WrittenFiles> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let open =
        |name: String| -> std::io::Result<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)> {
            let path = dir.join(name);
            let file = std::fs::File::create(&path)?;
            Ok((path, std::io::BufWriter::with_capacity(1 << 20, file)))
        };
    let mut probes = (0..config.probe_partitions)
        .map(|p| open(format!("probes-{p}.jsonl")))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut logins = (0..config.login_partitions)
        .map(|p| open(format!("logins-{p}.jsonl")))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut base = vec![open("base-counts.jsonl".to_owned())?];
    let mut records = [0u64; 3];
    for record in Workload::new(config.clone()) {
        let (files, count) = match record.kind {
            Kind::Probe => (&mut probes, &mut records[0]),
            Kind::Login => (&mut logins, &mut records[1]),
            Kind::BaseCount => (&mut base, &mut records[2]),
        };
        *count += 1;
        let (_, writer) = &mut files[record.partition as usize];
        writer.write_all(record.line.as_bytes())?;
        writer.write_all(b"\n")?;
    }
    let finish = |files: Vec<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>| {
        files
            .into_iter()
            .map(|(path, writer)| {
                writer
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .map(|_| path)
            })
            .collect::<std::io::Result<Vec<_>>>()
    };
    Ok(WrittenFiles {
        probes: finish(probes)?,
        logins: finish(logins)?,
        base_counts: finish(base)?,
        records,
    })
}
