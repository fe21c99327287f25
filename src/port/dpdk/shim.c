/*
 * flowgate C shim over DPDK 22.11.
 *
 * One-line wrappers for DPDK's static-inline calls (Rust cannot link to those), and a few
 * helpers that fill DPDK's large configuration structs here, next to the headers that
 * define them, so Rust never mirrors their layout. Every Rust-visible struct defined in
 * this file has an *_abi_size() so the Rust side can check its mirror at run time.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <rte_acl.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mbuf_pool_ops.h>
#include <rte_memzone.h>
#include <rte_mempool.h>
#include <rte_thash.h>

/* ---- EAL ---- */

int fg_errno(void) { return rte_errno; }
unsigned fg_lcore_id(void) { return rte_lcore_id(); }
unsigned fg_max_lcore(void) { return RTE_MAX_LCORE; }

size_t fg_heap_alloc_bytes(int socket)
{
	struct rte_malloc_socket_stats s;
	if (rte_malloc_get_socket_stats(socket, &s) != 0)
		return 0;
	return s.heap_allocsz_bytes;
}

/* ---- mbuf ---- */

/* Offsets of the rte_mbuf fields Rust reads inline on the fast path (checked at init). */
void fg_mbuf_layout(size_t out[5])
{
	out[0] = offsetof(struct rte_mbuf, buf_addr);
	out[1] = offsetof(struct rte_mbuf, data_off);
	out[2] = offsetof(struct rte_mbuf, pkt_len);
	out[3] = offsetof(struct rte_mbuf, data_len);
	out[4] = offsetof(struct rte_mbuf, nb_segs);
}

struct rte_mbuf *fg_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int fg_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **m, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, m, n);
}
void fg_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
uint8_t *fg_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
uint16_t fg_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint32_t fg_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t fg_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
uint16_t fg_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t fg_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
uint8_t *fg_append(struct rte_mbuf *m, uint16_t n) { return (uint8_t *)rte_pktmbuf_append(m, n); }
int fg_trim(struct rte_mbuf *m, uint16_t n) { return rte_pktmbuf_trim(m, n); }

int fg_has_hugepages(void) { return rte_eal_has_hugepages(); }
int fg_iova_is_va(void) { return rte_eal_iova_mode() == RTE_IOVA_VA; }
uint64_t fg_mbuf_iova(const struct rte_mbuf *m) { return m->buf_iova; }
uint64_t fg_virt2iova(const void *p) { return rte_mem_virt2iova(p); }

static void fg_memzone_free(struct rte_mempool_memhdr *memhdr, void *opaque)
{
	(void)memhdr;
	rte_memzone_free(opaque);
}

/*
 * rte_pktmbuf_pool_create, but with the mbufs packed back to back in one IOVA-contiguous
 * memzone. Why: without hugepages, DPDK's default populate keeps every object inside one
 * 4 KB page (so that it is IOVA-contiguous), and a 2.4 KB mbuf then takes a page of its
 * own. Every mbuf header and every frame's first bytes sit at the same page offset, i.e. in
 * the same L1 set: 8 ways for all the mbufs of a burst. Here the whole zone is
 * IOVA-contiguous (the memzone flag), so an object crossing a page is still contiguous,
 * and each mbuf gets the zone's IOVA plus its offset, as the default would give it.
 * Returns NULL with rte_errno set when the zone or the pool cannot be made (the caller
 * then falls back to rte_pktmbuf_pool_create).
 */
struct rte_mempool *fg_pktmbuf_pool_create_packed(const char *name, unsigned n, unsigned cache,
						  uint16_t data_room, int socket)
{
	struct rte_pktmbuf_pool_private priv;
	char mz_name[RTE_MEMZONE_NAMESIZE];
	const struct rte_memzone *mz;
	struct rte_mempool *mp;
	size_t total;
	int ret;

	if (snprintf(mz_name, sizeof(mz_name), "fgp_%s", name) >= (int)sizeof(mz_name)) {
		rte_errno = ENAMETOOLONG;
		return NULL;
	}
	memset(&priv, 0, sizeof(priv));
	priv.mbuf_data_room_size = data_room;
	priv.mbuf_priv_size = 0;
	mp = rte_mempool_create_empty(name, n, sizeof(struct rte_mbuf) + data_room, cache,
				      sizeof(priv), socket, RTE_MEMPOOL_F_NO_IOVA_CONTIG);
	if (mp == NULL)
		return NULL;
	ret = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
	if (ret != 0)
		goto fail;
	rte_pktmbuf_pool_init(mp, &priv);
	total = (size_t)(mp->header_size + mp->elt_size + mp->trailer_size) * n;
	mz = rte_memzone_reserve_aligned(mz_name, total, socket, RTE_MEMZONE_IOVA_CONTIG,
					 RTE_CACHE_LINE_SIZE);
	if (mz == NULL) {
		ret = -rte_errno;
		goto fail;
	}
	if (mz->iova == RTE_BAD_IOVA) {
		rte_memzone_free(mz);
		ret = -EINVAL;
		goto fail;
	}
	/* Once populated, the pool owns the zone: rte_mempool_free frees it (callback). */
	ret = rte_mempool_populate_iova(mp, mz->addr, mz->iova, mz->len, fg_memzone_free,
					(void *)(uintptr_t)mz);
	if (ret <= 0) {
		/* Nothing populated: the zone was not taken (0 means not one object fitted). */
		rte_memzone_free(mz);
		if (ret == 0)
			ret = -ENOSPC;
		goto fail;
	}
	if ((unsigned)ret != n) {
		ret = -ENOSPC;
		goto fail;
	}
	rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
	return mp;
fail:
	rte_mempool_free(mp);
	rte_errno = -ret;
	return NULL;
}

