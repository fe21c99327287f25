//! ARP packet view for Ethernet/IPv4 (RFC 826).
//!
//! Layer: `wire`. Only the Ethernet/IPv4 form is accepted: [`Packet::new_checked`]
//! requires 28 bytes (else `Truncated`) and htype 1, ptype 0x0800, hlen 6, plen 4
//! (else `Malformed`). Getters are then infallible. Bytes past 28 (Ethernet padding)
//! are ignored.

use super::{Error, Result, get16, put16};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an Ethernet/IPv4 ARP packet.
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

    /// Wraps `buffer` after checking its length and the fixed fields.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if get16(b, field::HTYPE) != 1
            || get16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Opcode (1 request, 2 reply).
    #[inline]
    pub fn op(&self) -> u16 {
        get16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        a
    }

    /// Sender protocol (IPv4) address.
    #[inline]
    pub fn spa(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::SPA]);
        a
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        a
    }

    /// Target protocol (IPv4) address.
    #[inline]
    pub fn tpa(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::TPA]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes htype 1, ptype 0x0800, hlen 6, plen 4 (for building a packet).
    pub fn set_fixed_fields(&mut self) {
        let b = self.buffer.as_mut();
        put16(b, field::HTYPE, 1);
        put16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the opcode.
    #[inline]
    pub fn set_op(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::OPER, v);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sha(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_spa(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a);
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_tha(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_tpa(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // ARP(op=1, hwsrc="66:77:88:99:aa:bb", psrc="192.168.1.10",
    //     hwdst="00:00:00:00:00:00", pdst="192.168.1.1")
    const PKT: &str = "000108000604000166778899aabbc0a8010a000000000000c0a80101";

    #[test]
    fn deconstruct() {
        let b = hex(PKT);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.op(), OP_REQUEST);
        assert_eq!(p.sha(), [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        assert_eq!(p.spa(), [192, 168, 1, 10]);
        assert_eq!(p.tha(), [0; 6]);
        assert_eq!(p.tpa(), [192, 168, 1, 1]);
    }

    #[test]
    fn construct_matches_scapy() {
        let mut b = [0xeeu8; PACKET_LEN];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_fixed_fields();
        p.set_op(OP_REQUEST);
        p.set_sha([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        p.set_spa([192, 168, 1, 10]);
        p.set_tha([0; 6]);
        p.set_tpa([192, 168, 1, 1]);
        assert_eq!(&b[..], &hex(PKT)[..]);
    }

    #[test]
    fn rejects_bad_fixed_fields_and_short() {
        let good = hex(PKT);
        assert_eq!(
            Packet::new_checked(&good[..27]).err(),
            Some(Error::Truncated)
        );
        for (i, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = good.clone();
            b[i] = v;
            assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Malformed));
        }
    }
}
