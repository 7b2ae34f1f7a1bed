//! The publisher's slot table: which core slot (by slot id) is known to
//! subscribers under which small index, and how many pins it has.
//!
//! Subscribers cache a slot's fd under its index, so a slot that keeps its
//! index while a pool reuses it crosses the socket once per subscriber. An
//! index is re-used for another slot only with a new generation, which the
//! subscriber checks against the fd it holds.
//!
//! Size: `keep` entries (`PublisherConfig::max_slots`) are kept for slots
//! nobody pins; a new slot then evicts the least recently sent unpinned one.
//! When every entry is pinned — a lossless queue of `depth` frames plus the
//! frames subscribers hold is more than `keep` — the table grows instead, up to
//! [`MAX_SLOT_TABLE`]. So the table never refuses a slot while fewer than
//! `MAX_SLOT_TABLE` distinct slots are pinned, and it holds at most
//! `max(keep, peak pinned + 1)` entries. Pure bookkeeping: no fds, no I/O.

use crate::wire::MAX_SLOT_TABLE;
use crate::{ChannelError, Result};
// Keys are slot ids this process makes itself (no HashDoS to guard against):
// FxHash instead of SipHash, whose code was ~10 % of the instruction-cache
// misses of a cold send (callgrind).
use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

struct Entry {
    slot_id: u64,
    gen: u32,
    pins: u32,
    /// Last `send` of this slot: least recently sent is evicted first, and a
    /// slot idle for `idle_slot_timeout` is retired.
    last_sent: Instant,
}

/// Slot id → (index, generation), with a pin count per entry.
pub(super) struct SlotTable {
    by_id: FxHashMap<u64, u32>,
    /// Grows (never shrinks) when every entry is pinned; `None` = free index.
    entries: Vec<Option<Entry>>,
    /// Last generation used at each index (so a re-used index never repeats one).
    gens: Vec<u32>,
    /// Entries kept for unpinned slots before evicting (`max_slots`).
    keep: usize,
    /// Entries in use (`Some`).
    live: usize,
}

impl SlotTable {
    pub(super) fn new(keep: u32) -> SlotTable {
        SlotTable {
            by_id: FxHashMap::default(),
            entries: (0..keep).map(|_| None).collect(),
            gens: vec![0; keep as usize],
            keep: keep as usize,
            live: 0,
        }
    }

    /// Indexes the table has now (entries in use or free).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The index and generation of `slot_id`, making an entry if it has none.
    /// Fails only when [`MAX_SLOT_TABLE`] distinct slots are pinned.
    pub(super) fn entry_for(&mut self, slot_id: u64) -> Result<(u32, u32)> {
        let now = Instant::now();
        if let Some(&i) = self.by_id.get(&slot_id) {
            let e = self.entries[i as usize].as_mut().expect("indexed entry");
            e.last_sent = now;
            return Ok((i, e.gen));
        }
        let i = if self.live < self.keep {
            self.free_index()
        } else if let Some(victim) = self.least_recent_unpinned() {
            let old = self.entries[victim].take().expect("victim exists");
            self.by_id.remove(&old.slot_id);
            self.live -= 1;
            victim
        } else if self.live < MAX_SLOT_TABLE as usize {
            self.free_index() // every entry is pinned: grow
        } else {
            return Err(ChannelError::TooManySlots { max: self.live });
        };
        self.gens[i] = self.gens[i].wrapping_add(1).max(1);
        let gen = self.gens[i];
        self.entries[i] = Some(Entry {
            slot_id,
            gen,
            pins: 0,
            last_sent: now,
        });
        self.live += 1;
        self.by_id.insert(slot_id, i as u32);
        Ok((i as u32, gen))
    }

