//! Input files: each file is one partition, read front to back, and each is
//! read by exactly one worker of the cluster.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;

use crate::model::ingest::{Ingested, Kind, PartitionIngest, MAX_KEPT_RECORD_BYTES};
use crate::model::params::Params;
use crate::model::records::EventTime;

/// Read buffer per file: large reads keep the parse loop fed from the page cache.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// An input file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened.
    #[error("cannot open {kind} file {path}: {source}")]
    Open {
        /// `probes`, `logins` or `base-counts`.
        kind: &'static str,
        /// The path as given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading failed part-way.
    #[error("cannot read {path} after line {line}: {source}")]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The last line read successfully.
        line: u64,
        /// Why.
        source: io::Error,
    },
}

/// An input file of some kind, numbered among the files of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    /// What the file holds.
    pub kind: Kind,
    /// The path as given on the command line (it is the `source` of rejections).
    pub path: PathBuf,
    /// The file's index among the files of its kind, from 0 (its `partition`).
    pub index: u64,
}

/// The flag that names files of `kind`, without dashes.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Probe => "probes",
        Kind::Login => "logins",
        Kind::BaseCount => "base-counts",
    }
}

/// All input files in assignment order: probes, then logins, then base counts.
pub fn plan(probes: &[PathBuf], logins: &[PathBuf], base_counts: &[PathBuf]) -> Vec<InputFile> {
    let numbered = |kind: Kind, paths: &[PathBuf]| -> Vec<InputFile> {
        paths
            .iter()
            .enumerate()
            .map(|(index, path)| InputFile {
                kind,
                path: path.clone(),
                index: index as u64,
            })
            .collect()
    };
    let mut files = numbered(Kind::Probe, probes);
    files.extend(numbered(Kind::Login, logins));
    files.extend(numbered(Kind::BaseCount, base_counts));
    files
}

/// Checks that every file can be opened, so that a bad path fails the run
/// before any work starts.
pub fn check_readable(files: &[InputFile]) -> Result<u64, FileError> {
    let mut bytes = 0;
    for file in files {
        let opened = File::open(&file.path).and_then(|f| f.metadata());
        match opened {
            Ok(meta) if meta.is_dir() => {
                return Err(FileError::Open {
                    kind: kind_name(file.kind),
                    path: file.path.clone(),
                    source: io::Error::other("it is a directory"),
                })
            }
            Ok(meta) => bytes += meta.len(),
            Err(source) => {
                return Err(FileError::Open {
                    kind: kind_name(file.kind),
                    path: file.path.clone(),
                    source,
                })
            }
        }
    }
    Ok(bytes)
}

/// How much one [`FileSource::read`] call consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinesRead {
    /// Lines read (including blank ones).
    pub lines: u64,
    /// Bytes read (including line terminators).
    pub bytes: u64,
}

/// One input file being read: a partition with its ingest state.
pub struct FileSource {
    file: InputFile,
    reader: BufReader<File>,
    ingest: PartitionIngest,
    line: u64,
    finished: bool,
    buffer: Vec<u8>,
}

