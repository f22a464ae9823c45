//! The windows of a range: the reads a search is made of, and the bitmap of one.

use super::WINDOW;
use crate::engine::bitmap::Bitmap;
use crate::engine::pool::Pool;

/// The windows of a range from a starting point to its end, then from its start, until every
/// address has been covered once.
#[derive(Debug, Clone)]
pub struct Windows {
    start: u128,
    end: u128,
    pos: u128,
    left: u128,
}

impl Windows {
    /// `offset` is taken modulo the range's span.
    pub fn new(pool: &Pool, offset: u128) -> Windows {
        let span = pool.end - pool.start + 1;
        Windows {
            start: pool.start,
            end: pool.end,
            pos: pool.start + offset % span,
            left: span,
        }
    }
}

impl Iterator for Windows {
    type Item = (u128, u128);

    fn next(&mut self) -> Option<(u128, u128)> {
        if self.left == 0 {
            return None;
        }
        let len = WINDOW.min(self.left).min(self.end - self.pos + 1);
        let window = (self.pos, self.pos + len - 1);
        self.left -= len;
        self.pos = if window.1 == self.end {
            self.start
        } else {
            window.1 + 1
        };
        Some(window)
    }
}

/// The bitmap of `from..=to`: taken addresses and the pool's holes marked.
pub fn window_bitmap(
    pool: &Pool,
    from: u128,
    to: u128,
    taken: impl Iterator<Item = u128>,
) -> Bitmap {
    let mut bits = Bitmap::new((to - from + 1) as usize);
    for &(a, b) in &pool.holes {
        if b >= from && a <= to {
            bits.set_span((a.max(from) - from) as usize, (b.min(to) - from) as usize);
        }
    }
    for v in taken {
        if v >= from && v <= to {
            bits.set((v - from) as usize);
        }
    }
    bits
}
