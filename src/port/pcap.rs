//! Capture files in, capture files out: classic pcap and pcapng.
//!
//! Layer: `port`. [`PcapReader`] turns a capture file into a stream of Ethernet frames
//! ([`Packet`]); [`PcapWriter`] writes Ethernet frames as classic pcap with nanosecond
//! timestamps.
//!
//! # What is read
//! - Classic pcap: magic `a1b2c3d4` (µs) and `a1b23c4d` (ns), either byte order.
//! - pcapng: Section Header Blocks in either byte order (several sections per file, each with
//!   its own byte order and interfaces), Interface Description Blocks (`if_tsresol` as a
//!   power of 10 or of 2, `if_tsoffset`, per-interface link type and snaplen), Enhanced
//!   Packet Blocks, Simple Packet Blocks (captured length bounded by the snaplen of
//!   interface 0; they carry no timestamp, so they get the previous packet's timestamp),
//!   and the obsolete Packet Block. Every other block (NRB, ISB, DSB, custom, unknown) is
//!   skipped without being buffered.
//!
//! # Every packet is an Ethernet frame
//! | link type | conversion |
//! |---|---|
//! | ETHERNET (1) | as stored |
//! | RAW (101), IPV4 (228), IPV6 (229) | a 14-byte header with zero MACs is prepended; the EtherType comes from the IP version nibble (for 228/229, if the nibble is neither 4 nor 6, the link type decides) |
//! | LINUX_SLL (113), LINUX_SLL2 (276) | the cooked header is replaced by an Ethernet header: destination zero, source = the link-layer address when it is 6 bytes long (else zero), EtherType = the protocol field |
//! | NULL (0), LOOP (108) | the 4-byte address family becomes the EtherType (AF_INET → IPv4; AF_INET6 as 10, 24, 28 or 30 → IPv6); NULL's host byte order is guessed |
//!
//! `orig_len` is adjusted by the same number of bytes as the header change. A frame too
//! short to hold its cooked/loopback header, or whose family/version is unknown, gets
//! EtherType 0 so that the parse stage drops it as unknown; reading goes on. Any other link
//! type is an error ([`PcapError::UnsupportedLinkType`]) naming the number, its name and
//! the file (pcap: at open; pcapng: at the first packet on that interface).
//!
//! # Bad files
//! Bad magic, bad block lengths, a captured length above [`MAX_CAPLEN`] (256 KiB), a
//! packet that overruns its block, an unknown interface id: [`PcapError::Format`] with the
//! file and byte offset. A file that ends inside a record or block is
//! [`PcapError::Truncated`], like tcpdump's "truncated dump file"; end of file is clean
//! only at a record/block boundary. Nothing here panics on input, and no buffer grows
//! with input: each reader owns one buffer of [`MAX_BLOCK`] + 16 bytes and a 256 KiB read
//! buffer, both allocated at open.
//!
//! # Speed
//! A classic-pcap Ethernet record that lies wholly inside the read buffer is lent from it
//! without a copy (nearly every record: only those straddling a 256 KiB refill are copied
//! into the reader's own buffer). Measured on a 1M-packet capture (`scripts/bench-replay.sh`):
//! `flowgate replay` went from 311 to 272 ms CPU with this path.
//!
//! # Example
//! ```no_run
//! use flowgate::port::pcap::{PcapReader, PcapWriter, LinkType};
//! use std::path::Path;
//! let mut rd = PcapReader::open(Path::new("in.pcapng"))?;
//! let mut wr = PcapWriter::create(Path::new("out.pcap"), LinkType::Ethernet)?;
//! while let Some(p) = rd.next_packet()? {
//!     wr.write(p.ts_ns, p.data)?;
//! }
//! wr.finish()?;
//! # Ok::<(), flowgate::port::pcap::PcapError>(())
//! ```

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Largest captured length accepted (256 KiB, tcpdump's default snaplen).
pub const MAX_CAPLEN: u32 = 256 * 1024;
/// Largest pcapng block body that is buffered (packet blocks, IDB, SHB): a maximal
/// packet plus 64 KiB of options. Other blocks are skipped, whatever their length.
pub const MAX_BLOCK: usize = MAX_CAPLEN as usize + 64 * 1024;
/// Snaplen written by [`PcapWriter`].
pub const WRITE_SNAPLEN: u32 = 262_144;
/// Most interfaces accepted in one pcapng section.
const MAX_IFACES: usize = 65_536;
/// Headroom before the packet data in the buffer, so a 14-byte header can be prepended.
const ROOM: usize = 16;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const NG_SHB: u32 = 0x0a0d_0d0a;
const NG_IDB: u32 = 0x0000_0001;
const NG_PB: u32 = 0x0000_0002;
const NG_SPB: u32 = 0x0000_0003;
const NG_EPB: u32 = 0x0000_0006;
const NG_BOM: u32 = 0x1a2b_3c4d;

/// Errors from reading or writing a capture. Every message names the file; format errors
/// also give the byte offset of the record or block at fault.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The operating system refused (open, read, write, flush).
    #[error("{}: {source}", path.display())]
    Io {
        /// File (or writer name).
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// The bytes are not a valid capture.
    #[error("{}: byte offset {offset}: {what}", path.display())]
    Format {
        /// File.
        path: PathBuf,
        /// Offset of the record/block (or field) at fault.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// The file ends inside a record or block (tcpdump: "truncated dump file").
    #[error(
        "{}: byte offset {offset}: truncated {what}: needed {need} bytes, the file has {got}",
        path.display()
    )]
    Truncated {
        /// File.
        path: PathBuf,
        /// Offset where the short read started.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        got: u64,
    },
    /// A link type that cannot be turned into Ethernet frames.
    #[error(
        "{}: byte offset {offset}: unsupported link type {linktype} ({name}); flowgate reads \
         ETHERNET (1), RAW (101), IPV4 (228), IPV6 (229), LINUX_SLL (113), LINUX_SLL2 (276), \
         NULL (0) and LOOP (108)",
        path.display()
    )]
    UnsupportedLinkType {
        /// File.
        path: PathBuf,
        /// Offset of the header/block that declared or used it.
        offset: u64,
        /// LINKTYPE_ number.
        linktype: u32,
        /// Its tcpdump.org name, or "unknown".
        name: &'static str,
    },
}