impl FileSource {
    /// Opens `file` for reading.
    pub fn open(file: &InputFile, params: &Params) -> Result<Self, FileError> {
        let handle = File::open(&file.path).map_err(|source| FileError::Open {
            kind: kind_name(file.kind),
            path: file.path.clone(),
            source,
        })?;
        let source = file.path.to_string_lossy().into_owned();
        Ok(FileSource {
            file: file.clone(),
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, handle),
            ingest: PartitionIngest::new(file.kind, source, file.index, params),
            line: 0,
            finished: false,
            buffer: Vec::new(),
        })
    }

    /// The file's kind.
    pub fn kind(&self) -> Kind {
        self.file.kind
    }

    /// Whether the whole file has been read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The event-time promise of this partition for probes read from now on:
    /// `None` before its first accepted probe. Read to its end, it still
    /// promises only this (the end of input is not the passing of time).
    pub fn watermark(&self) -> Option<EventTime> {
        self.ingest.watermark()
    }

    /// The order in which a worker reads its files, smallest first: files
    /// not yet started, then logins and base counts (small, and state is
    /// freed sooner when contacts come first), then the probe file furthest
    /// behind in event time. Reading the laggard first keeps the global
    /// event-time frontier — and so the window state — moving.
    pub fn read_order(&self) -> (bool, EventTime) {
        let started = self.line > 0;
        match self.kind() {
            Kind::Probe => (
                started && self.ingest.high_water().is_some(),
                self.ingest.watermark().unwrap_or(0),
            ),
            Kind::Login | Kind::BaseCount => (started, 0),
        }
    }

    /// Reads up to `max_lines` lines, ingesting each with the wall clock
    /// `now_ms` and handing the result to `out`.
    pub fn read(
        &mut self,
        max_lines: u64,
        now_ms: u64,
        mut out: impl FnMut(Ingested),
    ) -> Result<LinesRead, FileError> {
        let mut read = LinesRead::default();
        while read.lines < max_lines && !self.finished {
            let line = read_line_bounded(&mut self.reader, &mut self.buffer, MAX_KEPT_RECORD_BYTES)
                .map_err(|source| FileError::Read {
                    path: self.file.path.clone(),
                    line: self.line,
                    source,
                })?;
            let Some(line) = line else {
                self.finished = true;
                tracing::info!(
                    path = %self.file.path.display(),
                    kind = kind_name(self.file.kind),
                    partition = self.file.index,
                    lines = self.line,
                    high_water = ?self.ingest.high_water(),
                    "finished reading an input file"
                );
                break;
            };
            self.line += 1;
            read.lines += 1;
            read.bytes += (line.size + line.terminator) as u64;
            out(if line.blank {
                Ingested::Blank // even when longer than what was kept
            } else {
                self.ingest
                    .ingest_sized(&self.buffer, line.size, self.line, now_ms)
            });
        }
        Ok(read)
    }
}

/// One line as [`read_line_bounded`] read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line {
    /// The line's full size without its terminator.
    size: usize,
    /// The terminator's length: 2 for `\r\n`, 1 for `\n`, 0 at the end of input.
    terminator: usize,
    /// Whether the whole line (kept or not) is ASCII whitespace.
    blank: bool,
}

/// Reads one line into `buffer` (without its `\n` or `\r\n`), keeping at
/// most `keep` bytes of it so that a huge line cannot exhaust memory.
/// Returns `None` at the end of the input.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    keep: usize,
) -> io::Result<Option<Line>> {
    buffer.clear();
    let mut line = Line {
        size: 0,
        terminator: 0,
        blank: true,
    };
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(any.then_some(line));
        }
        any = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = keep.saturating_sub(buffer.len());
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        line.blank = line.blank && chunk.iter().all(u8::is_ascii_whitespace);
        line.size += chunk.len();
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            line.terminator = 1;
            if line.size == buffer.len() && buffer.last() == Some(&b'\r') {
                buffer.pop();
                line.size -= 1;
                line.terminator = 2;
            }
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let text = b"ab\r\n\ncdef\n     \nlast";
        let mut reader = &text[..];
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line_bounded(&mut reader, &mut buffer, 3).unwrap() {
            lines.push((
                String::from_utf8_lossy(&buffer).into_owned(),
                line.size,
                line.terminator,
                line.blank,
            ));
        }
        assert_eq!(
            lines,
            vec![
                ("ab".to_owned(), 2, 2, false),
                ("".to_owned(), 0, 1, true),
                ("cde".to_owned(), 4, 1, false),
                ("   ".to_owned(), 5, 1, true),
                ("las".to_owned(), 4, 0, false)
            ]
        );
    }

    #[test]
    fn assignment_is_round_robin_over_all_files() {
        let p = |n: &str| PathBuf::from(n);
        let files = plan(&[p("a"), p("b")], &[p("c")], &[p("d")]);
        assert_eq!(
            files.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![0, 1, 0, 0]
        );
        let workers: Vec<usize> = (0..files.len())
            .map(|i| crate::cluster::responsible_for(i, 3))
            .collect();
        assert_eq!(workers, vec![0, 1, 2, 0]);
    }
}
