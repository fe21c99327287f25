//! IEEE 802.1Q / 802.1ad VLAN tag view.
//!
//! Layer: `wire`. The view starts at the tag's TPID (where the outer EtherType would
//! be): TPID (2) | TCI (2) | inner EtherType (2). The tag itself is [`TAG_LEN`] = 4
//! bytes; [`Tag::new_checked`] also requires the 2 bytes of the EtherType that
//! follows, so every getter, including [`Tag::ethertype`], is infallible.

use super::{Error, Result, get16, put16};

/// Bytes a tag occupies in a frame (TPID + TCI).
pub const TAG_LEN: usize = 4;
/// Bytes [`Tag::new_checked`] requires (tag + the following EtherType).
pub const VIEW_LEN: usize = 6;

mod field {
    pub const TPID: usize = 0;
    pub const TCI: usize = 2;
    pub const ETHERTYPE: usize = 4;
}

/// A view of one VLAN tag.
#[derive(Debug, Clone, Copy)]
pub struct Tag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Tag { buffer }
    }

    /// Wraps `buffer` after checking it holds a tag and the following EtherType.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < VIEW_LEN {
            return Err(Error::Truncated);
        }
        Ok(Tag { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Tag protocol identifier (0x8100, 0x88a8, 0x9100).
    #[inline]
    pub fn tpid(&self) -> u16 {
        get16(self.buffer.as_ref(), field::TPID)
    }

    /// Tag control information: PCP (3) | DEI (1) | VID (12).
    #[inline]
    pub fn tci(&self) -> u16 {
        get16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority code point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (0..=4095).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType after the tag (maybe the TPID of another tag).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    /// Sets the TPID.
    #[inline]
    pub fn set_tpid(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::TPID, v);
    }

    /// Sets the whole TCI.
    #[inline]
    pub fn set_tci(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::TCI, v);
    }

    /// Sets the PCP (low 3 bits of `v`), keeping DEI and VID.
    #[inline]
    pub fn set_pcp(&mut self, v: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(v & 7) << 13);
        self.set_tci(tci);
    }

    /// Sets the DEI bit, keeping PCP and VID.
    #[inline]
    pub fn set_dei(&mut self, v: bool) {
        let tci = (self.tci() & !0x1000) | if v { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VID (low 12 bits of `v`), keeping PCP and DEI.
    #[inline]
    pub fn set_vid(&mut self, v: u16) {
        let tci = (self.tci() & 0xf000) | (v & 0x0fff);
        self.set_tci(tci);
    }

    /// Sets the EtherType after the tag.
    #[inline]
    pub fn set_ethertype(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb")/Dot1Q(prio=5, id=1,
    //   vlan=100)/IP(src="10.0.0.1", dst="10.0.0.2")
    const FRAME: &str =
        "00112233445566778899aabb8100b06408004500001400010000400066e70a0000010a000002";

    #[test]
    fn deconstruct() {
        let b = hex(FRAME);
        let t = Tag::new_checked(&b[12..]).unwrap();
        assert_eq!(t.tpid(), 0x8100);
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.vid(), 100);
        assert_eq!(t.ethertype(), 0x0800);
    }

    #[test]
    fn setters_round_trip() {
        let mut b = hex(FRAME);
        let mut t = Tag::new_checked(&mut b[12..]).unwrap();
        t.set_pcp(3);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (3, true, 100));
        t.set_vid(4095);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (3, true, 4095));
        t.set_dei(false);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (3, false, 4095));
        t.set_tpid(0x88a8);
        t.set_ethertype(0x86dd);
        assert_eq!((t.tpid(), t.ethertype()), (0x88a8, 0x86dd));
        t.set_tci(0xb064);
        t.set_tpid(0x8100);
        t.set_ethertype(0x0800);
        assert_eq!(b, hex(FRAME));
    }

    #[test]
    fn truncated() {
        let b = hex(FRAME);
        assert_eq!(Tag::new_checked(&b[12..17]).err(), Some(Error::Truncated));
        assert!(Tag::new_checked(&b[12..18]).is_ok());
    }
}
