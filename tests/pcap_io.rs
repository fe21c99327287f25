//! `PcapReader`/`PcapWriter` against the public captures in `../shared/captures`, with
//! capinfos and tshark as independent oracles, plus hand-built pcap/pcapng files (both
//! byte orders, several sections, every supported link type) that tshark also reads, and
//! corrupt/truncated/random inputs that must fail cleanly.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::in_ci;
use flowgate::port::pcap::{LinkType, MAX_CAPLEN, PcapError, PcapReader, PcapWriter};
use proptest::prelude::*;

mod common;

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/captures");
const TSHARK: &str = "/usr/bin/tshark";
const CAPINFOS: &str = "/usr/bin/capinfos";

/// The capture files, or `None` (with a note) when they are absent outside CI.
fn captures() -> Option<Vec<PathBuf>> {
    let dir = Path::new(CAPTURES);
    if !dir.is_dir() {
        assert!(!in_ci(), "{CAPTURES} is missing and CI is set");
        eprintln!("note: {CAPTURES} missing, test skipped");
        return None;
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read captures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 150,
        "expected the 153 captures, found {}",
        v.len()
    );
    Some(v)
}

fn tool(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        !in_ci(),
        "{path} is missing and CI is set: apt-get install tshark"
    );
    eprintln!("note: {path} missing, oracle check skipped");
    false
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    ts_ns: u64,
    data: Vec<u8>,
    orig_len: u32,
}

fn read_all(path: &Path) -> Result<Vec<Frame>, PcapError> {
    let mut r = PcapReader::open(path)?;
    let mut v = Vec::new();
    while let Some(p) = r.next_packet()? {
        v.push(Frame {
            ts_ns: p.ts_ns,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
        });
    }
    assert_eq!(r.bytes_read(), r.total_bytes(), "{}", path.display());
    Ok(v)
}

fn read_bytes(bytes: &[u8]) -> Result<Vec<Frame>, PcapError> {
    let mut r = PcapReader::from_reader(
        "mem.pcap",
        Box::new(Cursor::new(bytes.to_vec())),
        bytes.len() as u64,
    )?;
    let mut v = Vec::new();
    while let Some(p) = r.next_packet()? {
        v.push(Frame {
            ts_ns: p.ts_ns,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
        });
    }
    Ok(v)
}

