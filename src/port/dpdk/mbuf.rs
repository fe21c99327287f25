//! Owned packet buffers ([`Mbuf`]) and fixed bursts of them ([`MbufBatch`]).
//!
//! Layer: `port::dpdk`. An [`Mbuf`] owns one `rte_mbuf` and frees it on drop; it lends the
//! frame as `&[u8]`/`&mut [u8]` and moves its start and end in place (`prepend`/`adj`,
//! `append`/`trim`) so VLAN/MPLS headers are pushed into the headroom and popped without a
//! copy. Frames are single-segment: ports are set up without scatter, so RX frames fit one
//! buffer; [`Mbuf::data`] covers the first (only) segment.
//!
//! An [`MbufBatch`] is an inline array of [`BURST`] slots: rx fills it, tx drains it, no
//! allocation. Invariant: slots `0..len` hold mbufs, the rest are empty.

use std::marker::PhantomData;
use std::ptr::NonNull;

use super::ffi;

/// Frames per burst.
pub const BURST: usize = 32;

/// One owned packet buffer from a pool that outlives `'p`.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf<'p> {
    ptr: NonNull<ffi::RteMbuf>,
    _pool: PhantomData<&'p ()>,
}

// SAFETY: an mbuf is owned by exactly one Mbuf; freeing it from another thread is allowed
// (mempool put is MT-safe).
unsafe impl Send for Mbuf<'_> {}
// SAFETY: `&Mbuf` only reads the buffer.
unsafe impl Sync for Mbuf<'_> {}

