//! Wire format of the flowgate control protocol (version 1): framing, HMAC-SHA256
//! authentication, sequence numbers and the replay window. `docs/PROTOCOL.md` is the
//! normative description; this module implements it.
//!
//! Layer: bottom of `control/`; depends on nothing but `std`, `hmac` and `sha2`.
//!
//! Guarantees:
//! - [`Key::open`] never panics on any input; it returns a typed [`ProtoError`].
//! - The MAC is checked (in constant time) *before* the body is parsed, so unauthenticated
//!   bytes never reach the message decoder's allocation paths.
//! - [`ReplayGuard::check`] accepts each `(sender, seq)` at most once and refuses
//!   sequence numbers more than [`REPLAY_WINDOW`] below the highest one seen.
//!
//! ```
//! use flowgate::control::proto::{Key, Body, Keepalive};
//! let key = Key::new(&[7u8; 32]).unwrap();
//! let bytes = key.seal(42, 1, &Body::Keepalive(Keepalive { state: 0 }));
//! let msg = key.open(&bytes).unwrap();
//! assert_eq!((msg.sender, msg.seq), (42, 1));
//! ```

mod msg;

pub use msg::*;

use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::net::IpAddr;

/// First two bytes of every datagram: ASCII "FG".
pub const MAGIC: [u8; 2] = *b"FG";
/// Protocol version carried in byte 2.
pub const VERSION: u8 = 1;
/// Fixed header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Length of the trailing HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Largest datagram a sender may emit (largest UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = 65_507;
/// Largest body that fits in [`MAX_DATAGRAM`].
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// Width of the per-sender replay window, in sequence numbers.
pub const REPLAY_WINDOW: u64 = 64;
/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Too short, wrong magic, length field disagrees with the datagram, bad field.
    #[error("malformed datagram")]
    Malformed,
    /// Magic right but a version this implementation does not speak.
    #[error("unsupported version")]
    BadVersion,
    /// The HMAC tag does not match.
    #[error("bad MAC")]
    BadMac,
    /// Authenticated, but this (sender, seq) was already accepted.
    #[error("replayed sequence number")]
    Replayed,
    /// Authenticated, but the sequence number is below the replay window.
    #[error("stale sequence number")]
    Stale,
}

