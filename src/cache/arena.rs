//! The memory the cache's entries live in: a few large segments instead of one heap allocation per entry.
//!
//! With per-entry allocations a cache of small values pays the allocator twice: a header and rounding on
//! every entry (116 bytes became 128), and the gaps evictions leave between blocks that request buffers
//! then interleave with. Here entries are appended, back to back, to 64 KiB segments; an entry larger than
//! a sixteenth of a segment gets a segment of its own, sized exactly. Removing an entry only counts its
//! bytes as dead. A segment whose entries are all dead is given back (one is kept for reuse), which under
//! LRU eviction is the common case: the oldest entries sit together in the oldest segments. When entries
//! that stay (promoted by reads) keep mostly-dead segments alive, and the dead bytes exceed a sixteenth of
//! the arena, the store compacts: it moves the live entries of the emptiest segment to the head and gives
//! that segment back ([`Arena::victim`]).
//!
//! The arena knows nothing of what an entry holds, nor which entries are live: the store does, and it
//! addresses an entry by its [`Loc`] and knows its length.

/// Size of a shared segment.
pub(super) const SEGMENT: usize = 64 * 1024;

/// Where an entry starts: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub seg: u32,
    pub off: u32,
}

impl Loc {
    /// The location `by` bytes further in the same segment.
    pub(super) fn add(self, by: usize) -> Loc {
        Loc {
            seg: self.seg,
            off: self.off + u32::try_from(by).expect("offsets fit a segment"),
        }
    }
}

/// The arena compacts once more than `1 / DEAD_SHARE` of it is dead. A sixteenth keeps a full cache's
/// memory within about 6% of its entries' bytes whatever the reads do; compacting costs a copy of the
/// victim's live entries, which a lower share would make more frequent.
const DEAD_SHARE: u64 = 16;

const NONE: u32 = u32::MAX;

struct Segment {
    /// Empty while this place in the segment list is unused.
    bytes: Box<[u8]>,
    /// End of the last entry appended.
    used: u32,
    /// Bytes of the entries not freed yet.
    live: u32,
}

impl Segment {
    fn len(&self) -> u32 {
        self.bytes.len() as u32
    }
}

pub(super) struct Arena {
    segments: Vec<Segment>,
    /// Places in `segments` whose segment was given back.
    unused: Vec<u32>,
    /// A shared segment given back, kept so that LRU turnover does not go through the allocator.
    spare: Option<Box<[u8]>>,
    /// The shared segment entries are appended to ([`NONE`] before the first).
    head: u32,
    /// Size of a shared segment; [`SEGMENT`] except in tests, which use small ones to compact often.
    segment: usize,
    /// Bytes of all segments held (not counting the spare).
    capacity: u64,
    /// Bytes of live entries.
    live: u64,
}

impl Arena {
    pub(super) fn new() -> Self {
        Arena::with_segment(SEGMENT)
    }

    pub(super) fn with_segment(segment: usize) -> Self {
        assert!(
            segment >= 64 && segment <= u32::MAX as usize,
            "segments are 64 bytes to 4 GiB"
        );
        Arena {
            segments: Vec::new(),
            unused: Vec::new(),
            spare: None,
            head: NONE,
            segment,
            capacity: 0,
            live: 0,
        }
    }

    /// A new, empty arena with this one's segment size.
    pub(super) fn emptied(&self) -> Arena {
        Arena::with_segment(self.segment)
    }

    /// Entries larger than this get a segment of their own, so that at most a sixteenth of a shared segment
    /// is left unused at its end.
    fn packed_max(&self) -> usize {
        self.segment / 16
    }

    /// Reserves `len` bytes (more than 0) for a new entry; the caller writes them through
    /// [`Arena::bytes_mut`].
    pub(super) fn alloc(&mut self, len: usize) -> Loc {
        debug_assert!(len > 0, "entries have a header");
        let size = u32::try_from(len).expect("entries are smaller than 4 GiB");
        self.live += u64::from(size);
        if len > self.packed_max() {
            let seg = self.place(vec![0; len].into_boxed_slice());
            let s = &mut self.segments[seg as usize];
            s.used = size;
            s.live = size;
            return Loc { seg, off: 0 };
        }
        let room = match self.segments.get(self.head as usize) {
            Some(head) => head.len() - head.used,
            None => 0,
        };
        if room < size {
            let bytes = self
                .spare
                .take()
                .unwrap_or_else(|| vec![0; self.segment].into_boxed_slice());
            self.head = self.place(bytes);
        }
        let head = &mut self.segments[self.head as usize];
        let loc = Loc {
            seg: self.head,
            off: head.used,
        };
        head.used += size;
        head.live += size;
        loc
    }