/// One frame, borrowed from the reader's buffer until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame as Ethernet (see the module doc for conversions), `caplen` bytes.
    pub data: &'a [u8],
    /// Length on the wire, adjusted like `data` when the header was converted.
    pub orig_len: u32,
}

/// Link types [`PcapWriter`] can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
}

impl LinkType {
    /// The LINKTYPE_ number.
    pub fn number(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
        }
    }
}

/// tcpdump.org name of a LINKTYPE_ number (common ones), or `"unknown"`.
pub fn linktype_name(lt: u32) -> &'static str {
    match lt {
        0 => "NULL",
        1 => "ETHERNET",
        3 => "AX25",
        6 => "IEEE802_5",
        7 => "ARCNET_BSD",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER",
        100 => "ATM_RFC1483",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        107 => "FRELAY",
        108 => "LOOP",
        113 => "LINUX_SLL",
        114 => "LTALK",
        117 => "PFLOG",
        119 => "IEEE802_11_PRISM",
        122 => "IP_OVER_FC",
        123 => "SUNATM",
        127 => "IEEE802_11_RADIOTAP",
        129 => "ARCNET_LINUX",
        138 => "APPLE_IP_OVER_IEEE1394",
        139 => "MTP2_WITH_PHDR",
        140 => "MTP2",
        141 => "MTP3",
        142 => "SCCP",
        143 => "DOCSIS",
        144 => "LINUX_IRDA",
        147..=162 => "USER",
        163 => "IEEE802_11_AVS",
        165 => "BACNET_MS_TP",
        166 => "PPP_PPPD",
        169 => "GPRS_LLC",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        195 => "IEEE802_15_4_WITHFCS",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        215 => "IEEE802_15_4_NONASK_PHY",
        220 => "USB_LINUX_MMAPPED",
        224 => "FC_2",
        227 => "CAN_SOCKETCAN",
        228 => "IPV4",
        229 => "IPV6",
        230 => "IEEE802_15_4_NOFCS",
        235 => "DVB_CI",
        239 => "NFLOG",
        240 => "NETANALYZER",
        249 => "USBPCAP",
        251 => "BLUETOOTH_LE_LL",
        252 => "WIRESHARK_UPPER_PDU",
        253 => "NETLINK",
        254 => "BLUETOOTH_LINUX_MONITOR",
        263 => "IPOIB",
        270 => "LINUX_LAPD",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

/// Link types that can be converted to Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Ethernet,
    Raw,
    Ipv4,
    Ipv6,
    Sll,
    Sll2,
    Null,
    Loop,
}

impl Link {
    fn from_number(lt: u32) -> Option<Link> {
        Some(match lt {
            1 => Link::Ethernet,
            101 => Link::Raw,
            228 => Link::Ipv4,
            229 => Link::Ipv6,
            113 => Link::Sll,
            276 => Link::Sll2,
            0 => Link::Null,
            108 => Link::Loop,
            _ => return None,
        })
    }
}

/// How a pcapng interface's timestamp units become nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsScale {
    /// ns = units * k
    Mul(u64),
    /// ns = units * 10^9 / d
    Div(u128),
}

impl TsScale {
    /// From the `if_tsresol` byte; `None` when it cannot be represented.
    fn from_tsresol(r: u8) -> Option<TsScale> {
        let n = u32::from(r & 0x7f);
        if r & 0x80 == 0 {
            if n <= 9 {
                Some(TsScale::Mul(10u64.pow(9 - n)))
            } else if n <= 38 {
                Some(TsScale::Div(10u128.pow(n)))
            } else {
                None
            }
        } else {
            Some(TsScale::Div(1u128 << n))
        }
    }

