//! Raw declarations: the C shim (`fg_*`, see `shim.c`) and the few exported DPDK functions
//! called directly. DPDK objects are opaque; nothing here leaves `port::dpdk`.
//!
//! Layer: `port::dpdk`, private. Every struct mirrored here is checked against the C side's
//! `sizeof` by [`check_abi`] when the EAL starts.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `struct rte_mempool` (opaque).
#[repr(C)]
pub(crate) struct RteMempool {
    _private: [u8; 0],
}
/// `struct rte_mbuf` (opaque).
#[repr(C)]
pub(crate) struct RteMbuf {
    _private: [u8; 0],
}
/// `struct rte_acl_ctx` (opaque).
#[repr(C)]
pub(crate) struct RteAclCtx {
    _private: [u8; 0],
}

/// Mirror of `struct fg_port_info` in shim.c.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct FgPortInfo {
    pub flow_type_rss_offloads: u64,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub reta_size: u16,
    pub hash_key_size: u8,
    pub pad: u8,
    pub driver: [u8; 32],
}

/// Mirror of `struct fg_acl_key` in shim.c (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FgAclKey {
    pub proto: u8,
    pub pad: [u8; 3],
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
}

/// Mirror of `struct fg_acl_rule` in shim.c (host byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FgAclRule {
    pub proto: u8,
    pub proto_mask: u8,
    pub src_len: u8,
    pub dst_len: u8,
    pub src: u32,
    pub dst: u32,
    pub sport_lo: u16,
    pub sport_hi: u16,
    pub dport_lo: u16,
    pub dport_hi: u16,
    pub priority: i32,
    pub userdata: u32,
}

pub(crate) type LcoreFn = unsafe extern "C" fn(*mut c_void) -> c_int;

// `enum rte_acl_classify_alg`
pub(crate) const ACL_SCALAR: c_int = 1;
pub(crate) const ACL_SSE: c_int = 2;
pub(crate) const ACL_AVX2: c_int = 3;
pub(crate) const ACL_AVX512X16: c_int = 6;
pub(crate) const ACL_AVX512X32: c_int = 7;

/// `SOCKET_ID_ANY`
pub(crate) const SOCKET_ID_ANY: c_int = -1;

