//! DPDK binding on `net_af_packet` over a veth pair (`fgdpv0` <-> `fgdpv1`): frames sent
//! on one port arrive byte for byte on the other; a port's MTU set at start reaches the
//! interface (and one the device cannot take is refused). Needs root (creates and deletes the
//! veth pair); skips with a note when `ip` cannot create it. One EAL per process.
#![cfg(feature = "dpdk")]

use std::process::Command;
use std::time::{Duration, Instant};

use flowgate::port::dpdk::{Eal, MbufBatch, Mempool, Port, PortConf};

const A: &str = "fgdpv0";
const B: &str = "fgdpv1";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

struct Veth;
impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", A]);
    }
}

#[test]
fn dpdk_af_packet_veth() {
    let _ = ip(&["link", "del", A]);
    if !ip(&["link", "add", A, "type", "veth", "peer", "name", B]) {
        eprintln!("note: cannot create a veth pair (not root?), test skipped");
        return;
    }
    let _veth = Veth;
    for i in [A, B] {
        // No IPv6 autoconf chatter on the pair.
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{i}.disable_ipv6=1")])
            .status();
        assert!(ip(&["link", "set", i, "up"]));
    }
    let args: Vec<String> = [
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "fg_test_afp",
        "--log-level",
        "lib.eal:error",
        "--vdev",
        &format!("net_af_packet0,iface={A}"),
        "--vdev",
        &format!("net_af_packet1,iface={B}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&args).expect("EAL init (run as root)");
    let pool = Mempool::new(&eal, "fg_afp_pool", 2047, 32, 2176, None).expect("pool");
    let mut pa = Port::by_name(&eal, "net_af_packet0").expect("port a");
    let mut pb = Port::by_name(&eal, "net_af_packet1").expect("port b");
    pa.start(&PortConf::default(), &pool).expect("start a");
    pb.start(&PortConf::default(), &pool).expect("start b");
    let want: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            let len = 60 + (i as usize * 37) % 1400;
            let mut f: Vec<u8> = (0..len).map(|j| (j as u32 ^ (i * 13)) as u8).collect();
            f[..6].copy_from_slice(&[0x02, 0xfd, 0, 0, 0, 2]);
            f[6..12].copy_from_slice(&[0x02, 0xfd, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
            f[14..18].copy_from_slice(&i.to_be_bytes());
            f
        })
        .collect();
    let mut got = Vec::new();
    {
        let (_ra, mut ta) = pa.queues().expect("queues a");
        let (mut rb, _tb) = pb.queues().expect("queues b");
        let (ta, rb) = (&mut ta[0], &mut rb[0]);
        let mut batch = MbufBatch::new();
        for chunk in want.chunks(16) {
            for f in chunk {
                let mut m = pool.alloc().expect("mbuf");
                assert!(m.set_data(f));
                batch.push(m).expect("room");
            }
            assert_eq!(ta.tx_burst(&mut batch), chunk.len());
        }
        let start = Instant::now();
        while got.len() < want.len() && start.elapsed() < Duration::from_secs(5) {
            if rb.rx_burst(&mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // Keep only our frames (the kernel may add its own on a fresh link).
            got.extend(
                batch
                    .iter()
                    .map(|m| m.data().to_vec())
                    .filter(|d| d.len() >= 14 && d[12..14] == [0x88, 0xb5]),
            );
            batch.clear();
        }
    }
    assert_eq!(
        got, want,
        "veth delivers the frames byte for byte, in order"
    );
    assert_eq!(pa.stats().expect("stats").opackets, want.len() as u64);

    // The port's MTU: restarted with `mtu` 1400, net_af_packet sets the interface's
    // (the kernel's record, `ip link`, says so), and a frame of 1400 bytes after the
    // Ethernet header still crosses whole.
    let lower = PortConf {
        mtu: Some(1400),
        ..PortConf::default()
    };
    pa.start(&lower, &pool).expect("restart a with mtu 1400");
    pb.start(&lower, &pool).expect("restart b with mtu 1400");
    for i in [A, B] {
        let o = Command::new("ip")
            .args(["link", "show", i])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(s.contains(" mtu 1400 "), "{i}: {s}");
    }
    let mut f: Vec<u8> = (0..1414u32).map(|j| (j * 7) as u8).collect();
    f[..14].copy_from_slice(&want[0][..14]);
    {
        let (_ra, mut ta) = pa.queues().expect("queues a");
        let (mut rb, _tb) = pb.queues().expect("queues b");
        let mut batch = MbufBatch::new();
        let mut m = pool.alloc().expect("mbuf");
        assert!(m.set_data(&f));
        batch.push(m).expect("room");
        assert_eq!(ta[0].tx_burst(&mut batch), 1);
        let start = Instant::now();
        let mut got = None;
        while got.is_none() && start.elapsed() < Duration::from_secs(5) {
            if rb[0].rx_burst(&mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            got = batch
                .iter()
                .map(|m| m.data().to_vec())
                .find(|d| d.len() >= 14 && d[12..14] == [0x88, 0xb5]);
            batch.clear();
        }
        assert_eq!(got.as_deref(), Some(&f[..]), "the full-size frame, whole");
    }
    // An MTU the device cannot take (net_af_packet here refused 4000 and 9000) is
    // refused, by name.
    let e = pa
        .start(
            &PortConf {
                mtu: Some(9000),
                ..PortConf::default()
            },
            &pool,
        )
        .expect_err("mtu 9000 on net_af_packet");
    assert!(e.to_string().contains("rte_eth_dev_set_mtu"), "{e}");
    drop((pa, pb));
    assert_eq!(pool.in_use_count(), 0, "no mbuf leaked");
}
