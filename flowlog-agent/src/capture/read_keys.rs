//! The keys a cut read from a flow map, kept until its window's records are on disk, so the
//! slot is cleared by deleting exactly those keys (`BPF_MAP_DELETE_BATCH`) instead of reading
//! every entry's per-CPU values a second time (`BPF_MAP_LOOKUP_AND_DELETE_BATCH`).
//!
//! The keys sit in fixed-size chunks, each allocated at its exact size: a window's keys cost
//! their own bytes (20 per IPv4 flow, 40 per IPv6 flow) and at most one partly filled chunk,
//! never the slack of a doubling `Vec`.

/// Keys per chunk: one `BPF_MAP_DELETE_BATCH` call each.
pub const KEY_CHUNK: usize = 64 * 1024;

/// One flow map's keys as its read returned them.
#[derive(Debug)]
pub struct ReadKeys<K> {
    chunks: Vec<Vec<K>>,
    len: usize,
}

impl<K> Default for ReadKeys<K> {
    fn default() -> Self {
        ReadKeys {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Copy> ReadKeys<K> {
    pub fn push(&mut self, key: K) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < KEY_CHUNK => c.push(key),
            _ => {
                let mut c = Vec::with_capacity(KEY_CHUNK);
                c.push(key);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys, a chunk at a time, in the order they were pushed.
    pub fn chunks(&self) -> impl Iterator<Item = &[K]> {
        self.chunks.iter().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_in_order_in_chunks_of_at_most_key_chunk() {
        let mut keys = ReadKeys::default();
        let n = 2 * KEY_CHUNK + 3;
        for i in 0..n {
            keys.push(i as u32);
        }
        assert_eq!(keys.len(), n);
        let sizes: Vec<usize> = keys.chunks().map(<[u32]>::len).collect();
        assert_eq!(sizes, [KEY_CHUNK, KEY_CHUNK, 3]);
        let all: Vec<u32> = keys.chunks().flatten().copied().collect();
        assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
        assert!(ReadKeys::<u32>::default().is_empty());
    }
}
