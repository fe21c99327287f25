//! Ethernet II frame header view (destination, source, EtherType).
//!
//! Layer: `wire`. [`Frame::new_checked`] ensures 14 bytes; every getter is then
//! infallible. No 802.3 length/LLC handling: an EtherType below 0x0600 is just a value.

use super::{Error, Result, get16, put16};

/// Common EtherType values.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ TPID.
    pub const QINQ_OLD: u16 = 0x9100;
    /// MPLS unicast.
    pub const MPLS: u16 = 0x8847;
    /// MPLS multicast.
    pub const MPLS_MC: u16 = 0x8848;

    /// True for the three TPIDs the parser treats as VLAN tags.
    #[inline]
    pub fn is_vlan_tpid(t: u16) -> bool {
        matches!(t, VLAN | QINQ | QINQ_OLD)
    }

    /// True for the two MPLS EtherTypes.
    #[inline]
    pub fn is_mpls(t: u16) -> bool {
        matches!(t, MPLS | MPLS_MC)
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps `buffer` after checking it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(Truncated)` when the buffer is shorter than 14 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// EtherType (or TPID of the first VLAN tag).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Bytes after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }

    /// Mutable bytes after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")/IP(src="10.0.0.1",
    //   dst="10.0.0.2")/UDP(sport=1234, dport=80)
    const FRAME: &str =
        "00112233445566778899aabb08004500001c00010000401166ce0a0000010a00000204d200500008e6b9";

    #[test]
    fn deconstruct() {
        let b = hex(FRAME);
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst_addr(), [0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(f.src_addr(), [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn setters_round_trip() {
        let mut b = hex(FRAME);
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ethertype::IPV6);
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), 0x86dd);
        assert_eq!(&b[14..], &hex(FRAME)[14..]);
    }

    #[test]
    fn truncated() {
        let b = hex(FRAME);
        for n in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&b[..n]).err(), Some(Error::Truncated));
        }
        assert!(Frame::new_checked(&b[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn tpid_predicates() {
        for t in [0x8100, 0x88a8, 0x9100] {
            assert!(ethertype::is_vlan_tpid(t));
        }
        assert!(!ethertype::is_vlan_tpid(0x0800));
        assert!(ethertype::is_mpls(0x8847) && ethertype::is_mpls(0x8848));
    }
}
