//! Consistent hashing on the call's key.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

use super::{CallInfo, Candidates, MAX_EXPLICIT, PeakEwma, Picks, Selector};
use crate::lock::lock;
use crate::registry::Node;

/// Sends calls with the same key to the same node: consistent hashing on
/// [`CallInfo::key`] over a ring of virtual nodes.
///
/// Each node owns [`virtual_nodes`](Self::virtual_nodes) points on the ring, placed by hashing
/// its *id*, so a key maps to the same node whatever the order of the candidates and across
/// restarts and processes that keep node ids. When a node leaves, only its keys move (about
/// 1/N of them), each to the next node clockwise. After the owner, the next distinct nodes
/// clockwise (up to [`MAX_EXPLICIT`] in all) are the fallbacks a retry goes to; the rest follow
/// in rotation. Calls without a key go to the [`fallback`](Self::fallback) selector.
///
/// The hash is FNV-1a with the MurmurHash3 finalizer, written out here so it never changes
/// with the compiler or a dependency.
///
/// The ring of a set of candidates is built once, on its first call, and cached by
/// [`Candidates::generation`]. One selector may serve several channels: it keeps the rings of
/// the last few sets ([`CACHED_RINGS`](Self::CACHED_RINGS)), told apart by generation and by
/// node identity.
///
/// # Examples
///
/// ```
/// use micro_core::selector::{ConsistentHash, RoundRobin};
///
/// let selector = ConsistentHash::new().virtual_nodes(100).fallback(RoundRobin::new());
/// # let _ = selector;
/// ```
pub struct ConsistentHash {
    virtual_nodes: u32,
    fallback: Arc<dyn Selector>,
    rings: ArcSwap<Vec<Arc<Ring>>>,
    // One build at a time: calls that miss together wait for one ring instead of each
    // building their own.
    building: Mutex<()>,
}

struct Ring {
    generation: u64,
    // The candidates the ring was built for, by index. Holding them keeps their addresses
    // unique, so pointer equality identifies the set.
    nodes: Box<[Arc<Node>]>,
    // Sorted points, and the index of the candidate owning each.
    points: Box<[u64]>,
    owners: Box<[u32]>,
}

// === impl ConsistentHash ===

impl Clone for ConsistentHash {
    /// The same settings with an empty ring cache; the fallback selector is shared.
    fn clone(&self) -> Self {
        Self {
            virtual_nodes: self.virtual_nodes,
            fallback: Arc::clone(&self.fallback),
            rings: ArcSwap::from_pointee(Vec::new()),
            building: Mutex::new(()),
        }
    }
}

impl ConsistentHash {
    /// Points per node on the ring: 160, as in ketama. More points spread keys more evenly
    /// and cost memory (12 bytes each) and build time.
    pub const DEFAULT_VIRTUAL_NODES: u32 = 160;

    /// Rings kept for different sets of candidates, most recent first.
    pub const CACHED_RINGS: usize = 8;

    /// A consistent-hash selector with [`PeakEwma`] for calls without a key.
    pub fn new() -> Self {
        Self {
            virtual_nodes: Self::DEFAULT_VIRTUAL_NODES,
            fallback: Arc::new(PeakEwma::new()),
            rings: ArcSwap::from_pointee(Vec::new()),
            building: Mutex::new(()),
        }
    }

    /// Points per node on the ring, at least 1. Default is 160.
    #[must_use]
    pub fn virtual_nodes(mut self, points: u32) -> Self {
        self.virtual_nodes = points.max(1);
        self.rings = ArcSwap::from_pointee(Vec::new());
        self
    }

    /// The selector for calls without a key. Default is [`PeakEwma`].
    #[must_use]
    pub fn fallback(mut self, selector: impl Selector) -> Self {
        self.fallback = Arc::new(selector);
        self
    }

    fn cached(
        &self,
        candidates: &Candidates<'_>,
        hash: u64,
        first: &mut [usize; MAX_EXPLICIT],
    ) -> Option<usize> {
        let rings = self.rings.load();
        let ring = rings.iter().find(|ring| ring.is_for(candidates))?;
        let found = ring.walk(hash, first);
        ring.owns(candidates, &first[..found]).then_some(found)
    }

