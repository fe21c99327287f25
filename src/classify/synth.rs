//! Seedable ClassBench-like rule and trace generator.
