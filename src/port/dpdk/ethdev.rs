//! Ethernet ports: lookup by name, setup (queues, RSS), RX/TX queues, stats, link.
//!
//! Layer: `port::dpdk`. A [`Port`] is found by device name ([`Port::by_name`]) because a
//! vdev that fails to probe leaves `rte_eal_init` successful with no port: port numbers
//! cannot be trusted. [`Port::start`] configures and starts it; [`Port::queues`] then hands
//! out each RX/TX queue exactly once, as [`RxQueue`]/[`TxQueue`] borrowing the port (so it
//! cannot be stopped or closed while a queue is in use). Queues are `Send`: move each to the
//! worker lcore that owns it. What a TX queue refuses is freed and counted, never leaked.

use std::ffi::CString;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use super::mbuf::{BURST, MbufBatch};
use super::{DpdkError, Eal, Mempool, check, ffi};

/// A symmetric Toeplitz key: the 16-bit pattern `0x6d5a` repeated. With it the hash of
/// (src, dst, sport, dport) equals that of (dst, src, dport, sport), so both directions of
/// a flow reach the same RX queue (Woo & Park, "Scalable TCP Session Monitoring with
/// Symmetric Receive-side Scaling").
pub const SYMMETRIC_RSS_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Software Toeplitz hash (DPDK's `rte_softrss`) of an IPv4 4-tuple with a 40-byte key,
/// as a NIC computes it for RSS. Used to check keys, not on the packet path.
pub fn toeplitz_v4(key: &[u8; 40], src: u32, dst: u32, sport: u16, dport: u16) -> u32 {
    let words = [src, dst, (u32::from(sport) << 16) | u32::from(dport)];
    // SAFETY: words has 3 u32s, key 40 bytes, as rte_softrss reads; no EAL state involved.
    unsafe { ffi::fg_softrss(words.as_ptr(), 3, key.as_ptr()) }
}

/// How to set a port up.
#[derive(Clone, Debug)]
pub struct PortConf {
    /// RX queues (one per worker).
    pub n_rxq: u16,
    /// TX queues (one per worker).
    pub n_txq: u16,
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per queue.
    pub tx_desc: u16,
    /// RSS key when `n_rxq > 1` (hashes IP/TCP/UDP); `None` keeps the PMD's key.
    pub rss_key: Option<[u8; 40]>,
    /// Accept frames for any destination MAC.
    pub promiscuous: bool,
    /// The MTU to set (`rte_eth_dev_set_mtu`); `None` keeps the PMD's. The pool's mbufs
    /// must hold a frame of it (no scatter).
    pub mtu: Option<u16>,
}

impl Default for PortConf {
    fn default() -> Self {
        PortConf {
            n_rxq: 1,
            n_txq: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rss_key: Some(SYMMETRIC_RSS_KEY),
            promiscuous: true,
            mtu: None,
        }
    }
}

/// What the PMD reports about a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub reta_size: u16,
    pub hash_key_size: u8,
    /// `RTE_ETH_RSS_*` hash functions offered.
    pub rss_offloads: u64,
}

/// Port counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the NIC dropped because RX queues were full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

impl Link {
    /// The speed in Mbps when the link is up and the driver knows it (not
    /// RTE_ETH_SPEED_NUM_NONE, 0, nor RTE_ETH_SPEED_NUM_UNKNOWN, `u32::MAX`; virtual
    /// devices often do not).
    pub fn speed(&self) -> Option<u32> {
        (self.up && self.speed_mbps != 0 && self.speed_mbps != u32::MAX).then_some(self.speed_mbps)
    }
}

impl std::fmt::Display for Link {
    /// `down`, or `up, 10000 Mbps, full duplex` (the speed left out when the driver does
    /// not know it, as virtual devices often do not).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.up {
            return f.write_str("down");
        }
        f.write_str("up")?;
        if let Some(mbps) = self.speed() {
            write!(f, ", {mbps} Mbps")?;
        }
        f.write_str(if self.full_duplex {
            ", full duplex"
        } else {
            ", half duplex"
        })
    }
}

/// One ethdev port. Dropping it stops and closes it.
#[derive(Debug)]
pub struct Port<'a> {
    id: u16,
    name: String,
    started: bool,
    closed: bool,
    n_rxq: u16,
    n_txq: u16,
    rss_hf: u64,
    queues_taken: AtomicBool,
    _life: PhantomData<&'a ()>,
}