    fn to_ns(self, units: u64) -> u64 {
        match self {
            TsScale::Mul(k) => units.saturating_mul(k),
            TsScale::Div(d) => {
                let ns = u128::from(units) * 1_000_000_000 / d;
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    linktype: u32,
    snaplen: u32,
    scale: TsScale,
    /// `if_tsoffset`, seconds.
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        big: bool,
        nanos: bool,
        link: Link,
    },
    PcapNg {
        big: bool,
        ifaces: Vec<Iface>,
        /// The SHB magic already consumed at open and not yet processed.
        pending_shb: bool,
    },
}

/// Streaming reader of a pcap or pcapng file; see the module doc.
///
/// Allocation happens at [`PcapReader::open`] (two buffers) and when a pcapng section adds
/// an interface; [`PcapReader::next_packet`] itself does not allocate.
pub struct PcapReader {
    path: PathBuf,
    rd: BufReader<Box<dyn Read + Send>>,
    pos: u64,
    total: u64,
    buf: Vec<u8>,
    fmt: Format,
    last_ts: u64,
    /// Bytes of `rd`'s buffer lent out by the last packet, consumed on the next call.
    pending: usize,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.path)
            .field("pos", &self.pos)
            .field("total", &self.total)
            .field("fmt", &self.fmt)
            .finish_non_exhaustive()
    }
}

/// Reads until `dst` is full or end of file; returns the number of bytes read.
fn read_full(rd: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < dst.len() {
        match rd.read(&mut dst[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn u16_of(b: [u8; 2], big: bool) -> u16 {
    if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_of(b: [u8; 4], big: bool) -> u32 {
    if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Bounds-checked field readers: `None` when the slice is too short.
fn rd16(b: &[u8], off: usize, big: bool) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16_of([s[0], s[1]], big))
}

fn rd32(b: &[u8], off: usize, big: bool) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32_of([s[0], s[1], s[2], s[3]], big))
}

fn rd64(b: &[u8], off: usize, big: bool) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let a: [u8; 8] = [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]];
    Some(if big {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    })
}

/// What one pcapng block turned out to be.
enum Block {
    /// A packet at `buf[start..start + len]`.
    Packet {
        start: usize,
        len: usize,
        orig: u32,
        ts_ns: u64,
        link: Link,
    },
    /// Anything else (already consumed).
    Other,
    /// Clean end of file.
    Eof,
}

impl PcapReader {
    /// Opens `path`, reads and checks the file header (pcap) or first Section Header Block
    /// (pcapng).
    pub fn open(path: &Path) -> Result<PcapReader, PcapError> {
        let io_err = |source| PcapError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(io_err)?;
        let total = f.metadata().map_err(io_err)?.len();
        PcapReader::from_reader(path, Box::new(f), total)
    }

    /// A reader over any byte stream (`name` is used in error messages, `total` by
    /// [`PcapReader::total_bytes`]).
    pub fn from_reader(
        name: impl Into<PathBuf>,
        rd: Box<dyn Read + Send>,
        total: u64,
    ) -> Result<PcapReader, PcapError> {
        let mut r = PcapReader {
            path: name.into(),
            rd: BufReader::with_capacity(256 * 1024, rd),
            pos: 0,
            total,
            buf: vec![0; ROOM + MAX_BLOCK],
            fmt: Format::Pcap {
                big: false,
                nanos: false,
                link: Link::Ethernet,
            },
            last_ts: 0,
            pending: 0,
        };
        r.read_file_header()?;
        Ok(r)
    }

    /// Bytes consumed so far (for a progress bar).
    pub fn bytes_read(&self) -> u64 {
        self.pos
    }