impl Mbuf<'_> {
    /// # Safety
    /// `ptr` is a valid mbuf owned by nobody else, from a pool that outlives `'p`.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<ffi::RteMbuf>) -> Self {
        Mbuf {
            ptr,
            _pool: PhantomData,
        }
    }

    /// Reads the `T` at byte offset `off` of the `rte_mbuf`.
    ///
    /// # Safety
    /// `off` is the offset of a field of type `T` (offsets are checked at EAL init).
    #[inline(always)]
    unsafe fn field<T: Copy>(&self, off: usize) -> T {
        // SAFETY: per the contract, an aligned, initialised T inside the live mbuf header.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(off).cast::<T>().read() }
    }

    /// `rte_pktmbuf_mtod` and `data_len`, read inline (no call into the shim).
    #[inline(always)]
    fn raw_data(&self) -> (*mut u8, usize) {
        // SAFETY: live mbuf; offsets checked at EAL init; buf_addr is the start of the
        // buffer and data_off is within it, as DPDK maintains.
        unsafe {
            let buf: *mut u8 = self.field(ffi::MBUF_BUF_ADDR);
            let off: u16 = self.field(ffi::MBUF_DATA_OFF);
            let len: u16 = self.field(ffi::MBUF_DATA_LEN);
            (buf.add(usize::from(off)), usize::from(len))
        }
    }

    /// Frame length in bytes (`pkt_len`).
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: ptr is a live mbuf we own; the offset is checked against the C headers at init.
        unsafe { self.field::<u32>(ffi::MBUF_PKT_LEN) as usize }
    }

    /// True for a zero-length frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of segments (1 for every frame this binding produces).
    pub fn segments(&self) -> u16 {
        // SAFETY: ptr is a live mbuf we own; the offset is checked against the C headers at init.
        unsafe { self.field::<u16>(ffi::MBUF_NB_SEGS) }
    }

    /// The IO address of the frame's first byte (`rte_mbuf_data_iova`): what a NIC reads
    /// or writes by DMA.
    pub fn data_iova(&self) -> u64 {
        // SAFETY: ptr is a live mbuf we own.
        let buf = unsafe { ffi::fg_mbuf_iova(self.ptr.as_ptr()) };
        // SAFETY: as above; the offset is checked against the C headers at init.
        buf + u64::from(unsafe { self.field::<u16>(ffi::MBUF_DATA_OFF) })
    }

    /// Free bytes before the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: ptr is a live mbuf we own.
        unsafe { usize::from(ffi::fg_headroom(self.ptr.as_ptr())) }
    }

    /// Free bytes after the frame (in the last segment).
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: ptr is a live mbuf we own.
        unsafe { usize::from(ffi::fg_tailroom(self.ptr.as_ptr())) }
    }

    /// The frame (first segment).
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off (rte_pktmbuf_mtod) points at data_len initialised bytes
        // inside the mbuf's buffer, which we own and which lives as long as `self` is borrowed.
        unsafe {
            let (p, n) = self.raw_data();
            std::slice::from_raw_parts(p, n)
        }
    }

    /// The frame (first segment), writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the borrow exclusive.
        unsafe {
            let (p, n) = self.raw_data();
            std::slice::from_raw_parts_mut(p, n)
        }
    }

    /// Writes the `T` at byte offset `off` of the `rte_mbuf`.
    ///
    /// # Safety
    /// `off` is the offset of a field of type `T` (offsets are checked at EAL init), and
    /// the value keeps the mbuf consistent.
    #[inline(always)]
    unsafe fn set_field<T: Copy>(&mut self, off: usize, v: T) {
        // SAFETY: per the contract, an aligned T inside the live mbuf header, which
        // `&mut self` lets us write.
        unsafe { self.ptr.as_ptr().cast::<u8>().add(off).cast::<T>().write(v) }
    }

    /// Grows the frame by `n` bytes at the front (into the headroom) and returns them, or
    /// `None` (frame unchanged) when the headroom is too small.
    ///
    /// `rte_pktmbuf_prepend` written out in Rust (it is three field updates; a call into
    /// the shim for each pushed tag cost more than the update).
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: live mbuf; offsets checked at EAL init. As rte_pktmbuf_prepend: when
        // n <= data_off (the headroom) the first segment starts n bytes earlier, still
        // inside its buffer, and data_len/pkt_len grow by n (data_len + headroom fits the
        // buffer, a u16, so it cannot overflow; pkt_len is a u32).
        unsafe {
            let off: u16 = self.field(ffi::MBUF_DATA_OFF);
            if n16 > off {
                return None;
            }
            let dlen: u16 = self.field(ffi::MBUF_DATA_LEN);
            let plen: u32 = self.field(ffi::MBUF_PKT_LEN);
            self.set_field(ffi::MBUF_DATA_OFF, off - n16);
            self.set_field(ffi::MBUF_DATA_LEN, dlen + n16);
            self.set_field(ffi::MBUF_PKT_LEN, plen + u32::from(n16));
            let (p, _) = self.raw_data();
            Some(std::slice::from_raw_parts_mut(p, n))
        }
    }

    /// Removes `n` bytes from the front of the frame; false (frame unchanged) when the
    /// frame is shorter than `n`. `rte_pktmbuf_adj` written out in Rust.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: live mbuf; offsets checked at EAL init. As rte_pktmbuf_adj: when
        // n <= data_len the first segment starts n bytes later, still inside its data,
        // and data_len/pkt_len shrink by n (pkt_len >= data_len).
        unsafe {
            let dlen: u16 = self.field(ffi::MBUF_DATA_LEN);
            if n16 > dlen {
                return false;
            }
            let off: u16 = self.field(ffi::MBUF_DATA_OFF);
            let plen: u32 = self.field(ffi::MBUF_PKT_LEN);
            self.set_field(ffi::MBUF_DATA_OFF, off + n16);
            self.set_field(ffi::MBUF_DATA_LEN, dlen - n16);
            self.set_field(ffi::MBUF_PKT_LEN, plen - u32::from(n16));
        }
        true
    }

    /// Grows the frame by `n` bytes at the end and returns them (uninitialised contents of
    /// the buffer, so callers overwrite them), or `None` when the tailroom is too small.
    #[inline]
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let n16 = u16::try_from(n).ok()?;
        // SAFETY: rte_pktmbuf_append checks the tailroom; the n returned bytes are inside our
        // buffer, which is initialised memory (DPDK memzones are zero-filled mmap memory,
        // only ever written since), exclusively ours through `&mut self`.
        unsafe {
            let p = ffi::fg_append(self.ptr.as_ptr(), n16);
            if p.is_null() {
                None
            } else {
                Some(std::slice::from_raw_parts_mut(p, n))
            }
        }
    }

    /// Removes `n` bytes from the end of the frame; false (unchanged) when it is shorter.
    #[inline]
    pub fn trim(&mut self, n: usize) -> bool {
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        // SAFETY: rte_pktmbuf_trim checks n against the last segment's length.
        unsafe { ffi::fg_trim(self.ptr.as_ptr(), n16) == 0 }
    }

    /// Replaces the frame's bytes with `bytes`, keeping the headroom; false (unchanged)
    /// when it does not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        let len = self.data().len();
        if bytes.len() > len + self.tailroom() {
            return false;
        }
        if bytes.len() > len {
            if self.append(bytes.len() - len).is_none() {
                return false;
            }
        } else if !self.trim(len - bytes.len()) {
            return false;
        }
        self.data_mut().copy_from_slice(bytes);
        true
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub(crate) fn into_raw(self) -> *mut ffi::RteMbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once.
        unsafe { ffi::fg_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// Up to [`BURST`] mbufs, inline. Dropping the batch frees what it holds.
#[derive(Debug)]
pub struct MbufBatch<'p> {
    // `Option<Mbuf>` has the layout of `*mut rte_mbuf` (Mbuf is a transparent NonNull),
    // so the array can be handed to rx/tx burst directly.
    slots: [Option<Mbuf<'p>>; BURST],
    len: usize,
}

impl Default for MbufBatch<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p> MbufBatch<'p> {
    /// An empty batch.
    pub const fn new() -> Self {
        MbufBatch {
            slots: [const { None }; BURST],
            len: 0,
        }
    }

    /// Mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when [`BURST`] mbufs are held.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST
    }

    /// Adds `m` at the end, or gives it back when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf<'p>) -> Result<(), Mbuf<'p>> {
        if self.len == BURST {
            return Err(m);
        }
        self.slots[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf<'p>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }

    /// Removes mbuf `i`, moving the last one into its place (order not kept).
    #[inline]
    pub fn swap_remove(&mut self, i: usize) -> Option<Mbuf<'p>> {
        if i >= self.len {
            return None;
        }
        self.len -= 1;
        self.slots.swap(i, self.len);
        self.slots[self.len].take()
    }

    /// Keeps the mbufs for which `keep` returns true, in order; frees the others.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Mbuf<'p>) -> bool) {
        let mut w = 0;
        for r in 0..self.len {
            let k = self.slots[r].as_mut().is_some_and(&mut keep);
            if k {
                self.slots.swap(w, r);
                w += 1;
            } else {
                self.slots[r] = None;
            }
        }
        self.len = w;
    }

    /// Frees everything held (one `rte_pktmbuf_free_bulk`).
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: slots[..len] hold owned mbufs; they are freed once here, then forgotten.
        unsafe { ffi::rte_pktmbuf_free_bulk(self.base_ptr(), self.len as u32) };
        for s in &mut self.slots[..self.len] {
            std::mem::forget(s.take());
        }
        self.len = 0;
    }

    /// The mbufs held.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf<'p>] {
        // SAFETY: slots[..len] are all Some, and Option<Mbuf> has the layout of Mbuf when Some
        // (null-pointer niche of a transparent NonNull wrapper).
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf<'p>>(), self.len) }
    }

    /// The mbufs held, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf<'p>] {
        // SAFETY: as in `as_slice`; no slot can be set to None through `&mut Mbuf`.
        unsafe {
            std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf<'p>>(), self.len)
        }
    }

    /// Iterates over the mbufs held.
    pub fn iter(&self) -> std::slice::Iter<'_, Mbuf<'p>> {
        self.as_slice().iter()
    }

    /// Iterates mutably over the mbufs held.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Mbuf<'p>> {
        self.as_mut_slice().iter_mut()
    }

    /// Pointer to the first free slot, as `rte_mbuf **` (room: `BURST - len`).
    #[inline]
    pub(crate) fn spare_ptr(&mut self) -> *mut *mut ffi::RteMbuf {
        // SAFETY: len <= BURST, so the offset is in bounds (or one past the end).
        unsafe {
            self.slots
                .as_mut_ptr()
                .add(self.len)
                .cast::<*mut ffi::RteMbuf>()
        }
    }

    /// Pointer to slot 0, as `rte_mbuf **`.
    #[inline]
    pub(crate) fn base_ptr(&mut self) -> *mut *mut ffi::RteMbuf {
        self.slots.as_mut_ptr().cast::<*mut ffi::RteMbuf>()
    }

    /// Declares that `n` more slots after `len` were filled with owned, non-null mbuf
    /// pointers by C code.
    ///
    /// # Safety
    /// The `n` slots after `len` hold valid mbufs that nobody else owns, from a pool that
    /// outlives `'p`, and `len + n <= BURST`.
    #[inline]
    pub(crate) unsafe fn assume_filled(&mut self, n: usize) {
        self.len += n;
    }

    /// Declares that slots `0..n` were handed to C (which now owns them): they become empty
    /// without being freed and the rest moves to the front.
    ///
    /// # Safety
    /// C took ownership of the mbufs in slots `0..n`, `n <= len`.
    #[inline]
    pub(crate) unsafe fn consume_front(&mut self, n: usize) {
        for s in &mut self.slots[..n] {
            if let Some(m) = s.take() {
                let _ = m.into_raw();
            }
        }
        if n > 0 && n < self.len {
            self.slots[..self.len].rotate_left(n);
        }
        self.len -= n;
    }
}

impl<'p> MbufBatch<'p> {
    /// Hands every mbuf to `f`, in order (slot 0 first); the batch ends empty.
    #[inline]
    pub fn drain_each(&mut self, mut f: impl FnMut(Mbuf<'p>)) {
        let n = self.len;
        // Each slot is emptied before `f` sees its mbuf. Should `f` panic, the mbufs not yet
        // handed out stay in slots past `len` and are leaked (never freed twice).
        self.len = 0;
        for s in &mut self.slots[..n] {
            if let Some(m) = s.take() {
                f(m);
            }
        }
    }
}

/// The pipeline works on mbufs in place: headers are pushed into the headroom and popped
/// with `adj`, so `Worker::process` never copies a frame.
impl crate::action::PacketBuf for Mbuf<'_> {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        Mbuf::prepend(self, n).is_some()
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        Mbuf::adj(self, n)
    }
    #[inline]
    fn set(&mut self, bytes: &[u8]) -> bool {
        self.set_data(bytes)
    }
    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        Mbuf::trim(self, n)
    }
}

impl Drop for MbufBatch<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}
