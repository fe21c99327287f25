//! Flows as static scripts: each kind of flow is a fixed list of [`Step`]s, and a [`Flow`]
//! is a cursor in its script plus the addresses, ports, sequence numbers and sizes it
//! needs to build each frame.
//!
//! Layer: tooling (`gen`). A `Flow` is `Copy` and heap-free; [`Flow::emit`] writes one
//! frame into the caller's buffer (payloads are formatted straight into it).

use std::io::Write;
use std::net::IpAddr;

use super::frame::{self, ESP, ICMP, ICMPV6, Tags, UDP, flags::*};

/// Which end of the flow sends a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client (outside, behind the gateway).
    C,
    /// The server (an end system answering from the VIP).
    S,
}

/// Payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pl {
    None,
    HttpReq,
    HttpResp,
    Text(&'static str),
    PasvReply,
    PortCmd,
    Bulk,
    DnsQuery,
    DnsResp,
    SipReq,
    SipResp,
}

/// One frame of a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// TCP on connection 0 (control) or 1 (FTP data).
    Tcp(u8, Side, u8, Pl),
    Udp(Side, Pl),
    /// ICMP/ICMPv6 echo request (C) or reply (S).
    Icmp(Side),
    Esp(Side),
    /// ESP in UDP 4500 (NAT-T).
    EspUdp(Side),
}

use Pl::*;
use Side::*;
use Step::*;

const SA: u8 = SYN | ACK;
const PA: u8 = PSH | ACK;
const FA: u8 = FIN | ACK;
const RA: u8 = RST | ACK;

const WEB_OPEN: [Step; 7] = [
    Tcp(0, C, SYN, None),
    Tcp(0, S, SA, None),
    Tcp(0, C, ACK, None),
    Tcp(0, C, PA, HttpReq),
    Tcp(0, S, PA, HttpResp),
    Tcp(0, C, ACK, None),
    Tcp(0, C, FA, None),
];

/// A web flow: handshake, request, response, FIN teardown (9 frames).
pub static WEB: [Step; 9] = [
    WEB_OPEN[0],
    WEB_OPEN[1],
    WEB_OPEN[2],
    WEB_OPEN[3],
    WEB_OPEN[4],
    WEB_OPEN[5],
    WEB_OPEN[6],
    Tcp(0, S, FA, None),
    Tcp(0, C, ACK, None),
];

/// A web flow that the client resets after the response (7 frames).
pub static WEB_RST: [Step; 7] = [
    WEB_OPEN[0],
    WEB_OPEN[1],
    WEB_OPEN[2],
    WEB_OPEN[3],
    WEB_OPEN[4],
    WEB_OPEN[5],
    Tcp(0, C, RA, None),
];

const FTP_LOGIN: [Step; 11] = [
    Tcp(0, C, SYN, None),
    Tcp(0, S, SA, None),
    Tcp(0, C, ACK, None),
    Tcp(0, S, PA, Text("220 flowgate FTP ready.\r\n")),
    Tcp(0, C, PA, Text("USER anonymous\r\n")),
    Tcp(0, S, PA, Text("331 Please specify the password.\r\n")),
    Tcp(0, C, PA, Text("PASS guest@\r\n")),
    Tcp(0, S, PA, Text("230 Login successful.\r\n")),
    Tcp(0, C, PA, Text("TYPE I\r\n")),
    Tcp(0, S, PA, Text("200 Switching to Binary mode.\r\n")),
    Tcp(0, C, ACK, None),
];

const FTP_CLOSE: [Step; 7] = [
    Tcp(0, S, PA, Text("226 Transfer complete.\r\n")),
    Tcp(0, C, PA, Text("QUIT\r\n")),
    Tcp(0, S, PA, Text("221 Goodbye.\r\n")),
    Tcp(0, C, FA, None),
    Tcp(0, S, FA, None),
    Tcp(0, C, ACK, None),
    Tcp(0, S, ACK, None),
];

macro_rules! cat {
    ($($a:expr),* ; $n:expr) => {{
        let mut out = [Tcp(0, C, 0, None); $n];
        let mut k = 0;
        $(
            let a = $a;
            let mut i = 0;
            while i < a.len() {
                out[k] = a[i];
                k += 1;
                i += 1;
            }
        )*
        assert!(k == $n);
        out
    }};
}