impl<'a> Port<'a> {
    /// The port whose device name is `name` (e.g. `net_null0`, `net_pcap0`, `0000:03:00.0`).
    ///
    /// # Errors
    /// [`DpdkError::NoSuchPort`] when no such port exists, which is also what a vdev that
    /// failed to probe looks like.
    pub fn by_name(_eal: &'a Eal, name: &str) -> Result<Self, DpdkError> {
        let cname =
            CString::new(name).map_err(|_| DpdkError::InvalidArg(format!("port name {name:?}")))?;
        let mut id = 0u16;
        // SAFETY: EAL is initialised; cname is NUL-terminated; id is a valid out pointer.
        let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::NoSuchPort(name.to_owned()));
        }
        Ok(Port {
            id,
            name: name.to_owned(),
            started: false,
            closed: false,
            n_rxq: 0,
            n_txq: 0,
            rss_hf: 0,
            queues_taken: AtomicBool::new(false),
            _life: PhantomData,
        })
    }

    /// DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Driver capabilities.
    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        let mut i = std::mem::MaybeUninit::<ffi::FgPortInfo>::uninit();
        // SAFETY: port id is valid; fg_port_info fully writes *i on success.
        let i = unsafe {
            check(
                "rte_eth_dev_info_get",
                ffi::fg_port_info(self.id, i.as_mut_ptr()),
            )?;
            i.assume_init()
        };
        let end = i
            .driver
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(i.driver.len());
        Ok(PortInfo {
            driver: String::from_utf8_lossy(&i.driver[..end]).into_owned(),
            max_rx_queues: i.max_rx_queues,
            max_tx_queues: i.max_tx_queues,
            reta_size: i.reta_size,
            hash_key_size: i.hash_key_size,
            rss_offloads: i.flow_type_rss_offloads,
        })
    }

    /// Configures `conf.n_rxq`/`n_txq` queues (RX buffers from `pool`), RSS over IP/TCP/UDP
    /// with `conf.rss_key` when there are several RX queues and the PMD offers RSS, and
    /// starts the port. Returns the RSS hash functions in effect (0: no RSS; a single-queue
    /// port, or a PMD without RSS such as most vdevs, needs a software dispatcher).
    ///
    /// # Errors
    /// [`DpdkError::Call`] naming the DPDK call that refused (too many queues, bad key size...).
    pub fn start(&mut self, conf: &PortConf, pool: &'a Mempool<'_>) -> Result<u64, DpdkError> {
        if self.closed {
            return Err(DpdkError::InvalidArg(format!(
                "port {} is closed",
                self.name
            )));
        }
        if self.started {
            self.stop()?;
        }
        if conf.n_rxq == 0 || conf.n_txq == 0 {
            return Err(DpdkError::InvalidArg(
                "a port needs at least one RX and one TX queue".into(),
            ));
        }
        let (key, key_len) = match &conf.rss_key {
            Some(k) => (k.as_ptr(), 40u8),
            None => (std::ptr::null(), 0u8),
        };
        let mut applied = 0u64;
        // SAFETY: id is a valid port; key points at key_len bytes or is null; shim only reads it
        // during the call (rte_eth_dev_configure copies the key).
        unsafe {
            let hf = ffi::fg_rss_hf_default();
            check(
                "rte_eth_dev_configure",
                ffi::fg_port_configure(
                    self.id,
                    conf.n_rxq,
                    conf.n_txq,
                    key,
                    key_len,
                    hf,
                    &mut applied,
                ),
            )?;
        }
        if let Some(mtu) = conf.mtu {
            // SAFETY: valid, configured port (DPDK checks the MTU against the device's
            // limits and refuses it with an error code).
            check("rte_eth_dev_set_mtu", unsafe {
                ffi::rte_eth_dev_set_mtu(self.id, mtu)
            })?;
        }
        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(self.id) };
        let socket = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY as unsigned
        for q in 0..conf.n_rxq {
            // SAFETY: configured port, q < n_rxq, pool is a live pkt pool that outlives the
            // port ('a), NULL rxconf means the PMD's defaults.
            check("rte_eth_rx_queue_setup", unsafe {
                ffi::fg_rx_queue_setup(self.id, q, conf.rx_desc, socket, pool.as_ptr())
            })?;
        }
        for q in 0..conf.n_txq {
            // SAFETY: configured port, q < n_txq.
            check("rte_eth_tx_queue_setup", unsafe {
                ffi::fg_tx_queue_setup(self.id, q, conf.tx_desc, socket)
            })?;
        }
        if conf.promiscuous {
            // SAFETY: valid port. Some PMDs cannot (e.g. pcap files): not an error.
            let _ = unsafe { ffi::rte_eth_promiscuous_enable(self.id) };
        }
        // SAFETY: valid, configured port with all queues set up.
        check("rte_eth_dev_start", unsafe {
            ffi::rte_eth_dev_start(self.id)
        })?;
        self.started = true;
        if let (Some(k), true) = (&conf.rss_key, applied != 0) {
            // Some PMDs (net_null among them) ignore the key given to rte_eth_dev_configure;
            // set it again explicitly. A PMD without the call keeps whatever it has.
            // SAFETY: valid, started port; k is 40 bytes, copied by DPDK.
            let rc = unsafe { ffi::fg_port_rss_update(self.id, k.as_ptr(), applied) };
            if rc != 0 && rc != -95 {
                // -ENOTSUP is fine; anything else is a refusal worth reporting.
                check("rte_eth_dev_rss_hash_update", rc)?;
            }
        }
        self.n_rxq = conf.n_rxq;
        self.n_txq = conf.n_txq;
        self.rss_hf = applied;
        self.queues_taken.store(false, Ordering::SeqCst);
        Ok(applied)
    }

    /// The RX and TX queues of a started port, each handed out once per start.
    ///
    /// # Errors
    /// When the port is not started or the queues were already taken.
    pub fn queues(&self) -> Result<(Vec<RxQueue<'_>>, Vec<TxQueue<'_>>), DpdkError> {
        if !self.started {
            return Err(DpdkError::InvalidArg(format!(
                "port {} is not started",
                self.name
            )));
        }
        if self.queues_taken.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::InvalidArg(format!(
                "queues of port {} already taken",
                self.name
            )));
        }
        let rx = (0..self.n_rxq)
            .map(|q| RxQueue {
                port: self.id,
                queue: q,
                _port: PhantomData,
            })
            .collect();
        let tx = (0..self.n_txq)
            .map(|q| TxQueue {
                port: self.id,
                queue: q,
                refused: 0,
                _port: PhantomData,
            })
            .collect();
        Ok((rx, tx))
    }

    /// RSS hash functions in effect after [`Port::start`] (0: none).
    pub fn rss_hf(&self) -> u64 {
        self.rss_hf
    }

    /// The RSS key and hash functions the PMD reports (`rte_eth_dev_rss_hash_conf_get`).
    ///
    /// # Errors
    /// When the PMD has no RSS (most vdevs) or a key longer than 40 bytes.
    pub fn rss_conf(&self) -> Result<([u8; 40], u64), DpdkError> {
        let mut key = [0u8; 40];
        let mut hf = 0u64;
        // SAFETY: valid port; key has room for the 40 bytes the shim allows DPDK to write.
        let rc = unsafe { ffi::fg_port_rss_key(self.id, key.as_mut_ptr(), &mut hf) };
        check("rte_eth_dev_rss_hash_conf_get", rc)?;
        if rc != 40 {
            return Err(DpdkError::InvalidArg(format!(
                "port {} has a {rc}-byte RSS key",
                self.name
            )));
        }
        Ok((key, hf))
    }

    /// The port's MTU (`rte_eth_dev_get_mtu`).
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut m = 0u16;
        // SAFETY: valid port; m is a live u16 DPDK writes once.
        check("rte_eth_dev_get_mtu", unsafe {
            ffi::rte_eth_dev_get_mtu(self.id, &mut m)
        })?;
        Ok(m)
    }

    /// The port's MAC address.
    pub fn mac_addr(&self) -> Result<[u8; 6], DpdkError> {
        let mut m = [0u8; 6];
        // SAFETY: valid port; m has room for 6 bytes.
        check("rte_eth_macaddr_get", unsafe {
            ffi::fg_port_macaddr(self.id, m.as_mut_ptr())
        })?;
        Ok(m)
    }

    /// Port counters. Safe to call while workers use the queues.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = [0u64; 8];
        // SAFETY: valid port; s has room for the 8 counters the shim writes.
        check("rte_eth_stats_get", unsafe {
            ffi::fg_port_stats(self.id, s.as_mut_ptr())
        })?;
        Ok(PortStats {
            ipackets: s[0],
            opackets: s[1],
            ibytes: s[2],
            obytes: s[3],
            imissed: s[4],
            ierrors: s[5],
            oerrors: s[6],
            rx_nombuf: s[7],
        })
    }

    /// Zeroes the port counters.
    pub fn reset_stats(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        check("rte_eth_stats_reset", unsafe {
            ffi::rte_eth_stats_reset(self.id)
        })
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<Link, DpdkError> {
        let (mut speed, mut up, mut fd) = (0u32, 0i32, 0i32);
        // SAFETY: valid port; out pointers are valid.
        check("rte_eth_link_get_nowait", unsafe {
            ffi::fg_port_link(self.id, &mut speed, &mut up, &mut fd)
        })?;
        Ok(Link {
            up: up != 0,
            speed_mbps: speed,
            full_duplex: fd != 0,
        })
    }

    /// Stops the port (RX/TX halt; queues must be set up again by [`Port::start`]).
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if self.started {
            self.started = false;
            // SAFETY: valid port; `&mut self` proves no queue borrow is alive.
            check("rte_eth_dev_stop", unsafe {
                ffi::rte_eth_dev_stop(self.id)
            })?;
        }
        Ok(())
    }

    /// Stops and closes the port (releases its queues and the mbufs they hold).
    pub fn close(mut self) -> Result<(), DpdkError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), DpdkError> {
        if self.closed {
            return Ok(());
        }
        let stopped = self.stop();
        self.closed = true;
        // SAFETY: valid, stopped port with no queue borrowed.
        check("rte_eth_dev_close", unsafe {
            ffi::rte_eth_dev_close(self.id)
        })?;
        stopped
    }
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

