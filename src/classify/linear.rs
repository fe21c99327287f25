//! The reference matcher: a linear scan, first match wins.
//!
//! Obviously correct and slow; every compiled engine is property-tested against it.

use super::{Classifier, Decision, Key, Rule};

/// Rules scanned in order.
#[derive(Clone, Debug, Default)]
pub struct Linear {
    rules: Vec<Rule>,
}

impl Linear {
    /// A matcher over `rules` (index 0 has the highest priority).
    pub fn new(rules: Vec<Rule>) -> Self {
        Linear { rules }
    }

    /// The rules, in priority order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Classifier for Linear {
    fn lookup(&self, key: &Key) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.matches(key))
            .map(|i| i as u32)
    }

    fn classify(&self, key: &Key) -> Decision {
        self.lookup(key)
            .map_or(Decision::NoMatch, |i| self.rules[i as usize].decision)
    }

    fn bytes(&self) -> usize {
        self.rules.len() * std::mem::size_of::<Rule>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Range, prefix_range, v4_mapped};

    #[test]
    fn first_match_wins_and_wildcards_match() {
        let mut web = Rule::any(Decision::Service(0));
        web.dst = prefix_range(v4_mapped([203, 0, 113, 10]), 128);
        web.proto = Range::exact(6);
        web.dst_port = Range::new(80, 80);
        let all = Rule::any(Decision::FlowRule(7));
        let m = Linear::new(vec![web, all]);
        let mut k = Key {
            dst: v4_mapped([203, 0, 113, 10]),
            proto: 6,
            dst_port: 80,
            ..Key::default()
        };
        assert_eq!(m.classify(&k), Decision::Service(0));
        k.dst_port = 81;
        assert_eq!(m.classify(&k), Decision::FlowRule(7));
        assert_eq!(Linear::new(vec![web]).classify(&k), Decision::NoMatch);
    }

    #[test]
    fn prefix_ranges() {
        let r = prefix_range(v4_mapped([10, 1, 0, 0]), 96 + 16);
        assert!(r.contains(v4_mapped([10, 1, 255, 255])));
        assert!(!r.contains(v4_mapped([10, 2, 0, 0])));
        assert_eq!(prefix_range(5, 0), Range::new(0, u128::MAX));
    }
}
