//! A bounded queue that never makes the producer wait: when full, the oldest entry is dropped and handed back
//! so the caller can count it. The producer is the breaker's observer (synchronous, called on the request path);
//! the consumer is one sink's worker task.
//!
//! The lock is a `std::sync::Mutex` held for a push or a pop only, never across an `.await`. A push wakes the
//! consumer through a [`Notify`], whose stored permit covers a push that lands between the consumer finding the
//! queue empty and starting to wait.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: Notify,
}

impl<T> Queue<T> {
    /// A queue of at most `capacity` (at least 1) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A push or pop cannot leave the deque half-changed: keep going on poison.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `item`; returns the oldest entry if it had to make room.
    pub(crate) fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = self.lock();
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    pub(crate) fn try_pop(&self) -> Option<T> {
        self.lock().pop_front()
    }

    /// Waits for the next entry. One consumer per queue.
    pub(crate) async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.len(), 2);
        assert_eq!((q.try_pop(), q.try_pop(), q.try_pop()), (Some(2), Some(3), None));
        assert_eq!(q.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pop_waits_for_a_push() {
        let q = Arc::new(Queue::new(4));
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { (q.pop().await, q.pop().await) }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.push("a");
        q.push("b");
        assert_eq!(consumer.await.unwrap(), ("a", "b"));
    }
}
