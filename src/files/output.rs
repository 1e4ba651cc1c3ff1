//! Output folders: `DIR/<collection>/part-<worker>-of-<workers>.jsonl`, one
//! JSON object per line, written under a temporary name and renamed only
//! when the whole run succeeded, so partial output never looks complete.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::output::Output;

/// The output collections' folder names, in the order of docs/contract.md
/// (each [`Output::folder`]).
pub const FOLDERS: [&str; 6] = {
    let mut folders = [""; 6];
    let mut place = 0;
    while place < Output::ALL.len() {
        folders[place] = Output::ALL[place].folder();
        place += 1;
    }
    folders
};

/// Writes into each part file go through a buffer this large.
const WRITE_BUFFER_BYTES: usize = 1 << 16;

/// An output folder that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct OutputError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

fn error(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError {
        path: path.to_owned(),
        source,
    }
}

/// Creates `out` and its collection folders and checks that files can be
/// created in each, so that an unwritable `--out` fails before any work.
pub fn prepare(out: &Path) -> Result<(), OutputError> {
    for folder in FOLDERS {
        let dir = out.join(folder);
        fs::create_dir_all(&dir).map_err(error(&dir))?;
        let probe = dir.join(format!(".write-check-{}", std::process::id()));
        File::create(&probe).map_err(error(&dir))?;
        fs::remove_file(&probe).map_err(error(&probe))?;
    }
    Ok(())
}

/// The name of worker `index`'s part of a collection among `peers` workers.
pub fn part_name(index: usize, peers: usize) -> String {
    format!("part-{index:04}-of-{peers:04}.jsonl")
}

/// Removes part files of earlier runs with a different number of workers,
/// which would otherwise be read as part of this run's collection, and the
/// unfinished parts (`*.jsonl.tmp`) such runs left when interrupted (this
/// shape's are rewritten by this run's workers).
pub fn remove_stale_parts(dir: &Path, peers: usize) -> Result<(), OutputError> {
    let suffix = format!("-of-{peers:04}.jsonl");
    let unfinished = format!("{suffix}.tmp");
    for entry in fs::read_dir(dir).map_err(error(dir))? {
        let path = entry.map_err(error(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stale = (name.ends_with(".jsonl") && !name.ends_with(&suffix))
            || (name.ends_with(".jsonl.tmp") && !name.ends_with(&unfinished));
        if name.starts_with("part-") && stale {
            match fs::remove_file(&path) {
                // Another worker of this run may have removed it first.
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(error(&path)(e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A part file being written under a temporary name.
pub struct PartWriter {
    temporary: PathBuf,
    path: PathBuf,
    writer: BufWriter<File>,
    records: u64,
}

/// A part file written completely, waiting for the run to succeed.
#[derive(Debug)]
pub struct FinishedPart {
    temporary: PathBuf,
    path: PathBuf,
}

impl FinishedPart {
    /// Gives the part its final name.
    pub fn publish(self) -> Result<(), OutputError> {
        fs::rename(&self.temporary, &self.path).map_err(error(&self.path))
    }

    /// Removes the temporary file (the run failed).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

impl PartWriter {
    /// Starts worker `index`'s part of the collection in `dir`.
    pub fn create(dir: &Path, index: usize, peers: usize) -> Result<Self, OutputError> {
        let path = dir.join(part_name(index, peers));
        let temporary = dir.join(format!("{}.tmp", part_name(index, peers)));
        let file = File::create(&temporary).map_err(error(&temporary))?;
        Ok(PartWriter {
            temporary,
            path,
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            records: 0,
        })
    }

    /// Appends one record as a line of JSON.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), OutputError> {
        serde_json::to_writer(&mut self.writer, record)
            .map_err(|e| error(&self.temporary)(e.into()))?;
        self.writer
            .write_all(b"\n")
            .map_err(error(&self.temporary))?;
        self.records += 1;
        Ok(())
    }

    /// The number of records written.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes and closes the file; it keeps its temporary name until published.
    pub fn finish(self) -> Result<FinishedPart, OutputError> {
        let file = self
            .writer
            .into_inner()
            .map_err(|e| error(&self.temporary)(e.into_error()))?;
        file.sync_all().map_err(error(&self.temporary))?;
        Ok(FinishedPart {
            temporary: self.temporary,
            path: self.path,
        })
    }
}

/// Writes the records `read` gives as worker `index`'s part of the
/// collection in `dir` (as they come: nothing is collected first), under a
/// temporary name; returns how many and the part.
pub fn write_part<T: Serialize>(
    dir: &Path,
    index: usize,
    peers: usize,
    read: impl FnOnce(&mut dyn FnMut(T)),
) -> Result<(u64, FinishedPart), OutputError> {
    let mut part = PartWriter::create(dir, index, peers)?;
    let mut failed = None;
    read(&mut |record| {
        if failed.is_none() {
            failed = part.write(&record).err();
        }
    });
    match failed {
        Some(error) => Err(error),
        None => Ok((part.records(), part.finish()?)),
    }
}

/// Reads every line of every `*.jsonl` file in `dir` (a whole collection).
pub fn read_collection<T: serde::de::DeserializeOwned>(dir: &Path) -> io::Result<Vec<T>> {
    let mut records = Vec::new();
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<io::Result<_>>()?;
    paths.sort();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
    {
        for line in fs::read_to_string(path)?.lines() {
            let record = serde_json::from_str(line).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            records.push(record);
        }
    }
    Ok(records)
}