/// `tshark -T fields` rows for a file.
fn tshark_fields(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["-n".as_ref(), "-r".as_ref(), path.as_os_str()];
    args.push("-T".as_ref());
    args.push("fields".as_ref());
    for f in fields {
        args.push("-e".as_ref());
        args.push(f.as_ref());
    }
    run(TSHARK, &args)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// "1700000000.123456789" → ns.
fn epoch_ns(s: &str) -> u64 {
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    sec.parse::<u64>().expect("sec") * 1_000_000_000 + frac.parse::<u64>().expect("frac")
}

#[test]
fn every_capture_reads_to_the_end_and_matches_capinfos() {
    let Some(files) = captures() else { return };
    let mut counts = BTreeMap::new();
    for f in &files {
        let frames = read_all(f).unwrap_or_else(|e| panic!("{e}"));
        for fr in &frames {
            // (some captures hold frames cut below 14 bytes, e.g. zeek_trunc-hdr.pcap)
            assert!(fr.data.len() <= MAX_CAPLEN as usize + 14);
        }
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        counts.insert(name, frames.len());
    }
    if !tool(CAPINFOS) {
        return;
    }
    let mut args: Vec<&std::ffi::OsStr> = ["-M", "-c", "-T", "-r"]
        .iter()
        .map(|s| s.as_ref())
        .collect();
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = run(CAPINFOS, &args);
    let mut checked = 0;
    for line in out.lines() {
        let (file, n) = line.split_once('\t').expect("capinfos row");
        let name = Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        let n: usize = n.trim().parse().expect("count");
        assert_eq!(counts.get(name), Some(&n), "packet count of {name}");
        checked += 1;
    }
    assert_eq!(checked, files.len());
}

/// Per-frame timestamp, captured and original length against tshark, for every file.
#[test]
fn every_capture_matches_tshark_frame_by_frame() {
    let Some(files) = captures() else { return };
    if !tool(TSHARK) {
        return;
    }
    // Two tshark processes at a time (about 0.3 s per file).
    let (a, b) = files.split_at(files.len() / 2);
    std::thread::scope(|s| {
        for half in [a, b] {
            s.spawn(move || half.iter().for_each(|f| compare_with_tshark(f)));
        }
    });
}

fn compare_with_tshark(f: &Path) {
    let ours = read_all(f).unwrap_or_else(|e| panic!("{e}"));
    let rows = tshark_fields(
        f,
        &[
            "frame.time_epoch",
            "frame.cap_len",
            "frame.len",
            "frame.encap_type",
        ],
    );
    assert_eq!(rows.len(), ours.len(), "{}", f.display());
    for (i, (o, r)) in ours.iter().zip(&rows).enumerate() {
        let at = format!("{} frame {}", f.display(), i + 1);
        assert_eq!(o.ts_ns, epoch_ns(&r[0]), "{at}: timestamp");
        // Ethernet (encap 1) as is; raw IP (encap 7 in wiretap) gets 14 bytes more.
        let extra = if r[3] == "1" { 0 } else { 14 };
        assert_eq!(
            o.data.len(),
            r[1].parse::<usize>().expect("caplen") + extra,
            "{at}"
        );
        assert_eq!(
            o.orig_len as usize,
            r[2].parse::<usize>().expect("len") + extra,
            "{at}"
        );
    }
}

#[test]
fn pcapng_and_pcap_siblings_agree() {
    let Some(files) = captures() else { return };
    let mut pairs = 0;
    for ng in files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "pcapng"))
    {
        let pcap = ng.with_extension("pcap");
        if !pcap.exists() {
            continue;
        }
        let a = read_all(ng).unwrap_or_else(|e| panic!("{e}"));
        let b = read_all(&pcap).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.len(), b.len(), "{}", ng.display());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.data, y.data, "{}", ng.display());
            assert_eq!(x.orig_len, y.orig_len);
            assert_eq!(
                x.ts_ns / 1000,
                y.ts_ns / 1000,
                "{}: timestamp (µs)",
                ng.display()
            );
        }
        pairs += 1;
    }
    assert!(pairs >= 8, "only {pairs} pcapng/pcap pairs");
}

/// suricata_detect-ipopts.pcap is LINKTYPE_IPV4 (228): frames come out as Ethernet with
/// zero MACs and EtherType 0x0800; the IP header matches tshark's dissection.
#[test]
fn dlt_228_becomes_ethernet() {
    let Some(_) = captures() else { return };
    let f = Path::new(CAPTURES).join("suricata_detect-ipopts.pcap");
    let frames = read_all(&f).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frames.len(), 8);
    for fr in &frames {
        assert_eq!(
            &fr.data[..14],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]
        );
        assert_eq!(fr.data[14] >> 4, 4);
    }
    if !tool(TSHARK) {
        return;
    }
    let rows = tshark_fields(
        &f,
        &[
            "frame.encap_type",
            "ip.src",
            "ip.dst",
            "ip.hdr_len",
            "ip.opt.type",
        ],
    );
    assert_eq!(rows.len(), frames.len());
    for (fr, r) in frames.iter().zip(&rows) {
        assert_ne!(r[0], "1", "tshark sees raw IP, not Ethernet");
        let ip = |o: usize| {
            format!(
                "{}.{}.{}.{}",
                fr.data[o],
                fr.data[o + 1],
                fr.data[o + 2],
                fr.data[o + 3]
            )
        };
        assert_eq!(ip(26), r[1]);
        // With a source route (LSRR 131, SSRR 137) tshark shows the final destination.
        if !r[4].split(',').any(|t| t == "131" || t == "137") {
            assert_eq!(ip(30), r[2]);
        }
        assert_eq!(
            usize::from(fr.data[14] & 0xf) * 4,
            r[3].parse::<usize>().expect("hdr_len")
        );
    }
}

