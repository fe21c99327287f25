#!/usr/bin/env python3
"""An end system of the flowgate control protocol, written from docs/PROTOCOL.md only.

Usage: client.py HOST:PORT KEYFILE

Runs against a real supervisor: registers, advertises a service, finds itself in the
server list, takes/renews/releases a number block, adds/withdraws a flow, checks that a
datagram with a wrong tag and a replayed/stale one change nothing, keeps alive, drains
and leaves. One line per step; exits 1 with a message on the first mismatch.
Standard library only.
"""

import hashlib
import hmac
import json
import socket
import struct
import sys
import time

# §2 / §4 constants
MAGIC = b"FG"
VERSION = 1
HDR = struct.Struct(">2sBBQQHH")  # magic, version, type, sender, seq, body_len, reserved
TAG_LEN = 32

T_REGISTER, T_REGISTER_ACK, T_SERVICE_ADVERT, T_FLOW_ADD, T_FLOW_DEL = 0x01, 0x02, 0x03, 0x04, 0x05
T_DRAIN, T_LEAVE, T_SL_QUERY, T_SL_REPLY, T_NUM_REQ = 0x06, 0x07, 0x08, 0x09, 0x0A
T_NUM_GRANT, T_NUM_RENEW, T_NUM_RELEASE, T_ACK, T_KEEPALIVE = 0x0B, 0x0C, 0x0D, 0x0E, 0x0F
T_MGMT_REQ, T_MGMT_REPLY = 0x10, 0x11

OK, NOT_REGISTERED, UNKNOWN_POOL, POOL_EXHAUSTED, NO_SUCH_GRANT = 0, 1, 2, 3, 4
NOT_HOLDER, BAD_REQUEST, NOT_FOUND, TOO_BIG, STORE_FAILED = 5, 6, 7, 8, 9
STATUS_NAMES = {
    0: "OK", 1: "NOT_REGISTERED", 2: "UNKNOWN_POOL", 3: "POOL_EXHAUSTED", 4: "NO_SUCH_GRANT",
    5: "NOT_HOLDER", 6: "BAD_REQUEST", 7: "NOT_FOUND", 8: "TOO_BIG", 9: "STORE_FAILED",
    10: "NAME_IN_USE",
}

MGMT_SYSTEMS, MGMT_SERVICES, MGMT_FLOWS, MGMT_NUMBERS = 1, 2, 3, 4
MGMT_DRAIN, MGMT_WEIGHT, MGMT_STATS = 5, 6, 7

KIND_END = 2

# The answer window for "nothing comes back" checks.
SILENCE_S = 0.4


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


def expect_eq(got, want, what):
    if got != want:
        raise Mismatch("%s: got %r, want %r" % (what, got, want))


def status_name(s):
    return "%d (%s)" % (s, STATUS_NAMES.get(s, "?"))


def expect_status(got, want, what):
    if got != want:
        raise Mismatch("%s: status %s, want %s" % (what, status_name(got), status_name(want)))


# ---------------------------------------------------------------- §2.1 encodings

def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def enc_str(s):
    b = s.encode("utf-8")
    assert len(b) <= 255
    return u8(len(b)) + b


def enc_addr(a):
    if ":" in a:
        return u8(6) + socket.inet_pton(socket.AF_INET6, a)
    return u8(4) + socket.inet_pton(socket.AF_INET, a)


def enc_addrs(lst):
    return u8(len(lst)) + b"".join(enc_addr(a) for a in lst)


def enc_mac(m):
    b = bytes(int(x, 16) for x in m.split(":"))
    assert len(b) == 6
    return b


class Reader:
    """Decodes a body; the body MUST be consumed exactly (§2.1)."""

    def __init__(self, data, what):
        self.d = data
        self.i = 0
        self.what = what

    def take(self, n):
        check(self.i + n <= len(self.d), "%s: body too short" % self.what)
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def str(self):
        n = self.u8()
        b = self.take(n)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise Mismatch("%s: invalid UTF-8 in str" % self.what)

    def addr(self):
        fam = self.u8()
        if fam == 4:
            return socket.inet_ntop(socket.AF_INET, self.take(4))
        if fam == 6:
            return socket.inet_ntop(socket.AF_INET6, self.take(16))
        raise Mismatch("%s: addr family %d" % (self.what, fam))

    def addrs(self):
        return [self.addr() for _ in range(self.u8())]

    def mac(self):
        return ":".join("%02x" % b for b in self.take(6))

    def state(self):
        s = self.u8()
        check(s in (0, 1), "%s: state %d" % (self.what, s))
        return s

    def end(self):
        check(self.i == len(self.d), "%s: %d trailing bytes" % (self.what, len(self.d) - self.i))


