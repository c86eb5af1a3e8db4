//! Counting bytes as they go, for progress read from another task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A shared byte counter; clones count into the same total.
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<AtomicU64>);

impl Meter {
    /// Adds `n` bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_count() {
        let a = Meter::default();
        let b = a.clone();
        a.add(3);
        b.add(4);
        assert_eq!(a.get(), 7);
    }
}