/// The shared key, pre-keyed for HMAC-SHA256.
#[derive(Clone)]
pub struct Key {
    mac: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key of at least [`MIN_KEY_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| KeyError::TooShort(0))?;
        Ok(Key { mac })
    }

    /// Parses a key written in hex (whitespace around it ignored).
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::NotHex)?;
        Key::new(&bytes)
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(data);
        let out = m.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&out);
        tag
    }

    /// Encodes, frames and authenticates one message.
    ///
    /// # Panics
    /// Never for bodies built by this crate's senders: they keep bodies under
    /// [`MAX_BODY`] (lists are truncated by the encoder, see [`Body::encode`]).
    pub fn seal(&self, sender: u64, seq: u64, body: &Body) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(body.msg_type());
        out.extend_from_slice(&sender.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        body.encode(&mut out);
        let body_len = (out.len() - HEADER_LEN).min(u16::MAX as usize) as u16;
        out[20..22].copy_from_slice(&body_len.to_be_bytes());
        let tag = self.tag(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Checks framing and MAC, then decodes the body. Does not check the sequence
    /// number: that is [`ReplayGuard::check`]'s job, done by the receiver after this.
    pub fn open(&self, data: &[u8]) -> Result<Message, ProtoError> {
        if data.len() < HEADER_LEN + TAG_LEN || data[0..2] != MAGIC {
            return Err(ProtoError::Malformed);
        }
        if data[2] != VERSION {
            return Err(ProtoError::BadVersion);
        }
        let body_len = u16::from_be_bytes([data[20], data[21]]) as usize;
        if data.len() != HEADER_LEN + body_len + TAG_LEN || data[22..24] != [0, 0] {
            return Err(ProtoError::Malformed);
        }
        let (signed, tag) = data.split_at(HEADER_LEN + body_len);
        let mut m = self.mac.clone();
        m.update(signed);
        m.verify_slice(tag).map_err(|_| ProtoError::BadMac)?;
        let msg_type = data[3];
        let sender = u64::from_be_bytes(arr8(&data[4..12]));
        let seq = u64::from_be_bytes(arr8(&data[12..20]));
        if seq == 0 {
            return Err(ProtoError::Malformed);
        }
        let body = Body::decode(msg_type, &signed[HEADER_LEN..])?;
        Ok(Message { sender, seq, body })
    }
}

fn arr8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    a
}

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is {0} bytes; at least 32 are required")]
    TooShort(usize),
    #[error("key file is not hex")]
    NotHex,
}

/// One authenticated, decoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// System id of the sender (header bytes 4..12).
    pub sender: u64,
    /// Sender's sequence number (header bytes 12..20), never 0.
    pub seq: u64,
    pub body: Body,
}

/// Per-sender sliding window of accepted sequence numbers (RFC 4303 §3.4.3 style).
///
/// Bounded: at most `cap` senders are remembered; when full, the sender heard from
/// longest ago (by acceptance order) is forgotten.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<u64, Window>,
    cap: usize,
    tick: u64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    high: u64,
    bits: u64,
    used: u64,
}

impl ReplayGuard {
    pub fn new(cap: usize) -> ReplayGuard {
        ReplayGuard {
            senders: HashMap::new(),
            cap: cap.max(1),
            tick: 0,
        }
    }

    /// Accepts `seq` from `sender` once; refuses repeats and numbers below the window.
    pub fn check(&mut self, sender: u64, seq: u64) -> Result<(), ProtoError> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(w) = self.senders.get_mut(&sender) {
            if seq > w.high {
                let shift = seq - w.high;
                w.bits = if shift >= 64 { 0 } else { w.bits << shift };
                w.bits |= 1;
                w.high = seq;
            } else {
                let back = w.high - seq;
                if back >= REPLAY_WINDOW {
                    return Err(ProtoError::Stale);
                }
                if w.bits & (1 << back) != 0 {
                    return Err(ProtoError::Replayed);
                }
                w.bits |= 1 << back;
            }
            w.used = tick;
            return Ok(());
        }
        if self.senders.len() >= self.cap
            && let Some((&old, _)) = self.senders.iter().min_by_key(|(_, w)| w.used)
        {
            self.senders.remove(&old);
        }
        self.senders.insert(
            sender,
            Window {
                high: seq,
                bits: 1,
                used: tick,
            },
        );
        Ok(())
    }

    /// Forgets a sender (e.g. when it leaves), so its window memory is reclaimed.
    pub fn forget(&mut self, sender: u64) {
        self.senders.remove(&sender);
    }
}

/// Per-sender sequence numbers: starts at the wall clock in microseconds so that a
/// restarted sender continues above what receivers remember (PROTOCOL.md §3.3).
#[derive(Debug, Clone)]
pub struct SeqGen {
    next: u64,
}

impl SeqGen {
    /// Starts at `start` (0 is bumped to 1).
    pub fn new(start: u64) -> SeqGen {
        SeqGen { next: start.max(1) }
    }

    /// Starts at the current Unix time in microseconds.
    pub fn from_wall_clock() -> SeqGen {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        SeqGen::new(us)
    }

    pub fn next_seq(&mut self) -> u64 {
        let s = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        s
    }
}

/// Derives a 64-bit system id from a name: the first 8 bytes of SHA-256(name), big-endian.
pub fn system_id(name: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(arr8(&d[..8]))
}

/// Formats an address for JSON/CLI output.
pub fn fmt_addr(a: &IpAddr) -> String {
    a.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(&[0x11; 32]).unwrap()
    }

    #[test]
    fn short_key_refused() {
        assert_eq!(Key::new(&[0; 31]).unwrap_err(), KeyError::TooShort(31));
        assert!(Key::from_hex("zz").is_err());
    }

    #[test]
    fn seal_open_roundtrip_and_layout() {
        let k = key();
        let b = k.seal(
            0x0102030405060708,
            9,
            &Body::Keepalive(Keepalive { state: 1 }),
        );
        assert_eq!(&b[0..4], &[b'F', b'G', 1, 0x0F]);
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(u64::from_be_bytes(arr8(&b[12..20])), 9);
        assert_eq!(u16::from_be_bytes([b[20], b[21]]), 1);
        assert_eq!(b.len(), HEADER_LEN + 1 + TAG_LEN);
        // Independent check of the tag with a fresh HMAC instance.
        let mut m = HmacSha256::new_from_slice(&[0x11; 32]).unwrap();
        m.update(&b[..HEADER_LEN + 1]);
        assert_eq!(&m.finalize().into_bytes()[..], &b[HEADER_LEN + 1..]);
        let msg = k.open(&b).unwrap();
        assert_eq!(msg.body, Body::Keepalive(Keepalive { state: 1 }));
    }

    #[test]
    fn tamper_is_bad_mac() {
        let k = key();
        let mut b = k.seal(1, 1, &Body::Keepalive(Keepalive { state: 0 }));
        b[HEADER_LEN] ^= 1;
        assert_eq!(k.open(&b).unwrap_err(), ProtoError::BadMac);
        let other = Key::new(&[0x22; 32]).unwrap();
        let b = other.seal(1, 1, &Body::Keepalive(Keepalive { state: 0 }));
        assert_eq!(k.open(&b).unwrap_err(), ProtoError::BadMac);
    }

    #[test]
    fn framing_errors() {
        let k = key();
        assert_eq!(k.open(&[]).unwrap_err(), ProtoError::Malformed);
        let mut b = k.seal(1, 1, &Body::Keepalive(Keepalive { state: 0 }));
        b.push(0);
        assert_eq!(k.open(&b).unwrap_err(), ProtoError::Malformed);
        let mut b = k.seal(1, 1, &Body::Keepalive(Keepalive { state: 0 }));
        b[2] = 2;
        assert_eq!(k.open(&b).unwrap_err(), ProtoError::BadVersion);
    }

    #[test]
    fn replay_window() {
        let mut g = ReplayGuard::new(4);
        assert!(g.check(1, 100).is_ok());
        assert_eq!(g.check(1, 100), Err(ProtoError::Replayed));
        assert!(g.check(1, 99).is_ok());
        assert!(g.check(1, 164).is_ok());
        assert_eq!(g.check(1, 100), Err(ProtoError::Stale));
        assert!(g.check(1, 101).is_ok());
        assert_eq!(g.check(1, 101), Err(ProtoError::Replayed));
        assert!(g.check(1, 1000).is_ok());
        assert_eq!(g.check(1, 164), Err(ProtoError::Stale));
        for s in 2..10 {
            assert!(g.check(s, 1).is_ok());
        }
        assert!(g.senders.len() <= 4);
    }
}
