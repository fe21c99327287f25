//! Zero-copy header views and checksums: the bottom layer.
//!
//! Each header lives in its own file as a view `Xxx<T: AsRef<[u8]>>` over a byte
//! slice. `new_checked(buf)` validates the length once; after that no getter panics.
//! Setters exist only when `T: AsMut<[u8]>`. `wire` depends on nothing else in the crate.

pub mod checksum;

/// What can go wrong when a view is laid over bytes. Cheap (`Copy`, no payload):
/// the packet path turns it into a counted drop, never an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    #[error("truncated")]
    Truncated,
    /// A field holds a value the header cannot have (bad version, IHL < 5, …).
    #[error("malformed")]
    Malformed,
}

/// Result alias for `wire`.
pub type Result<T> = core::result::Result<T, Error>;
