//! Timely's cluster flags (`-w -n -p -h`), parsed by clap, and the
//! `timely::Config` they describe.

use std::path::PathBuf;

use timely::{CommunicationConfig, WorkerConfig};

/// The shape of the cluster: as in timely, every process gets the same flags
/// except `-p`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(
        short = 'w',
        long = "threads",
        visible_alias = "workers",
        default_value_t = 1,
        value_name = "N"
    )]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1, value_name = "N")]
    pub processes: usize,
    /// This process's index, from 0.
    #[arg(short = 'p', long = "process", default_value_t = 0, value_name = "I")]
    pub process: usize,
    /// Hostfile: one host:port per line, line i is process i (default localhost:2101+i).
    #[arg(short = 'h', long = "hostfile", value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

/// Cluster flags that do not describe a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `-w 0` or `-n 0`.
    #[error("-w and -n must be at least 1")]
    Empty,
    /// `-p` out of range.
    #[error("-p {process} is not a process index for -n {processes} (use 0 to {})", processes - 1)]
    Process {
        /// `-p`.
        process: usize,
        /// `-n`.
        processes: usize,
    },
    /// The hostfile could not be read.
    #[error("cannot read hostfile {path}: {source}")]
    Hostfile {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hostfile has too few lines.
    #[error("hostfile {path} has {found} addresses, but -n is {processes}")]
    TooFewHosts {
        /// The path.
        path: PathBuf,
        /// Non-empty lines found.
        found: usize,
        /// `-n`.
        processes: usize,
    },
}

/// Set once a lost process has been reported: later panics it causes in
/// other threads say nothing more.
static LOST_REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What a panic of timely's networking means, if it means a lost process:
/// the process index (from the thread's name) and the cause.
fn lost_process(thread: Option<&str>, message: &str) -> Option<(Option<usize>, String)> {
    let peer = thread
        .and_then(|t| {
            t.strip_prefix("timely:recv-")
                .or_else(|| t.strip_prefix("timely:send-"))
        })
        .and_then(|i| i.parse().ok());
    if let Some(cause) = message.strip_prefix("timely communication error: ") {
        Some((peer, cause.to_owned()))
    } else if message.contains("MergeQueue poisoned") {
        Some((peer, "its connection failed".to_owned()))
    } else {
        None
    }
}

impl ClusterArgs {
    /// When another process of the cluster dies or its connection breaks,
    /// timely's network threads panic, and then every worker: instead, say
    /// in one line which process was lost and exit with status 1 (a restart
    /// of every process resumes from the newest checkpoint). Other panics
    /// (bugs) are reported as usual.
    pub fn exit_on_lost_process(&self) {
        if self.processes < 2 {
            return;
        }
        let addresses: Vec<String> = match self.timely_config().map(|c| c.communication) {
            Ok(CommunicationConfig::Cluster { addresses, .. }) => addresses,
            _ => Vec::new(),
        };
        let usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            let thread = std::thread::current();
            let Some((peer, cause)) = lost_process(thread.name(), message) else {
                return usual(info);
            };
            if !LOST_REPORTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let who = match peer {
                    Some(i) => format!(
                        "process {i} ({})",
                        addresses.get(i).map_or("?", String::as_str)
                    ),
                    None => "a process".to_owned(),
                };
                eprintln!("presence: error: lost {who} of the cluster: {cause}; restart every process to resume");
            }
            std::process::exit(1);
        }));
    }

    /// Workers in the whole cluster.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// The timely configuration for this process.
    pub fn timely_config(&self) -> Result<timely::Config, ClusterError> {
        if self.workers == 0 || self.processes == 0 {
            return Err(ClusterError::Empty);
        }
        if self.process >= self.processes {
            return Err(ClusterError::Process {
                process: self.process,
                processes: self.processes,
            });
        }
        let communication = if self.processes > 1 {
            let addresses = match &self.hostfile {
                Some(path) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ClusterError::Hostfile {
                            path: path.clone(),
                            source,
                        })?;
                    let addresses: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .take(self.processes)
                        .map(str::to_owned)
                        .collect();
                    if addresses.len() < self.processes {
                        return Err(ClusterError::TooFewHosts {
                            path: path.clone(),
                            found: addresses.len(),
                            processes: self.processes,
                        });
                    }
                    addresses
                }
                None => (0..self.processes)
                    .map(|i| format!("localhost:{}", 2101 + i))
                    .collect(),
            };
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timely_network_panics_name_the_lost_process() {
        assert_eq!(
            lost_process(
                Some("timely:recv-1"),
                "timely communication error: reading data: Connection reset by peer (os error 104)"
            ),
            Some((
                Some(1),
                "reading data: Connection reset by peer (os error 104)".to_owned()
            ))
        );
        assert_eq!(
            lost_process(Some("timely:work-0"), "MergeQueue poisoned."),
            Some((None, "its connection failed".to_owned()))
        );
        assert_eq!(lost_process(Some("main"), "index out of bounds"), None);
    }
}
