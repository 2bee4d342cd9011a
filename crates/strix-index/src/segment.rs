//! A segment: a batch of entries and their vectors in one immutable file. An index version
//! lists its segments; adding writes one more, so earlier segments' blobs are shared by every
//! later version instead of being written again.
//!
//! Layout: one JSON header line (`{"format":1,"dimensions":D,"count":N,"entries":BYTES}`), the
//! entries as a JSON array of BYTES bytes, then N x D little-endian f32.

use serde::{Deserialize, Serialize};

use crate::Entry;

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    dimensions: usize,
    count: usize,
    entries: usize,
}

/// Entries with their vectors, row `i` of `vectors` for `entries[i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segment {
    pub dimensions: usize,
    pub entries: Vec<Entry>,
    pub vectors: Vec<f32>,
}

impl Segment {
    pub fn encode(&self) -> Vec<u8> {
        let entries = serde_json::to_vec(&self.entries).expect("entries are plain JSON values");
        let header =
            Header { format: FORMAT, dimensions: self.dimensions, count: self.entries.len(), entries: entries.len() };
        let mut out = serde_json::to_vec(&header).expect("a plain header");
        out.push(b'\n');
        out.extend_from_slice(&entries);
        out.reserve(self.vectors.len() * 4);
        for v in &self.vectors {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Read a segment back, checking that its parts agree.
    pub fn decode(bytes: &[u8]) -> Result<Segment, String> {
        let line = bytes.iter().position(|&b| b == b'\n').ok_or("no header line")?;
        let header: Header = serde_json::from_slice(&bytes[..line]).map_err(|e| format!("header: {e}"))?;
        if header.format != FORMAT {
            return Err(format!("format {} (this strix reads {FORMAT})", header.format));
        }
        let rest = &bytes[line + 1..];
        let floats = header.count.checked_mul(header.dimensions).and_then(|n| n.checked_mul(4));
        if Some(rest.len()) != floats.and_then(|n| n.checked_add(header.entries)) {
            return Err(format!("{} bytes after the header, which does not fit its sizes", rest.len()));
        }
        let (json, raw) = rest.split_at(header.entries);
        let entries: Vec<Entry> = serde_json::from_slice(json).map_err(|e| format!("entries: {e}"))?;
        if entries.len() != header.count {
            return Err(format!("{} entries, the header says {}", entries.len(), header.count));
        }
        let vectors = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Segment { dimensions: header.dimensions, entries, vectors })
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dimensions..(i + 1) * self.dimensions]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_named() {
        let entry = |id| Entry { id, image: format!("img{id}.jpg"), ..Default::default() };
        let seg = Segment { dimensions: 2, entries: vec![entry(1), entry(2)], vectors: vec![1.0, 0.0, 0.6, 0.8] };
        let bytes = seg.encode();
        assert_eq!(Segment::decode(&bytes).unwrap(), seg);
        assert_eq!(Segment::decode(&bytes).unwrap().vector(1), &[0.6, 0.8]);
        assert!(Segment::decode(&bytes[..bytes.len() - 1]).unwrap_err().contains("does not fit"));
        assert!(
            Segment::decode(b"{\"format\":9,\"dimensions\":1,\"count\":0,\"entries\":2}\n[]")
                .unwrap_err()
                .contains("format 9")
        );
        assert!(Segment::decode(b"garbage").is_err());
    }
}