#[test]
fn write_read_round_trip_of_real_files() {
    let Some(_) = captures() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    for name in [
        "ndpi_zoom.pcapng",
        "tcpreplay_test.pcap",
        "suricata_detect-ipopts.pcap",
    ] {
        let src = read_all(&Path::new(CAPTURES).join(name)).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out.pcap");
        let mut w = PcapWriter::create(&out, LinkType::Ethernet).expect("create");
        for f in &src {
            w.write(f.ts_ns, &f.data).expect("write");
        }
        assert_eq!(w.packets(), src.len() as u64);
        w.finish().expect("finish");
        let back = read_all(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.len(), src.len());
        for (a, b) in src.iter().zip(&back) {
            assert_eq!((a.ts_ns, &a.data), (b.ts_ns, &b.data));
            // caplen == orig_len on write
            assert_eq!(b.orig_len as usize, b.data.len());
        }
        if tool(TSHARK) {
            // tshark agrees on what was written (ns magic, Ethernet).
            let rows = tshark_fields(&out, &["frame.time_epoch", "frame.len", "frame.encap_type"]);
            assert_eq!(rows.len(), src.len());
            for (a, r) in src.iter().zip(&rows) {
                assert_eq!(a.ts_ns, epoch_ns(&r[0]));
                assert_eq!(a.data.len(), r[1].parse::<usize>().expect("len"));
                assert_eq!(r[2], "1");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hand-built files.

/// A byte writer in one byte order.
struct W {
    big: bool,
    out: Vec<u8>,
}

impl W {
    fn new(big: bool) -> W {
        W {
            big,
            out: Vec::new(),
        }
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }
    fn pad4(&mut self) -> &mut Self {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self
    }
}

/// pcapng file builder; sections may switch byte order.
struct Ng {
    out: Vec<u8>,
    big: bool,
}

impl Ng {
    fn new() -> Ng {
        Ng {
            out: Vec::new(),
            big: false,
        }
    }
    fn block(&mut self, ty: u32, body: Vec<u8>) {
        let mut w = W::new(self.big);
        w.u32(ty)
            .u32(12 + body.len() as u32)
            .bytes(&body)
            .u32(12 + body.len() as u32);
        self.out.extend_from_slice(&w.out);
    }
    fn shb(&mut self, big: bool) {
        self.big = big;
        let mut b = W::new(big);
        b.u32(0x1a2b_3c4d)
            .u16(1)
            .u16(0)
            .u32(0xffff_ffff)
            .u32(0xffff_ffff);
        self.block(0x0a0d_0d0a, b.out);
    }
    fn idb(&mut self, lt: u16, snap: u32, tsresol: Option<u8>) {
        let mut b = W::new(self.big);
        b.u16(lt).u16(0).u32(snap);
        if let Some(r) = tsresol {
            b.u16(9).u16(1).bytes(&[r]).pad4();
        }
        // an option we ignore (if_name) and the end marker
        b.u16(2).u16(3).bytes(b"eth").pad4().u16(0).u16(0);
        self.block(1, b.out);
    }
    fn epb(&mut self, ifid: u32, ts: u64, data: &[u8]) {
        let mut b = W::new(self.big);
        b.u32(ifid)
            .u32((ts >> 32) as u32)
            .u32(ts as u32)
            .u32(data.len() as u32);
        b.u32(data.len() as u32).bytes(data).pad4();
        // opt_comment, end
        b.u16(1).u16(5).bytes(b"hello").pad4().u16(0).u16(0);
        self.block(6, b.out);
    }
    /// An SPB holding `data`, captured from a packet of `orig` bytes.
    fn spb(&mut self, data: &[u8], orig: usize) {
        let mut b = W::new(self.big);
        b.u32(orig as u32).bytes(data).pad4();
        self.block(3, b.out);
    }
    fn pb(&mut self, ifid: u16, ts: u64, data: &[u8]) {
        let mut b = W::new(self.big);
        b.u16(ifid)
            .u16(0)
            .u32((ts >> 32) as u32)
            .u32(ts as u32)
            .u32(data.len() as u32);
        b.u32(data.len() as u32).bytes(data).pad4();
        self.block(2, b.out);
    }
    fn other(&mut self, ty: u32, len: usize) {
        self.block(ty, vec![0u8; len]);
    }
}

/// An IPv4/UDP packet from 10.0.0.`s` to 10.0.1.`s`, `extra` bytes of payload.
fn ipv4(s: u8, extra: usize) -> Vec<u8> {
    let total = 28 + extra;
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&[10, 0, 0, s, 10, 0, 1, s]);
    let ck = flowgate::wire::checksum::checksum(&p);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x3a, 0, (8 + extra) as u8, 0, 0]);
    p.extend(std::iter::repeat_n(0xab, extra));
    p
}

/// An IPv6/UDP packet from 2001:db8::`s`.
fn ipv6(s: u8) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = s;
    p.extend_from_slice(&src);
    src[15] = s.wrapping_add(1);
    p.extend_from_slice(&src);
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x3a, 0, 8, 0, 0]);
    p
}

