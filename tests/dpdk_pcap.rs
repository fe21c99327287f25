//! DPDK binding on `net_pcap`: frames read from `rx_pcap=` and sent to `tx_pcap=` come out
//! byte for byte (checked by our reader and by scapy), and a vdev that fails to probe is a
//! clear [`DpdkError::NoSuchPort`]. One test function (one EAL per process); run as root.
#![cfg(feature = "dpdk")]

use std::path::Path;
use std::time::{Duration, Instant};

use flowgate::port::dpdk::{DpdkError, Eal, MbufBatch, Mempool, Port, PortConf};

/// Frames of assorted sizes with recognisable contents.
fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..100u32 {
        let len = [60usize, 64, 128, 511, 1000, 1514][i as usize % 6];
        let mut f: Vec<u8> = (0..len).map(|j| (j as u32 * 31 + i * 7) as u8).collect();
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..18].copy_from_slice(&i.to_be_bytes());
        out.push(f);
    }
    out
}

/// Classic little-endian pcap, microsecond timestamps, LINKTYPE_ETHERNET.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).expect("write pcap");
}

/// Frames of a classic pcap file (either byte order, µs or ns magic).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("read pcap");
    assert!(b.len() >= 24, "pcap header");
    let le = match &b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a pcap: magic {m:02x?}"),
    };
    let u32at = |o: usize| {
        let w = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= b.len() {
        let caplen = u32at(o + 8) as usize;
        let origlen = u32at(o + 12) as usize;
        assert_eq!(caplen, origlen, "no truncation");
        assert!(o + 16 + caplen <= b.len(), "record inside the file");
        out.push(b[o + 16..o + 16 + caplen].to_vec());
        o += 16 + caplen;
    }
    assert_eq!(o, b.len(), "no trailing bytes");
    out
}

/// The frames of `path` as hex, read by scapy (an independent reader), if scapy is installed.
fn scapy_hex(path: &Path) -> Option<Vec<String>> {
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import sys\nfrom scapy.all import rdpcap\nfor p in rdpcap(sys.argv[1]): print(bytes(p).hex())"])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "scapy unavailable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn dpdk_pcap_copy_and_probe_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.pcap");
    let output = dir.path().join("out.pcap");
    let want = frames();
    write_pcap(&input, &want);
    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "fg_test_pcap",
        "--log-level",
        "lib.eal:error",
        "--vdev",
        &format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            input.display(),
            output.display()
        ),
        "--vdev",
        &format!(
            "net_pcap1,rx_pcap={}",
            dir.path().join("missing.pcap").display()
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init despite the bad vdev (run as root)");

    // (3) the vdev whose rx_pcap does not exist failed to probe: a clear error.
    match Port::by_name(&eal, "net_pcap1") {
        Err(e @ DpdkError::NoSuchPort(_)) => assert!(e.to_string().contains("net_pcap1")),
        other => panic!("expected NoSuchPort, got {other:?}"),
    }
    assert!(matches!(
        Port::by_name(&eal, "net_nothing9"),
        Err(DpdkError::NoSuchPort(_))
    ));

    // (2) rx_pcap -> tx_pcap, byte for byte.
    let pool = Mempool::new(&eal, "fg_pcap_pool", 1023, 0, 2176, None).expect("pool");
    let mut port = Port::by_name(&eal, "net_pcap0").expect("net_pcap0");
    assert_eq!(port.info().expect("info").driver, "net_pcap");
    port.start(&PortConf::default(), &pool).expect("start");
    let mut seen = Vec::new();
    {
        let (mut rx, mut tx) = port.queues().expect("queues");
        let (rx, tx) = (&mut rx[0], &mut tx[0]);
        let mut batch = MbufBatch::new();
        // net_pcap signals no end of file: stop after an idle period.
        let start = Instant::now();
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_millis(300)
            && start.elapsed() < Duration::from_secs(20)
        {
            if rx.rx_burst(&mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            last = Instant::now();
            seen.extend(batch.iter().map(|m| m.data().to_vec()));
            assert!(batch.iter().all(|m| m.segments() == 1));
            let n = batch.len();
            assert_eq!(tx.tx_burst(&mut batch), n, "net_pcap writes every frame");
        }
    }
    let st = port.stats().expect("stats");
    port.close().expect("close flushes tx_pcap");
    assert_eq!(seen, want, "RX delivers the file's frames in order");
    assert_eq!(st.ipackets as usize, want.len());
    assert_eq!(st.opackets as usize, want.len());
    assert_eq!(pool.in_use_count(), 0, "no mbuf leaked");
    let got = read_pcap(&output);
    assert_eq!(got, want, "tx_pcap holds the same frames, byte for byte");
    match scapy_hex(&output) {
        Some(hex) => {
            let want_hex: Vec<String> = want
                .iter()
                .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .collect();
            assert_eq!(hex, want_hex, "scapy agrees");
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("scapy (/usr/bin/python3) is required in CI")
        }
        None => eprintln!("note: scapy missing, cross-check skipped"),
    }
    drop(pool);
    drop(eal);
}
