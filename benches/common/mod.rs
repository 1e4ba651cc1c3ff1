//! What the benchmarks share: environment knobs, the median, and the
//! machine and source they ran on.
#![allow(dead_code)] // each bench uses a subset

pub mod s3;

pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

pub fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok(v) if !v.is_empty() && v != "0")
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The git commit of the crate, and whether `src/` has uncommitted changes
/// (best effort: "unknown" without git).
pub fn source_version() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "src",
                "Cargo.toml",
                "Cargo.lock",
            ])
            .map(|s| s.lines().count())
            .unwrap_or(0);
            if dirty > 0 {
                format!("commit {commit} plus uncommitted changes to {dirty} file(s)")
            } else {
                format!("commit {commit}")
            }
        }
        None => "unknown".to_string(),
    }
}

/// Which CPU time of this process [`cpu_ticks`] counts.
#[derive(Clone, Copy)]
pub enum Counted {
    /// This process's own (utime + stime).
    Own,
    /// Its waited-for children's (cutime + cstime).
    Children,
}

/// Linux's USER_HZ, which `/proc/stat` counts in.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Busy CPU ticks of the whole machine, and the `counted` CPU ticks of this
/// process, from `/proc` (zeros elsewhere).
pub fn cpu_ticks(counted: Counted) -> (u64, u64) {
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            let fields: Vec<u64> = text
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            (fields.len() >= 8)
                .then(|| fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7])
        })
        .unwrap_or(0);
    // Fields 14/15 (utime, stime) or 16/17 (cutime, cstime), counting from 1
    // with the state (field 3) at index 0 after the command's ')'.
    let first = match counted {
        Counted::Own => 11,
        Counted::Children => 13,
    };
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| {
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            let a: u64 = fields.get(first)?.parse().ok()?;
            let b: u64 = fields.get(first + 1)?.parse().ok()?;
            Some(a + b)
        })
        .unwrap_or(0);
    (machine, process)
}