fn eth(src_last: u8, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, src_last, 0x08, 0x00];
    f.extend_from_slice(ip);
    f
}

fn sll(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0, 0, 0, 1, 0, 6, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01, 0, 0, 0x08, 0x00,
    ];
    f.extend_from_slice(ip);
    f
}

fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6];
    f.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02, 0, 0]);
    f.extend_from_slice(ip);
    f
}

fn family(af: u32, big: bool, ip: &[u8]) -> Vec<u8> {
    let mut f = if big {
        af.to_be_bytes()
    } else {
        af.to_le_bytes()
    }
    .to_vec();
    f.extend_from_slice(ip);
    f
}

const T0: u64 = 1_700_000_000;

/// Two sections (little- then big-endian), seven link types, four timestamp resolutions,
/// EPB/SPB/PB, and blocks to skip. Returns the bytes and the expected frames.
fn crafted_pcapng() -> (Vec<u8>, Vec<Frame>) {
    let mut ng = Ng::new();
    let mut want = Vec::new();
    let fr = |ts_ns: u64, data: Vec<u8>, orig: usize| Frame {
        ts_ns,
        orig_len: orig as u32,
        data,
    };
    ng.shb(false);
    ng.idb(1, 0, None); // if 0: Ethernet, µs
    ng.idb(101, 0, Some(9)); // if 1: RAW, ns
    ng.other(4, 16); // NRB
    let e = eth(1, &ipv4(1, 10));
    ng.epb(0, T0 * 1_000_000 + 250_000, &e);
    want.push(fr(T0 * 1_000_000_000 + 250_000_000, e.clone(), e.len()));
    let ip = ipv4(2, 0);
    ng.epb(1, T0 * 1_000_000_000 + 7, &ip);
    let mut x = vec![0u8; 12];
    x.extend_from_slice(&[0x08, 0x00]);
    x.extend_from_slice(&ip);
    want.push(fr(T0 * 1_000_000_000 + 7, x.clone(), x.len()));
    let ip6 = ipv6(3);
    ng.pb(1, T0 * 1_000_000_000 + 9, &ip6);
    let mut x = vec![0u8; 12];
    x.extend_from_slice(&[0x86, 0xdd]);
    x.extend_from_slice(&ip6);
    want.push(fr(T0 * 1_000_000_000 + 9, x.clone(), x.len()));
    ng.other(5, 20); // ISB
    ng.other(0x0000_0bad, 12); // custom
    // Section 2: big-endian; interface 0 has snaplen 40 (for the SPB) and 2^-10 s units.
    ng.shb(true);
    ng.idb(113, 40, Some(0x8a)); // if 0: SLL
    ng.idb(276, 0, Some(3)); // if 1: SLL2, ms
    ng.idb(0, 0, None); // if 2: NULL
    ng.idb(108, 0, None); // if 3: LOOP
    ng.idb(229, 0, None); // if 4: IPV6
    ng.idb(228, 0, None); // if 5: IPV4
    let ip = ipv4(4, 0);
    ng.epb(0, T0 * 1024 + 512, &sll(&ip));
    let mut x = vec![
        0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01, 0x08, 0x00,
    ];
    x.extend_from_slice(&ip);
    let ts_half = T0 * 1_000_000_000 + 500_000_000;
    want.push(fr(ts_half, x.clone(), x.len()));
    // SPB on interface 0: a 62-byte SLL frame cut to 40 by the snaplen; previous timestamp.
    let big = sll(&ipv4(5, 18));
    ng.spb(&big[..40], big.len());
    let mut x = vec![
        0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01, 0x08, 0x00,
    ];
    x.extend_from_slice(&big[16..40]);
    want.push(fr(ts_half, x, big.len() - 2));
    ng.other(0x0000_000a, 8); // DSB
    let ip = ipv4(6, 0);
    ng.epb(1, T0 * 1000 + 1, &sll2(&ip));
    let mut x = vec![
        0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02, 0x08, 0x00,
    ];
    x.extend_from_slice(&ip);
    want.push(fr(T0 * 1_000_000_000 + 1_000_000, x.clone(), x.len()));
    for (ifid, af, big, ip, et) in [
        (2u32, 2u32, false, ipv4(7, 0), [0x08, 0x00]),
        (2, 30, false, ipv6(8), [0x86, 0xdd]),
        (3, 2, true, ipv4(9, 0), [0x08, 0x00]),
        (3, 24, true, ipv6(10), [0x86, 0xdd]),
    ] {
        ng.epb(ifid, T0 * 1_000_000 + 3, &family(af, big, &ip));
        let mut x = vec![0u8; 12];
        x.extend_from_slice(&et);
        x.extend_from_slice(&ip);
        want.push(fr(T0 * 1_000_000_000 + 3000, x.clone(), x.len()));
    }
    for (ifid, ip, et) in [
        (4u32, ipv6(11), [0x86, 0xdd]),
        (5, ipv4(12, 0), [0x08, 0x00]),
    ] {
        ng.epb(ifid, T0 * 1_000_000 + 4, &ip);
        let mut x = vec![0u8; 12];
        x.extend_from_slice(&et);
        x.extend_from_slice(&ip);
        want.push(fr(T0 * 1_000_000_000 + 4000, x.clone(), x.len()));
    }
    (ng.out, want)
}

