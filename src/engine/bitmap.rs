//! A fixed-size bitmap of one search window: which addresses of the window are taken.

/// Bit `i` set means offset `i` of the window is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    pub fn new(len: usize) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Marks offset `i`; offsets past the end are ignored so callers can mark spans that
    /// only partly overlap the window.
    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    /// Marks `from..=to`, clipped to the window.
    pub fn set_span(&mut self, from: usize, to: usize) {
        let to = to.min(self.len.saturating_sub(1));
        let mut i = from;
        while i <= to {
            let bit = i % 64;
            if bit == 0 && to - i >= 63 {
                self.words[i / 64] = u64::MAX;
                i += 64;
            } else {
                self.words[i / 64] |= 1 << bit;
                i += 1;
            }
        }
    }

    pub fn is_set(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// The first clear offset at or after `from`, if any.
    pub fn next_clear(&self, from: usize) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let mut w = from / 64;
        // Treat the bits below `from` in its word as set so they are skipped.
        let mut word = self.words[w] | ((1u64 << (from % 64)) - 1);
        loop {
            if word != u64::MAX {
                let i = w * 64 + word.trailing_ones() as usize;
                return (i < self.len).then_some(i);
            }
            w += 1;
            if w == self.words.len() {
                return None;
            }
            word = self.words[w];
        }
    }

    /// The first clear offset at or after `from`, wrapping to the start of the window.
    pub fn next_clear_wrapping(&self, from: usize) -> Option<usize> {
        self.next_clear(from).or_else(|| self.next_clear(0))
    }

    pub fn count_clear(&self) -> usize {
        let set: usize = self.words.iter().map(|w| w.count_ones() as usize).sum();
        self.len - set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basics() {
        let mut b = Bitmap::new(130);
        assert_eq!(b.next_clear(0), Some(0));
        b.set_span(0, 127);
        assert_eq!(b.next_clear(0), Some(128));
        b.set(129);
        assert_eq!(b.next_clear(129), None);
        assert_eq!(b.next_clear_wrapping(129), Some(128));
        b.set(128);
        assert_eq!(b.next_clear_wrapping(5), None);
        assert_eq!(b.count_clear(), 0);
        b.set(500);
        assert!(!b.is_set(500));
    }

    proptest! {
        // The word-at-a-time search agrees with a plain vector of booleans.
        #[test]
        fn agrees_with_naive_model(
            len in 1usize..400,
            marks in proptest::collection::vec((0usize..420, 0usize..70), 0..40),
            from in 0usize..420,
        ) {
            let mut b = Bitmap::new(len);
            let mut model = vec![false; len];
            for (start, width) in marks {
                b.set_span(start, start + width);
                for slot in model.iter_mut().take((start + width + 1).min(len)).skip(start) {
                    *slot = true;
                }
            }
            for (i, &m) in model.iter().enumerate() {
                prop_assert_eq!(b.is_set(i), m);
            }
            let naive = (from..len).find(|&i| !model[i]);
            prop_assert_eq!(b.next_clear(from), naive);
            let wrapped = naive.or_else(|| (0..len).find(|&i| !model[i]));
            prop_assert_eq!(b.next_clear_wrapping(from), wrapped);
            prop_assert_eq!(b.count_clear(), model.iter().filter(|m| !**m).count());
        }
    }
}
