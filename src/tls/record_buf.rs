//! Buffers for TLS records (ciphertext in, ciphertext out) that exist only
//! while they hold bytes. A terminated connection that waits for its peers
//! holds none: the buffer goes back to this thread's pool the moment it is
//! empty, and one is taken again when bytes come. (rustls's own buffered
//! connections keep their read buffer, at least 4 KiB, for their whole life.)
//!
//! The TLS layer keeps its own pool rather than the relay's
//! (`proxy/buffer.rs`): `tls` sits below `proxy`, and a record buffer wants
//! a size of its own, two full records and their overhead, so that a 32 KiB
//! relay buffer's worth of plaintext leaves in one write of two records.

use std::cell::RefCell;

/// Two TLS records at their largest (16 KiB of payload, plus what a
/// ciphersuite adds and the 5-byte header) with room to spare, e.g. for a
/// KeyUpdate written before them.
pub const RECORD_BUF_SIZE: usize = 2 * (16 * 1024 + 512);

/// The most an incoming buffer grows to: a handshake message spanning
/// records is held whole until it is complete, and rustls refuses any over
/// 64 KiB; this is that and a record more.
const MAX_GROWN: usize = 96 * 1024;

/// Buffers kept per worker thread for reuse.
const POOLED_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; RECORD_BUF_SIZE].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    // A grown buffer is not kept: it was for one rare message.
    if buf.len() != RECORD_BUF_SIZE {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED_PER_THREAD {
            p.push(buf);
        }
    });
}

/// Bytes `start..end` of a pooled buffer, or no buffer at all when empty.
#[derive(Default)]
pub struct RecordBuf {
    buf: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for RecordBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBuf")
            .field("held", &self.buf.as_ref().map(|b| b.len()))
            .field("bytes", &self.len())
            .finish()
    }
}

impl RecordBuf {
    /// A buffer holding `bytes` (e.g. a ClientHello already read).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = Self::default();
        if !bytes.is_empty() {
            b.ensure_spare(bytes.len());
            b.spare()[..bytes.len()].copy_from_slice(bytes);
            b.end = bytes.len();
        }
        b
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether a buffer is held (for tests: an idle stream holds none).
    pub fn holds_memory(&self) -> bool {
        self.buf.is_some()
    }

    /// The bytes held.
    pub fn filled(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => &mut b[self.start..self.end],
            None => &mut [],
        }
    }

    /// Drops `n` bytes from the front; an emptied buffer goes back.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.is_empty() {
            self.release();
        }
    }

    /// Gives the memory back if nothing is held.
    pub fn release(&mut self) {
        if self.is_empty() {
            self.start = 0;
            self.end = 0;
            if let Some(b) = self.buf.take() {
                give_back(b);
            }
        }
    }

    /// Room for `n` more bytes after the held ones, however it is found:
    /// a pooled buffer if none is held, the held bytes moved to the front,
    /// or (for a record larger than a pooled buffer leaves room for) a
    /// larger buffer.
    pub fn ensure_spare(&mut self, n: usize) {
        if !self.fits(n) {
            let need = self.len() + n;
            self.move_to(vec![0u8; need].into_boxed_slice());
        }
    }

    /// Room to read into: what [`Self::ensure_spare`] finds for a whole
    /// record without growing, else a larger buffer while what is held is
    /// not yet complete (a handshake message spanning records, held whole
    /// until its last fragment), up to a bound. False at the bound.
    pub fn read_room(&mut self) -> bool {
        if self.fits(RECORD_BUF_SIZE / 2) || !self.spare().is_empty() {
            return true;
        }
        let cap = self.buf.as_ref().map_or(0, |b| b.len());
        let new_cap = (cap * 2).min(MAX_GROWN);
        if new_cap <= cap {
            return false;
        }
        self.move_to(vec![0u8; new_cap].into_boxed_slice());
        true
    }

    /// Whether `n` more bytes fit, after taking a pooled buffer if none is
    /// held and moving the held bytes to the front.
    fn fits(&mut self, n: usize) -> bool {
        let Some(b) = &mut self.buf else {
            let fresh = take();
            if fresh.len() < n {
                give_back(fresh);
                return false;
            }
            self.buf = Some(fresh);
            return true;
        };
        if b.len() - self.end >= n {
            return true;
        }
        if self.start > 0 {
            b.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        b.len() - self.end >= n
    }

    fn move_to(&mut self, mut bigger: Box<[u8]>) {
        let len = self.len();
        bigger[..len].copy_from_slice(self.filled());
        if let Some(old) = self.buf.replace(bigger) {
            give_back(old);
        }
        self.start = 0;
        self.end = len;
    }

    /// The free space after the held bytes (empty if no buffer is held).
    pub fn spare(&mut self) -> &mut [u8] {
        match &mut self.buf {
            Some(b) => &mut b[self.end..],
            None => &mut [],
        }
    }

    /// `n` bytes were written into [`Self::spare`].
    pub fn commit(&mut self, n: usize) {
        let cap = self.buf.as_ref().map_or(0, |b| b.len());
        self.end = (self.end + n).min(cap);
    }
}

impl Drop for RecordBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            give_back(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_memory_only_while_it_holds_bytes() {
        let mut b = RecordBuf::default();
        assert!(!b.holds_memory());
        b.ensure_spare(100);
        let ptr = b.spare().as_ptr();
        b.spare()[..3].copy_from_slice(b"abc");
        b.commit(3);
        assert_eq!(b.filled(), b"abc");
        b.consume(1);
        assert_eq!(b.filled(), b"bc");
        b.consume(2);
        assert!(!b.holds_memory(), "emptied: back to the pool");
        // The same buffer comes back from the pool.
        b.ensure_spare(1);
        assert_eq!(b.spare().as_ptr(), ptr);
    }

    #[test]
    fn room_is_made_by_compacting_then_growing_to_a_bound() {
        let mut b = RecordBuf::from_bytes(&[7u8; 1000]);
        b.consume(900);
        b.ensure_spare(RECORD_BUF_SIZE - 100);
        assert_eq!(b.filled(), &[7u8; 100][..], "held bytes moved to the front");
        assert_eq!(b.spare().len(), RECORD_BUF_SIZE - 100, "not grown");
        let n = b.spare().len();
        b.commit(n);
        assert_eq!(b.len(), RECORD_BUF_SIZE);
        let mut grows = 0;
        while b.read_room() {
            let n = b.spare().len();
            assert!(n > 0);
            b.commit(n);
            grows += 1;
        }
        assert_eq!(grows, 2);
        assert_eq!(b.len(), MAX_GROWN);
        // An outgoing record larger than the room left always fits.
        let mut out = RecordBuf::from_bytes(&[1u8; 30_000]);
        out.ensure_spare(20_000);
        assert!(out.spare().len() >= 20_000);
        assert_eq!(out.filled(), &[1u8; 30_000][..]);
    }

    #[test]
    fn a_large_first_message_gets_a_buffer_that_fits() {
        let big = vec![1u8; RECORD_BUF_SIZE + 10];
        let mut b = RecordBuf::from_bytes(&big);
        assert_eq!(b.filled().len(), big.len());
    }
}
