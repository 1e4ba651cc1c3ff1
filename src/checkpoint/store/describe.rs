//! `presence checkpoints`: a listing a person reads.

use std::fmt::Write as _;

use super::checkpoints::{fenced, fetch, incomplete, listing};
use super::manifest::Manifest;
use super::objects::{Store, StoreError};

/// A human-readable listing of the checkpoints in `store`, newest first:
/// for each, its logical time, when and by what it was written, whether it
/// is complete (every piece present with its checksum), its size, rows,
/// parameters and the offsets it resumes at; the generations runs took;
/// then pieces that no checkpoint names (one being written, or left by a
/// crash).
pub fn describe(store: &Store) -> Result<String, StoreError> {
    let mut out = String::new();
    let (objects, found) = listing(store)?;
    let fenced = fenced(&found);
    let left = incomplete(&objects, &found);
    if found.is_empty() {
        let _ = writeln!(out, "no checkpoints in {}", store.location());
    }
    for listed in found {
        let manifest = match listed.manifest {
            Ok(manifest) => manifest,
            Err(error) => {
                let _ = writeln!(out, "{}: not a complete checkpoint: {error}", listed.place);
                continue;
            }
        };
        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_millis(manifest.wall_time_ms);
        let wall = humantime::format_rfc3339_seconds(wall);
        if manifest.claim {
            let _ = writeln!(
                out,
                "generation {} taken by {} at {wall}",
                manifest.generation,
                manifest.origin.name()
            );
            continue;
        }
        let status = if fenced.contains(&listed.number) {
            "NOT usable: written after a newer generation began".to_owned()
        } else {
            match fetch(store, &manifest) {
                Ok(_) => "complete".to_owned(),
                Err(error) => format!("NOT usable: {error}"),
            }
        };
        let _ = writeln!(
            out,
            "checkpoint at logical time {} (written {wall}, by {}, generation {}, {} workers): {status}",
            manifest.time,
            manifest.origin.name(),
            manifest.generation,
            manifest.workers
        );
        details(&mut out, &manifest);
    }
    for (cut, pieces, bytes) in left {
        let _ = writeln!(
            out,
            "incomplete: cut {cut}: {pieces} pieces, {bytes} bytes, named by no checkpoint (being written, or left by a crash)"
        );
    }
    Ok(out)
}

/// A checkpoint's size, parameters, inputs and offsets.
fn details(out: &mut String, manifest: &Manifest) {
    let _ = writeln!(
        out,
        "  {} bytes in {} pieces, {} rows",
        manifest.bytes(),
        manifest.pieces.len(),
        manifest.rows()
    );
    let _ = writeln!(out, "  parameters: {}", manifest.params.as_flags());
    if let Some(inputs) = &manifest.inputs {
        let _ = writeln!(out, "  inputs: {}", inputs.join(", "));
    }
    if !manifest.partitions.is_empty() {
        let offsets: Vec<String> = manifest
            .partitions
            .iter()
            .map(|p| format!("{}/{} {}", p.topic, p.partition, p.next))
            .collect();
        let _ = writeln!(out, "  resumes at: {}", offsets.join(", "));
    }
    match &manifest.outputs {
        Some(floors) if !floors.is_empty() => {
            let offsets: Vec<String> = floors
                .iter()
                .map(|f| format!("{}/{} {}", f.topic, f.partition, f.offset))
                .collect();
            let _ = writeln!(out, "  outputs read back from: {}", offsets.join(", "));
        }
        _ => {
            let _ = writeln!(out, "  outputs read back from: their beginning");
        }
    }
}