/// Passive FTP: login, PASV with a real 227 reply, the data connection to that port
/// (opened by the client), RETR, close (33 frames, 2 TCP connections).
pub static FTP_PASV: [Step; 33] = cat!(FTP_LOGIN, [
    Tcp(0, C, PA, Text("PASV\r\n")),
    Tcp(0, S, PA, PasvReply),
    Tcp(1, C, SYN, None),
    Tcp(1, S, SA, None),
    Tcp(1, C, ACK, None),
    Tcp(0, C, PA, Text("RETR file.bin\r\n")),
    Tcp(0, S, PA, Text("150 Opening BINARY mode data connection.\r\n")),
    Tcp(1, S, PA, Bulk),
    Tcp(1, C, ACK, None),
    Tcp(1, S, FA, None),
    Tcp(1, C, FA, None),
    Tcp(1, S, ACK, None),
    Tcp(0, C, ACK, None),
    Tcp(0, C, ACK, None),
    Tcp(0, S, ACK, None),
], FTP_CLOSE; 33);

/// Active FTP: login, PORT, the data connection opened by the server from port 20 to the
/// client's port, RETR, close (33 frames, 2 TCP connections).
pub static FTP_ACTIVE: [Step; 33] = cat!(FTP_LOGIN, [
    Tcp(0, C, PA, PortCmd),
    Tcp(0, S, PA, Text("200 PORT command successful.\r\n")),
    Tcp(0, C, PA, Text("RETR file.bin\r\n")),
    Tcp(0, S, PA, Text("150 Opening BINARY mode data connection.\r\n")),
    Tcp(1, S, SYN, None),
    Tcp(1, C, SA, None),
    Tcp(1, S, ACK, None),
    Tcp(1, S, PA, Bulk),
    Tcp(1, C, ACK, None),
    Tcp(1, S, FA, None),
    Tcp(1, C, FA, None),
    Tcp(1, S, ACK, None),
    Tcp(0, C, ACK, None),
    Tcp(0, C, ACK, None),
    Tcp(0, S, ACK, None),
], FTP_CLOSE; 33);

/// DNS-like query and answer.
pub static DNS: [Step; 2] = [Udp(C, DnsQuery), Udp(S, DnsResp)];
/// SIP-like OPTIONS and 200 OK.
pub static SIP: [Step; 2] = [Udp(C, SipReq), Udp(S, SipResp)];
/// Two pings.
pub static PING: [Step; 4] = [Icmp(C), Icmp(S), Icmp(C), Icmp(S)];
/// ESP both ways, three rounds.
pub static ESP_FLOW: [Step; 6] = [Esp(C), Esp(S), Esp(C), Esp(S), Esp(C), Esp(S)];
/// ESP in UDP 4500, three rounds.
pub static ESP_NATT: [Step; 6] = [
    EspUdp(C),
    EspUdp(S),
    EspUdp(C),
    EspUdp(S),
    EspUdp(C),
    EspUdp(S),
];

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Copy, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
        }
    }
}

/// Frame-level constants shared by all flows.
#[derive(Clone, Copy, Debug)]
pub struct Macs {
    pub system: [u8; 6],
    pub gateway: [u8; 6],
}

/// One flow in flight.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub script: &'static [Step],
    pub step: usize,
    pub client: IpAddr,
    pub vip: IpAddr,
    pub server_mac: [u8; 6],
    /// Ports of connection 0 and 1: `[conn] = (client side, server side)`.
    pub ports: [(u16, u16); 2],
    /// TCP sequence numbers: `[conn][0 = client, 1 = server]`, next byte to send.
    pub seq: [[u32; 2]; 2],
    pub ip_id: [u16; 2],
    pub tags: Tags,
    pub spi: [u32; 2],
    pub esp_seq: [u32; 2],
    /// Body length of the HTTP response / FTP data.
    pub bulk: u16,
    pub icmp_seq: u16,
    pub rng: Rng,
    pub serial: u64,
}

