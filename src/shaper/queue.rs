//! A fair queue: one FIFO per client, served round-robin.
//!
//! A client that sends ten times as much as the others gets one turn in
//! each round like everyone else, so its backlog delays only itself. Entries
//! sent back after an upstream 429 go to a priority lane served before any
//! round. Removal by id (a client that hung up) is cheap: it scans only that
//! client's own FIFO.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Who a request is for fairness: a local key's fingerprint or a peer address.
pub type ClientId = Arc<str>;

/// One queued entry.
#[derive(Debug)]
pub struct Entry<T> {
    /// Unique id, for removal.
    pub id: u64,
    /// Whose it is.
    pub client: ClientId,
    /// The payload.
    pub item: T,
}

/// The queue of one class.
#[derive(Debug)]
pub struct FairQueue<T> {
    priority: VecDeque<Entry<T>>,
    clients: HashMap<ClientId, VecDeque<Entry<T>>>,
    /// Clients with entries, in the order their turns come.
    ring: VecDeque<ClientId>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            priority: VecDeque::new(),
            clients: HashMap::new(),
            ring: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Clients with entries (the priority lane counts as one).
    pub fn clients(&self) -> usize {
        self.clients.len() + usize::from(!self.priority.is_empty())
    }

    /// Adds an entry at the end of its client's FIFO.
    pub fn push(&mut self, entry: Entry<T>) {
        let fifo = self.clients.entry(entry.client.clone()).or_default();
        if fifo.is_empty() {
            self.ring.push_back(entry.client.clone());
        }
        fifo.push_back(entry);
        self.len += 1;
    }

    /// Adds an entry to the priority lane (it already had its turn once).
    pub fn push_priority(&mut self, entry: Entry<T>) {
        self.priority.push_back(entry);
        self.len += 1;
    }

    /// Takes the next entry: the priority lane first, then the client whose
    /// turn it is.
    pub fn pop(&mut self) -> Option<Entry<T>> {
        if let Some(entry) = self.priority.pop_front() {
            self.len -= 1;
            return Some(entry);
        }
        let client = self.ring.pop_front()?;
        let fifo = self.clients.get_mut(&client)?;
        let entry = fifo.pop_front();
        if fifo.is_empty() {
            self.clients.remove(&client);
        } else {
            self.ring.push_back(client);
        }
        if entry.is_some() {
            self.len -= 1;
        }
        entry
    }

    /// The id and client of the entry [`pop`](Self::pop) would take.
    pub fn peek(&self) -> Option<(u64, &ClientId)> {
        if let Some(entry) = self.priority.front() {
            return Some((entry.id, &entry.client));
        }
        let client = self.ring.front()?;
        let entry = self.clients.get(client)?.front()?;
        Some((entry.id, &entry.client))
    }

    /// Removes the entry `id` of `client`, wherever it is.
    pub fn remove(&mut self, id: u64, client: &ClientId) -> Option<Entry<T>> {
        if let Some(i) = self.priority.iter().position(|e| e.id == id) {
            self.len -= 1;
            return self.priority.remove(i);
        }
        let fifo = self.clients.get_mut(client)?;
        let i = fifo.iter().position(|e| e.id == id)?;
        let entry = fifo.remove(i);
        if fifo.is_empty() {
            self.clients.remove(client);
            self.ring.retain(|c| c != client);
        }
        self.len -= 1;
        entry
    }

    /// How many entries would leave before a new one from `client`: the
    /// priority lane, the client's own backlog, and from every other client
    /// at most one more turn than the newcomer's client has entries.
    pub fn ahead_of_new(&self, client: &ClientId) -> usize {
        let own = self.clients.get(client).map_or(0, VecDeque::len);
        let others: usize = self
            .clients
            .iter()
            .filter(|(c, _)| *c != client)
            .map(|(_, fifo)| fifo.len().min(own + 1))
            .sum();
        self.priority.len() + own + others
    }

    /// Every entry in the order it would leave, without changing the queue.
    pub fn in_order(&self) -> Vec<&Entry<T>> {
        let mut out: Vec<&Entry<T>> = self.priority.iter().collect();
        let mut cursors: Vec<std::collections::vec_deque::Iter<'_, Entry<T>>> = self
            .ring
            .iter()
            .filter_map(|c| self.clients.get(c).map(|fifo| fifo.iter()))
            .collect();
        while !cursors.is_empty() {
            cursors.retain_mut(|cursor| match cursor.next() {
                Some(entry) => {
                    out.push(entry);
                    true
                }
                None => false,
            });
        }
        out
    }

    /// Takes every entry out (shutdown).
    pub fn drain(&mut self) -> Vec<Entry<T>> {
        let mut out: Vec<Entry<T>> = self.priority.drain(..).collect();
        for client in self.ring.drain(..) {
            if let Some(fifo) = self.clients.remove(&client) {
                out.extend(fifo);
            }
        }
        self.clients.clear();
        self.len = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, client: &str) -> Entry<()> {
        Entry {
            id,
            client: Arc::from(client),
            item: (),
        }
    }

    #[test]
    fn serves_clients_in_turn() {
        let mut q = FairQueue::default();
        for id in 0..10 {
            q.push(entry(id, "heavy"));
        }
        q.push(entry(100, "light"));
        q.push(entry(101, "light"));
        let order: Vec<u64> = std::iter::from_fn(|| {
            let peeked = q.peek().map(|(id, _)| id);
            let popped = q.pop();
            assert_eq!(peeked, popped.as_ref().map(|e| e.id));
            popped
        })
        .map(|e| e.id)
        .collect();
        assert_eq!(order, vec![0, 100, 1, 101, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(q.is_empty());
    }

    #[test]
    fn in_order_matches_pop_order() {
        let mut q = FairQueue::default();
        for id in 0..5 {
            q.push(entry(id, "a"));
        }
        q.push(entry(10, "b"));
        q.push_priority(entry(99, "c"));
        let listed: Vec<u64> = q.in_order().iter().map(|e| e.id).collect();
        let popped: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|e| e.id).collect();
        assert_eq!(listed, popped);
        assert_eq!(popped[0], 99);
    }

    #[test]
    fn removes_from_the_middle_and_forgets_empty_clients() {
        let mut q = FairQueue::default();
        q.push(entry(1, "a"));
        q.push(entry(2, "b"));
        q.push(entry(3, "a"));
        assert!(q.remove(2, &Arc::from("b")).is_some());
        assert!(q.remove(2, &Arc::from("b")).is_none());
        assert_eq!(q.len(), 2);
        let order: Vec<u64> = std::iter::from_fn(|| q.pop()).map(|e| e.id).collect();
        assert_eq!(order, vec![1, 3]);
    }

    #[test]
    fn a_newcomer_waits_behind_one_turn_of_each_backlog() {
        let mut q = FairQueue::default();
        for id in 0..100 {
            q.push(entry(id, "heavy"));
        }
        let light: ClientId = Arc::from("light");
        assert_eq!(q.ahead_of_new(&light), 1);
        assert_eq!(q.ahead_of_new(&Arc::from("heavy")), 100);
        q.push(entry(200, "light"));
        assert_eq!(q.ahead_of_new(&light), 1 + 2);
    }
}
