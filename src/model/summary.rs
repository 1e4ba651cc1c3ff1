//! What a run read and wrote: the summary every command prints, and that
//! adds up (every record read is accepted, rejected or blank).

use std::collections::BTreeMap;

use crate::model::ingest::Ingested;

/// What a driver read and wrote (one worker's share, or merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read: lines of files, or Kafka messages (including
    /// unreadable ones). Always `accepted + rejected + blank`.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Accepted records per kind: probes, logins, base counts.
    pub accepted: [u64; 3],
    /// Rejected records per reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Empty or all-whitespace records (not records at all).
    pub blank: u64,
    /// Records written per output folder (backfill).
    pub written: BTreeMap<&'static str, u64>,
    /// The largest number of keys the window operator held on any worker.
    pub peak_window_keys: usize,
    /// The largest number of individual timestamps it held on any worker.
    pub peak_window_timestamps: usize,
    /// What the dataflow held at the end, over all workers (backfill):
    /// devices with a contact or a walk-in, ...
    pub held_devices: usize,
    /// ... walk-ins, ...
    pub held_walkins: usize,
    /// ... and (business, contact) counts.
    pub held_counts: usize,
    /// On worker 0 of a cluster of several processes (backfill): what every
    /// process read, accepted, rejected and left blank, added up.
    pub cluster: Option<Box<Summary>>,
}

impl Summary {
    /// Counts one record read and what it became.
    pub fn count(&mut self, ingested: &Ingested) {
        self.lines += 1;
        match ingested {
            Ingested::Probe(_) => self.accepted[0] += 1,
            Ingested::Login(_) => self.accepted[1] += 1,
            Ingested::BaseCount(_) => self.accepted[2] += 1,
            Ingested::Rejected(r) => *self.rejected.entry(r.reason.as_str()).or_default() += 1,
            Ingested::Blank => self.blank += 1,
        }
    }

    /// What [`Summary::describe`] says, as numbers to send to another
    /// process: records, bytes, accepted per kind, blank, rejected per
    /// reason (in [`Reason::ALL`](crate::model::records::Reason::ALL) order).
    pub fn counts(&self) -> Vec<u64> {
        let mut counts = vec![self.lines, self.bytes];
        counts.extend(self.accepted);
        counts.push(self.blank);
        for reason in crate::model::records::Reason::ALL {
            counts.push(self.rejected.get(reason.as_str()).copied().unwrap_or(0));
        }
        counts
    }

    /// The summary of [`Summary::counts`] (the other fields empty).
    pub fn of_counts(counts: &[u64]) -> Summary {
        let at = |i: usize| counts.get(i).copied().unwrap_or(0);
        let mut summary = Summary {
            lines: at(0),
            bytes: at(1),
            accepted: [at(2), at(3), at(4)],
            blank: at(5),
            ..Summary::default()
        };
        for (i, reason) in crate::model::records::Reason::ALL.into_iter().enumerate() {
            summary.rejected.insert(reason.as_str(), at(6 + i));
        }
        summary
    }

    /// Rejected records of every reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Adds another worker's summary to this one.
    pub fn merge(&mut self, other: Summary) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        for (mine, theirs) in self.accepted.iter_mut().zip(other.accepted) {
            *mine += theirs;
        }
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        self.blank += other.blank;
        for (folder, n) in other.written {
            *self.written.entry(folder).or_default() += n;
        }
        self.peak_window_keys = self.peak_window_keys.max(other.peak_window_keys);
        self.peak_window_timestamps = self
            .peak_window_timestamps
            .max(other.peak_window_timestamps);
        self.held_devices += other.held_devices;
        self.held_walkins += other.held_walkins;
        self.held_counts += other.held_counts;
        if other.cluster.is_some() {
            self.cluster = other.cluster;
        }
    }

    /// A warning when more than half the records read (blank lines aside)
    /// were rejected: how many, the most common reasons, and what usually
    /// causes it.
    pub fn mostly_rejected(&self) -> Option<String> {
        let records = self.lines - self.blank;
        let rejected = self.rejected_total();
        if records == 0 || rejected * 2 <= records {
            return None;
        }
        let mut reasons: Vec<(&str, u64)> = self
            .rejected
            .iter()
            .map(|(reason, n)| (*reason, *n))
            .filter(|(_, n)| *n > 0)
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        let hint = match reasons.first() {
            Some(("malformed", _)) => {
                "are the inputs JSON Lines of the kind their flag names (probes and logins \
                 swapped?), and not compressed (.gz files must be decompressed first)?"
            }
            Some(("late", _)) => "are the inputs in event-time order, or --allowed-lateness too short?",
            Some(("future", _)) => "are the timestamps milliseconds since 1970 (not seconds), or --max-future too short?",
            _ => "see the rejected records, each with its reason",
        };
        Some(format!(
            "{rejected} of {records} records ({:.0}%) were rejected ({}): {hint}",
            100.0 * rejected as f64 / records as f64,
            top.join(", ")
        ))
    }

    /// `read N records: accepted ..., rejected ..., blank B` — the parts add up to N.
    pub fn describe(&self) -> String {
        let rejected: Vec<String> = crate::model::records::Reason::ALL
            .into_iter()
            .map(|reason| {
                let n = self.rejected.get(reason.as_str()).copied().unwrap_or(0);
                format!("{n} {}", reason.as_str())
            })
            .collect();
        format!(
            "read {} records: accepted {} ({} probes, {} logins, {} base counts), rejected {} ({}), blank {}",
            self.lines,
            self.accepted.iter().sum::<u64>(),
            self.accepted[0],
            self.accepted[1],
            self.accepted[2],
            self.rejected_total(),
            rejected.join(", "),
            self.blank
        )
    }
}
