//! GRE header view (RFC 2784/2890): flags, version, protocol type, optional key.
//!
//! Layer: `wire`. Recognised only: the parse stage notes GRE but does not look
//! inside. [`Packet::new_checked`] requires 4 bytes and the optional checksum, key
//! and sequence words the flags announce (else `Truncated`). The routing bit of
//! RFC 1701 is treated like the checksum bit (it makes the checksum/offset word
//! present); routing entries are not followed.

use super::{Error, Result, get16, get32};

/// Base header length.
pub const BASE_LEN: usize = 4;

const C_BIT: u16 = 0x8000;
const R_BIT: u16 = 0x4000;
const K_BIT: u16 = 0x2000;
const S_BIT: u16 = 0x1000;

/// A view of a GRE header.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking the header, with its optional words, fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < BASE_LEN || p.header_len() > b.len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Flags and version word.
    #[inline]
    pub fn flags_version(&self) -> u16 {
        get16(self.buffer.as_ref(), 0)
    }

    /// Version (3 bits; 0 for GRE, 1 for PPTP's enhanced GRE).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.flags_version() & 7) as u8
    }

    /// Checksum present.
    #[inline]
    pub fn checksum_present(&self) -> bool {
        self.flags_version() & C_BIT != 0
    }

    /// Key present.
    #[inline]
    pub fn key_present(&self) -> bool {
        self.flags_version() & K_BIT != 0
    }

    /// Sequence number present.
    #[inline]
    pub fn seq_present(&self) -> bool {
        self.flags_version() & S_BIT != 0
    }

    /// Protocol type (an EtherType) of the payload.
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get16(self.buffer.as_ref(), 2)
    }

    #[inline]
    fn key_off(&self) -> usize {
        BASE_LEN
            + if self.flags_version() & (C_BIT | R_BIT) != 0 {
                4
            } else {
                0
            }
    }

    /// Header length including the optional words.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.key_off()
            + if self.key_present() { 4 } else { 0 }
            + if self.seq_present() { 4 } else { 0 }
    }

    /// Key, when present.
    #[inline]
    pub fn key(&self) -> Option<u32> {
        self.key_present()
            .then(|| get32(self.buffer.as_ref(), self.key_off()))
    }

    /// Sequence number, when present.
    #[inline]
    pub fn seq_number(&self) -> Option<u32> {
        let off = self.key_off() + if self.key_present() { 4 } else { 0 };
        self.seq_present().then(|| get32(self.buffer.as_ref(), off))
    }

    /// Payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // IP(src="10.0.0.1", dst="10.0.0.2")/GRE(key_present=1, key=0x11223344,
    //   proto=0x0800)/IP(src="1.1.1.1", dst="2.2.2.2")
    const PKT: &str = "4500003000010000402f669c0a0000010a00000220000800112233444500001400010000400074e40101010102020202";
    // GRE(chksum_present=1, key_present=1, seqnum_present=1, key=7, seqence_number=9,
    //   proto=0x86dd)
    const ALL: &str = "b00086ddc91100000000000700000009";

    #[test]
    fn key_only() {
        let b = hex(PKT);
        assert_eq!(b[9], 47);
        let g = Packet::new_checked(&b[20..]).unwrap();
        assert_eq!((g.version(), g.protocol_type()), (0, 0x0800));
        assert!(g.key_present() && !g.checksum_present() && !g.seq_present());
        assert_eq!(g.key(), Some(0x11223344));
        assert_eq!(g.seq_number(), None);
        assert_eq!(g.header_len(), 8);
        assert_eq!(g.payload()[0], 0x45);
    }

    #[test]
    fn all_options() {
        let b = hex(ALL);
        let g = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(g.protocol_type(), 0x86dd);
        assert_eq!(g.header_len(), 16);
        assert_eq!(g.key(), Some(7));
        assert_eq!(g.seq_number(), Some(9));
        for n in 0..16 {
            assert_eq!(Packet::new_checked(&b[..n]).err(), Some(Error::Truncated));
        }
    }
}
