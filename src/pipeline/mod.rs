//! The per-burst worker: parse → flow → classify → act.

pub mod meta;
pub mod parse;
pub mod reply;