/* ---- ethdev ---- */

uint16_t fg_rx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, q, pkts, n);
}
uint16_t fg_tx_burst(uint16_t port, uint16_t q, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, q, pkts, n);
}

uint64_t fg_rss_hf_default(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

struct fg_port_info {
	uint64_t flow_type_rss_offloads;
	uint16_t max_rx_queues;
	uint16_t max_tx_queues;
	uint16_t reta_size;
	uint8_t hash_key_size;
	uint8_t pad;
	char driver[32];
};
size_t fg_port_info_abi_size(void) { return sizeof(struct fg_port_info); }

int fg_port_info(uint16_t port, struct fg_port_info *out)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(out, 0, sizeof(*out));
	out->flow_type_rss_offloads = info.flow_type_rss_offloads;
	out->max_rx_queues = info.max_rx_queues;
	out->max_tx_queues = info.max_tx_queues;
	out->reta_size = info.reta_size;
	out->hash_key_size = info.hash_key_size;
	if (info.driver_name != NULL) {
		strncpy(out->driver, info.driver_name, sizeof(out->driver) - 1);
	}
	return 0;
}

/*
 * rte_eth_dev_configure with RSS over `rss_hf` (masked by what the PMD offers) and the
 * given key when nrxq > 1 and the PMD offers any RSS hash; plain single-queue RX otherwise.
 * *applied_hf receives the hash functions actually requested (0 = no RSS).
 */
int fg_port_configure(uint16_t port, uint16_t nrxq, uint16_t ntxq, const uint8_t *key,
		      uint8_t key_len, uint64_t rss_hf, uint64_t *applied_hf)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(&conf, 0, sizeof(conf));
	*applied_hf = 0;
	rss_hf &= info.flow_type_rss_offloads;
	if (nrxq > 1 && rss_hf != 0) {
		conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
		if (key != NULL && key_len > 0) {
			if (info.hash_key_size != 0 && info.hash_key_size != key_len)
				return -EINVAL;
			conf.rx_adv_conf.rss_conf.rss_key = (uint8_t *)key;
			conf.rx_adv_conf.rss_conf.rss_key_len = key_len;
		}
		*applied_hf = rss_hf;
	}
	return rte_eth_dev_configure(port, nrxq, ntxq, &conf);
}

/* Reads the RSS key in effect into out (40 bytes); returns its length or -errno. */
int fg_port_rss_key(uint16_t port, uint8_t out[40], uint64_t *rss_hf)
{
	struct rte_eth_rss_conf c;
	memset(&c, 0, sizeof(c));
	c.rss_key = out;
	c.rss_key_len = 40;
	int rc = rte_eth_dev_rss_hash_conf_get(port, &c);
	if (rc != 0)
		return rc;
	*rss_hf = c.rss_hf;
	return c.rss_key_len;
}

/* rte_eth_dev_rss_hash_update with a 40-byte key. */
int fg_port_rss_update(uint16_t port, const uint8_t key[40], uint64_t rss_hf)
{
	struct rte_eth_rss_conf c;
	memset(&c, 0, sizeof(c));
	c.rss_key = (uint8_t *)key;
	c.rss_key_len = 40;
	c.rss_hf = rss_hf;
	return rte_eth_dev_rss_hash_update(port, &c);
}

int fg_rx_queue_setup(uint16_t port, uint16_t q, uint16_t nb_desc, unsigned socket,
		      struct rte_mempool *mp)
{
	return rte_eth_rx_queue_setup(port, q, nb_desc, socket, NULL, mp);
}
int fg_tx_queue_setup(uint16_t port, uint16_t q, uint16_t nb_desc, unsigned socket)
{
	return rte_eth_tx_queue_setup(port, q, nb_desc, socket, NULL);
}

/* out: ipackets, opackets, ibytes, obytes, imissed, ierrors, oerrors, rx_nombuf */
int fg_port_stats(uint16_t port, uint64_t out[8])
{
	struct rte_eth_stats s;
	int rc = rte_eth_stats_get(port, &s);
	if (rc != 0)
		return rc;
	out[0] = s.ipackets;
	out[1] = s.opackets;
	out[2] = s.ibytes;
	out[3] = s.obytes;
	out[4] = s.imissed;
	out[5] = s.ierrors;
	out[6] = s.oerrors;
	out[7] = s.rx_nombuf;
	return 0;
}