    /// Size of the file (0 when unknown).
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The file name given at open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn format_err(&self, offset: u64, what: impl Into<String>) -> PcapError {
        PcapError::Format {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    fn io_err(&self, source: io::Error) -> PcapError {
        PcapError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads exactly `dst.len()` bytes or fails with `Truncated` (offset = `self.pos`).
    /// Returns `Ok(false)` only when `eof_ok` and nothing at all could be read.
    fn fill_exact(
        &mut self,
        range: std::ops::Range<usize>,
        what: &'static str,
        eof_ok: bool,
    ) -> Result<bool, PcapError> {
        let need = range.len();
        let n = read_full(&mut self.rd, &mut self.buf[range]).map_err(|e| self.io_err(e))?;
        if n == 0 && eof_ok && need > 0 {
            return Ok(false);
        }
        if n < need {
            return Err(PcapError::Truncated {
                path: self.path.clone(),
                offset: self.pos,
                what,
                need: need as u64,
                got: n as u64,
            });
        }
        self.pos += n as u64;
        Ok(true)
    }

    /// Skips `n` bytes without buffering them.
    fn skip(&mut self, n: u64, what: &'static str) -> Result<(), PcapError> {
        let got =
            io::copy(&mut (&mut self.rd).take(n), &mut io::sink()).map_err(|e| self.io_err(e))?;
        if got < n {
            return Err(PcapError::Truncated {
                path: self.path.clone(),
                offset: self.pos,
                what,
                need: n,
                got,
            });
        }
        self.pos += n;
        Ok(())
    }

    fn read_file_header(&mut self) -> Result<(), PcapError> {
        if !self.fill_exact(0..4, "file header", true)? {
            return Err(self.format_err(0, "empty file: not a pcap or pcapng file"));
        }
        let m = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        let le = u32::from_le_bytes(m);
        let be = u32::from_be_bytes(m);
        if le == NG_SHB {
            self.fmt = Format::PcapNg {
                big: false,
                ifaces: Vec::new(),
                pending_shb: true,
            };
            // Process the first SHB now, so that a bad header fails at open.
            return match self.ng_block()? {
                Block::Other => Ok(()),
                _ => Err(self.format_err(0, "bad pcapng section header")),
            };
        }
        let (big, nanos) = match (le, be) {
            (MAGIC_US, _) => (false, false),
            (MAGIC_NS, _) => (false, true),
            (_, MAGIC_US) => (true, false),
            (_, MAGIC_NS) => (true, true),
            _ => {
                return Err(self.format_err(
                    0,
                    format!(
                        "not a pcap or pcapng file (magic {:02x}{:02x}{:02x}{:02x})",
                        m[0], m[1], m[2], m[3]
                    ),
                ));
            }
        };
        self.fill_exact(4..24, "pcap file header", false)?;
        let major = rd16(&self.buf, 4, big).unwrap_or(0);
        if major != 2 {
            return Err(self.format_err(4, format!("unsupported pcap version {major}")));
        }
        // The link-type field carries FCS information in its upper bits.
        let lt = rd32(&self.buf, 20, big).unwrap_or(0) & 0xffff;
        let Some(link) = Link::from_number(lt) else {
            return Err(PcapError::UnsupportedLinkType {
                path: self.path.clone(),
                offset: 20,
                linktype: lt,
                name: linktype_name(lt),
            });
        };
        self.fmt = Format::Pcap { big, nanos, link };
        Ok(())
    }

    /// The next frame, `Ok(None)` at a clean end of file.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, PcapError> {
        if self.pending > 0 {
            self.rd.consume(self.pending);
            self.pending = 0;
        }
        // Fast path: an Ethernet record wholly inside the read buffer is lent from there
        // (no copy); anything else (a record across a refill, other link types, bad
        // lengths) takes the general path below, which reports errors.
        if let Format::Pcap {
            big,
            nanos,
            link: Link::Ethernet,
        } = self.fmt
        {
            let b = self.rd.buffer();
            if let (Some(sec), Some(frac), Some(incl), Some(orig)) = (
                rd32(b, 0, big),
                rd32(b, 4, big),
                rd32(b, 8, big),
                rd32(b, 12, big),
            ) {
                let len = incl as usize;
                if incl <= MAX_CAPLEN && b.len() >= 16 + len {
                    let (sec, frac) = (u64::from(sec), u64::from(frac));
                    let ts = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
                        frac
                    } else {
                        frac.saturating_mul(1000)
                    });
                    self.pending = 16 + len;
                    self.pos += (16 + len) as u64;
                    self.last_ts = ts;
                    return Ok(Some(Packet {
                        ts_ns: ts,
                        data: &self.rd.buffer()[16..16 + len],
                        orig_len: orig,
                    }));
                }
            }
        }
        let (start, len, orig, ts_ns, link) = match self.fmt {
            Format::Pcap { big, nanos, link } => {
                let off = self.pos;
                if !self.fill_exact(0..16, "record header", true)? {
                    return Ok(None);
                }
                let b = &self.buf;
                let sec = u64::from(rd32(b, 0, big).unwrap_or(0));
                let frac = u64::from(rd32(b, 4, big).unwrap_or(0));
                let incl = rd32(b, 8, big).unwrap_or(0);
                let orig = rd32(b, 12, big).unwrap_or(0);
                if incl > MAX_CAPLEN {
                    return Err(self.format_err(
                        off + 8,
                        format!("captured length {incl} exceeds the {MAX_CAPLEN}-byte limit"),
                    ));
                }
                let len = incl as usize;
                self.fill_exact(ROOM..ROOM + len, "packet data", false)?;
                let ts = sec.saturating_mul(1_000_000_000).saturating_add(if nanos {
                    frac
                } else {
                    frac.saturating_mul(1000)
                });
                (ROOM, len, orig, ts, link)
            }
            Format::PcapNg { .. } => loop {
                match self.ng_block()? {
                    Block::Eof => return Ok(None),
                    Block::Other => continue,
                    Block::Packet {
                        start,
                        len,
                        orig,
                        ts_ns,
                        link,
                    } => break (start, len, orig, ts_ns, link),
                }
            },
        };
        self.last_ts = ts_ns;
        let (s, e, orig) = to_ethernet(link, &mut self.buf, start, len, orig);
        Ok(Some(Packet {
            ts_ns,
            data: &self.buf[s..e],
            orig_len: orig,
        }))
    }