/// RX queue `queue` of a started port; `Send`, so it can move to the worker that owns it.
#[derive(Debug)]
pub struct RxQueue<'q> {
    port: u16,
    queue: u16,
    _port: PhantomData<&'q ()>,
}

impl<'q> RxQueue<'q> {
    /// Port id and queue index.
    pub fn id(&self) -> (u16, u16) {
        (self.port, self.queue)
    }

    /// Receives into the free slots of `batch`; returns how many frames arrived.
    #[inline]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch<'q>) -> usize {
        let room = BURST - batch.len();
        if room == 0 {
            return 0;
        }
        // SAFETY: the port is started and cannot stop while this queue borrows it; only this
        // RxQueue (unique, `&mut`) polls the queue; the batch's spare slots have room for
        // `room` pointers; the PMD writes n owned mbufs from the port's pool, which outlives 'q.
        unsafe {
            let n = usize::from(ffi::fg_rx_burst(
                self.port,
                self.queue,
                batch.spare_ptr(),
                room as u16,
            ));
            batch.assume_filled(n.min(room));
            n
        }
    }
}

/// TX queue `queue` of a started port; `Send`.
#[derive(Debug)]
pub struct TxQueue<'q> {
    port: u16,
    queue: u16,
    refused: u64,
    _port: PhantomData<&'q ()>,
}

