//! The links of a network, by the names of their two ends.

use std::collections::HashMap;
use std::sync::Arc;

use super::Link;

/// All links of a network, by the names of their two ends (order-insensitive).
#[derive(Debug, Default)]
pub struct Hub {
    links: HashMap<(String, String), Arc<Link>>,
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `link` between `a` and `b`, replacing any previous one.
    pub fn add(&mut self, a: &str, b: &str, link: Arc<Link>) {
        self.links.insert(key(a, b), link);
    }

    /// The link between `a` and `b`, in either order.
    pub fn get(&self, a: &str, b: &str) -> Option<Arc<Link>> {
        self.links.get(&key(a, b)).cloned()
    }

    /// Every link as `(a, b, link)` with `a <= b`, sorted by `(a, b)`.
    pub fn links(&self) -> Vec<(String, String, Arc<Link>)> {
        let mut all: Vec<_> = self
            .links
            .iter()
            .map(|((a, b), l)| (a.clone(), b.clone(), l.clone()))
            .collect();
        all.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        all
    }
}