    /// Reads one pcapng block. Packet bodies land at `buf[ROOM..]`.
    fn ng_block(&mut self) -> Result<Block, PcapError> {
        let off = self.pos;
        let Format::PcapNg {
            mut big,
            pending_shb,
            ..
        } = self.fmt
        else {
            return Ok(Block::Eof);
        };
        let btype = if pending_shb {
            if let Format::PcapNg { pending_shb, .. } = &mut self.fmt {
                *pending_shb = false;
            }
            NG_SHB
        } else {
            if !self.fill_exact(0..4, "block header", true)? {
                return Ok(Block::Eof);
            }
            u32_of([self.buf[0], self.buf[1], self.buf[2], self.buf[3]], big)
        };
        let blk_off = if btype == NG_SHB && pending_shb {
            off - 4
        } else {
            off
        };
        if btype == NG_SHB {
            // Length comes before the byte-order magic: read both, then decide.
            self.fill_exact(4..12, "section header block", false)?;
            let bom = [self.buf[8], self.buf[9], self.buf[10], self.buf[11]];
            big = match (u32::from_le_bytes(bom), u32::from_be_bytes(bom)) {
                (NG_BOM, _) => false,
                (_, NG_BOM) => true,
                _ => {
                    return Err(
                        self.format_err(blk_off + 8, "section header block: bad byte-order magic")
                    );
                }
            };
        } else {
            self.fill_exact(4..8, "block header", false)?;
        }
        let total = u32_of([self.buf[4], self.buf[5], self.buf[6], self.buf[7]], big);
        let min = if btype == NG_SHB { 28 } else { 12 };
        if total < min || !total.is_multiple_of(4) {
            return Err(self.format_err(
                blk_off + 4,
                format!("block type 0x{btype:08x}: bad block length {total}"),
            ));
        }
        let body_len = (total - 12) as usize;
        let buffered = matches!(btype, NG_SHB | NG_IDB | NG_PB | NG_SPB | NG_EPB);
        if !buffered {
            self.skip(body_len as u64, "block body")?;
            self.check_trailer(blk_off, total, big)?;
            return Ok(Block::Other);
        }
        if body_len > MAX_BLOCK {
            return Err(self.format_err(
                blk_off + 4,
                format!(
                    "block type 0x{btype:08x}: length {total} exceeds the {MAX_BLOCK}-byte limit"
                ),
            ));
        }
        if btype == NG_SHB {
            // The byte-order magic (4 bytes of the body) is at buf[8..12]; read the rest.
            self.fill_exact(ROOM + 4..ROOM + body_len, "section header block", false)?;
            self.check_trailer(blk_off, total, big)?;
            let major = rd16(&self.buf, ROOM + 4, big).unwrap_or(0);
            if major != 1 {
                return Err(
                    self.format_err(blk_off + 12, format!("unsupported pcapng version {major}"))
                );
            }
            self.fmt = Format::PcapNg {
                big,
                ifaces: Vec::new(),
                pending_shb: false,
            };
            return Ok(Block::Other);
        }
        self.fill_exact(ROOM..ROOM + body_len, "block body", false)?;
        self.check_trailer(blk_off, total, big)?;
        let body = &self.buf[ROOM..ROOM + body_len];
        let bad = |s: &Self, what: &str| {
            s.format_err(blk_off, format!("block type 0x{btype:08x}: {what}"))
        };
        match btype {
            NG_IDB => {
                let (Some(lt), Some(snap)) = (rd16(body, 0, big), rd32(body, 4, big)) else {
                    return Err(bad(self, "interface description block too short"));
                };
                let mut iface = Iface {
                    linktype: u32::from(lt),
                    snaplen: snap,
                    scale: TsScale::Mul(1000),
                    offset_s: 0,
                };
                let mut p = 8;
                while p + 4 <= body.len() {
                    let code = rd16(body, p, big).unwrap_or(0);
                    let olen = rd16(body, p + 2, big).unwrap_or(0) as usize;
                    if code == 0 {
                        break;
                    }
                    let Some(val) = body.get(p + 4..p + 4 + olen) else {
                        return Err(bad(self, "option overruns the block"));
                    };
                    match (code, olen) {
                        (9, 1) => {
                            iface.scale = TsScale::from_tsresol(val[0]).ok_or_else(|| {
                                bad(self, &format!("unsupported if_tsresol 0x{:02x}", val[0]))
                            })?;
                        }
                        (14, 8) => iface.offset_s = rd64(val, 0, big).unwrap_or(0) as i64,
                        _ => {}
                    }
                    p += 4 + olen.div_ceil(4) * 4;
                }
                let Format::PcapNg { ifaces, .. } = &mut self.fmt else {
                    return Ok(Block::Other);
                };
                if ifaces.len() >= MAX_IFACES {
                    let e = format!("more than {MAX_IFACES} interfaces in one section");
                    return Err(self.format_err(blk_off, e));
                }
                ifaces.push(iface);
                Ok(Block::Other)
            }
            NG_EPB | NG_PB => {
                let (ifid, hdr) = if btype == NG_EPB {
                    (rd32(body, 0, big), 20)
                } else {
                    (rd16(body, 0, big).map(u32::from), 20)
                };
                let (Some(ifid), Some(hi), Some(lo), Some(cap), Some(orig)) = (
                    ifid,
                    rd32(body, 4, big),
                    rd32(body, 8, big),
                    rd32(body, 12, big),
                    rd32(body, 16, big),
                ) else {
                    return Err(bad(self, "packet block too short"));
                };
                if cap > MAX_CAPLEN {
                    return Err(bad(
                        self,
                        &format!("captured length {cap} exceeds the {MAX_CAPLEN}-byte limit"),
                    ));
                }
                if cap as usize > body_len - hdr {
                    return Err(bad(
                        self,
                        &format!("captured length {cap} overruns the block (length {total})"),
                    ));
                }
                let iface = self.iface(ifid, blk_off)?;
                let units = (u64::from(hi) << 32) | u64::from(lo);
                let ns = iface.scale.to_ns(units);
                let ts_ns = if iface.offset_s >= 0 {
                    ns.saturating_add((iface.offset_s as u64).saturating_mul(1_000_000_000))
                } else {
                    ns.saturating_sub(iface.offset_s.unsigned_abs().saturating_mul(1_000_000_000))
                };
                let link = self.link_of(iface.linktype, blk_off)?;
                Ok(Block::Packet {
                    start: ROOM + hdr,
                    len: cap as usize,
                    orig,
                    ts_ns,
                    link,
                })
            }
            NG_SPB => {
                let Some(orig) = rd32(body, 0, big) else {
                    return Err(bad(self, "simple packet block too short"));
                };
                let iface = self.iface(0, blk_off)?;
                let mut cap = (orig as usize).min(body_len - 4);
                if iface.snaplen != 0 {
                    cap = cap.min(iface.snaplen as usize);
                }
                if cap > MAX_CAPLEN as usize {
                    return Err(bad(
                        self,
                        &format!("captured length {cap} exceeds the {MAX_CAPLEN}-byte limit"),
                    ));
                }
                let link = self.link_of(iface.linktype, blk_off)?;
                Ok(Block::Packet {
                    start: ROOM + 4,
                    len: cap,
                    orig,
                    ts_ns: self.last_ts,
                    link,
                })
            }
            _ => Ok(Block::Other),
        }
    }

