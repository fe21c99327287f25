//! Zero-copy header views and checksums: the bottom layer.
//!
//! Each header lives in its own file as a view `Xxx<T: AsRef<[u8]>>` over a byte
//! slice. `new_checked(buf)` validates the length once; after that no getter panics.
//! Setters exist only when `T: AsMut<[u8]>`. `wire` depends on nothing else in the crate.
//!
//! `new_unchecked` skips the checks: a getter on a view made that way panics if the
//! buffer is too short for the field it reads (that is the only way a getter panics).
//! Setters never grow the buffer; the ones named in each file's docs update a
//! checksum incrementally (RFC 1624), the plain ones do not.
//!
//! ```
//! use flowgate::wire::{EthernetFrame, Ipv4Packet, ethernet::ethertype};
//! let mut f = [0u8; 34];
//! f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
//! f[14] = 0x45; // version 4, IHL 5
//! f[17] = 20; // total length 20
//! let eth = EthernetFrame::new_checked(&f[..]).unwrap();
//! assert_eq!(eth.ethertype(), ethertype::IPV4);
//! let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
//! ip.fill_checksum();
//! assert!(ip.verify_checksum());
//! ```

pub mod arp;
pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod gre;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::Packet as ArpPacket;
pub use esp::Packet as EspPacket;
pub use ethernet::Frame as EthernetFrame;
pub use gre::Packet as GrePacket;
pub use icmp::Packet as IcmpPacket;
pub use icmpv6::Packet as Icmpv6Packet;
pub use ipv4::Packet as Ipv4Packet;
pub use ipv6::Packet as Ipv6Packet;
pub use mpls::Entry as MplsEntry;
pub use tcp::Packet as TcpPacket;
pub use udp::Packet as UdpPacket;
pub use vlan::Tag as VlanHeader;

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

// Big-endian field access shared by the views. Callers index only within the
// length their `new_checked` validated.
#[inline]
pub(crate) fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Test helper: decodes a hex string (whitespace ignored).
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|c| {
            let t = std::str::from_utf8(c).expect("ascii");
            u8::from_str_radix(t, 16).expect("hex digit")
        })
        .collect()
}

/// Test helper: runs a Python snippet under `/usr/bin/python3` with `from scapy.all
/// import *` (and `scapy.layers.inet6`) preloaded and returns its trimmed stdout.
/// Returns `None` (after printing a note) when scapy is unavailable, unless `CI=true`,
/// where that is a failure.
#[cfg(test)]
pub(crate) fn scapy(snippet: &str) -> Option<String> {
    let prog = format!(
        "import logging\nlogging.getLogger('scapy').setLevel(logging.ERROR)\n\
         from scapy.all import *\nfrom scapy.layers.inet6 import *\n{snippet}\n"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(&prog)
        .output();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            if err.contains("No module named 'scapy'") && !ci {
                eprintln!("note: /usr/bin/python3 has no scapy; oracle check skipped");
                None
            } else {
                panic!("scapy oracle failed: {err}\nprogram:\n{prog}");
            }
        }
        Err(e) => {
            assert!(!ci, "CI=true but /usr/bin/python3 cannot run: {e}");
            eprintln!("note: /usr/bin/python3 unavailable ({e}); oracle check skipped");
            None
        }
    }
}

/// Test helper: lower-case hex of `b`.
#[cfg(test)]
pub(crate) fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