    fn build(&self, candidates: &Candidates<'_>) -> Arc<Ring> {
        let ring = Arc::new(Ring::new(candidates, self.virtual_nodes));
        self.rings.rcu(|rings| {
            let mut next = Vec::with_capacity(Self::CACHED_RINGS);
            next.push(Arc::clone(&ring));
            next.extend(
                rings
                    .iter()
                    .filter(|cached| !cached.same_set(&ring))
                    .take(Self::CACHED_RINGS - 1)
                    .cloned(),
            );
            next
        });
        ring
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("virtual_nodes", &self.virtual_nodes)
            .field("fallback", &self.fallback)
            .field("cached_rings", &self.rings.load().len())
            .finish()
    }
}

impl Selector for ConsistentHash {
    fn select(&self, candidates: &Candidates<'_>, call: &CallInfo<'_>) -> Picks {
        let Some(key) = call.key else {
            return self.fallback.select(candidates, call);
        };
        if candidates.len() < 2 {
            return Picks::rotation(0, candidates.len());
        }
        let hash = Fnv::new().write(key.as_bytes()).finish();
        let mut first = [0; MAX_EXPLICIT];
        let found = match self.cached(candidates, hash, &mut first) {
            Some(found) => found,
            None => {
                // A poisoned lock only means another build panicked; building is still safe.
                let _building = lock(&self.building);
                match self.cached(candidates, hash, &mut first) {
                    Some(found) => found,
                    None => self.build(candidates).walk(hash, &mut first),
                }
            }
        };
        Picks::first_then_rotation(&first[..found], first[0], candidates.len())
    }
}

// === impl Ring ===

impl Ring {
    fn new(candidates: &Candidates<'_>, virtual_nodes: u32) -> Self {
        let nodes: Box<[Arc<Node>]> = candidates
            .nodes()
            .iter()
            .map(|handle| Arc::clone(handle.node_arc()))
            .collect();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(nodes.len() * virtual_nodes as usize);
        for (index, node) in nodes.iter().enumerate() {
            // Fewer than u32::MAX candidates: a ring that size would not fit in memory.
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let id = Fnv::new().write(node.id.as_bytes()).write(b"#");
            for point in 0..virtual_nodes {
                points.push((id.write(&point.to_le_bytes()).finish(), index));
            }
        }
        // Ties go to the smaller id, so the ring never depends on the candidates' order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| nodes[a.1 as usize].id.cmp(&nodes[b.1 as usize].id))
                .then(a.1.cmp(&b.1))
        });
        let (points, owners): (Vec<u64>, Vec<u32>) = points.into_iter().unzip();
        Self {
            generation: candidates.generation(),
            nodes,
            points: points.into(),
            owners: owners.into(),
        }
    }

    // Cheap check, then `owns` checks the nodes actually picked.
    fn is_for(&self, candidates: &Candidates<'_>) -> bool {
        let nodes = candidates.nodes();
        self.generation == candidates.generation()
            && self.nodes.len() == nodes.len()
            && self.nodes.first().zip(nodes.first()).is_some_and(same_node)
            && self.nodes.last().zip(nodes.last()).is_some_and(same_node)
    }

    fn owns(&self, candidates: &Candidates<'_>, picks: &[usize]) -> bool {
        picks.iter().all(|&index| {
            self.nodes
                .get(index)
                .zip(candidates.nodes().get(index))
                .is_some_and(same_node)
        })
    }

    fn same_set(&self, other: &Ring) -> bool {
        self.generation == other.generation
            && self.nodes.len() == other.nodes.len()
            && self
                .nodes
                .iter()
                .zip(other.nodes.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Writes the owner of `hash` and its distinct successors clockwise into `found`;
    /// returns how many.
    fn walk(&self, hash: u64, found: &mut [usize; MAX_EXPLICIT]) -> usize {
        let wanted = self.nodes.len().min(MAX_EXPLICIT);
        let start = self.points.partition_point(|&point| point < hash);
        let mut len = 0;
        for step in 0..self.owners.len() {
            let owner = self.owners[(start + step) % self.owners.len()] as usize;
            if !found[..len].contains(&owner) {
                found[len] = owner;
                len += 1;
                if len == wanted {
                    break;
                }
            }
        }
        len
    }
}

fn same_node((a, b): (&Arc<Node>, &Arc<crate::node::NodeHandle>)) -> bool {
    Arc::ptr_eq(a, b.node_arc())
}

/// FNV-1a, finished with MurmurHash3's `fmix64` for avalanche. Stable by construction.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn write(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(Self::PRIME);
        }
        self
    }

    fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests;