def dec_register_ack(r):
    d = dict(in_reply_to=r.u64(), status=r.u8(), lease_ms=r.u32(),
             advert_interval_ms=r.u32(), dead_interval_ms=r.u32())
    r.end()
    return d


def dec_ack(r):
    d = dict(in_reply_to=r.u64(), status=r.u8())
    r.end()
    return d


def dec_server_list(r):
    d = dict(in_reply_to=r.u64(), status=r.u8())
    n = r.u16()
    entries = []
    for _ in range(n):
        entries.append(dict(system=r.u64(), name=r.str(), mac=r.mac(), addrs=r.addrs(),
                            state=r.state(), service=r.str(), vip=r.addr(), proto=r.u8(),
                            weight=r.u32(), load=r.u32(), congestion=r.u16(),
                            response_time_us=r.u32()))
    r.end()
    d["entries"] = entries
    return d


def dec_grant(r):
    d = dict(in_reply_to=r.u64(), request_id=r.u64(), status=r.u8(), grant_id=r.u64(),
             pool=r.str(), first=r.u64(), count=r.u32(), lease_ms=r.u32())
    r.end()
    return d


def dec_mgmt(r):
    d = dict(in_reply_to=r.u64(), status=r.u8())
    n = r.u16()
    raw = r.take(n)
    r.end()
    d["json"] = json.loads(raw.decode("utf-8")) if n else None
    return d


DECODERS = {
    T_REGISTER_ACK: dec_register_ack,
    T_ACK: dec_ack,
    T_SL_REPLY: dec_server_list,
    T_NUM_GRANT: dec_grant,
    T_MGMT_REPLY: dec_mgmt,
}


# ---------------------------------------------------------------- §3 key, ids, seq

def load_key(path):
    hexchars = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            hexchars.append(s)
    key = bytes.fromhex("".join(hexchars))
    check(len(key) >= 32, "key file %s: key shorter than 32 bytes" % path)
    return key


def system_id(name):
    return struct.unpack(">Q", hashlib.sha256(name.encode("utf-8")).digest()[:8])[0]


def pack(key, mtype, sender, seq, body, reserved=0):
    hdr = HDR.pack(MAGIC, VERSION, mtype, sender, seq, len(body), reserved)
    msg = hdr + body
    return msg + hmac.new(key, msg, hashlib.sha256).digest()