    fn iface(&self, id: u32, blk_off: u64) -> Result<Iface, PcapError> {
        let Format::PcapNg { ifaces, .. } = &self.fmt else {
            return Err(self.format_err(blk_off, "not pcapng"));
        };
        ifaces.get(id as usize).copied().ok_or_else(|| {
            self.format_err(
                blk_off,
                format!(
                    "packet on interface {id}, but the section describes {} interface(s)",
                    ifaces.len()
                ),
            )
        })
    }

    fn link_of(&self, lt: u32, blk_off: u64) -> Result<Link, PcapError> {
        Link::from_number(lt).ok_or_else(|| PcapError::UnsupportedLinkType {
            path: self.path.clone(),
            offset: blk_off,
            linktype: lt,
            name: linktype_name(lt),
        })
    }

    /// Reads the trailing block length into `buf[8..12]` and compares it.
    fn check_trailer(&mut self, blk_off: u64, total: u32, big: bool) -> Result<(), PcapError> {
        let n = read_full(&mut self.rd, &mut self.buf[8..12]).map_err(|e| self.io_err(e))?;
        if n < 4 {
            return Err(PcapError::Truncated {
                path: self.path.clone(),
                offset: self.pos,
                what: "block trailer",
                need: 4,
                got: n as u64,
            });
        }
        self.pos += 4;
        let t = u32_of([self.buf[8], self.buf[9], self.buf[10], self.buf[11]], big);
        if t != total {
            return Err(self.format_err(
                blk_off,
                format!("block length {total} at the start but {t} at the end"),
            ));
        }
        Ok(())
    }
}

/// EtherType for an IP version nibble.
fn ethertype_of_version(b: Option<&u8>, fallback: u16) -> u16 {
    match b.map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86dd,
        _ => fallback,
    }
}