fn side_ix(s: Side) -> usize {
    match s {
        C => 0,
        S => 1,
    }
}

/// `IpAddr` as text in URIs/headers (IPv6 in brackets).
struct Host(IpAddr);

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Longest HTTP/FTP body.
pub const MAX_BULK: u16 = 1400;
static BODY: [u8; MAX_BULK as usize] = {
    let mut a = [0u8; MAX_BULK as usize];
    let mut i = 0;
    while i < a.len() {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
};

const DNS_QNAME: &[u8] = b"\x03www\x07example\x03com\x00";

impl Flow {
    /// True when every step has been emitted.
    pub fn done(&self) -> bool {
        self.step >= self.script.len()
    }

    /// Writes the next frame of the script into `buf` (cleared first). Returns whether
    /// the frame is a TCP SYN without ACK (a new connection), for counting.
    pub fn emit(&mut self, macs: &Macs, buf: &mut Vec<u8>) -> bool {
        let Some(&step) = self.script.get(self.step) else {
            buf.clear();
            return false;
        };
        self.step += 1;
        let side = match step {
            Tcp(_, s, _, _) | Udp(s, _) | Icmp(s) | Esp(s) | EspUdp(s) => s,
        };
        let si = side_ix(side);
        let (src_mac, src, dst, tags) = match side {
            C => (macs.gateway, self.client, self.vip, self.tags),
            S => (self.server_mac, self.vip, self.client, Tags::NONE),
        };
        let proto = match step {
            Tcp(..) => frame::TCP,
            Udp(..) | EspUdp(_) => UDP,
            Esp(_) => ESP,
            Icmp(_) => {
                if self.vip.is_ipv6() {
                    ICMPV6
                } else {
                    ICMP
                }
            }
        };
        let id = self.ip_id[si];
        self.ip_id[si] = id.wrapping_add(1);
        let lay = frame::begin(buf, macs.system, src_mac, &tags, src, dst, proto, id);
        let mut new_conn = false;
        match step {
            Tcp(conn, _, fl, pl) => {
                let c = usize::from(conn & 1);
                let (cp, sp) = self.ports[c];
                let (sport, dport) = if side == C { (cp, sp) } else { (sp, cp) };
                let seq = self.seq[c][si];
                let ack = if fl & ACK != 0 {
                    self.seq[c][1 - si]
                } else {
                    0
                };
                frame::tcp(buf, sport, dport, seq, ack, fl);
                let before = buf.len();
                self.payload(pl, buf);
                let mut used = (buf.len() - before) as u32;
                if fl & (SYN | FIN) != 0 {
                    used += 1;
                }
                new_conn = fl & SYN != 0 && fl & ACK == 0;
                self.seq[c][si] = seq.wrapping_add(used);
            }
            Udp(_, pl) => {
                let (cp, sp) = self.ports[0];
                let (sport, dport) = if side == C { (cp, sp) } else { (sp, cp) };
                frame::udp(buf, sport, dport);
                self.payload(pl, buf);
            }
            Icmp(_) => {
                let ty = match (self.vip.is_ipv6(), side) {
                    (false, C) => 8,
                    (false, S) => 0,
                    (true, C) => 128,
                    (true, S) => 129,
                };
                frame::icmp_echo(buf, ty, self.ports[0].0, self.icmp_seq / 2);
                self.icmp_seq += 1;
                buf.extend_from_slice(b"abcdefghijklmnopqrstuvwabcdefghi");
            }
            Esp(_) | EspUdp(_) => {
                if matches!(step, EspUdp(_)) {
                    let (cp, sp) = self.ports[0];
                    let (sport, dport) = if side == C { (cp, sp) } else { (sp, cp) };
                    frame::udp(buf, sport, dport);
                }
                self.esp_seq[si] += 1;
                buf.extend_from_slice(&self.spi[si].to_be_bytes());
                buf.extend_from_slice(&self.esp_seq[si].to_be_bytes());
                // IV (16) + ciphertext (multiple of 16) + ICV (12): opaque bytes.
                let n = 16 + 16 * (2 + (self.rng.below(5) as usize)) + 12;
                self.fill_random(buf, n);
            }
        }
        frame::finish(buf, lay);
        new_conn
    }

    fn fill_random(&mut self, buf: &mut Vec<u8>, n: usize) {
        let mut left = n;
        while left > 0 {
            let r = self.rng.next().to_le_bytes();
            let k = left.min(8);
            buf.extend_from_slice(&r[..k]);
            left -= k;
        }
    }

    /// Appends the payload. Writing into a `Vec` with spare capacity does not allocate;
    /// `write!` into a `Vec` cannot fail.
    fn payload(&mut self, pl: Pl, buf: &mut Vec<u8>) {
        let serial = self.serial;
        let _ = match pl {
            None => Ok(()),
            Text(t) => buf.write_all(t.as_bytes()),
            HttpReq => write!(
                buf,
                "GET /object/{serial}.txt HTTP/1.1\r\nHost: {}\r\nUser-Agent: flowgate-gen\r\n\
                 Accept: */*\r\n\r\n",
                Host(self.vip)
            ),
            HttpResp => {
                let r = write!(
                    buf,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    self.bulk
                );
                self.body(buf);
                r
            }
            Bulk => {
                self.body(buf);
                Ok(())
            }
            PasvReply => {
                let IpAddr::V4(a) = self.vip else {
                    return;
                };
                let o = a.octets();
                let p = self.ports[1].1;
                write!(
                    buf,
                    "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                    o[0],
                    o[1],
                    o[2],
                    o[3],
                    p >> 8,
                    p & 0xff
                )
            }
            PortCmd => {
                let IpAddr::V4(a) = self.client else {
                    return;
                };
                let o = a.octets();
                let p = self.ports[1].0;
                write!(
                    buf,
                    "PORT {},{},{},{},{},{}\r\n",
                    o[0],
                    o[1],
                    o[2],
                    o[3],
                    p >> 8,
                    p & 0xff
                )
            }
            DnsQuery | DnsResp => {
                let id = (serial as u16) ^ 0x5a5a;
                let resp = pl == DnsResp;
                let qtype: u16 = if self.vip.is_ipv6() { 28 } else { 1 };
                buf.extend_from_slice(&id.to_be_bytes());
                buf.extend_from_slice(if resp { &[0x81, 0x80] } else { &[0x01, 0x00] });
                buf.extend_from_slice(&[0, 1, 0, u8::from(resp), 0, 0, 0, 0]);
                buf.extend_from_slice(DNS_QNAME);
                buf.extend_from_slice(&qtype.to_be_bytes());
                buf.extend_from_slice(&[0, 1]);
                if resp {
                    buf.extend_from_slice(&[0xc0, 0x0c]);
                    buf.extend_from_slice(&qtype.to_be_bytes());
                    buf.extend_from_slice(&[0, 1, 0, 0, 0x01, 0x2c]);
                    if qtype == 28 {
                        buf.extend_from_slice(&[0, 16]);
                        buf.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                        buf.extend_from_slice(&[0; 11]);
                        buf.push(serial as u8);
                    } else {
                        buf.extend_from_slice(&[0, 4, 192, 0, 2, serial as u8]);
                    }
                }
                Ok(())
            }
            SipReq | SipResp => {
                let (c, v) = (Host(self.client), Host(self.vip));
                let cport = self.ports[0].0;
                let first = if pl == SipReq {
                    "OPTIONS sip:service@"
                } else {
                    "SIP/2.0 200 OK"
                };
                let r = if pl == SipReq {
                    write!(buf, "{first}{v} SIP/2.0\r\n")
                } else {
                    write!(buf, "{first}\r\n")
                };
                let to_tag = if pl == SipResp { ";tag=srv" } else { "" };
                let _ = write!(
                    buf,
                    "Via: SIP/2.0/UDP {c}:{cport};branch=z9hG4bK{serial:x}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:probe@{c}>;tag={serial:x}\r\n\
                     To: <sip:service@{v}>{to_tag}\r\nCall-ID: {serial:x}@flowgate\r\n\
                     CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                r
            }
        };
    }

    fn body(&mut self, buf: &mut Vec<u8>) {
        let n = usize::from(self.bulk).min(BODY.len());
        buf.extend_from_slice(&BODY[..n]);
    }
}
