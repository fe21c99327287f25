//! MPLS label stack entry view (RFC 3032).
//!
//! Layer: `wire`. One entry is 4 bytes: label (20) | TC (3) | S, bottom of stack (1) |
//! TTL (8). [`Entry::new_checked`] ensures 4 bytes; getters are then infallible.

use super::{Error, Result, get32, put32};

/// Length of one label stack entry.
pub const ENTRY_LEN: usize = 4;

/// A view of one MPLS label stack entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Entry<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Entry { buffer }
    }

    /// Wraps `buffer` after checking it holds 4 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < ENTRY_LEN {
            return Err(Error::Truncated);
        }
        Ok(Entry { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn word(&self) -> u32 {
        get32(self.buffer.as_ref(), 0)
    }

    /// The 20-bit label.
    #[inline]
    pub fn label(&self) -> u32 {
        self.word() >> 12
    }

    /// Traffic class (3 bits, formerly EXP).
    #[inline]
    pub fn tc(&self) -> u8 {
        ((self.word() >> 9) & 7) as u8
    }

    /// Bottom-of-stack flag.
    #[inline]
    pub fn bos(&self) -> bool {
        self.word() & 0x100 != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.word() as u8
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Entry<T> {
    #[inline]
    fn set_word(&mut self, w: u32) {
        put32(self.buffer.as_mut(), 0, w);
    }

    /// Sets the label (low 20 bits of `v`).
    #[inline]
    pub fn set_label(&mut self, v: u32) {
        let w = (self.word() & 0xfff) | ((v & 0xf_ffff) << 12);
        self.set_word(w);
    }

    /// Sets the traffic class (low 3 bits of `v`).
    #[inline]
    pub fn set_tc(&mut self, v: u8) {
        let w = (self.word() & !0xe00) | (u32::from(v & 7) << 9);
        self.set_word(w);
    }

    /// Sets the bottom-of-stack flag.
    #[inline]
    pub fn set_bos(&mut self, v: bool) {
        let w = (self.word() & !0x100) | if v { 0x100 } else { 0 };
        self.set_word(w);
    }

    /// Sets the TTL.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        let w = (self.word() & !0xff) | u32::from(v);
        self.set_word(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb", type=0x8847)
    //   /MPLS(label=1000, cos=5, s=0, ttl=64)/MPLS(label=16, cos=0, s=1, ttl=63)
    //   /IP(src="10.0.0.1", dst="10.0.0.2")
    const FRAME: &str =
        "00112233445566778899aabb8847003e8a400001013f4500001400010000400066e70a0000010a000002";

    #[test]
    fn deconstruct() {
        let b = hex(FRAME);
        let e = Entry::new_checked(&b[14..]).unwrap();
        assert_eq!((e.label(), e.tc(), e.bos(), e.ttl()), (1000, 5, false, 64));
        let e = Entry::new_checked(&b[18..]).unwrap();
        assert_eq!((e.label(), e.tc(), e.bos(), e.ttl()), (16, 0, true, 63));
    }

    #[test]
    fn setters_round_trip() {
        let mut b = hex(FRAME);
        let mut e = Entry::new_checked(&mut b[14..18]).unwrap();
        e.set_label(0xf_ffff);
        assert_eq!(
            (e.label(), e.tc(), e.bos(), e.ttl()),
            (0xf_ffff, 5, false, 64)
        );
        e.set_tc(7);
        e.set_bos(true);
        e.set_ttl(1);
        assert_eq!(
            (e.label(), e.tc(), e.bos(), e.ttl()),
            (0xf_ffff, 7, true, 1)
        );
        e.set_label(1000);
        e.set_tc(5);
        e.set_bos(false);
        e.set_ttl(64);
        assert_eq!(b, hex(FRAME));
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Entry::new_checked(&[0u8; 3][..]).err(),
            Some(Error::Truncated)
        );
    }
}
