//! The deterministic order of a checkpoint's new entries: causal order (a log's entries in
//! sequence, every causal head before the entries naming it), ties broken by writer key, then
//! sequence number.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::LedgerError;
use super::entry::{EntryRef, LogEntry};
use crate::crypto::PublicKey;

/// Orders `entries` (the new entries of one checkpoint). `included` says whether an entry
/// outside the set is already included by earlier checkpoints; a causal head that is neither
/// in the set nor included makes the set invalid.
pub fn order<'e>(
    entries: &'e [LogEntry],
    refs: &[EntryRef],
    included: impl Fn(&EntryRef) -> bool,
) -> Result<Vec<&'e LogEntry>, LedgerError> {
    let index: HashMap<(PublicKey, u64), usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.body.writer, e.body.seq), i))
        .collect();
    let mut waiting_on = vec![0usize; entries.len()];
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        let body = &entry.body;
        if body.seq > 0
            && let Some(&p) = index.get(&(body.writer, body.seq - 1))
        {
            waiting_on[i] += 1;
            dependants[p].push(i);
        }
        for head in &body.heads {
            match index.get(&(head.writer, head.seq)) {
                Some(&h) => {
                    if refs[h].hash != head.hash {
                        return Err(LedgerError::Invalid(format!(
                            "entry {}/{} names a head {}/{} with another hash",
                            body.writer, body.seq, head.writer, head.seq
                        )));
                    }
                    waiting_on[i] += 1;
                    dependants[h].push(i);
                }
                None if included(head) => {}
                None => {
                    return Err(LedgerError::Invalid(format!(
                        "entry {}/{} depends on {}/{}, which is not included",
                        body.writer, body.seq, head.writer, head.seq
                    )));
                }
            }
        }
    }
    let key = |i: usize| (entries[i].body.writer, entries[i].body.seq, i);
    let mut ready: BTreeSet<(PublicKey, u64, usize)> = (0..entries.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    while let Some((_, _, i)) = ready.pop_first() {
        out.push(&entries[i]);
        for &d in &dependants[i] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.insert(key(d));
            }
        }
    }
    if out.len() != entries.len() {
        return Err(LedgerError::Invalid(
            "the entries' causal heads form a cycle".into(),
        ));
    }
    Ok(out)
}

/// Groups entries by writer, in sequence order (for building frontiers).
pub fn by_writer(entries: &[LogEntry]) -> BTreeMap<PublicKey, Vec<&LogEntry>> {
    let mut map: BTreeMap<PublicKey, Vec<&LogEntry>> = BTreeMap::new();
    for e in entries {
        map.entry(e.body.writer).or_default().push(e);
    }
    for list in map.values_mut() {
        list.sort_by_key(|e| e.body.seq);
    }
    map
}