#[test]
fn crafted_pcapng_all_link_types_and_sections() {
    let (bytes, want) = crafted_pcapng();
    let got = read_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
    if !tool(TSHARK) {
        return;
    }
    // tshark reads the same file: same frame count, timestamps (SPB aside: it has none),
    // and source addresses where our frames carry them.
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("crafted.pcapng");
    std::fs::write(&p, &bytes).expect("write");
    let rows: Vec<Vec<String>> = tshark_fields(
        &p,
        &[
            "frame.time_epoch",
            "ip.src",
            "ipv6.src",
            "sll.src.eth",
            "frame.cap_len",
            "frame.encap_type",
        ],
    )
    .into_iter()
    // tshark 4 lists custom blocks as records without an encapsulation: not packets.
    .filter(|r| r.get(5).is_some_and(|e| !e.is_empty()))
    .collect();
    assert_eq!(rows.len(), want.len());
    for (i, (w, r)) in want.iter().zip(&rows).enumerate() {
        if i != 4 {
            assert_eq!(w.ts_ns, epoch_ns(&r[0]), "frame {}", i + 1);
        }
        match (w.data[12], w.data[13]) {
            (0x08, 0x00) => {
                let d = &w.data;
                assert_eq!(
                    format!("{}.{}.{}.{}", d[26], d[27], d[28], d[29]),
                    r[1],
                    "frame {}",
                    i + 1
                );
            }
            _ => {
                let src =
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&w.data[22..38]).expect("16"));
                assert_eq!(src.to_string(), r[2], "frame {}", i + 1);
            }
        }
        if !r[3].is_empty() {
            let m = &w.data[6..12];
            let mac = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            assert_eq!(mac, r[3]);
        }
    }
    // SPB truncated by the snaplen: tshark's caplen 40 (SLL) = ours 38 (Ethernet).
    assert_eq!(rows[4][4], "40");
    assert_eq!(want[4].data.len(), 38);
}

