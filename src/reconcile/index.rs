//! Look-up tables from 64-bit keys to row numbers.
//!
//! Keys are already well-mixed hashes ([`super::normalize::key`]), so the
//! table hashes them with the identity. All rows of one key sit next to each
//! other in one array, which keeps a million invoices in a few tens of
//! megabytes and makes every look-up one probe.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for keys that are hashes already.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in for safety.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdentityMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// A multimap from key to rows, built once.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    slots: IdentityMap<(u32, u32)>,
    rows: Vec<u32>,
}

impl KeyIndex {
    /// Builds the index from `(key, row)` pairs; duplicates collapse. Rows of
    /// one key come out in ascending order.
    pub fn build(mut pairs: Vec<(u64, u32)>) -> KeyIndex {
        pairs.sort_unstable();
        pairs.dedup();
        let mut slots = IdentityMap::default();
        slots.reserve(pairs.len());
        let mut rows = Vec::with_capacity(pairs.len());
        let mut i = 0;
        while i < pairs.len() {
            let k = pairs[i].0;
            let start = rows.len() as u32;
            while i < pairs.len() && pairs[i].0 == k {
                rows.push(pairs[i].1);
                i += 1;
            }
            slots.insert(k, (start, rows.len() as u32 - start));
        }
        slots.shrink_to_fit();
        KeyIndex { slots, rows }
    }

    /// Rows stored under `key`, ascending.
    pub fn get(&self, key: u64) -> &[u32] {
        match self.slots.get(&key) {
            Some(&(start, len)) => &self.rows[start as usize..(start + len) as usize],
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_key_come_together_and_sorted() {
        let idx = KeyIndex::build(vec![(7, 3), (1, 0), (7, 1), (7, 3), (9, 2)]);
        assert_eq!(idx.get(7), &[1, 3]);
        assert_eq!(idx.get(1), &[0]);
        assert_eq!(idx.get(8), &[] as &[u32]);
    }
}
