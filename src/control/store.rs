//! Crash-safe persistence for the supervisor: an append-only log of CRC-framed JSON
//! records, `fsync`ed before the supervisor acknowledges anything it records, and
//! compacted (rewritten to a temporary file, fsynced, renamed) on every start.
//!
//! Why a home-made log rather than an embedded DB crate: the state is tiny (systems and
//! grants, a few thousand records at most), the only operations are "append" and "load
//! everything", and a 100-line log has an obviously correct crash story: a record is
//! either entirely present with a valid CRC or it and everything after it is ignored
//! (a torn tail from a crash mid-write). No dependency, no background threads.
//!
//! Frame: `len: u32 LE | crc32(IEEE) of payload: u32 LE | payload (len bytes of JSON)`.
//!
//! Guarantees: after `append` returns `Ok`, the record survives `kill -9` and power loss
//! (as far as `fsync` does). Loading never panics on a damaged file.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::proto::SystemKind;

/// One persisted fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A registered system (latest record for an id wins).
    System {
        id: u64,
        kind: SystemKind,
        name: String,
        mac: [u8; 6],
        addrs: Vec<IpAddr>,
        caps: u32,
        addr: SocketAddr,
    },
    /// The system left or was declared dead.
    SystemGone { id: u64 },
    /// A number grant (latest record for an id wins).
    Grant {
        id: u64,
        pool: String,
        holder: u64,
        request_id: u64,
        first: u64,
        count: u32,
        lease_ms: u32,
        /// Sequence number of the request it was granted for (absent in records
        /// written before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The grant was released, expired or reclaimed.
    GrantGone { id: u64 },
    /// No grant id below `next` is handed out again (written by a compaction, which
    /// drops the records of gone grants: a message about a grant that is gone, e.g. a
    /// retransmitted release, must never reach a new grant under its old id).
    GrantIds { next: u64 },
    /// An advertised flow: `body` is the FlowAdd body (PROTOCOL.md §4.4) in hex.
    Flow {
        origin: u64,
        flow_id: u64,
        body: String,
        /// Sequence number of the FlowAdd that first advertised it (absent in records
        /// written before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The flow was withdrawn (flows of a removed system go with it implicitly).
    FlowGone { origin: u64, flow_id: u64 },
}

/// Where the supervisor persists records.
pub trait Store: Send {
    /// Durably appends one record; `Ok` only once it would survive a crash.
    fn append(&mut self, rec: &Record) -> io::Result<()>;
    /// Replaces the whole log by `snapshot` (atomically).
    fn compact(&mut self, snapshot: &[Record]) -> io::Result<()>;
}

/// In-memory store for tests and simulations; clones share the same log, so a
/// "restarted" supervisor can be built from what the old one persisted.
#[derive(Clone, Default, Debug)]
pub struct MemStore {
    pub log: Arc<Mutex<Vec<Record>>>,
}

impl MemStore {
    pub fn records(&self) -> Vec<Record> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Store for MemStore {
    fn append(&mut self, rec: &Record) -> io::Result<()> {
        self.log
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(rec.clone());
        Ok(())
    }
    fn compact(&mut self, snapshot: &[Record]) -> io::Result<()> {
        *self.log.lock().map_err(|_| io::Error::other("poisoned"))? = snapshot.to_vec();
        Ok(())
    }
}

/// The on-disk log, `DIR/state.log`.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    file: File,
}

const LOG: &str = "state.log";

impl FileStore {
    /// Opens (creating) `dir`, reads every intact record of the log, and returns them.
    /// A damaged tail is ignored (it is dropped at the next `compact`).
    pub fn open(dir: &Path) -> io::Result<(FileStore, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(LOG);
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut bytes)?;
        }
        let records = decode_log(&bytes);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok((
            FileStore {
                dir: dir.to_path_buf(),
                file,
            },
            records,
        ))
    }
}

/// Decodes frames until the first damaged or truncated one.
pub fn decode_log(mut b: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let crc = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let Some(payload) = b.get(8..8 + len) else {
            break;
        };
        if crc32(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
        b = &b[8 + len..];
    }
    out
}

/// Encodes one frame.
pub fn encode_frame(rec: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(rec).unwrap_or_default();
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(&crc32(&payload).to_le_bytes());
    v.extend_from_slice(&payload);
    v
}

impl Store for FileStore {
    fn append(&mut self, rec: &Record) -> io::Result<()> {
        self.file.write_all(&encode_frame(rec))?;
        self.file.sync_data()
    }

    fn compact(&mut self, snapshot: &[Record]) -> io::Result<()> {
        let tmp = self.dir.join("state.log.tmp");
        {
            let mut f = File::create(&tmp)?;
            let mut buf = Vec::new();
            for r in snapshot {
                buf.extend_from_slice(&encode_frame(r));
            }
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(LOG))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG))?;
        Ok(())
    }
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, as zlib's `crc32`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn torn_tail_and_corruption_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = Record::GrantGone { id: 1 };
        let b = Record::SystemGone { id: 2 };
        {
            let (mut s, recs) = FileStore::open(dir.path()).unwrap();
            assert!(recs.is_empty());
            s.append(&a).unwrap();
            s.append(&b).unwrap();
        }
        let path = dir.path().join(LOG);
        let mut bytes = std::fs::read(&path).unwrap();
        let full = bytes.len();
        bytes.extend_from_slice(&encode_frame(&a)[..5]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut s, recs) = FileStore::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a.clone(), b.clone()]);
        s.compact(&recs).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, full);
        // Flip one payload byte of the second record: only the first survives.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let (_, recs) = FileStore::open(dir.path()).unwrap();
        assert_eq!(recs, vec![a]);
    }
}
