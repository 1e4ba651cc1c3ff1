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

impl ClusterArgs {
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