/// A classic pcap header + records in the given byte order and magic.
fn classic(big: bool, magic: u32, lt: u32, recs: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let mut w = W::new(big);
    w.u32(magic).u16(2).u16(4).u32(0).u32(0).u32(65535).u32(lt);
    for (s, f, d) in recs {
        w.u32(*s)
            .u32(*f)
            .u32(d.len() as u32)
            .u32(d.len() as u32)
            .bytes(d);
    }
    w.out
}

#[test]
fn classic_pcap_byte_orders_and_resolutions() {
    let e = eth(1, &ipv4(1, 4));
    for big in [false, true] {
        for (magic, frac, ns) in [
            (0xa1b2_c3d4u32, 123_456u32, 123_456_000u64),
            (0xa1b2_3c4d, 123_456_789, 123_456_789),
        ] {
            let b = classic(
                big,
                magic,
                1,
                &[(T0 as u32, frac, &e), (T0 as u32 + 1, 0, &e)],
            );
            let got = read_bytes(&b).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].ts_ns, T0 * 1_000_000_000 + ns);
            assert_eq!(got[1].ts_ns, (T0 + 1) * 1_000_000_000);
            assert_eq!(got[0].data, e);
        }
    }
    // LINUX_SLL in a big-endian µs file
    let ip = ipv4(2, 0);
    let b = classic(true, 0xa1b2_c3d4, 113, &[(1, 2, &sll(&ip))]);
    let got = read_bytes(&b).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        &got[0].data[6..14],
        &[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01, 0x08, 0x00]
    );
    assert_eq!(&got[0].data[14..], &ip[..]);
    assert_eq!(got[0].ts_ns, 1_000_002_000);
}

#[test]
fn unsupported_link_type_is_named() {
    let b = classic(false, 0xa1b2_c3d4, 105, &[]);
    let e = read_bytes(&b).expect_err("802.11");
    let m = e.to_string();
    assert!(
        m.contains("mem.pcap") && m.contains("105") && m.contains("IEEE802_11"),
        "{m}"
    );
    // pcapng: error at the first packet on that interface, not before.
    let mut ng = Ng::new();
    ng.shb(false);
    ng.idb(1, 0, None);
    ng.idb(9, 0, None);
    ng.epb(0, 1, &eth(1, &ipv4(1, 0)));
    ng.epb(1, 2, &[0xff, 0x03, 0, 0x21]);
    let mut r =
        PcapReader::from_reader("ppp.pcapng", Box::new(Cursor::new(ng.out)), 0).expect("open");
    assert!(r.next_packet().expect("first").is_some());
    let m = r.next_packet().expect_err("ppp").to_string();
    assert!(
        m.contains("ppp.pcapng") && m.contains("link type 9 (PPP)"),
        "{m}"
    );
}