impl<'q> TxQueue<'q> {
    /// Port id and queue index.
    pub fn id(&self) -> (u16, u16) {
        (self.port, self.queue)
    }

    /// Sends the whole batch; what the PMD refuses is freed and counted in
    /// [`TxQueue::refused`]. Returns how many frames were accepted. The batch ends empty.
    #[inline]
    pub fn tx_burst(&mut self, batch: &mut MbufBatch<'q>) -> usize {
        let sent = self.try_tx_burst(batch);
        let left = batch.len();
        if left > 0 {
            self.refused += left as u64;
            batch.clear();
        }
        sent
    }

    /// Sends what the PMD accepts; the refused frames stay in `batch`, moved to the front,
    /// for the caller to retry or drop. Returns how many were accepted.
    #[inline]
    pub fn try_tx_burst(&mut self, batch: &mut MbufBatch<'q>) -> usize {
        let n = batch.len();
        if n == 0 {
            return 0;
        }
        // SAFETY: started port that cannot stop while borrowed; this TxQueue is the only user
        // of the queue (`&mut`); slots 0..n hold owned mbufs; the PMD takes ownership of the
        // first `sent`, which consume_front then forgets.
        unsafe {
            let sent = usize::from(ffi::fg_tx_burst(
                self.port,
                self.queue,
                batch.base_ptr(),
                n as u16,
            ))
            .min(n);
            batch.consume_front(sent);
            sent
        }
    }

    /// Frames refused by the PMD and freed by [`TxQueue::tx_burst`] so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::Link;

    #[test]
    fn links_read_as_the_log_says_them() {
        let l = |up, speed_mbps, full_duplex| Link {
            up,
            speed_mbps,
            full_duplex,
        };
        assert_eq!(
            l(true, 10_000, true).to_string(),
            "up, 10000 Mbps, full duplex"
        );
        assert_eq!(l(true, 100, false).to_string(), "up, 100 Mbps, half duplex");
        // RTE_ETH_SPEED_NUM_NONE and _UNKNOWN: no speed said.
        assert_eq!(l(true, 0, true).to_string(), "up, full duplex");
        assert_eq!(l(true, u32::MAX, true).to_string(), "up, full duplex");
        assert_eq!(l(false, 10_000, true).to_string(), "down");
    }
}
