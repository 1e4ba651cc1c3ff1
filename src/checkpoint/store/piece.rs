//! A piece's bytes: rows of state grouped into key groups, each group a
//! section with its own CRC-32, indexed at the end; the piece as a whole
//! has a CRC-32 too, recorded in the manifest that names it.
//!
//! Layout: `PIECE_MAGIC`, the sections (each a bincode `Vec<StateRow>`
//! sorted by key), the index (bincode `Vec<Section>`), the index's length
//! (u64 LE) and CRC-32 (u32 LE), `PIECE_END`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dataflow::state::StateRow;

use super::manifest::PieceInfo;

const PIECE_MAGIC: &[u8; 8] = b"PRSNPC01";
const PIECE_END: &[u8; 8] = b"PRSNEND1";
/// The index's length and CRC-32, and the end marker.
const FOOTER: usize = 8 + 4 + 8;

/// One section of a piece: a key group's rows.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Section {
    group: u32,
    offset: u64,
    len: u64,
    crc32: u32,
}

/// Of `rows` in order, the last of each key, sorted by key (a stable sort).
pub fn last_per_key(mut rows: Vec<StateRow>) -> Vec<StateRow> {
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut last: Vec<StateRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match last.last_mut() {
            Some(previous) if previous.key() == row.key() => *previous = row,
            _ => last.push(row),
        }
    }
    last
}

/// `rows` as the bytes of the piece `name`, and what a manifest records of it.
pub fn encode(name: &str, rows: Vec<StateRow>) -> (Vec<u8>, PieceInfo) {
    let mut groups: BTreeMap<u32, Vec<StateRow>> = BTreeMap::new();
    for row in rows {
        groups.entry(row.group()).or_default().push(row);
    }
    let mut out = PIECE_MAGIC.to_vec();
    let mut sections = Vec::new();
    let mut count = 0;
    for (group, rows) in groups {
        // Sorted by key with one row per key (the last: a row carried from
        // a failed cut and the cut's own), so that a restore merges sorted
        // runs.
        let rows = last_per_key(rows);
        count += rows.len() as u64;
        let bytes = bincode::serialize(&rows).expect("rows serialize");
        sections.push(Section {
            group,
            offset: out.len() as u64,
            len: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        });
        out.extend_from_slice(&bytes);
    }
    let index = bincode::serialize(&sections).expect("an index serializes");
    out.extend_from_slice(&index);
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
    out.extend_from_slice(PIECE_END);
    let info = PieceInfo {
        name: name.to_owned(),
        bytes: out.len() as u64,
        crc32: crc32fast::hash(&out),
        rows: count,
    };
    (out, info)
}

/// Checks that `bytes` have the size and CRC-32 the manifest records of
/// `piece`; says what is wrong if not.
pub fn verify(bytes: &[u8], piece: &PieceInfo) -> Result<(), String> {
    if bytes.len() as u64 != piece.bytes {
        return Err(format!(
            "{} bytes, the manifest says {}",
            bytes.len(),
            piece.bytes
        ));
    }
    if crc32fast::hash(bytes) != piece.crc32 {
        return Err("its checksum does not match its manifest's".to_owned());
    }
    Ok(())
}

/// A piece's index: where each key group's section lies, checked once so
/// that its groups can then be read one at a time ([`Sections::rows`]).
pub struct Sections<'a> {
    bytes: &'a [u8],
    index: BTreeMap<u32, Section>,
}

impl<'a> Sections<'a> {
    /// Reads the index of the piece `bytes`; says what is wrong if the
    /// piece is damaged.
    pub fn of(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < PIECE_MAGIC.len() + FOOTER || &bytes[..PIECE_MAGIC.len()] != PIECE_MAGIC {
            return Err("not a piece".to_owned());
        }
        let tail = &bytes[bytes.len() - FOOTER..];
        if &tail[12..] != PIECE_END {
            return Err("no end marker".to_owned());
        }
        let index_len = u64::from_le_bytes(tail[..8].try_into().expect("8 bytes"));
        let index_crc = u32::from_le_bytes(tail[8..12].try_into().expect("4 bytes"));
        let index_at = (bytes.len() - FOOTER)
            .checked_sub(index_len as usize)
            .ok_or("index longer than the piece")?;
        let index = &bytes[index_at..bytes.len() - FOOTER];
        if crc32fast::hash(index) != index_crc {
            return Err("its index fails its checksum".to_owned());
        }
        let index: Vec<Section> = bincode::deserialize(index).map_err(|e| format!("index: {e}"))?;
        Ok(Sections {
            bytes,
            index: index.into_iter().map(|s| (s.group, s)).collect(),
        })
    }

    /// The rows of key group `group`, in the order written (none if the
    /// piece has no section for it); says what is wrong if it is damaged.
    pub fn rows(&self, group: u32) -> Result<Vec<StateRow>, String> {
        let Some(section) = self.index.get(&group) else {
            return Ok(Vec::new());
        };
        let start = section.offset as usize;
        let section_bytes = start
            .checked_add(section.len as usize)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| format!("key group {group} lies outside the piece"))?;
        if crc32fast::hash(section_bytes) != section.crc32 {
            return Err(format!("key group {group} fails its checksum"));
        }
        bincode::deserialize(section_bytes).map_err(|e| format!("key group {group}: {e}"))
    }
}
