#!/usr/bin/env python3
"""Independent flowgate control-protocol client, written only from docs/PROTOCOL.md.

stdlib only (hmac, hashlib, socket, struct). Registers as an end system, advertises a
service, queries the server list, requests / renews / releases a number, checks that a
datagram with a bad tag gets no answer, and leaves. Prints one JSON line of results;
exits 0 only if every step behaved as the document says.

usage: client.py --supervisor HOST:PORT --key-file F [--pool NAME] [--name NAME]
"""
import argparse
import hashlib
import hmac
import json
import socket
import struct
import sys
import time

MAGIC = b"FG"
VERSION = 1
T_REGISTER, T_REGISTER_ACK, T_SERVICE_ADVERT = 0x01, 0x02, 0x03
T_FLOW_ADD, T_FLOW_DEL, T_DRAIN, T_LEAVE = 0x04, 0x05, 0x06, 0x07
T_SLQ, T_SLR = 0x08, 0x09
T_NREQ, T_NGRANT, T_NRENEW, T_NREL = 0x0A, 0x0B, 0x0C, 0x0D
T_ACK, T_KEEPALIVE, T_MGMT_REQ, T_MGMT_REP = 0x0E, 0x0F, 0x10, 0x11


def read_key(path):
    lines = [l for l in open(path).read().splitlines() if not l.strip().startswith("#")]
    key = bytes.fromhex("".join(lines).strip())
    if len(key) < 32:
        raise SystemExit("key shorter than 32 bytes")
    return key


def sysid(name):
    return struct.unpack(">Q", hashlib.sha256(name.encode()).digest()[:8])[0]


def p_str(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def p_addr(a):
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET, a)
    except OSError:
        return b"\x06" + socket.inet_pton(socket.AF_INET6, a)


def p_addrs(lst):
    return struct.pack(">B", len(lst)) + b"".join(p_addr(a) for a in lst)


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("short body")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def str(self):
        return self.take(self.u8()).decode()

    def addr(self):
        fam = self.u8()
        if fam == 4:
            return socket.inet_ntop(socket.AF_INET, self.take(4))
        if fam == 6:
            return socket.inet_ntop(socket.AF_INET6, self.take(16))
        raise ValueError("bad family")

    def addrs(self):
        return [self.addr() for _ in range(self.u8())]

    def done(self):
        if self.i != len(self.b):
            raise ValueError("trailing bytes")