#[test]
fn corrupt_files_are_errors() {
    let e = eth(1, &ipv4(1, 0));
    // caplen above 256 KiB
    let mut b = classic(false, 0xa1b2_c3d4, 1, &[]);
    let mut w = W::new(false);
    w.u32(0).u32(0).u32(MAX_CAPLEN + 1).u32(MAX_CAPLEN + 1);
    b.extend_from_slice(&w.out);
    let m = read_bytes(&b).expect_err("caplen").to_string();
    assert!(m.contains("byte offset 32") && m.contains("262145"), "{m}");
    // truncated final record: an error, as tcpdump reports "truncated dump file"
    let b = classic(false, 0xa1b2_c3d4, 1, &[(0, 0, &e), (0, 0, &e)]);
    for cut in [b.len() - 1, b.len() - e.len(), b.len() - e.len() - 3] {
        let err = read_bytes(&b[..cut]).expect_err("truncated");
        assert!(matches!(err, PcapError::Truncated { .. }), "{err}");
    }
    assert_eq!(
        read_bytes(&b[..b.len() - e.len() - 16])
            .expect("clean cut")
            .len(),
        1
    );
    // pcapng: bad block length, mismatched trailer, packet overrunning its block,
    // unknown interface
    let (good, _) = crafted_pcapng();
    let mut bad = good.clone();
    bad[4] = 13; // SHB length not a multiple of 4
    assert!(read_bytes(&bad).is_err());
    let mut ng = Ng::new();
    ng.shb(false);
    ng.idb(1, 0, None);
    let epb_at = ng.out.len();
    ng.epb(0, 1, &e);
    let base = ng.out.clone();
    let mut bad = base.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1; // trailer mismatch
    assert!(
        read_bytes(&bad)
            .unwrap_err()
            .to_string()
            .contains("at the end")
    );
    let mut bad = base.clone();
    bad[epb_at + 20..epb_at + 24].copy_from_slice(&1000u32.to_le_bytes()); // caplen
    assert!(
        read_bytes(&bad)
            .unwrap_err()
            .to_string()
            .contains("overruns")
    );
    let mut bad = base.clone();
    bad[epb_at + 8..epb_at + 12].copy_from_slice(&3u32.to_le_bytes()); // interface 3
    assert!(
        read_bytes(&bad)
            .unwrap_err()
            .to_string()
            .contains("interface 3")
    );
    let mut bad = base.clone();
    bad[epb_at + 4..epb_at + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes()); // huge block
    assert!(read_bytes(&bad).unwrap_err().to_string().contains("limit"));
    // a truncated pcapng is an error too, at any cut inside a block
    for cut in (28..base.len()).step_by(3) {
        if cut == 28 || cut == epb_at {
            continue; // block boundaries (after the SHB, after the IDB): clean EOF
        }
        let r = read_bytes(&base[..cut]);
        assert!(r.is_err() || cut == base.len(), "cut at {cut} gave {r:?}");
    }
}

/// Truncations of every real capture up to 64 KiB long, at 97 points each: never a panic;
/// frames before the cut are identical to the full read.
#[test]
fn truncated_real_files_never_panic() {
    let Some(files) = captures() else { return };
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        if bytes.len() > 64 * 1024 {
            continue;
        }
        let full = read_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        for k in 0..97 {
            let cut = bytes.len() * k / 97;
            let mut r = match PcapReader::from_reader(
                "cut",
                Box::new(Cursor::new(bytes[..cut].to_vec())),
                cut as u64,
            ) {
                Ok(r) => r,
                Err(_) => continue,
            };
            let mut i = 0;
            while let Ok(Some(p)) = r.next_packet() {
                assert_eq!(p.data, &full[i].data[..], "{} cut {cut}", f.display());
                i += 1;
            }
        }
    }
}

fn drain(bytes: Vec<u8>) {
    let n = bytes.len() as u64;
    if let Ok(mut r) = PcapReader::from_reader("fuzz", Box::new(Cursor::new(bytes)), n) {
        let mut k = 0;
        while let Ok(Some(p)) = r.next_packet() {
            assert!(p.data.len() <= MAX_CAPLEN as usize + 14);
            k += 1;
            assert!(k < 1_000_000);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048), kind in 0u8..4) {
        // Give the fuzzer a valid start half of the time.
        let head: &[u8] = match kind {
            0 => &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0],
            1 => &[0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a],
            _ => &[],
        };
        bytes.splice(0..0, head.iter().copied());
        drain(bytes);
    }

    #[test]
    fn mutated_crafted_pcapng_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let (mut bytes, _) = crafted_pcapng();
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        let n = bytes.len();
        bytes.truncate(cut % (n + 1));
        drain(bytes);
    }
}
