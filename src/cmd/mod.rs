//! Subcommand implementations behind `main.rs` (the CLI only parses arguments).
//!
//! These run at the edge: they use `anyhow` and print; the layers below return typed
//! errors.

pub mod check;
pub mod replay;
pub mod summary;