class Client:
    def __init__(self, sup, key, name):
        self.sup, self.key, self.name = sup, key, name
        self.id = sysid(name)
        self.seq = int(time.time() * 1e6)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.windows = {}

    def seal(self, mtype, body, key=None):
        self.seq += 1
        hdr = MAGIC + struct.pack(">BBQQHH", VERSION, mtype, self.id, self.seq, len(body), 0)
        tag = hmac.new(key or self.key, hdr + body, hashlib.sha256).digest()
        return self.seq, hdr + body + tag

    def open(self, data):
        if len(data) < 56 or data[:2] != MAGIC or data[2] != VERSION:
            return None
        mtype, sender, seq, blen, res = struct.unpack(">BQQHH", data[3:24])
        if len(data) != 24 + blen + 32 or res != 0:
            return None
        tag = hmac.new(self.key, data[:24 + blen], hashlib.sha256).digest()
        if not hmac.compare_digest(tag, data[24 + blen:]):
            return None
        # replay window (section 3.3)
        high, bits = self.windows.get(sender, (0, 0))
        if seq > high:
            shift = seq - high
            bits = ((bits << shift) | 1) & ((1 << 64) - 1) if shift < 64 else 1
            high = seq
        else:
            back = high - seq
            if back >= 64 or bits & (1 << back):
                return None
            bits |= 1 << back
        self.windows[sender] = (high, bits)
        return mtype, sender, seq, data[24:24 + blen]

    def request(self, mtype, body, want, tries=10, wait=0.3):
        """Send until a reply of type `want` whose in_reply_to matches a sent seq."""
        sent = set()
        for _ in range(tries):
            seq, dgram = self.seal(mtype, body)
            sent.add(seq)
            self.sock.sendto(dgram, self.sup)
            deadline = time.time() + wait
            while time.time() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.time()))
                try:
                    data, _ = self.sock.recvfrom(65535)
                except socket.timeout:
                    break
                m = self.open(data)
                if m is None:
                    continue
                rtype, sender, rseq, rbody = m
                if rtype != want or len(rbody) < 8:
                    continue
                if struct.unpack(">Q", rbody[:8])[0] in sent:
                    return sender, Reader(rbody)
        raise RuntimeError("no reply of type 0x%02x" % want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supervisor", required=True)
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--pool", default="nat-ports")
    ap.add_argument("--name", default="py-interop")
    a = ap.parse_args()
    host, port = a.supervisor.rsplit(":", 1)
    c = Client((host, int(port)), read_key(a.key_file), a.name)
    res = {}
    mac = bytes([0x02, 0x50, 0x59, 0, 0, 1])

    # Register (4.1) -> RegisterAck (4.2)
    body = struct.pack(">B", 2) + p_str(a.name) + mac + p_addrs(["127.0.0.1"]) + struct.pack(">II", 1 | 4, 0)
    sup_id, r = c.request(T_REGISTER, body, T_REGISTER_ACK)
    r.u64()
    st, lease, adv, dead = r.u8(), r.u32(), r.u32(), r.u32()
    r.done()
    res["register"] = {"status": st, "lease_ms": lease, "advert_interval_ms": adv, "dead_interval_ms": dead}
    assert st == 0 and adv > 0 and dead > adv

    # ServiceAdvert (4.3) -> Ack
    svc = (p_str("pysvc") + p_addr("10.1.2.3") + struct.pack(">B", 6) + struct.pack(">B", 1)
           + struct.pack(">HH", 8080, 8081) + struct.pack(">IIIHI", 500, 7, 123, 45, 678))
    body = (struct.pack(">QB", c.id, 2) + p_str(a.name) + mac + p_addrs(["127.0.0.1"])
            + struct.pack(">B", 0) + struct.pack(">I", 0) + struct.pack(">B", 1) + svc)
    _, r = c.request(T_SERVICE_ADVERT, body, T_ACK)
    r.u64()
    res["advert_ack"] = r.u8()
    r.done()
    assert res["advert_ack"] == 0

    # ServerListQuery (4.8) -> ServerListReply (4.9)
    _, r = c.request(T_SLQ, p_str("pysvc"), T_SLR)
    r.u64()
    st, n = r.u8(), r.u16()
    entries = []
    for _ in range(n):
        e = {"system": r.u64(), "name": r.str(), "mac": r.take(6).hex(), "addrs": r.addrs(),
             "state": r.u8(), "service": r.str(), "vip": r.addr(), "proto": r.u8(),
             "weight": r.u32(), "load": r.u32(), "congestion": r.u16(), "rt": r.u32()}
        entries.append(e)
    r.done()
    res["server_list"] = entries
    mine = [e for e in entries if e["system"] == c.id]
    assert st == 0 and len(mine) == 1, entries
    e = mine[0]
    assert (e["vip"], e["proto"], e["weight"], e["load"], e["congestion"], e["rt"]) == ("10.1.2.3", 6, 7, 123, 45, 678), e

    # NumberRequest (4.10) -> NumberGrant (4.11), twice with the same request_id
    body = struct.pack(">Q", 77) + p_str(a.pool) + struct.pack(">I", 0)
    grants = []
    for _ in range(2):
        _, r = c.request(T_NREQ, body, T_NGRANT)
        r.u64()
        g = {"request_id": r.u64(), "status": r.u8(), "grant_id": r.u64(), "pool": r.str(),
             "first": r.u64(), "count": r.u32(), "lease_ms": r.u32()}
        r.done()
        grants.append(g)
    res["grant"] = grants[0]
    assert grants[0]["status"] == 0 and grants[0]["count"] > 0 and grants[0]["request_id"] == 77
    assert grants[0] == grants[1], "retransmitted request must return the same grant"

    # NumberRenew (4.12)
    _, r = c.request(T_NRENEW, struct.pack(">QI", grants[0]["grant_id"], 0), T_NGRANT)
    r.u64(); r.u64()
    res["renew_status"] = r.u8()
    assert res["renew_status"] == 0

    # A datagram with a wrong tag gets no reply (3.4).
    _, bad = c.seal(T_KEEPALIVE, b"\x00", key=b"\x00" * 32)
    c.sock.sendto(bad, c.sup)
    c.sock.settimeout(0.5)
    try:
        data, _ = c.sock.recvfrom(65535)
        res["bad_mac_reply"] = True
    except socket.timeout:
        res["bad_mac_reply"] = False
    assert not res["bad_mac_reply"]

    # MgmtRequest numbers (4.16/4.17): our grant is listed with us as holder.
    _, r = c.request(T_MGMT_REQ, struct.pack(">B", 4) + p_str("") + struct.pack(">I", 0), T_MGMT_REP)
    r.u64()
    st, n = r.u8(), r.u16()
    nums = json.loads(r.take(n).decode())
    r.done()
    assert st == 0 and any(x["grant_id"] == grants[0]["grant_id"] and x["holder"] == a.name for x in nums), nums

    # NumberRelease (4.13) -> Ack OK; again -> NO_SUCH_GRANT (4)
    rel = struct.pack(">Q", grants[0]["grant_id"])
    _, r = c.request(T_NREL, rel, T_ACK)
    r.u64()
    res["release"] = r.u8()
    _, r = c.request(T_NREL, rel, T_ACK)
    r.u64()
    res["release_again"] = r.u8()
    assert res["release"] == 0 and res["release_again"] == 4

    # Leave (4.7) -> Ack; afterwards a Keepalive gets NOT_REGISTERED (1).
    _, r = c.request(T_LEAVE, struct.pack(">QB", c.id, 0), T_ACK)
    r.u64()
    res["leave"] = r.u8()
    _, r = c.request(T_KEEPALIVE, b"\x00", T_ACK)
    r.u64()
    res["after_leave"] = r.u8()
    assert res["leave"] == 0 and res["after_leave"] == 1
    res["ok"] = True
    print(json.dumps(res))


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, RuntimeError, ValueError) as e:
        print(json.dumps({"ok": False, "error": repr(e)}))
        sys.exit(1)
