//! DPDK binding on `net_ring` / `net_null` vdevs: TX→RX loopback byte for byte, TX refusal
//! freed and counted, mempool accounting back to full, in-place header push/pop, worker
//! lcore launch, the symmetric RSS key, and the once-per-process EAL rule.
//!
//! One test function: the EAL can be initialised once per process. Needs root (or the
//! capabilities DPDK wants for `--no-huge`).
#![cfg(feature = "dpdk")]

use std::sync::atomic::{AtomicU64, Ordering};

use flowgate::port::dpdk::{
    BURST, DpdkError, Eal, Mbuf, MbufBatch, Mempool, PoolLayout, Port, PortConf, SYMMETRIC_RSS_KEY,
    current_lcore, toeplitz_v4,
};

fn eal_args() -> Vec<String> {
    [
        "-l",
        "0,1",
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "--no-telemetry",
        "--file-prefix",
        "fg_test_ring",
        "--log-level",
        "lib.eal:error",
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A recognisable frame: Ethernet header + `seq` in the payload, `len` bytes.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq as u8))
        .collect();
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn dpdk_ring_and_null() {
    let eal = Eal::init(&eal_args()).expect("EAL init (run as root)");
    assert!(matches!(
        Eal::init(&eal_args()),
        Err(DpdkError::EalAlreadyInitialised)
    ));
    assert_eq!(current_lcore(), Some(eal.main_lcore()));
    assert_eq!(eal.worker_lcores(), vec![1]);
    assert_eq!(eal.lcore_count(), 2);

    let pool = Mempool::new(&eal, "fg_ring_pool", 4095, 32, 2176, None).expect("pool");
    assert_eq!(pool.avail_count(), 4095);
    assert_eq!(pool.in_use_count(), 0);

    // ---- without hugepages the pool is packed, and its IO addresses are EAL's ----
    assert!(!eal.has_hugepages());
    assert_eq!(pool.layout(), PoolLayout::Packed);
    {
        let mut all = MbufBatch::new();
        let mut offsets = std::collections::HashSet::new();
        let mut held = Vec::new();
        for _ in 0..8 {
            assert!(pool.alloc_bulk(&mut all, BURST));
            all.drain_each(|m| held.push(m));
        }
        for m in &held {
            let p = m.data().as_ptr();
            // A NIC would DMA to the address EAL translates the frame's start to.
            let iova = m.data_iova();
            assert_eq!(iova, eal.virt2iova(p), "IOVA of {p:p}");
            if eal.iova_is_va() {
                assert_eq!(iova, p as u64);
            }
            offsets.insert(p as usize % 4096);
        }
        // DPDK's default puts one mbuf in each 4 KB page, all at one page offset; packed,
        // 256 consecutive mbufs (~2.4 KB apart) start at many offsets.
        assert!(offsets.len() > 32, "{} page offsets", offsets.len());
    }
    assert_eq!(pool.in_use_count(), 0);

    // ---- mbuf header push/pop in the headroom ----
    {
        let mut m = pool.alloc().expect("mbuf");
        assert_eq!(pool.in_use_count(), 1);
        assert!(m.is_empty());
        let f = frame(9, 60);
        assert!(m.set_data(&f));
        assert_eq!(m.data(), &f[..]);
        let head = m.headroom();
        assert_eq!(head, 128, "RTE_PKTMBUF_HEADROOM");
        // push a VLAN tag: move the MACs 4 bytes to the front, write 0x8100 TCI
        let new = m.prepend(4).expect("headroom");
        assert_eq!(new.len(), 4);
        let d = m.data_mut();
        d.copy_within(4..16, 0);
        d[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        assert_eq!(m.len(), 64);
        assert_eq!(&m.data()[16..], &f[12..]);
        // pop it again
        let d = m.data_mut();
        d.copy_within(0..12, 4);
        assert!(m.adj(4));
        assert_eq!(m.data(), &f[..]);
        assert!(
            m.prepend(head + 1).is_none(),
            "prepend beyond headroom refused"
        );
        assert_eq!(m.data(), &f[..]);
        assert!(!m.adj(61) && !m.trim(61));
        assert!(m.append(4).is_some() && m.trim(4));
        assert_eq!(m.data(), &f[..]);
        assert_eq!(m.segments(), 1);
    }
    assert_eq!(pool.in_use_count(), 0, "dropped mbuf returns to the pool");

    // ---- net_ring0: TX goes into the ring RX reads (one ring for both) ----
    let mut ring = Port::by_name(&eal, "net_ring0").expect("net_ring0");
    assert_eq!(ring.info().expect("info").driver, "net_ring");
    ring.start(
        &PortConf {
            rx_desc: 512,
            tx_desc: 512,
            ..PortConf::default()
        },
        &pool,
    )
    .expect("start ring");
    let _ = ring.mac_addr().expect("mac");
    assert!(ring.link().expect("link").up);
    {
        let (mut rxs, mut txs) = ring.queues().expect("queues");
        assert!(ring.queues().is_err(), "queues are handed out once");
        let (rx, tx) = (&mut rxs[0], &mut txs[0]);
        let mut sent_frames = Vec::new();
        let mut batch = MbufBatch::new();
        for seq in 0..BURST as u32 {
            let f = frame(seq, 60 + seq as usize * 13);
            let mut m = pool.alloc().expect("mbuf");
            assert!(m.set_data(&f));
            batch.push(m).expect("room");
            sent_frames.push(f);
        }
        assert!(batch.is_full());
        let extra = pool.alloc().expect("mbuf");
        let extra: Mbuf<'_> = batch
            .push(extra)
            .expect_err("a full batch gives the mbuf back");
        drop(extra);
        assert_eq!(tx.tx_burst(&mut batch), BURST);
        assert!(batch.is_empty());
        let mut got = MbufBatch::new();
        let mut received = Vec::new();
        while received.len() < BURST {
            let n = rx.rx_burst(&mut got);
            assert!(n > 0, "frames come back from the ring");
            received.extend(got.iter().map(|m| m.data().to_vec()));
            got.clear();
        }
        assert_eq!(received, sent_frames, "byte for byte, in order");

        // Fill the ring until it refuses.
        let mut accepted = 0usize;
        let mut offered = 0usize;
        for _ in 0..200 {
            assert!(pool.alloc_bulk(&mut batch, BURST));
            offered += BURST;
            accepted += tx.tx_burst(&mut batch);
            assert!(batch.is_empty(), "refused frames are freed");
        }
        assert!(accepted < offered, "the ring eventually refuses");
        assert_eq!(
            tx.refused(),
            (offered - accepted) as u64,
            "refusals counted"
        );
        assert_eq!(
            pool.in_use_count() as usize,
            accepted,
            "only what the ring holds is in use"
        );
        // try_tx_burst keeps refused frames
        assert!(pool.alloc_bulk(&mut batch, 4));
        assert_eq!(tx.try_tx_burst(&mut batch), 0);
        assert_eq!(batch.len(), 4);
        batch.clear();
        // Drain the ring.
        let mut drained = 0;
        loop {
            let n = rx.rx_burst(&mut got);
            if n == 0 {
                break;
            }
            drained += n;
            got.retain(|m| m.len() > 1_000_000); // frees all
            assert!(got.is_empty());
        }
        assert_eq!(drained, accepted);
        let st = ring.stats().expect("stats");
        assert_eq!(st.opackets as usize, BURST + accepted);
        assert_eq!(st.ipackets as usize, BURST + accepted);
        // net_ring does not count refusals in oerrors (checked: 0); TxQueue::refused does.
    }
    assert_eq!(pool.in_use_count(), 0, "no mbuf leaked");
    assert_eq!(pool.avail_count(), 4095);
    ring.close().expect("close");

    // ---- net_null0 -> net_null1 MAC swap on worker lcore 1 ----
    let mut n0 = Port::by_name(&eal, "net_null0").expect("net_null0");
    let mut n1 = Port::by_name(&eal, "net_null1").expect("net_null1");
    let conf = PortConf::default();
    assert_eq!(
        n0.start(&conf, &pool).expect("start"),
        0,
        "net_null with one queue: no RSS"
    );
    n1.start(&conf, &pool).expect("start");
    let forwarded = AtomicU64::new(0);
    let worker_lcore = AtomicU64::new(u64::MAX);
    {
        let (mut rx0, _tx0) = n0.queues().expect("q");
        let (_rx1, mut tx1) = n1.queues().expect("q");
        let mut rx = rx0.pop().expect("rxq");
        let mut tx = tx1.pop().expect("txq");
        eal.scope(|s| {
            s.launch(1, || {
                worker_lcore.store(
                    current_lcore().map_or(u64::MAX, u64::from),
                    Ordering::Relaxed,
                );
                let mut b = MbufBatch::new();
                let mut n = 0u64;
                while n < 100_000 {
                    if rx.rx_burst(&mut b) == 0 {
                        continue;
                    }
                    for m in b.iter_mut() {
                        let d = m.data_mut();
                        if d.len() >= 12 {
                            let (a, c) = d.split_at_mut(6);
                            a.swap_with_slice(&mut c[..6]);
                        }
                    }
                    n += tx.tx_burst(&mut b) as u64;
                }
                forwarded.store(n, Ordering::Relaxed);
            })
            .expect("launch");
            assert!(
                s.launch(0, || {}).is_err(),
                "the main lcore cannot be launched on"
            );
        })
        .expect("scope");
        let panicked = eal.scope(|s| {
            s.launch(1, || panic!("worker panic (expected by the test)"))
                .expect("launch");
        });
        assert!(matches!(
            panicked,
            Err(DpdkError::WorkerPanicked { lcore: 1 })
        ));
    }
    assert_eq!(
        worker_lcore.load(Ordering::Relaxed),
        1,
        "closure ran on lcore 1"
    );
    let fwd = forwarded.load(Ordering::Relaxed);
    assert!(fwd >= 100_000);
    assert_eq!(n1.stats().expect("stats").opackets, fwd);
    assert!(n0.stats().expect("stats").ipackets >= fwd);
    // net_null offers RSS: several RX queues with the symmetric key.
    let rss_conf = PortConf {
        n_rxq: 2,
        n_txq: 2,
        ..PortConf::default()
    };
    let hf = n0.start(&rss_conf, &pool).expect("restart with 2 queues");
    assert_ne!(hf, 0, "RSS in effect");
    assert_eq!(n0.rss_hf(), hf);
    let (key, got_hf) = n0.rss_conf().expect("rss conf");
    assert_eq!(key, SYMMETRIC_RSS_KEY, "the PMD holds our key");
    assert_eq!(got_hf, hf);
    {
        let (rxs, txs) = n0.queues().expect("queues");
        assert_eq!((rxs.len(), txs.len()), (2, 2));
        assert_eq!(rxs[1].id(), (n0.id(), 1));
    }
    drop(n0);
    drop(n1);
    assert_eq!(
        pool.in_use_count(),
        0,
        "closing the ports returns their mbufs"
    );

    // ---- symmetric Toeplitz key ----
    let (a, b) = (0xc0a8_0001u32, 0x0a00_0002u32);
    for (sp, dp) in [(1234u16, 80u16), (40000, 443), (53, 53)] {
        assert_eq!(
            toeplitz_v4(&SYMMETRIC_RSS_KEY, a, b, sp, dp),
            toeplitz_v4(&SYMMETRIC_RSS_KEY, b, a, dp, sp)
        );
    }
    let mut asym = SYMMETRIC_RSS_KEY;
    asym[0] = 0x2c;
    asym[5] = 0x17;
    assert_ne!(
        toeplitz_v4(&asym, a, b, 1234, 80),
        toeplitz_v4(&asym, b, a, 80, 1234),
        "control: other keys are not symmetric"
    );
    drop(pool);
    drop(eal);
}