/// Rewrites the link header of `buf[start..start + len]` (with `start >= ROOM`) into
/// Ethernet in place; returns the new `(start, end, orig_len)`.
fn to_ethernet(
    link: Link,
    buf: &mut [u8],
    start: usize,
    len: usize,
    orig: u32,
) -> (usize, usize, u32) {
    let end = start + len;
    // Header to strip, EtherType, source MAC.
    let (strip, ethertype, src): (usize, u16, [u8; 6]) = match link {
        Link::Ethernet => return (start, end, orig),
        Link::Raw => (0, ethertype_of_version(buf.get(start), 0), [0; 6]),
        Link::Ipv4 => (0, ethertype_of_version(buf.get(start), 0x0800), [0; 6]),
        Link::Ipv6 => (0, ethertype_of_version(buf.get(start), 0x86dd), [0; 6]),
        Link::Sll | Link::Sll2 => {
            let (hl, proto_at, alen_at, addr_at) = if link == Link::Sll {
                (16, 14, 4, 6)
            } else {
                (20, 0, 11, 12)
            };
            if len < hl {
                (len, 0, [0; 6])
            } else {
                let h = &buf[start..start + hl];
                let proto = u16::from_be_bytes([h[proto_at], h[proto_at + 1]]);
                let alen = if link == Link::Sll {
                    u16::from_be_bytes([h[alen_at], h[alen_at + 1]])
                } else {
                    u16::from(h[alen_at])
                };
                let mut src = [0u8; 6];
                if alen == 6 {
                    src.copy_from_slice(&h[addr_at..addr_at + 6]);
                }
                (hl, proto, src)
            }
        }
        Link::Null | Link::Loop => {
            if len < 4 {
                (len, 0, [0; 6])
            } else {
                let b = [buf[start], buf[start + 1], buf[start + 2], buf[start + 3]];
                let af = if link == Link::Loop {
                    u32::from_be_bytes(b)
                } else {
                    // NULL is in the capturing host's byte order; families are small.
                    let le = u32::from_le_bytes(b);
                    if le <= 0xffff {
                        le
                    } else {
                        u32::from_be_bytes(b)
                    }
                };
                let et = match af {
                    2 => 0x0800,
                    10 | 24 | 28 | 30 => 0x86dd,
                    _ => 0,
                };
                (4, et, [0; 6])
            }
        }
    };
    // strip <= 20 and the new header is 14 bytes; start >= ROOM = 16, so s >= 2.
    let s = start + strip - 14;
    buf[s..s + 6].fill(0);
    buf[s + 6..s + 12].copy_from_slice(&src);
    buf[s + 12..s + 14].copy_from_slice(&ethertype.to_be_bytes());
    let orig = (i64::from(orig) + 14 - strip as i64).clamp(0, i64::from(u32::MAX)) as u32;
    (s, end.max(s + 14), orig)
}

/// Classic-pcap writer with nanosecond timestamps (magic `a1b23c4d`, little-endian,
/// snaplen [`WRITE_SNAPLEN`]). Buffered when built with [`PcapWriter::create`]; frames
/// longer than the snaplen are cut, with `orig_len` recording the full length.
pub struct PcapWriter<W: Write> {
    w: W,
    name: PathBuf,
    packets: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (truncates) `path` and writes the file header. Output is buffered (1 MiB).
    pub fn create(path: &Path, link: LinkType) -> Result<Self, PcapError> {
        let f = File::create(path).map_err(|source| PcapError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PcapWriter::with_name(BufWriter::with_capacity(1 << 20, f), link, path)
    }
}

impl<W: Write> PcapWriter<W> {
    /// A writer over any `io::Write` (wrap it in a `BufWriter` if it is unbuffered).
    pub fn new(w: W, link: LinkType) -> Result<Self, PcapError> {
        PcapWriter::with_name(w, link, Path::new("<pcap writer>"))
    }

    /// Like [`PcapWriter::new`], with a name for error messages.
    pub fn with_name(w: W, link: LinkType, name: &Path) -> Result<Self, PcapError> {
        let mut wr = PcapWriter {
            w,
            name: name.to_path_buf(),
            packets: 0,
        };
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&WRITE_SNAPLEN.to_le_bytes());
        h[20..24].copy_from_slice(&link.number().to_le_bytes());
        wr.put(&h)?;
        Ok(wr)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), PcapError> {
        self.w.write_all(b).map_err(|source| PcapError::Io {
            path: self.name.clone(),
            source,
        })
    }

    /// Appends one frame captured at `ts_ns` (nanoseconds since the Unix epoch; times
    /// after 2106, which do not fit the format's 32-bit seconds, are an error).
    pub fn write(&mut self, ts_ns: u64, frame: &[u8]) -> Result<(), PcapError> {
        let Ok(sec) = u32::try_from(ts_ns / 1_000_000_000) else {
            return Err(PcapError::Format {
                path: self.name.clone(),
                offset: self.packets,
                what: format!("timestamp {ts_ns} ns does not fit classic pcap"),
            });
        };
        let nsec = (ts_ns % 1_000_000_000) as u32;
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let cap = orig.min(WRITE_SNAPLEN);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&nsec.to_le_bytes());
        h[8..12].copy_from_slice(&cap.to_le_bytes());
        h[12..16].copy_from_slice(&orig.to_le_bytes());
        self.put(&h)?;
        self.put(&frame[..cap as usize])?;
        self.packets += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> Result<W, PcapError> {
        self.w.flush().map_err(|source| PcapError::Io {
            path: self.name.clone(),
            source,
        })?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: Vec<u8>) -> Result<PcapReader, PcapError> {
        let n = bytes.len() as u64;
        PcapReader::from_reader("mem", Box::new(io::Cursor::new(bytes)), n)
    }