    /// The lowest free index, appending one if none is free.
    fn free_index(&mut self) -> usize {
        match self.entries.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.entries.push(None);
                self.gens.push(0);
                self.entries.len() - 1
            }
        }
    }

    fn least_recent_unpinned(&self) -> Option<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .filter(|(_, e)| e.pins == 0)
            .min_by_key(|(_, e)| e.last_sent)
            .map(|(i, _)| i)
    }

    /// Retire entries unused for `idle` and pinned by nobody; returns (index, gen).
    pub(super) fn take_idle(&mut self, idle: Duration) -> Vec<(u32, u32)> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, slot) in self.entries.iter_mut().enumerate() {
            if let Some(e) = slot {
                if e.pins == 0 && now.duration_since(e.last_sent) >= idle {
                    out.push((i as u32, e.gen));
                    self.by_id.remove(&e.slot_id);
                    *slot = None;
                    self.live -= 1;
                }
            }
        }
        out
    }

    pub(super) fn pin(&mut self, index: u32) {
        if let Some(Some(e)) = self.entries.get_mut(index as usize) {
            e.pins += 1;
        }
    }

    pub(super) fn unpin(&mut self, index: u32) {
        if let Some(Some(e)) = self.entries.get_mut(index as usize) {
            e.pins = e.pins.saturating_sub(1);
        }
    }

    /// Distinct slots pinned right now.
    pub(super) fn pinned(&self) -> usize {
        self.entries.iter().flatten().filter(|e| e.pins > 0).count()
    }

    /// Entries in use (pinned or not).
    #[cfg(test)]
    pub(super) fn live(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_slot_keeps_its_index_and_generation() {
        let mut t = SlotTable::new(4);
        let a = t.entry_for(100).unwrap();
        assert_eq!(t.entry_for(100).unwrap(), a);
        assert_ne!(t.entry_for(200).unwrap().0, a.0);
    }

    #[test]
    fn unpinned_entries_are_evicted_least_recent_first_with_a_new_generation() {
        let mut t = SlotTable::new(2);
        let (ia, ga) = t.entry_for(1).unwrap();
        t.entry_for(2).unwrap();
        t.entry_for(1).unwrap(); // 2 is now the least recently sent
        let (ic, gc) = t.entry_for(3).unwrap();
        assert_eq!(t.live(), 2, "kept at max_slots while nothing is pinned");
        assert_ne!(ic, ia);
        assert_eq!(t.entry_for(1).unwrap(), (ia, ga));
        // re-using an index bumps its generation
        t.pin(ia);
        let (id, gd) = t.entry_for(4).unwrap();
        assert_eq!(id, ic);
        assert_ne!(gd, gc);
    }

    #[test]
    fn the_table_grows_while_every_entry_is_pinned_and_stops_at_the_hard_limit() {
        let mut t = SlotTable::new(2);
        for id in 0..u64::from(MAX_SLOT_TABLE) {
            let (i, _) = t.entry_for(id).unwrap();
            t.pin(i);
        }
        assert_eq!(t.len(), MAX_SLOT_TABLE as usize);
        assert_eq!(t.pinned(), MAX_SLOT_TABLE as usize);
        let e = t.entry_for(u64::MAX).unwrap_err();
        assert!(
            matches!(e, ChannelError::TooManySlots { max } if max == MAX_SLOT_TABLE as usize),
            "{e}"
        );
        // one unpin makes room again, by eviction (no growth past the limit)
        t.unpin(7);
        assert_eq!(t.entry_for(u64::MAX).unwrap().0, 7);
        assert_eq!(t.len(), MAX_SLOT_TABLE as usize);
    }

    #[test]
    fn after_growing_new_slots_evict_instead_of_growing_further() {
        let mut t = SlotTable::new(2);
        for id in 0..5 {
            let (i, _) = t.entry_for(id).unwrap();
            t.pin(i);
        }
        assert_eq!(t.live(), 5);
        for i in 0..5 {
            t.unpin(i);
        }
        for id in 10..100 {
            t.entry_for(id).unwrap();
        }
        assert_eq!((t.live(), t.len()), (5, 5), "bounded by the peak");
        assert_eq!(t.take_idle(Duration::ZERO).len(), 5);
        assert_eq!(t.live(), 0);
    }
}
