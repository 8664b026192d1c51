//! Relay buffers, taken only while bytes move. An idle relayed connection
//! waits on socket readiness holding no buffer at all, so a hundred thousand
//! idle connections do not pin a hundred thousand buffers.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// One read's worth: a full TLS record (16 KiB of payload plus overhead)
/// fits, so a record is usually forwarded in one write.
pub const BUF_SIZE: usize = 32 * 1024;

/// Buffers kept per worker thread for reuse.
const POOLED_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer on loan from this thread's pool; returned on drop (to whichever
/// thread drops it, which keeps the pools roughly balanced under work
/// stealing).
pub struct PooledBuf(Option<Box<[u8]>>);

impl PooledBuf {
    pub fn take() -> Self {
        let buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        PooledBuf(Some(buf))
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOLED_PER_THREAD {
                    p.push(buf);
                }
            });
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_on_one_thread() {
        let a = PooledBuf::take();
        let ptr = a.as_ptr();
        assert_eq!(a.len(), BUF_SIZE);
        drop(a);
        let b = PooledBuf::take();
        assert_eq!(b.as_ptr(), ptr);
    }
}