unsafe extern "C" {
    // shim.c
    pub(crate) fn fg_errno() -> c_int;
    pub(crate) fn fg_lcore_id() -> c_uint;
    pub(crate) fn fg_max_lcore() -> c_uint;
    pub(crate) fn fg_rss_hf_default() -> u64;
    pub(crate) fn fg_heap_alloc_bytes(socket: c_int) -> usize;
    pub(crate) fn fg_has_hugepages() -> c_int;
    pub(crate) fn fg_iova_is_va() -> c_int;
    pub(crate) fn fg_mbuf_iova(m: *const RteMbuf) -> u64;
    pub(crate) fn fg_virt2iova(p: *const c_void) -> u64;
    pub(crate) fn fg_pktmbuf_pool_create_packed(
        name: *const c_char,
        n: c_uint,
        cache: c_uint,
        data_room: u16,
        socket: c_int,
    ) -> *mut RteMempool;

    pub(crate) fn fg_mbuf_layout(out: *mut usize);
    pub(crate) fn fg_pktmbuf_alloc(mp: *mut RteMempool) -> *mut RteMbuf;
    pub(crate) fn fg_pktmbuf_alloc_bulk(
        mp: *mut RteMempool,
        m: *mut *mut RteMbuf,
        n: c_uint,
    ) -> c_int;
    pub(crate) fn fg_pktmbuf_free(m: *mut RteMbuf);
    pub(crate) fn fg_headroom(m: *const RteMbuf) -> u16;
    pub(crate) fn fg_tailroom(m: *const RteMbuf) -> u16;
    pub(crate) fn fg_append(m: *mut RteMbuf, n: u16) -> *mut u8;
    pub(crate) fn fg_trim(m: *mut RteMbuf, n: u16) -> c_int;

    pub(crate) fn fg_rx_burst(port: u16, q: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    pub(crate) fn fg_tx_burst(port: u16, q: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    pub(crate) fn fg_port_info_abi_size() -> usize;
    pub(crate) fn fg_port_info(port: u16, out: *mut FgPortInfo) -> c_int;
    pub(crate) fn fg_port_configure(
        port: u16,
        nrxq: u16,
        ntxq: u16,
        key: *const u8,
        key_len: u8,
        rss_hf: u64,
        applied_hf: *mut u64,
    ) -> c_int;
    pub(crate) fn fg_port_rss_key(port: u16, out: *mut u8, rss_hf: *mut u64) -> c_int;
    pub(crate) fn fg_port_rss_update(port: u16, key: *const u8, rss_hf: u64) -> c_int;
    pub(crate) fn fg_rx_queue_setup(
        port: u16,
        q: u16,
        nb_desc: u16,
        socket: c_uint,
        mp: *mut RteMempool,
    ) -> c_int;
    pub(crate) fn fg_tx_queue_setup(port: u16, q: u16, nb_desc: u16, socket: c_uint) -> c_int;
    pub(crate) fn fg_port_stats(port: u16, out: *mut u64) -> c_int;
    pub(crate) fn fg_port_link(
        port: u16,
        speed: *mut u32,
        up: *mut c_int,
        full_duplex: *mut c_int,
    ) -> c_int;
    pub(crate) fn fg_port_macaddr(port: u16, out: *mut u8) -> c_int;
    pub(crate) fn fg_softrss(words: *const u32, n: u32, key: *const u8) -> u32;

    pub(crate) fn fg_acl_key_abi_size() -> usize;
    pub(crate) fn fg_acl_rule_abi_size() -> usize;
    pub(crate) fn fg_acl_create(
        name: *const c_char,
        socket: c_int,
        max_rules: u32,
    ) -> *mut RteAclCtx;
    pub(crate) fn fg_acl_add(ctx: *mut RteAclCtx, rules: *const FgAclRule, n: u32) -> c_int;
    pub(crate) fn fg_acl_build(ctx: *mut RteAclCtx, max_size: usize) -> c_int;
    pub(crate) fn fg_acl_set_alg(ctx: *mut RteAclCtx, alg: c_int) -> c_int;

    // librte_eal
    pub(crate) fn rte_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    pub(crate) fn rte_eal_cleanup() -> c_int;
    pub(crate) fn rte_strerror(errnum: c_int) -> *const c_char;
    pub(crate) fn rte_lcore_count() -> c_uint;
    pub(crate) fn rte_get_main_lcore() -> c_uint;
    pub(crate) fn rte_get_next_lcore(i: c_uint, skip_main: c_int, wrap: c_int) -> c_uint;
    pub(crate) fn rte_lcore_to_socket_id(lcore: c_uint) -> c_uint;
    pub(crate) fn rte_socket_id() -> c_uint;
    pub(crate) fn rte_eal_remote_launch(f: LcoreFn, arg: *mut c_void, worker: c_uint) -> c_int;
    pub(crate) fn rte_eal_wait_lcore(worker: c_uint) -> c_int;
    /// Returns `enum rte_lcore_state_t`: 0 = WAIT, 1 = RUNNING.
    pub(crate) fn rte_eal_get_lcore_state(worker: c_uint) -> c_int;

    // librte_mempool / librte_mbuf
    pub(crate) fn rte_pktmbuf_pool_create(
        name: *const c_char,
        n: c_uint,
        cache_size: c_uint,
        priv_size: u16,
        data_room_size: u16,
        socket_id: c_int,
    ) -> *mut RteMempool;
    pub(crate) fn rte_mempool_free(mp: *mut RteMempool);
    pub(crate) fn rte_mempool_avail_count(mp: *const RteMempool) -> c_uint;
    pub(crate) fn rte_mempool_in_use_count(mp: *const RteMempool) -> c_uint;
    pub(crate) fn rte_pktmbuf_free_bulk(m: *mut *mut RteMbuf, count: c_uint);

    // librte_ethdev
    pub(crate) fn rte_eth_dev_get_port_by_name(name: *const c_char, port: *mut u16) -> c_int;
    pub(crate) fn rte_eth_dev_socket_id(port: u16) -> c_int;
    pub(crate) fn rte_eth_dev_start(port: u16) -> c_int;
    pub(crate) fn rte_eth_dev_stop(port: u16) -> c_int;
    pub(crate) fn rte_eth_dev_close(port: u16) -> c_int;
    pub(crate) fn rte_eth_promiscuous_enable(port: u16) -> c_int;
    pub(crate) fn rte_eth_dev_set_mtu(port: u16, mtu: u16) -> c_int;
    pub(crate) fn rte_eth_dev_get_mtu(port: u16, mtu: *mut u16) -> c_int;
    pub(crate) fn rte_eth_stats_reset(port: u16) -> c_int;

    // librte_acl
    pub(crate) fn rte_acl_free(ctx: *mut RteAclCtx);
    pub(crate) fn rte_acl_classify(
        ctx: *const RteAclCtx,
        data: *const *const u8,
        results: *mut u32,
        num: u32,
        categories: u32,
    ) -> c_int;
}

/// `rte_mbuf` field offsets read inline by `Mbuf` (DPDK 22.11, x86-64): `buf_addr`,
/// `data_off` (u16), `pkt_len` (u32), `data_len` (u16), `nb_segs` (u16).
pub(crate) const MBUF_BUF_ADDR: usize = 0;
pub(crate) const MBUF_DATA_OFF: usize = 16;
pub(crate) const MBUF_PKT_LEN: usize = 36;
pub(crate) const MBUF_DATA_LEN: usize = 40;
pub(crate) const MBUF_NB_SEGS: usize = 20;

/// Checks the Rust mirrors and mbuf offsets against the C side. Called once by `Eal::init`.
pub(crate) fn check_abi() -> bool {
    let mut off = [0usize; 5];
    // SAFETY: the functions only return compile-time constants; `off` has the 5 slots
    // fg_mbuf_layout writes.
    unsafe {
        fg_mbuf_layout(off.as_mut_ptr());
        off == [
            MBUF_BUF_ADDR,
            MBUF_DATA_OFF,
            MBUF_PKT_LEN,
            MBUF_DATA_LEN,
            MBUF_NB_SEGS,
        ] && fg_port_info_abi_size() == std::mem::size_of::<FgPortInfo>()
            && fg_acl_key_abi_size() == std::mem::size_of::<FgAclKey>()
            && fg_acl_rule_abi_size() == std::mem::size_of::<FgAclRule>()
    }
}