    /// Puts a segment in the list, in an unused place if there is one.
    fn place(&mut self, bytes: Box<[u8]>) -> u32 {
        self.capacity += bytes.len() as u64;
        let segment = Segment {
            bytes,
            used: 0,
            live: 0,
        };
        match self.unused.pop() {
            Some(seg) => {
                self.segments[seg as usize] = segment;
                seg
            }
            None => {
                let seg = u32::try_from(self.segments.len()).expect("fewer than 2^32 segments");
                assert_ne!(seg, NONE, "fewer than 2^32-1 segments");
                self.segments.push(segment);
                seg
            }
        }
    }

    /// The bytes from `loc` to the end of its segment's entries: an entry and the ones appended after it.
    pub(super) fn bytes(&self, loc: Loc) -> &[u8] {
        let s = &self.segments[loc.seg as usize];
        &s.bytes[loc.off as usize..s.used as usize]
    }

    pub(super) fn bytes_mut(&mut self, loc: Loc, len: usize) -> &mut [u8] {
        let s = &mut self.segments[loc.seg as usize];
        let start = loc.off as usize;
        &mut s.bytes[start..start + len]
    }

    /// Copies `len` bytes between two places of the arena (of different entries: they do not overlap).
    pub(super) fn copy(&mut self, from: Loc, to: Loc, len: usize) {
        let (f, t) = (from.off as usize, to.off as usize);
        if from.seg == to.seg {
            self.segments[from.seg as usize].bytes.copy_within(f..f + len, t);
        } else {
            let [src, dst] = self
                .segments
                .get_disjoint_mut([from.seg as usize, to.seg as usize])
                .expect("two live segments");
            dst.bytes[t..t + len].copy_from_slice(&src.bytes[f..f + len]);
        }
    }

    /// Marks an entry's bytes dead. A segment left without live entries is given back, unless it is the
    /// head, which then starts over.
    pub(super) fn free(&mut self, loc: Loc, len: usize) {
        let size = u32::try_from(len).expect("entries are smaller than 4 GiB");
        self.live -= u64::from(size);
        let s = &mut self.segments[loc.seg as usize];
        s.live -= size;
        if s.live > 0 {
            return;
        }
        if loc.seg == self.head {
            s.used = 0;
            return;
        }
        let bytes = std::mem::take(&mut s.bytes);
        s.used = 0;
        self.capacity -= bytes.len() as u64;
        self.unused.push(loc.seg);
        if bytes.len() == self.segment && self.spare.is_none() {
            self.spare = Some(bytes);
        }
    }

    /// Bytes held but not in live entries, the room left at the end of the head excepted.
    pub(super) fn dead(&self) -> u64 {
        let room = self.segments.get(self.head as usize).map_or(0, |h| h.len() - h.used);
        self.capacity - self.live - u64::from(room)
    }

    /// Bytes of live entries.
    #[cfg(test)]
    pub(super) fn live(&self) -> u64 {
        self.live
    }

