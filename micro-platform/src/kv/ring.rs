//! The consistent-hash ring of [`PartitionedStore`](super::PartitionedStore).
//!
//! The same construction as micro-core's `ConsistentHash` selector (whose ring is private
//! and tied to the channel's candidate set): every member owns `virtual_nodes` points placed
//! by hashing its ring id and the point's number; a key belongs to the member owning the
//! first point at or after the key's hash, wrapping around. Adding a member to N moves
//! about 1/(N+1) of the keys, all of them to the new member; removing one moves only its
//! keys.
//!
//! The hash is FNV-1a finished with MurmurHash3's `fmix64` (for avalanche), written out here
//! so the placement never changes with the compiler, the platform or a dependency: every
//! client of every version agrees on each key's owner.

/// FNV-1a, finished with MurmurHash3's `fmix64`. Stable by construction.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Self(Self::OFFSET)
    }

    pub(crate) fn write(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
        self
    }

    pub(crate) fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Sorted points and the index of the member owning each.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    /// The ring of `ids` (distinct), `virtual_nodes` points each; owners are indexes into
    /// `ids`.
    pub(crate) fn new(ids: &[&str], virtual_nodes: u32) -> Self {
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(ids.len() * virtual_nodes as usize);
        for (index, id) in ids.iter().enumerate() {
            // Fewer than u32::MAX members: a ring that size would not fit in memory.
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let seed = Fnv::new().write(id.as_bytes()).write(b"#");
            for point in 0..virtual_nodes {
                points.push((seed.write(&point.to_le_bytes()).finish(), index));
            }
        }
        // Ties (astronomically rare) go to the smaller id, so the ring never depends on the
        // members' order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| ids[a.1 as usize].cmp(ids[b.1 as usize]))
        });
        let (points, owners): (Vec<u64>, Vec<u32>) = points.into_iter().unzip();
        Self {
            points: points.into(),
            owners: owners.into(),
        }
    }

    /// The member owning `hash`; `None` on an empty ring.
    pub(crate) fn owner(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let at = self.points.partition_point(|&point| point < hash);
        let at = if at == self.points.len() { 0 } else { at };
        Some(self.owners[at] as usize)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hash(key: &str) -> u64 {
        Fnv::new().write(key.as_bytes()).finish()
    }

    #[test]
    fn spreads_evenly_and_moves_about_one_in_n() {
        let three = Ring::new(&["a:1", "b:2", "c:3"], 160);
        let four = Ring::new(&["a:1", "b:2", "c:3", "d:4"], 160);
        let keys: Vec<u64> = (0..20_000).map(|i| hash(&format!("key-{i}"))).collect();
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for &key in &keys {
            let before = three.owner(key).unwrap();
            let after = four.owner(key).unwrap();
            counts[before] += 1;
            if before != after {
                assert_eq!(after, 3, "keys only move to the new member");
                moved += 1;
            }
        }
        for count in counts {
            assert!((5_000..8_400).contains(&count), "{counts:?}");
        }
        assert!((3_000..7_000).contains(&moved), "{moved}");
    }

    #[test]
    fn independent_of_member_order() {
        let one = Ring::new(&["a", "b", "c"], 50);
        let two = Ring::new(&["c", "a", "b"], 50);
        let name = |ring: &Ring, ids: &[&'static str], key| ids[ring.owner(key).unwrap()];
        for i in 0..1_000 {
            let key = hash(&i.to_string());
            assert_eq!(
                name(&one, &["a", "b", "c"], key),
                name(&two, &["c", "a", "b"], key)
            );
        }
        assert_eq!(Ring::new(&[], 10).owner(1), None);
    }
}
