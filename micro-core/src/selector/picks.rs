//! [`Picks`]: an ordered sequence of distinct candidate indices, without allocating.

/// How many leading picks a selector can state explicitly; the rest follow in rotation.
pub const MAX_EXPLICIT: usize = 8;

/// The order in which a call tries candidates: first the explicit picks, then every other
/// candidate in rotation from a start index. Each index comes at most once.
///
/// ```
/// use micro_core::selector::Picks;
///
/// let order: Vec<usize> = Picks::first_then_rotation(&[3, 1], 2, 5).collect();
/// assert_eq!(order, [3, 1, 2, 4, 0]);
/// ```
#[derive(Debug, Clone)]
pub struct Picks {
    explicit: [usize; MAX_EXPLICIT],
    explicit_len: usize,
    next_explicit: usize,
    start: usize,
    len: usize,
    rotated: usize,
}

impl Picks {
    /// Every candidate in turn, starting at `start`.
    pub fn rotation(start: usize, len: usize) -> Self {
        Self::first_then_rotation(&[], start, len)
    }

    /// `first` (up to [`MAX_EXPLICIT`] indices, each below `len`; duplicates and out-of-range
    /// indices are dropped), then every other candidate in rotation from `start`.
    pub fn first_then_rotation(first: &[usize], start: usize, len: usize) -> Self {
        let mut explicit = [0; MAX_EXPLICIT];
        let mut explicit_len = 0;
        for &index in first {
            if explicit_len == MAX_EXPLICIT {
                break;
            }
            if index < len && !explicit[..explicit_len].contains(&index) {
                explicit[explicit_len] = index;
                explicit_len += 1;
            }
        }
        Self {
            explicit,
            explicit_len,
            next_explicit: 0,
            start: if len == 0 { 0 } else { start % len },
            len,
            rotated: 0,
        }
    }
}

impl Iterator for Picks {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next_explicit < self.explicit_len {
            self.next_explicit += 1;
            return Some(self.explicit[self.next_explicit - 1]);
        }
        while self.rotated < self.len {
            let index = (self.start + self.rotated) % self.len;
            self.rotated += 1;
            if !self.explicit[..self.explicit_len].contains(&index) {
                return Some(index);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_every_index_once() {
        for len in 0..12 {
            for start in 0..len.max(1) {
                let first = [len / 2, len / 3, len / 2];
                let mut order: Vec<_> = Picks::first_then_rotation(&first, start, len).collect();
                assert_eq!(order.len(), len, "len {len} start {start}");
                order.sort_unstable();
                order.dedup();
                assert_eq!(order.len(), len);
            }
        }
    }

    #[test]
    fn explicit_first_then_rotation() {
        let order: Vec<_> = Picks::first_then_rotation(&[4, 9, 0], 3, 5).collect();
        assert_eq!(order, [4, 0, 3, 1, 2]);
    }
}
