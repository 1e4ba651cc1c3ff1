//! The detection parameters of docs/contract.md, section 2, their defaults, and the
//! duration syntax the command line accepts.

use std::fmt;

/// Milliseconds in a minute.
const MINUTE: u64 = 60_000;

/// The parameters that decide which records are accepted and what a walk-in is.
///
/// Defined once: the command line's flags are named by [`Params::FLAGS`], a
/// checkpoint's manifest records this struct as it is (serde, durations in
/// ms), and a restore's refusal names the flags [`Params::differences`]
/// finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Probes with `rssi` below this are accepted but ignored (dBm).
    pub rssi_min: i32,
    /// Neighbouring probes more than this apart (ms) split a visit.
    pub session_gap: u64,
    /// A visit is a walk-in only if its last probe is at least this (ms) after its first.
    pub min_dwell: u64,
    /// A visit is a walk-in only if it has at least this many distinct probe times.
    pub min_probes: u64,
    /// A probe more than this (ms) below its partition's high-water mark is late.
    pub allowed_lateness: u64,
    /// A probe or login more than this (ms) ahead of the wall clock is future.
    pub max_future: u64,
}

impl Default for Params {
    /// The documented defaults: `-75`, `15m`, `5m`, `3`, `5m`, `1d`.
    fn default() -> Self {
        Params {
            rssi_min: -75,
            session_gap: 15 * MINUTE,
            min_dwell: 5 * MINUTE,
            min_probes: 3,
            allowed_lateness: 5 * MINUTE,
            max_future: 24 * 60 * MINUTE,
        }
    }
}

impl Params {
    /// The command line's flag for each parameter, in field order.
    pub const FLAGS: [&'static str; 6] = [
        "--rssi-min",
        "--session-gap",
        "--min-dwell",
        "--min-probes",
        "--allowed-lateness",
        "--max-future",
    ];

    /// Each parameter's value as a refusal or a listing shows it (durations
    /// as the flags take them, `15m`), in the order of [`Params::FLAGS`].
    pub fn values(&self) -> [String; 6] {
        let ms = |v: u64| format_duration(v);
        [
            self.rssi_min.to_string(),
            ms(self.session_gap),
            ms(self.min_dwell),
            self.min_probes.to_string(),
            ms(self.allowed_lateness),
            ms(self.max_future),
        ]
    }

    /// The parameters as flags: `--rssi-min -75 --session-gap 15m ...`.
    pub fn as_flags(&self) -> String {
        Params::FLAGS
            .iter()
            .zip(self.values())
            .map(|(flag, value)| format!("{flag} {value}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Where `self` (a checkpoint's) and `now` differ, as
    /// `--min-dwell 5m, now 1m`, joined by `; ` (empty if none).
    pub fn differences(&self, now: &Params) -> String {
        Params::FLAGS
            .iter()
            .zip(self.values().into_iter().zip(now.values()))
            .filter(|(_, (then, now))| then != now)
            .map(|(flag, (then, now))| format!("{flag} {then}, now {now}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A duration that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError(String, Overflow);

/// Whether a well-formed duration was too long for milliseconds in 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Overflow(bool);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 .0 {
            return write!(
                f,
                "invalid duration {:?}: too long (at most {}d)",
                self.0,
                u64::MAX / (24 * 60 * MINUTE)
            );
        }
        if self.0.trim_start().starts_with('-') {
            return write!(
                f,
                "invalid duration {:?}: durations cannot be negative",
                self.0
            );
        }
        write!(
            f,
            "invalid duration {:?}: expected a whole number with an optional unit ms, s, m, h or d \
             (e.g. 250ms, 900s, 15m, 2h, 1d; a bare number is milliseconds)",
            self.0
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `250ms`, `900s`, `15m`, `2h`, `1d` or a bare number of milliseconds.
///
/// ```
/// use presence::model::params::parse_duration;
/// assert_eq!(parse_duration("15m"), Ok(900_000));
/// assert_eq!(parse_duration("250"), Ok(250));
/// assert!(parse_duration("1.5h").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let error = || DurationError(text.to_owned(), Overflow(false));
    let overflow = || DurationError(text.to_owned(), Overflow(true));
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(error());
    }
    let (number, unit) = text.split_at(digits);
    // All digits: a number that does not parse is too big.
    let number: u64 = number.parse().map_err(|_| overflow())?;
    let scale: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => MINUTE,
        "h" => 60 * MINUTE,
        "d" => 24 * 60 * MINUTE,
        _ => return Err(error()),
    };
    number.checked_mul(scale).ok_or_else(overflow)
}

/// A duration in milliseconds as the flags take it, in the largest unit
/// that gives a whole number (`300000` is `5m`, `1500` is `1500ms`).
///
/// ```
/// use presence::model::params::{format_duration, parse_duration};
/// assert_eq!(format_duration(300_000), "5m");
/// assert_eq!(format_duration(1_500), "1500ms");
/// assert_eq!(parse_duration(&format_duration(86_400_000)), Ok(86_400_000));
/// ```
pub fn format_duration(ms: u64) -> String {
    let units = [
        ("d", 24 * 60 * MINUTE),
        ("h", 60 * MINUTE),
        ("m", MINUTE),
        ("s", 1_000),
    ];
    units
        .iter()
        .find(|(_, scale)| ms > 0 && ms.is_multiple_of(*scale))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, scale)| format!("{}{unit}", ms / scale),
        )
}

/// As [`parse_duration`], for settings where zero means nothing (a timeout,
/// an interval, how long to run).
pub fn parse_positive_duration(text: &str) -> Result<u64, String> {
    match parse_duration(text).map_err(|e| e.to_string())? {
        0 => Err(format!("invalid duration {text:?}: it must be more than 0")),
        ms => Ok(ms),
    }
}

/// A count that must be at least 1.
pub fn parse_at_least_one(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("it must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) if text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit()) => {
            Err("it must be at least 1".to_owned())
        }
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("it must be from 1 to {}", u64::MAX))
        }
        Err(_) => Err(format!("{text:?} is not a whole number (at least 1)")),
    }
}

/// Whether `address` is `HOST:PORT`: a non-empty host (a name, an IPv4
/// address or a bracketed IPv6 one) and a port from 1 to 65535 — the
/// syntax of hostfile lines and of `--brokers`, checked before connecting.
pub fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    port_ok && host_ok
}

/// A comma-separated list of topic names: no empty name, none twice.
pub fn parse_topics(text: &str) -> Result<String, String> {
    let names: Vec<&str> = text.split(',').map(str::trim).collect();
    if names.iter().any(|name| name.is_empty()) {
        return Err(format!("{text:?} names an empty topic"));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("{text:?} names {name} twice"));
        }
    }
    Ok(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_flag_and_nothing_else() {
        let then = Params::default();
        assert_eq!(then.differences(&then), "");
        let now = Params {
            min_dwell: 60_000,
            rssi_min: -80,
            ..then
        };
        assert_eq!(
            then.differences(&now),
            "--rssi-min -75, now -80; --min-dwell 5m, now 1m"
        );
        assert!(then
            .as_flags()
            .starts_with("--rssi-min -75 --session-gap 15m"));
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("900s"), Ok(900_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("0"), Ok(0));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "m",
            "-5m",
            "1.5h",
            "5 m",
            "5min",
            "1e3",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        let negative = parse_duration("-5m").unwrap_err().to_string();
        assert!(negative.contains("cannot be negative"), "{negative}");
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1s"), Ok(1_000));
        assert!(parse_at_least_one("0").is_err());
        assert_eq!(parse_at_least_one("3"), Ok(3));
    }
}