int fg_port_link(uint16_t port, uint32_t *speed_mbps, int *up, int *full_duplex)
{
	struct rte_eth_link l;
	int rc = rte_eth_link_get_nowait(port, &l);
	if (rc != 0)
		return rc;
	*speed_mbps = l.link_speed;
	*up = l.link_status;
	*full_duplex = l.link_duplex;
	return 0;
}

int fg_port_macaddr(uint16_t port, uint8_t out[6])
{
	struct rte_ether_addr a;
	int rc = rte_eth_macaddr_get(port, &a);
	if (rc != 0)
		return rc;
	memcpy(out, a.addr_bytes, 6);
	return 0;
}

/* Software Toeplitz over `n` host-order 32-bit words with a 40-byte key (rte_thash.h). */
uint32_t fg_softrss(const uint32_t *words, uint32_t n, const uint8_t *key)
{
	return rte_softrss((uint32_t *)words, n, key);
}

/* ---- rte_acl: the IPv4 5-tuple layout of DPDK's app/test-acl and l3fwd ---- */

/* Input key, network byte order; rte_acl reads it in 4-byte groups. */
struct fg_acl_key {
	uint8_t proto;
	uint8_t pad[3];
	uint32_t src;
	uint32_t dst;
	uint16_t sport;
	uint16_t dport;
};
size_t fg_acl_key_abi_size(void) { return sizeof(struct fg_acl_key); }

/* A rule as Rust hands it over, host byte order. */
struct fg_acl_rule {
	uint8_t proto;
	uint8_t proto_mask;
	uint8_t src_len;
	uint8_t dst_len;
	uint32_t src;
	uint32_t dst;
	uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
	int32_t priority;
	uint32_t userdata;
};
size_t fg_acl_rule_abi_size(void) { return sizeof(struct fg_acl_rule); }

enum { F_PROTO, F_SRC, F_DST, F_SPORT, F_DPORT, F_NUM };
RTE_ACL_RULE_DEF(fg_acl5, F_NUM);

static const struct rte_acl_field_def fg_acl5_defs[F_NUM] = {
	{ .type = RTE_ACL_FIELD_TYPE_BITMASK, .size = sizeof(uint8_t), .field_index = F_PROTO,
	  .input_index = 0, .offset = offsetof(struct fg_acl_key, proto) },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = sizeof(uint32_t), .field_index = F_SRC,
	  .input_index = 1, .offset = offsetof(struct fg_acl_key, src) },
	{ .type = RTE_ACL_FIELD_TYPE_MASK, .size = sizeof(uint32_t), .field_index = F_DST,
	  .input_index = 2, .offset = offsetof(struct fg_acl_key, dst) },
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = sizeof(uint16_t), .field_index = F_SPORT,
	  .input_index = 3, .offset = offsetof(struct fg_acl_key, sport) },
	{ .type = RTE_ACL_FIELD_TYPE_RANGE, .size = sizeof(uint16_t), .field_index = F_DPORT,
	  .input_index = 3, .offset = offsetof(struct fg_acl_key, dport) },
};

struct rte_acl_ctx *fg_acl_create(const char *name, int socket, uint32_t max_rules)
{
	struct rte_acl_param p = {
		.name = name,
		.socket_id = socket,
		.rule_size = RTE_ACL_RULE_SZ(F_NUM),
		.max_rule_num = max_rules,
	};
	return rte_acl_create(&p);
}

int fg_acl_add(struct rte_acl_ctx *ctx, const struct fg_acl_rule *rules, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		const struct fg_acl_rule *r = &rules[i];
		struct fg_acl5 a;
		memset(&a, 0, sizeof(a));
		a.data.category_mask = 1;
		a.data.priority = r->priority;
		a.data.userdata = r->userdata;
		a.field[F_PROTO].value.u8 = r->proto;
		a.field[F_PROTO].mask_range.u8 = r->proto_mask;
		a.field[F_SRC].value.u32 = r->src;
		a.field[F_SRC].mask_range.u32 = r->src_len;
		a.field[F_DST].value.u32 = r->dst;
		a.field[F_DST].mask_range.u32 = r->dst_len;
		a.field[F_SPORT].value.u16 = r->sport_lo;
		a.field[F_SPORT].mask_range.u16 = r->sport_hi;
		a.field[F_DPORT].value.u16 = r->dport_lo;
		a.field[F_DPORT].mask_range.u16 = r->dport_hi;
		int rc = rte_acl_add_rules(ctx, (const struct rte_acl_rule *)&a, 1);
		if (rc != 0)
			return rc;
	}
	return 0;
}

int fg_acl_build(struct rte_acl_ctx *ctx, size_t max_size)
{
	struct rte_acl_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.num_categories = 1;
	cfg.num_fields = F_NUM;
	memcpy(cfg.defs, fg_acl5_defs, sizeof(fg_acl5_defs));
	cfg.max_size = max_size;
	return rte_acl_build(ctx, &cfg);
}

/* alg: enum rte_acl_classify_alg value. */
int fg_acl_set_alg(struct rte_acl_ctx *ctx, int alg)
{
	return rte_acl_set_ctx_classify(ctx, (enum rte_acl_classify_alg)alg);
}
