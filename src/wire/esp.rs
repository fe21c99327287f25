//! ESP header view (RFC 4303): SPI and sequence number only.
//!
//! Layer: `wire`. [`Packet::new_checked`] requires 8 bytes; the rest is encrypted
//! and not interpreted.

use super::{Error, Result, get32, put32};

/// Length of SPI + sequence number.
pub const HEADER_LEN: usize = 8;

/// A view of an ESP packet.
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

    /// Wraps `buffer` after checking it holds 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Security parameters index.
    #[inline]
    pub fn spi(&self) -> u32 {
        get32(self.buffer.as_ref(), 0)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the SPI.
    #[inline]
    pub fn set_spi(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 0, v);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // IP(src="10.0.0.1", dst="10.0.0.2")/ESP(spi=0xcafe0001, seq=42, data=b"\x00"*16)
    const PKT: &str =
        "4500002c000100004032669d0a0000010a000002cafe00010000002a00000000000000000000000000000000";

    #[test]
    fn deconstruct_and_set() {
        let mut b = hex(PKT);
        assert_eq!(b[9], 50);
        let e = Packet::new_checked(&b[20..]).unwrap();
        assert_eq!((e.spi(), e.seq_number()), (0xcafe0001, 42));
        let mut e = Packet::new_checked(&mut b[20..]).unwrap();
        e.set_spi(1);
        e.set_seq_number(2);
        assert_eq!((e.spi(), e.seq_number()), (1, 2));
        assert_eq!(
            Packet::new_checked(&b[20..27]).err(),
            Some(Error::Truncated)
        );
    }
}