    /// Bytes of all segments held.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The segment to compact, if the dead bytes exceed a sixteenth of the arena (and two segments, so that a
    /// small cache is not compacted over and over): the shared segment with the fewest live bytes, not the
    /// head. Moving its live entries to the head and giving it back frees at least its dead bytes; since
    /// more than a segment's worth of dead bytes lies outside the head, that is never zero.
    pub(super) fn victim(&self) -> Option<u32> {
        let dead = self.dead();
        if dead <= self.capacity / DEAD_SHARE || dead <= 2 * self.segment as u64 {
            return None;
        }
        let shared = |(_, s): &(usize, &Segment)| s.bytes.len() == self.segment;
        let (seg, _) = self
            .segments
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u32 != self.head)
            .filter(shared)
            .min_by_key(|(_, s)| s.live)?;
        Some(seg as u32)
    }

    /// End of the entries appended to a segment: the store walks `[0, used)` entry by entry to compact it.
    pub(super) fn used(&self, seg: u32) -> u32 {
        self.segments[seg as usize].used
    }

    /// Whether a segment still holds live entries (compaction stops once it does not: it was given back).
    pub(super) fn is_live(&self, seg: u32) -> bool {
        self.segments[seg as usize].live > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_entries_share_a_segment_and_large_ones_get_their_own() {
        let mut a = Arena::with_segment(1024);
        let x = a.alloc(10);
        let y = a.alloc(20);
        assert_eq!((x, y), (Loc { seg: 0, off: 0 }, Loc { seg: 0, off: 10 }));
        let big = a.alloc(65);
        assert_ne!(big.seg, x.seg);
        assert_eq!(a.capacity(), 1024 + 65);
        a.bytes_mut(big, 65).fill(7);
        assert_eq!(a.bytes(big), &[7; 65][..]);
        a.free(big, 65);
        assert_eq!(a.capacity(), 1024, "a large entry's segment is given back with it");
        // Its place in the list is reused by the next segment.
        assert_eq!(a.alloc(70).seg, big.seg);
    }

    #[test]
    fn an_entry_that_does_not_fit_starts_a_new_segment() {
        let mut a = Arena::with_segment(64);
        let first = a.alloc(4);
        for _ in 0..14 {
            a.alloc(4);
        }
        // 60 bytes used: 4 more fit, 5 do not.
        assert_eq!(a.alloc(4).seg, first.seg);
        let next = a.alloc(4);
        assert_eq!(next, Loc { seg: 1, off: 0 });
        assert_eq!(a.dead(), 0, "the head's free room is not dead");
    }

    #[test]
    fn a_segment_emptied_by_frees_is_given_back_and_kept_as_the_spare() {
        let mut a = Arena::with_segment(64);
        let old: Vec<Loc> = (0..16).map(|_| a.alloc(4)).collect();
        let new = a.alloc(4);
        assert_eq!(a.capacity(), 128);
        for &loc in &old {
            a.free(loc, 4);
        }
        assert_eq!(a.capacity(), 64);
        assert!(a.spare.is_some());
        // The next segment reuses both the place and the spare's memory.
        let spare = a.spare.as_ref().map(|b| b.as_ptr());
        for _ in 0..15 {
            a.alloc(4);
        }
        let reused = a.alloc(4);
        assert_eq!(reused.seg, old[0].seg);
        assert_eq!(Some(a.segments[reused.seg as usize].bytes.as_ptr()), spare);
        // The head emptied starts over in place rather than being given back.
        assert_eq!(a.head, reused.seg);
        a.free(reused, 4);
        assert_eq!(a.capacity(), 128, "the head is kept");
        assert_eq!(a.alloc(4), reused, "and appended to from its start");
        // `new`'s segment, full and no longer the head, stays until its last entry goes.
        a.free(new, 4);
        assert_eq!(a.capacity(), 128);
    }

    #[test]
    fn copy_moves_bytes_within_and_across_segments() {
        let mut a = Arena::with_segment(64);
        let x = a.alloc(8);
        a.bytes_mut(x, 8).copy_from_slice(b"abcdefgh");
        let y = a.alloc(8);
        a.copy(x, y, 8);
        assert_eq!(&a.bytes(y)[..8], b"abcdefgh");
        for _ in 0..6 {
            a.alloc(8);
        }
        let z = a.alloc(8);
        assert_ne!(z.seg, x.seg);
        a.copy(x.add(2), z, 6);
        assert_eq!(&a.bytes(z)[..6], b"cdefgh");
    }

    #[test]
    fn the_victim_is_the_emptiest_segment_once_dead_bytes_pass_a_sixteenth() {
        let mut a = Arena::with_segment(64);
        // Forty full segments of 16 four-byte entries: 2,560 bytes, of which a sixteenth is 160.
        let locs: Vec<Vec<Loc>> = (0..40).map(|_| (0..16).map(|_| a.alloc(4)).collect()).collect();
        assert_eq!(a.victim(), None);
        // 40 dead bytes in segment 3 and 52 in segment 6: under both bounds.
        for loc in &locs[3][..10] {
            a.free(*loc, 4);
        }
        for loc in &locs[6][..13] {
            a.free(*loc, 4);
        }
        assert_eq!(a.dead(), 92);
        assert_eq!(a.victim(), None);
        // 48 more in segment 1: 140 is over two segments (128) but not over a sixteenth.
        for loc in &locs[1][..12] {
            a.free(*loc, 4);
        }
        assert_eq!(a.victim(), None);
        // 24 more in segment 2: 164 is over both; segment 6 has the fewest live bytes (12).
        for loc in &locs[2][..6] {
            a.free(*loc, 4);
        }
        assert_eq!(a.victim(), Some(6));
    }
}