class Endpoint:
    """One sender: a socket, an id, a sequence counter, and the supervisor's replay window."""

    def __init__(self, key, server, sender, label):
        self.key = key
        self.server = server
        self.sender = sender
        self.label = label
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        # §3.3: SHOULD start at the Unix time in microseconds.
        self.seq = int(time.time() * 1_000_000)
        self.peer_id = None  # the supervisor's id, learnt from its first reply
        self.peer_high = 0
        self.peer_seen = set()
        self.advert_interval_ms = 1000
        self.last_sent = 0.0

    def next_seq(self):
        self.seq += 1
        return self.seq

    def send_raw(self, data):
        self.sock.sendto(data, self.server)
        self.last_sent = time.monotonic()

    def send(self, mtype, body):
        seq = self.next_seq()
        data = pack(self.key, mtype, self.sender, seq, body)
        self.send_raw(data)
        return seq, data

    def recv(self, timeout):
        """Next valid datagram from the supervisor, as (type, header seq, decoded body),
        or None on timeout. Anything invalid is a protocol error of the supervisor."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, src = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        what = "%s: reply from %s" % (self.label, src)
        check(src == self.server, "%s: not from the supervisor's address" % what)
        check(len(data) >= HDR.size + TAG_LEN, "%s: %d bytes, shorter than 56" % (what, len(data)))
        magic, ver, mtype, sender, seq, blen, res = HDR.unpack_from(data)
        expect_eq(magic, MAGIC, what + " magic")
        expect_eq(ver, VERSION, what + " version")
        expect_eq(len(data), HDR.size + blen + TAG_LEN, what + " length vs body_len")
        expect_eq(res, 0, what + " reserved")
        tag = hmac.new(self.key, data[:-TAG_LEN], hashlib.sha256).digest()
        check(hmac.compare_digest(tag, data[-TAG_LEN:]), what + ": bad HMAC tag")
        check(seq != 0, what + ": seq 0")
        if self.peer_id is None:
            self.peer_id = sender
        expect_eq(sender, self.peer_id, what + " sender id (supervisor id changed)")
        # Our own replay window for the supervisor (§3.3), simplified: no duplicates,
        # nothing older than 64 below the highest.
        check(seq not in self.peer_seen and seq + 63 >= self.peer_high,
              what + ": replayed/stale seq %d (highest %d)" % (seq, self.peer_high))
        self.peer_seen.add(seq)
        self.peer_high = max(self.peer_high, seq)
        dec = DECODERS.get(mtype)
        check(dec is not None, "%s: unexpected message type 0x%02x" % (what, mtype))
        body = dec(Reader(data[HDR.size:HDR.size + blen], "%s type 0x%02x" % (what, mtype)))
        return mtype, seq, body

    def request(self, mtype, body, reply_type, what):
        """§5: retransmit with a new seq every max(interval/4, 20ms) x min(try, 4), at most
        30 times, until a reply whose in_reply_to is one of our transmissions arrives."""
        sent = set()
        base = max(self.advert_interval_ms / 4.0, 20.0) / 1000.0
        for attempt in range(1, 31):
            seq, _ = self.send(mtype, body)
            sent.add(seq)
            deadline = time.monotonic() + base * min(attempt, 4)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                got = self.recv(left)
                if got is None:
                    break
                rtype, _, rbody = got
                if rbody.get("in_reply_to") not in sent:
                    continue  # §5: unknown in_reply_to is ignored (e.g. a late duplicate)
                expect_eq(rtype, reply_type, "%s: reply type" % what)
                rbody["_seq"] = seq
                return rbody
        raise Mismatch("%s: no reply after 30 transmissions" % what)

    def expect_silence(self, what, seconds=SILENCE_S):
        got = self.recv(seconds)
        check(got is None, "%s: expected no reply, got %r" % (what, got))


# ---------------------------------------------------------------- bodies (§4)

def body_register(kind, name, mac, addrs, caps, lease_ms):
    return u8(kind) + enc_str(name) + enc_mac(mac) + enc_addrs(addrs) + u32(caps) + u32(lease_ms)


def body_service_advert(oid, kind, name, mac, addrs, state, age_ms, services):
    b = u64(oid) + u8(kind) + enc_str(name) + enc_mac(mac) + enc_addrs(addrs) + u8(state)
    b += u32(age_ms) + u8(len(services))
    for s in services:
        b += enc_str(s["name"]) + enc_addr(s["vip"]) + u8(s["proto"]) + u8(len(s["ports"]))
        for first, last in s["ports"]:
            b += u16(first) + u16(last)
        b += u32(s["capacity"]) + u32(s["weight"]) + u32(s["load"]) + u16(s["congestion"])
        b += u32(s["response_time_us"])
    return b


def body_flow_add(origin, flow_id, target, proto, src, src_plen, dst, dst_plen,
                  sport, dport, qos, lifetime_ms):
    b = u64(origin) + u64(flow_id) + u64(target)
    b += u8(proto) + enc_addr(src) + u8(src_plen) + enc_addr(dst) + u8(dst_plen)
    b += u16(sport[0]) + u16(sport[1]) + u16(dport[0]) + u16(dport[1])
    b += u8(len(qos))
    for t, v in qos:
        b += u8(t) + u8(len(v)) + v
    return b + u32(lifetime_ms)


def body_flow_del(origin, flow_id):
    return u64(origin) + u64(flow_id)


def body_mgmt(op, arg="", value=0):
    return u8(op) + enc_str(arg) + u32(value)


# ---------------------------------------------------------------- the run

class Client:
    def __init__(self, server, key):
        self.key = key
        self.name = "interop-spec-%d" % (int(time.time() * 1000) % 1_000_000_000)
        self.id = system_id(self.name)
        self.mac = "02:00:00:00:5e:c1"
        self.addrs = ["127.0.0.1"]
        self.es = Endpoint(key, server, self.id, "end system")
        # §3.2: tools that do not register use any id. Derive one that cannot be ours.
        self.ctl = Endpoint(key, server, system_id(self.name + "/ctl"), "ctl")
        self.service = dict(name=self.name + "-svc", vip="10.0.0.200", proto=6,
                            ports=[(80, 80), (8000, 8100)], capacity=500, weight=100,
                            load=250, congestion=10, response_time_us=1234)

    @staticmethod
    def step(no, text):
        print("step %d: %s" % (no, text), flush=True)

    # management (op 1..7), from the ctl endpoint
    def mgmt(self, op, arg="", value=0, want=OK):
        r = self.ctl.request(T_MGMT_REQ, body_mgmt(op, arg, value), T_MGMT_REPLY,
                             "MgmtRequest op %d" % op)
        expect_status(r["status"], want, "MgmtReply op %d" % op)
        if want == OK:
            check(isinstance(r["json"], list), "MgmtReply op %d: JSON is not an array" % op)
            for o in r["json"]:
                check(isinstance(o, dict) and "name" in o,
                      "MgmtReply op %d: object without name: %r" % (op, o))
                if op in (MGMT_SYSTEMS, MGMT_SERVICES, MGMT_FLOWS, MGMT_NUMBERS):
                    check("state" in o, "MgmtReply op %d: object without state: %r" % (op, o))
        return r["json"]

    def stats(self):
        out = {}
        for o in self.mgmt(MGMT_STATS):
            check("value" in o, "stats object without value: %r" % o)
            out[o["name"]] = o["value"]
        return out

    def my_system(self):
        mine = [s for s in self.mgmt(MGMT_SYSTEMS) if s["name"] == self.name]
        check(len(mine) <= 1, "systems: %d entries named %s" % (len(mine), self.name))
        return mine[0] if mine else None

    def my_flows(self):
        out = {}
        for f in self.mgmt(MGMT_FLOWS):
            if f.get("origin") in (self.name, "%016x" % self.id, self.id):
                out[f["flow_id"]] = f
        return out

    def ack(self, mtype, body, what, want=OK):
        r = self.es.request(mtype, body, T_ACK, what)
        expect_status(r["status"], want, "Ack to " + what)
        return r

    def keepalive(self, state=0, want=OK):
        return self.ack(T_KEEPALIVE, u8(state), "Keepalive", want)

    # ------------------------------------------------------------ steps

    def step0_self_test(self):
        # §7 examples: our encoder reproduces them byte for byte.
        got = body_register(2, "web1", "02:00:00:00:00:01", ["10.0.0.2"], 5, 3000)
        want = bytes.fromhex("02 04 77 65 62 31 02 00 00 00 00 01 01 04 0a 00 00 02"
                             " 00 00 00 05 00 00 0b b8")
        expect_eq(got.hex(), want.hex(), "§7 Register example")
        ka = pack(b"\x11" * 32, T_KEEPALIVE, 0x0102030405060708, 9, u8(0))
        want = bytes.fromhex("46 47 01 0f 01 02 03 04 05 06 07 08 00 00 00 00 00 00 00 09"
                             " 00 01 00 00 00")
        expect_eq(ka[:25].hex(), want.hex(), "§7 Keepalive example")
        expect_eq(len(ka), 57, "§7 Keepalive length")
        st = self.stats()
        for c in ("rx_malformed", "rx_bad_version", "rx_bad_mac", "rx_replayed", "rx_stale",
                  "rx_ok", "tx", "registrations", "grants", "flows", "systems"):
            check(c in st, "stats: counter %s missing (have %s)" % (c, sorted(st)))
        for p in ("nat-ports", "ipsec-spi", "mpls-labels", "vips"):
            check("pool.%s.free_blocks" % p in st, "stats: pool.%s.free_blocks missing" % p)
        self.step(0, "encoder matches §7 examples; MgmtRequest stats answered (%d counters)"
                  % len(st))

    def step1_register(self):
        body = body_register(KIND_END, self.name, self.mac, self.addrs, 1 | 2 | 4, 0)
        r = self.es.request(T_REGISTER, body, T_REGISTER_ACK, "Register")
        expect_status(r["status"], OK, "RegisterAck")
        check(r["advert_interval_ms"] > 0, "RegisterAck: advert_interval_ms 0")
        check(r["dead_interval_ms"] > r["advert_interval_ms"],
              "RegisterAck: dead interval %d not > advert interval %d"
              % (r["dead_interval_ms"], r["advert_interval_ms"]))
        expect_eq(r["lease_ms"], r["dead_interval_ms"], "RegisterAck lease_ms (= dead interval)")
        self.es.advert_interval_ms = r["advert_interval_ms"]
        self.ctl.advert_interval_ms = r["advert_interval_ms"]
        self.interval = r["advert_interval_ms"] / 1000.0
        self.dead = r["dead_interval_ms"] / 1000.0
        s = self.my_system()
        check(s is not None, "systems: %s not listed after RegisterAck" % self.name)
        expect_eq(str(s.get("id")).lower(), "%016x" % self.id, "systems: id")
        expect_eq(s.get("state"), "up", "systems: state")
        expect_eq(str(s.get("mac")).lower(), self.mac, "systems: mac")
        check(str(s.get("addr", "")).endswith(":%d" % self.es.sock.getsockname()[1]),
              "systems: addr %r is not our source address" % s.get("addr"))
        self.step(1, "Register -> RegisterAck OK (lease %d ms, advert %d ms, dead %d ms); "
                  "listed by mgmt systems with id %016x"
                  % (r["lease_ms"], r["advert_interval_ms"], r["dead_interval_ms"], self.id))

    def advert(self, state=0):
        body = body_service_advert(self.id, KIND_END, self.name, self.mac, self.addrs, state, 0,
                                   [self.service])
        return self.ack(T_SERVICE_ADVERT, body, "ServiceAdvert")

    def step2_advert(self):
        self.advert()
        svcs = [s for s in self.mgmt(MGMT_SERVICES) if s["name"] == self.service["name"]]
        expect_eq(len(svcs), 1, "mgmt services: entries for %s" % self.service["name"])
        s = svcs[0]
        expect_eq(s.get("system"), self.name, "mgmt services: system")
        expect_eq(s.get("vip"), self.service["vip"], "mgmt services: vip")
        expect_eq(s.get("ports"), [list(p) for p in self.service["ports"]], "mgmt services: ports")
        for f in ("capacity", "weight", "load", "congestion", "response_time_us"):
            expect_eq(s.get(f), self.service[f], "mgmt services: " + f)
        # Advertising from a system id that never registered: NOT_REGISTERED (§4.18).
        stranger = Endpoint(self.key, self.es.server, system_id(self.name + "/stranger"),
                            "stranger")
        sid = stranger.sender
        body = body_service_advert(sid, KIND_END, "stranger", self.mac, self.addrs, 0, 0,
                                   [self.service])
        r = stranger.request(T_SERVICE_ADVERT, body, T_ACK, "ServiceAdvert (unregistered)")
        expect_status(r["status"], NOT_REGISTERED, "Ack to unregistered ServiceAdvert")
        stranger.sock.close()
        self.step(2, "ServiceAdvert -> Ack OK; mgmt services shows it; an unregistered "
                  "sender's advert -> Ack NOT_REGISTERED")

    def server_list(self, service):
        r = self.es.request(T_SL_QUERY, enc_str(service), T_SL_REPLY, "ServerListQuery")
        expect_status(r["status"], OK, "ServerListReply")
        return r["entries"]

    def step3_server_list(self):
        entries = self.server_list(self.service["name"])
        mine = [e for e in entries if e["system"] == self.id]
        expect_eq(len(mine), 1, "ServerListReply: entries for our system")
        e = mine[0]
        want = dict(system=self.id, name=self.name, mac=self.mac, addrs=self.addrs, state=0,
                    service=self.service["name"], vip=self.service["vip"],
                    proto=self.service["proto"], weight=self.service["weight"],
                    load=self.service["load"], congestion=self.service["congestion"],
                    response_time_us=self.service["response_time_us"])
        for k, v in want.items():
            expect_eq(e[k], v, "ServerListReply entry " + k)
        check(all(x["service"] == self.service["name"] for x in entries),
              "ServerListReply for %s lists other services" % self.service["name"])
        everything = self.server_list("")
        check(any(x["system"] == self.id and x["service"] == self.service["name"]
                  for x in everything), "ServerListReply (all services) lacks ours")
        none = self.server_list(self.name + "-no-such-service")
        expect_eq(len(none), 0, "ServerListReply for an unknown service: n")
        self.step(3, "ServerListQuery %r -> ServerListReply OK with our entry; all-services "
                  "query lists it; unknown service -> n=0" % self.service["name"])

    def number_request(self, request_id, pool, lease_ms, want=OK):
        body = u64(request_id) + enc_str(pool) + u32(lease_ms)
        r = self.es.request(T_NUM_REQ, body, T_NUM_GRANT, "NumberRequest %s" % pool)
        expect_status(r["status"], want, "NumberGrant for %s" % pool)
        expect_eq(r["request_id"], request_id, "NumberGrant request_id")
        return r

    def renew(self, grant_id, lease_ms, want=OK):
        r = self.es.request(T_NUM_RENEW, u64(grant_id) + u32(lease_ms), T_NUM_GRANT,
                            "NumberRenew")
        expect_status(r["status"], want, "NumberGrant to NumberRenew")
        expect_eq(r["grant_id"], grant_id, "NumberGrant to renew: grant_id")
        return r

    def step4_numbers(self):
        before = self.stats()
        req_id = 0x5EC0000000000001
        g = self.number_request(req_id, "nat-ports", 0)
        check(g["grant_id"] != 0, "NumberGrant OK with grant_id 0")
        expect_eq(g["pool"], "nat-ports", "NumberGrant pool")
        expect_eq(g["count"], 2048, "NumberGrant count (pool block)")
        check(1024 <= g["first"] and g["first"] + g["count"] - 1 <= 65535,
              "NumberGrant block %d+%d outside the pool 1024..65535" % (g["first"], g["count"]))
        expect_eq(g["lease_ms"], 30000, "NumberGrant lease_ms (0 = the pool's lease)")
        # Idempotent: the same request_id gives the same grant.
        g2 = self.number_request(req_id, "nat-ports", 0)
        for k in ("grant_id", "pool", "first", "count"):
            expect_eq(g2[k], g[k], "repeated NumberRequest: " + k)
        nums = [n for n in self.mgmt(MGMT_NUMBERS) if n.get("grant_id") == g["grant_id"]]
        expect_eq(len(nums), 1, "mgmt numbers: entries for our grant")
        n = nums[0]
        expect_eq(n.get("name"), "nat-ports/%d" % g["grant_id"], "mgmt numbers: name")
        expect_eq(n.get("first"), g["first"], "mgmt numbers: first")
        expect_eq(n.get("last"), g["first"] + g["count"] - 1, "mgmt numbers: last")
        expect_eq(n.get("count"), g["count"], "mgmt numbers: count")
        check(n.get("holder") in (self.name, "%016x" % self.id),
              "mgmt numbers: holder %r is not us" % n.get("holder"))
        mid = self.stats()
        free = "pool.nat-ports.free_blocks"
        expect_eq(mid[free], before[free] - 1, "stats %s after one grant" % free)
        expect_eq(mid["grants_held"], before["grants_held"] + 1, "stats grants_held")
        # Renew (§4.12): the same grant, the original request_id, a fresh lease.
        time.sleep(0.2)
        r = self.renew(g["grant_id"], 0)
        for k in ("request_id", "pool", "first", "count"):
            expect_eq(r[k], g[k], "NumberGrant to renew: " + k)
        expect_eq(r["lease_ms"], 30000, "NumberGrant to renew: lease_ms")
        # A larger lease is cut to the pool's (§4.10); an address pool gives IPv4 integers.
        v = self.number_request(req_id + 1, "vips", 10**9)
        expect_eq(v["lease_ms"], 30000, "NumberGrant vips: lease cut to the pool's")
        expect_eq(v["count"], 1, "NumberGrant vips: count")
        check(v["first"] >> 8 == 0x0A6300,
              "NumberGrant vips: %#x is not in 10.99.0.0/24" % v["first"])
        vn = [n for n in self.mgmt(MGMT_NUMBERS) if n.get("grant_id") == v["grant_id"]]
        expect_eq(len(vn), 1, "mgmt numbers: vips grant")
        dotted = socket.inet_ntoa(u32(v["first"]))
        expect_eq(vn[0].get("first"), dotted, "mgmt numbers: vips first as dotted IPv4")
        u = self.number_request(req_id + 2, "no-such-pool", 0, want=UNKNOWN_POOL)
        expect_eq(u["grant_id"], 0, "NumberGrant UNKNOWN_POOL: grant_id")
        # Release both; releasing again: NO_SUCH_GRANT; renewing a released grant: NO_SUCH_GRANT
        self.ack(T_NUM_RELEASE, u64(g["grant_id"]), "NumberRelease")
        self.ack(T_NUM_RELEASE, u64(v["grant_id"]), "NumberRelease (vips)")
        self.ack(T_NUM_RELEASE, u64(g["grant_id"]), "NumberRelease (again)", want=NO_SUCH_GRANT)
        r = self.renew(g["grant_id"], 0, want=NO_SUCH_GRANT)
        expect_eq(r["pool"], "", "NumberGrant NO_SUCH_GRANT: pool")
        for k in ("first", "count", "lease_ms"):
            expect_eq(r[k], 0, "NumberGrant NO_SUCH_GRANT: " + k)
        left = [n for n in self.mgmt(MGMT_NUMBERS)
                if n.get("grant_id") in (g["grant_id"], v["grant_id"])]
        expect_eq(left, [], "mgmt numbers after release")
        after = self.stats()
        expect_eq(after[free], before[free], "stats %s after release" % free)
        expect_eq(after["grants_held"], before["grants_held"], "stats grants_held after release")
        self.step(4, "NumberRequest nat-ports -> grant %d (%d..%d, lease %d ms), repeat -> same "
                  "grant; renew OK; vips -> %s; unknown pool -> UNKNOWN_POOL; release OK, again "
                  "-> NO_SUCH_GRANT; renew released -> NO_SUCH_GRANT"
                  % (g["grant_id"], g["first"], g["first"] + g["count"] - 1, g["lease_ms"],
                     dotted))

    def flow_body(self, flow_id, origin=None):
        return body_flow_add(self.id if origin is None else origin, flow_id, self.id, 6,
                             "192.0.2.7", 32, self.service["vip"], 32, (40000, 40000),
                             (80, 80), [(1, u8(46))], 0)

    def step5_flows(self):
        self.ack(T_FLOW_ADD, self.flow_body(1), "FlowAdd")
        f = self.my_flows()
        check(1 in f, "mgmt flows: flow 1 missing after FlowAdd Ack OK (%r)" % f)
        expect_eq(f[1].get("exact"), True, "mgmt flows: exact")
        check(f[1].get("name", "").endswith("/1"), "mgmt flows: name %r" % f[1].get("name"))
        # Idempotent replace.
        self.ack(T_FLOW_ADD, self.flow_body(1), "FlowAdd (again)")
        expect_eq(sorted(self.my_flows()), [1], "mgmt flows after repeated FlowAdd")
        # origin != sender: BAD_REQUEST, nothing added.
        self.ack(T_FLOW_ADD, self.flow_body(7, origin=self.id ^ 1), "FlowAdd (foreign origin)",
                 want=BAD_REQUEST)
        self.ack(T_FLOW_DEL, body_flow_del(self.id, 1), "FlowDel")
        expect_eq(self.my_flows(), {}, "mgmt flows after FlowDel")
        self.ack(T_FLOW_DEL, body_flow_del(self.id, 1), "FlowDel (unknown, idempotent)")
        self.step(5, "FlowAdd -> Ack OK, listed (exact); repeat -> one flow; foreign origin -> "
                  "BAD_REQUEST; FlowDel -> Ack OK, gone; FlowDel again -> Ack OK")

    def step6_refusals(self):
        before = self.stats()
        # (a) wrong HMAC: a valid FlowAdd with one tag bit flipped.
        seq = self.es.next_seq()
        good = pack(self.key, T_FLOW_ADD, self.id, seq, self.flow_body(2))
        self.es.send_raw(good[:-1] + bytes([good[-1] ^ 1]))
        self.es.expect_silence("FlowAdd with a wrong tag")
        # (b) replay: FlowAdd 3 (accepted), FlowDel 3 (accepted), then FlowAdd 3's exact bytes.
        r = self.ack(T_FLOW_ADD, self.flow_body(3), "FlowAdd 3")
        add3 = pack(self.key, T_FLOW_ADD, self.id, r["_seq"], self.flow_body(3))
        self.ack(T_FLOW_DEL, body_flow_del(self.id, 3), "FlowDel 3")
        self.es.send_raw(add3)
        self.es.expect_silence("replayed FlowAdd 3")
        # (c) stale: a fresh FlowAdd 4 with a seq 100 below the highest accepted.
        stale = pack(self.key, T_FLOW_ADD, self.id, self.es.seq - 100, self.flow_body(4))
        self.es.send_raw(stale)
        self.es.expect_silence("stale FlowAdd 4")
        # (d) malformed (seq 0, valid tag) and bad_version.
        self.es.send_raw(pack(self.key, T_FLOW_ADD, self.id, 0, self.flow_body(5)))
        self.es.expect_silence("FlowAdd with seq 0")
        bv = bytearray(pack(self.key, T_KEEPALIVE, self.id, self.es.next_seq(), u8(0)))
        bv[2] = 2
        bv[-TAG_LEN:] = hmac.new(self.key, bytes(bv[:-TAG_LEN]), hashlib.sha256).digest()
        self.es.send_raw(bytes(bv))
        self.es.expect_silence("version 2 Keepalive")
        expect_eq(self.my_flows(), {}, "mgmt flows after refused datagrams")
        after = self.stats()
        for c, d in (("rx_bad_mac", 1), ("rx_replayed", 1), ("rx_stale", 1),
                     ("rx_malformed", 1), ("rx_bad_version", 1)):
            expect_eq(after[c] - before[c], d, "stats %s increase" % c)
        expect_eq(after["flows"], before["flows"], "stats flows")
        # Still the same registration: a Keepalive is accepted.
        self.keepalive()
        self.step(6, "wrong tag, replayed seq, stale seq, seq 0, version 2: no reply, flows "
                  "unchanged, rx_bad_mac/rx_replayed/rx_stale/rx_malformed/rx_bad_version +1 each")

    def step7_keepalive_drain_leave(self):
        # Keep alive for longer than the dead interval: we must stay registered.
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.dead + self.interval:
            self.keepalive()
            n += 1
            time.sleep(self.interval / 2)
        check(self.my_system() is not None,
              "systems: we were removed although we kept alive every half interval")
        # Drain ourselves (§4.6), then advertise draining.
        self.ack(T_DRAIN, u64(self.id) + u32(5000), "Drain")
        self.keepalive(state=1)
        self.advert(state=1)
        s = self.my_system()
        expect_eq(s and s.get("state"), "draining", "systems: state after Drain")
        e = [x for x in self.server_list(self.service["name"]) if x["system"] == self.id]
        expect_eq(len(e), 1, "ServerListReply while draining: our entry")
        expect_eq(e[0]["state"], 1, "ServerListReply while draining: state")
        self.ack(T_DRAIN, u64(self.id ^ 1) + u32(5000), "Drain (foreign target)",
                 want=BAD_REQUEST)
        # Leave (reason 1 = drained).
        before = self.stats()
        self.ack(T_LEAVE, u64(self.id) + u8(1), "Leave")
        check(self.my_system() is None, "systems: still listed after Leave Ack OK")
        e = [x for x in self.server_list(self.service["name"]) if x["system"] == self.id]
        expect_eq(e, [], "ServerListReply after Leave")
        after = self.stats()
        expect_eq(after["leaves"], before["leaves"] + 1, "stats leaves")
        self.keepalive(want=NOT_REGISTERED)
        self.step(7, "%d Keepalives over %.1f s -> Ack OK, still registered; Drain -> Ack OK, "
                  "state draining (mgmt and server list); Leave -> Ack OK, removed; "
                  "Keepalive afterwards -> NOT_REGISTERED" % (n, self.dead + self.interval))

    def run(self):
        self.step0_self_test()
        self.step1_register()
        self.step2_advert()
        self.step3_server_list()
        self.step4_numbers()
        self.step5_flows()
        self.step6_refusals()
        self.step7_keepalive_drain_leave()


def main(argv):
    if len(argv) != 3:
        print("usage: client.py HOST:PORT KEYFILE", file=sys.stderr)
        return 2
    host, _, port = argv[1].rpartition(":")
    key = load_key(argv[2])
    t0 = time.monotonic()
    try:
        Client((host, int(port)), key).run()
    except Mismatch as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    print("PASS: all steps in %.2f s" % (time.monotonic() - t0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