    #[test]
    fn tsresol() {
        assert_eq!(TsScale::from_tsresol(6), Some(TsScale::Mul(1000)));
        assert_eq!(TsScale::from_tsresol(9), Some(TsScale::Mul(1)));
        assert_eq!(
            TsScale::from_tsresol(12).map(|s| s.to_ns(1_500_000)),
            Some(1_500)
        );
        // 2^-10 s units: 1024 units = 1 s.
        assert_eq!(
            TsScale::from_tsresol(0x8a).map(|s| s.to_ns(1024)),
            Some(1_000_000_000)
        );
        assert_eq!(TsScale::from_tsresol(39), None);
    }

    #[test]
    fn write_then_read() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).expect("header");
        w.write(1_700_000_000_123_456_789, &[1u8; 60])
            .expect("write");
        w.write(1_700_000_001_000_000_001, &[2u8; 1514])
            .expect("write");
        let bytes = w.finish().expect("finish");
        assert_eq!(&bytes[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        let mut r = reader(bytes).expect("open");
        let p = r.next_packet().expect("ok").expect("some");
        assert_eq!(
            (p.ts_ns, p.data.len(), p.orig_len),
            (1_700_000_000_123_456_789, 60, 60)
        );
        let p = r.next_packet().expect("ok").expect("some");
        assert_eq!(
            (p.ts_ns, p.data, p.orig_len),
            (1_700_000_001_000_000_001, &[2u8; 1514][..], 1514)
        );
        assert!(r.next_packet().expect("ok").is_none());
    }

    /// Frames are lent from one buffer allocated at open: no per-packet allocation.
    #[test]
    fn frames_live_in_the_reader_buffer() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).expect("header");
        for i in 0..1000u64 {
            w.write(i, &vec![i as u8; 60 + (i as usize % 1400)])
                .expect("write");
        }
        let mut r = reader(w.finish().expect("finish")).expect("open");
        let range = r.buf.as_ptr_range();
        let (mut n, mut lent) = (0, 0);
        while let Some(p) = r.next_packet().expect("read") {
            let (ptr, len) = (p.data.as_ptr(), p.data.len());
            assert_eq!(p.data, &vec![n as u8; 60 + (n % 1400)][..], "frame {n}");
            // Either in the reader's own buffer, or lent from the read buffer (which
            // still holds it until the next call).
            let rb = r.rd.buffer().as_ptr_range();
            if rb.contains(&ptr) {
                assert!(rb.end as usize - ptr as usize >= len);
                lent += 1;
            } else {
                assert!(range.contains(&ptr), "frame {n} outside both buffers");
            }
            n += 1;
        }
        assert_eq!(n, 1000);
        assert!(lent > 900, "most frames take the no-copy path: {lent}");
        assert_eq!(r.buf.as_ptr_range(), range);
    }

    #[test]
    fn bad_magic_and_empty() {
        let e = reader(vec![]).expect_err("empty");
        assert!(e.to_string().contains("mem"), "{e}");
        let e = reader(vec![1, 2, 3, 4, 5]).expect_err("magic");
        assert!(e.to_string().contains("magic 01020304"), "{e}");
    }

    #[test]
    fn conversions() {
        // RAW IPv6
        let mut b = vec![0u8; 64];
        b[ROOM] = 0x60;
        let (s, e, o) = to_ethernet(Link::Raw, &mut b, ROOM, 40, 40);
        assert_eq!((s, e, o), (ROOM - 14, ROOM + 40, 54));
        assert_eq!(&b[s + 12..s + 14], &[0x86, 0xdd]);
        // SLL with 6-byte address
        let mut b = vec![0u8; 64];
        let h = [0, 4, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        b[ROOM..ROOM + 16].copy_from_slice(&h);
        b[ROOM + 16] = 0x45;
        let (s, e, o) = to_ethernet(Link::Sll, &mut b, ROOM, 36, 36);
        assert_eq!((e - s, o), (34, 34));
        assert_eq!(&b[s..s + 14], &[0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 8, 0]);
        assert_eq!(b[s + 14], 0x45);
        // NULL, little-endian AF_INET6 (BSD 24)
        let mut b = vec![0u8; 64];
        b[ROOM..ROOM + 4].copy_from_slice(&24u32.to_le_bytes());
        let (s, _, _) = to_ethernet(Link::Null, &mut b, ROOM, 44, 44);
        assert_eq!(&b[s + 12..s + 14], &[0x86, 0xdd]);
        // Too short for its header: header-only frame with EtherType 0.
        let mut b = vec![0xffu8; 64];
        let (s, e, _) = to_ethernet(Link::Sll2, &mut b, ROOM, 3, 3);
        assert_eq!(e - s, 14);
        assert_eq!(&b[s..e], &[0u8; 14]);
    }
}
