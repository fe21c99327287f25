//! Updatable classifier.
