//! Message bodies: one struct per message type, `encode` into a `Vec<u8>`, `decode`
//! from a slice with typed errors. All integers are big-endian (network order).
//! Strings are `u8` length + UTF-8; addresses are a family byte (4 or 6) + 4/16 bytes.
//! Lists carry a `u8` count (server lists: `u16`). Decoding refuses trailing bytes.

use super::{MAX_BODY, ProtoError};
use crate::wire::ipv4::proto as ip_proto;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

type R<T> = Result<T, ProtoError>;

/// Message type codes (header byte 3).
pub mod ty {
    pub const REGISTER: u8 = 0x01;
    pub const REGISTER_ACK: u8 = 0x02;
    pub const SERVICE_ADVERT: u8 = 0x03;
    pub const FLOW_ADD: u8 = 0x04;
    pub const FLOW_DEL: u8 = 0x05;
    pub const DRAIN: u8 = 0x06;
    pub const LEAVE: u8 = 0x07;
    pub const SERVER_LIST_QUERY: u8 = 0x08;
    pub const SERVER_LIST_REPLY: u8 = 0x09;
    pub const NUMBER_REQUEST: u8 = 0x0A;
    pub const NUMBER_GRANT: u8 = 0x0B;
    pub const NUMBER_RENEW: u8 = 0x0C;
    pub const NUMBER_RELEASE: u8 = 0x0D;
    pub const ACK: u8 = 0x0E;
    pub const KEEPALIVE: u8 = 0x0F;
    pub const MGMT_REQUEST: u8 = 0x10;
    pub const MGMT_REPLY: u8 = 0x11;
}

/// Status codes carried in replies.
pub mod status {
    pub const OK: u8 = 0;
    pub const NOT_REGISTERED: u8 = 1;
    pub const UNKNOWN_POOL: u8 = 2;
    pub const POOL_EXHAUSTED: u8 = 3;
    pub const NO_SUCH_GRANT: u8 = 4;
    pub const NOT_HOLDER: u8 = 5;
    pub const BAD_REQUEST: u8 = 6;
    pub const NOT_FOUND: u8 = 7;
    pub const TOO_BIG: u8 = 8;
    pub const STORE_FAILED: u8 = 9;
    pub const NAME_IN_USE: u8 = 10;
}

/// Capability bits of [`Register::capabilities`].
pub mod cap {
    pub const SERVICES: u32 = 1;
    pub const FLOWS: u32 = 2;
    pub const NAT: u32 = 4;
    pub const IPSEC: u32 = 8;
    pub const MPLS: u32 = 16;
    pub const MULTICAST: u32 = 32;
}

/// What kind of system a sender is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    Intermediate = 1,
    End = 2,
    Supervisor = 3,
}

impl SystemKind {
    fn from_u8(v: u8) -> R<SystemKind> {
        match v {
            1 => Ok(SystemKind::Intermediate),
            2 => Ok(SystemKind::End),
            3 => Ok(SystemKind::Supervisor),
            _ => Err(ProtoError::Malformed),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SystemKind::Intermediate => "intermediate",
            SystemKind::End => "end",
            SystemKind::Supervisor => "supervisor",
        }
    }
}

/// Up or draining, as advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SysState {
    Up = 0,
    Draining = 1,
}

impl SysState {
    fn from_u8(v: u8) -> R<SysState> {
        match v {
            0 => Ok(SysState::Up),
            1 => Ok(SysState::Draining),
            _ => Err(ProtoError::Malformed),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SysState::Up => "up",
            SysState::Draining => "draining",
        }
    }
}

// ---------------------------------------------------------------- messages

#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    pub kind: SystemKind,
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
    pub capabilities: u32,
    /// Requested registration lease; 0 lets the supervisor choose.
    pub lease_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegisterAck {
    pub in_reply_to: u64,
    pub status: u8,
    pub lease_ms: u32,
    pub advert_interval_ms: u32,
    pub dead_interval_ms: u32,
}

/// Who an advertisement is about (self-contained, so a late listener learns all).
#[derive(Clone, Debug, PartialEq)]
pub struct SystemInfo {
    pub id: u64,
    pub kind: SystemKind,
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
    pub state: SysState,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    /// IP protocol number; 0 = any.
    pub proto: u8,
    /// Inclusive port ranges; empty = all ports.
    pub ports: Vec<(u16, u16)>,
    pub capacity: u32,
    pub weight: u32,
    /// Current load, per mille of capacity (may exceed 1000).
    pub load: u32,
    /// Congestion, per mille (0..=1000).
    pub congestion: u16,
    pub response_time_us: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceAdvert {
    pub origin: SystemInfo,
    /// Milliseconds since the sender last heard from the origin: 0 from the origin
    /// itself; the supervisor's relays say how old their information is.
    pub age_ms: u32,
    pub services: Vec<Service>,
}

/// A flow pattern; exact when proto != 0, both prefixes full length, both port ranges
/// single ports and no SPI range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FlowMatch {
    pub proto: u8,
    pub src: IpAddr,
    pub src_plen: u8,
    pub dst: IpAddr,
    pub dst_plen: u8,
    pub sport: (u16, u16),
    pub dport: (u16, u16),
    /// Inclusive range of the ESP security parameter index; only with proto 50
    /// (PROTOCOL.md §4.4, extension 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spi: Option<(u32, u32)>,
}

impl FlowMatch {
    pub fn is_exact(&self) -> bool {
        let full = if self.src.is_ipv4() { 32 } else { 128 };
        self.proto != 0
            && self.src_plen == full
            && self.dst_plen == full
            && self.sport.0 == self.sport.1
            && self.dport.0 == self.dport.1
            && self.spi.is_none()
    }

    /// Why the match is invalid, if it is: mixed families, prefixes past the address, an
    /// empty range, or an SPI range on a protocol without one.
    pub fn check(&self) -> Result<(), &'static str> {
        let full = if self.src.is_ipv4() { 32 } else { 128 };
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err("src and dst are of different address families");
        }
        if self.src_plen > full || self.dst_plen > full {
            return Err("prefix longer than the address");
        }
        if self.sport.0 > self.sport.1 || self.dport.0 > self.dport.1 {
            return Err("empty port range");
        }
        match self.spi {
            Some((lo, hi)) if lo > hi => Err("empty SPI range"),
            Some(_) if self.proto != ip_proto::ESP => Err("an SPI range needs protocol esp (50)"),
            _ => Ok(()),
        }
    }
}

/// FlowAdd extension types (PROTOCOL.md §4.4).
const EXT_SPI: u8 = 1;

/// QoS actions, as in the pipeline YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Qos {
    Dscp(u8),
    Pcp(u8),
    PushVlan { vid: u16, pcp: u8, tpid: u16 },
    PopVlan,
    SetVlan { vid: u16 },
    PushMpls { label: u32, tc: u8, ttl: u8 },
    PopMpls,
    SwapMpls { label: u32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowAdvert {
    pub origin: u64,
    pub flow_id: u64,
    /// End system the flow goes to (may differ from `origin`).
    pub target: u64,
    pub matcher: FlowMatch,
    pub qos: Vec<Qos>,
    /// 0 = until withdrawn or the origin is dead.
    pub lifetime_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowWithdraw {
    pub origin: u64,
    pub flow_id: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Drain {
    pub target: u64,
    pub timeout_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Leave {
    pub origin: u64,
    /// 0 shutdown, 1 drained, 2 declared dead by the supervisor.
    pub reason: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerListQuery {
    pub service: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerEntry {
    pub system: u64,
    pub name: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpAddr>,
    pub state: SysState,
    pub service: String,
    pub vip: IpAddr,
    pub proto: u8,
    pub weight: u32,
    pub load: u32,
    pub congestion: u16,
    pub response_time_us: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerListReply {
    pub in_reply_to: u64,
    pub status: u8,
    pub entries: Vec<ServerEntry>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberRequest {
    /// Chosen by the requester, stable across retransmissions: the supervisor
    /// answers a repeated (sender, request_id) with the same grant.
    pub request_id: u64,
    pub pool: String,
    pub lease_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberGrant {
    pub in_reply_to: u64,
    pub request_id: u64,
    pub status: u8,
    pub grant_id: u64,
    pub pool: String,
    pub first: u64,
    pub count: u32,
    pub lease_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberRenew {
    pub grant_id: u64,
    pub lease_ms: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NumberRelease {
    pub grant_id: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    pub in_reply_to: u64,
    pub status: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Keepalive {
    pub state: u8,
}

/// Management operations.
pub mod op {
    pub const SYSTEMS: u8 = 1;
    pub const SERVICES: u8 = 2;
    pub const FLOWS: u8 = 3;
    pub const NUMBERS: u8 = 4;
    pub const DRAIN: u8 = 5;
    pub const WEIGHT: u8 = 6;
    pub const STATS: u8 = 7;
}

/// A [`op::WEIGHT`] request's value that clears the override (the system's own
/// advertised weights apply again).
pub const WEIGHT_CLEAR: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq)]
pub struct MgmtRequest {
    pub op: u8,
    pub arg: String,
    pub value: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MgmtReply {
    pub in_reply_to: u64,
    pub status: u8,
    /// UTF-8 JSON text.
    pub json: String,
}

/// Every message body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Register(Register),
    RegisterAck(RegisterAck),
    ServiceAdvert(ServiceAdvert),
    FlowAdd(FlowAdvert),
    FlowDel(FlowWithdraw),
    Drain(Drain),
    Leave(Leave),
    ServerListQuery(ServerListQuery),
    ServerListReply(ServerListReply),
    NumberRequest(NumberRequest),
    NumberGrant(NumberGrant),
    NumberRenew(NumberRenew),
    NumberRelease(NumberRelease),
    Ack(Ack),
    Keepalive(Keepalive),
    MgmtRequest(MgmtRequest),
    MgmtReply(MgmtReply),
}

// ---------------------------------------------------------------- encoding

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v)
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes())
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes())
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes())
    }
    fn str(&mut self, s: &str) {
        // Truncate at a char boundary to 255 bytes.
        let mut end = s.len().min(255);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u8(end as u8);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn addr(&mut self, a: &IpAddr) {
        match a {
            IpAddr::V4(v) => {
                self.u8(4);
                self.0.extend_from_slice(&v.octets())
            }
            IpAddr::V6(v) => {
                self.u8(6);
                self.0.extend_from_slice(&v.octets())
            }
        }
    }
    fn addrs(&mut self, a: &[IpAddr]) {
        let n = a.len().min(255);
        self.u8(n as u8);
        for x in &a[..n] {
            self.addr(x)
        }
    }
    fn mac(&mut self, m: &[u8; 6]) {
        self.0.extend_from_slice(m)
    }
}

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.b.len() < n {
            return Err(ProtoError::Malformed);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn str(&mut self) -> R<String> {
        let n = self.u8()? as usize;
        let s = self.take(n)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| ProtoError::Malformed)
    }
    fn addr(&mut self) -> R<IpAddr> {
        match self.u8()? {
            4 => {
                let s = self.take(4)?;
                Ok(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])))
            }
            6 => {
                let s = self.take(16)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(s);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => Err(ProtoError::Malformed),
        }
    }
    fn addrs(&mut self) -> R<Vec<IpAddr>> {
        let n = self.u8()? as usize;
        (0..n).map(|_| self.addr()).collect()
    }
    fn mac(&mut self) -> R<[u8; 6]> {
        let s = self.take(6)?;
        let mut m = [0u8; 6];
        m.copy_from_slice(s);
        Ok(m)
    }
    fn end(&self) -> R<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Malformed)
        }
    }
}

fn enc_info(w: &mut W, i: &SystemInfo) {
    w.u64(i.id);
    w.u8(i.kind as u8);
    w.str(&i.name);
    w.mac(&i.mac);
    w.addrs(&i.addrs);
    w.u8(i.state as u8);
}

fn dec_info(r: &mut Rd) -> R<SystemInfo> {
    Ok(SystemInfo {
        id: r.u64()?,
        kind: SystemKind::from_u8(r.u8()?)?,
        name: r.str()?,
        mac: r.mac()?,
        addrs: r.addrs()?,
        state: SysState::from_u8(r.u8()?)?,
    })
}

fn enc_service(w: &mut W, s: &Service) {
    w.str(&s.name);
    w.addr(&s.vip);
    w.u8(s.proto);
    let n = s.ports.len().min(255);
    w.u8(n as u8);
    for (lo, hi) in &s.ports[..n] {
        w.u16(*lo);
        w.u16(*hi);
    }
    w.u32(s.capacity);
    w.u32(s.weight);
    w.u32(s.load);
    w.u16(s.congestion);
    w.u32(s.response_time_us);
}

fn dec_service(r: &mut Rd) -> R<Service> {
    let name = r.str()?;
    let vip = r.addr()?;
    let proto = r.u8()?;
    let n = r.u8()? as usize;
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let lo = r.u16()?;
        let hi = r.u16()?;
        if lo > hi {
            return Err(ProtoError::Malformed);
        }
        ports.push((lo, hi));
    }
    Ok(Service {
        name,
        vip,
        proto,
        ports,
        capacity: r.u32()?,
        weight: r.u32()?,
        load: r.u32()?,
        congestion: r.u16()?,
        response_time_us: r.u32()?,
    })
}

fn enc_match(w: &mut W, m: &FlowMatch) {
    w.u8(m.proto);
    w.addr(&m.src);
    w.u8(m.src_plen);
    w.addr(&m.dst);
    w.u8(m.dst_plen);
    w.u16(m.sport.0);
    w.u16(m.sport.1);
    w.u16(m.dport.0);
    w.u16(m.dport.1);
}

fn dec_match(r: &mut Rd) -> R<FlowMatch> {
    let proto = r.u8()?;
    let src = r.addr()?;
    let src_plen = r.u8()?;
    let dst = r.addr()?;
    let dst_plen = r.u8()?;
    // The SPI range, if any, comes in an extension at the end of the FlowAdd body: the
    // caller checks the whole match once it has read that.
    Ok(FlowMatch {
        proto,
        src,
        src_plen,
        dst,
        dst_plen,
        sport: (r.u16()?, r.u16()?),
        dport: (r.u16()?, r.u16()?),
        spi: None,
    })
}

fn enc_qos(w: &mut W, q: &Qos) {
    match *q {
        Qos::Dscp(v) => {
            w.u8(1);
            w.u8(1);
            w.u8(v)
        }
        Qos::Pcp(v) => {
            w.u8(2);
            w.u8(1);
            w.u8(v)
        }
        Qos::PushVlan { vid, pcp, tpid } => {
            w.u8(3);
            w.u8(5);
            w.u16(vid);
            w.u8(pcp);
            w.u16(tpid)
        }
        Qos::PopVlan => {
            w.u8(4);
            w.u8(0)
        }
        Qos::SetVlan { vid } => {
            w.u8(5);
            w.u8(2);
            w.u16(vid)
        }
        Qos::PushMpls { label, tc, ttl } => {
            w.u8(6);
            w.u8(6);
            w.u32(label);
            w.u8(tc);
            w.u8(ttl)
        }
        Qos::PopMpls => {
            w.u8(7);
            w.u8(0)
        }
        Qos::SwapMpls { label } => {
            w.u8(8);
            w.u8(4);
            w.u32(label)
        }
    }
}

fn dec_qos(r: &mut Rd) -> R<Qos> {
    let t = r.u8()?;
    let len = r.u8()? as usize;
    let v = r.take(len)?;
    let mut r = Rd { b: v };
    let q = match (t, len) {
        (1, 1) => Qos::Dscp(r.u8()?),
        (2, 1) => Qos::Pcp(r.u8()?),
        (3, 5) => Qos::PushVlan {
            vid: r.u16()?,
            pcp: r.u8()?,
            tpid: r.u16()?,
        },
        (4, 0) => Qos::PopVlan,
        (5, 2) => Qos::SetVlan { vid: r.u16()? },
        (6, 6) => Qos::PushMpls {
            label: r.u32()?,
            tc: r.u8()?,
            ttl: r.u8()?,
        },
        (7, 0) => Qos::PopMpls,
        (8, 4) => Qos::SwapMpls { label: r.u32()? },
        _ => return Err(ProtoError::Malformed),
    };
    let ok = match q {
        Qos::Dscp(v) => v < 64,
        Qos::Pcp(v) => v < 8,
        Qos::PushVlan { vid, pcp, .. } => vid < 4096 && pcp < 8,
        Qos::SetVlan { vid } => vid < 4096,
        Qos::PushMpls { label, tc, .. } => label < (1 << 20) && tc < 8,
        Qos::SwapMpls { label } => label < (1 << 20),
        Qos::PopVlan | Qos::PopMpls => true,
    };
    if !ok {
        return Err(ProtoError::Malformed);
    }
    Ok(q)
}

fn enc_entry(w: &mut W, e: &ServerEntry) {
    w.u64(e.system);
    w.str(&e.name);
    w.mac(&e.mac);
    w.addrs(&e.addrs);
    w.u8(e.state as u8);
    w.str(&e.service);
    w.addr(&e.vip);
    w.u8(e.proto);
    w.u32(e.weight);
    w.u32(e.load);
    w.u16(e.congestion);
    w.u32(e.response_time_us);
}

fn dec_entry(r: &mut Rd) -> R<ServerEntry> {
    Ok(ServerEntry {
        system: r.u64()?,
        name: r.str()?,
        mac: r.mac()?,
        addrs: r.addrs()?,
        state: SysState::from_u8(r.u8()?)?,
        service: r.str()?,
        vip: r.addr()?,
        proto: r.u8()?,
        weight: r.u32()?,
        load: r.u32()?,
        congestion: r.u16()?,
        response_time_us: r.u32()?,
    })
}

impl Body {
    /// The type code for header byte 3.
    pub fn msg_type(&self) -> u8 {
        match self {
            Body::Register(_) => ty::REGISTER,
            Body::RegisterAck(_) => ty::REGISTER_ACK,
            Body::ServiceAdvert(_) => ty::SERVICE_ADVERT,
            Body::FlowAdd(_) => ty::FLOW_ADD,
            Body::FlowDel(_) => ty::FLOW_DEL,
            Body::Drain(_) => ty::DRAIN,
            Body::Leave(_) => ty::LEAVE,
            Body::ServerListQuery(_) => ty::SERVER_LIST_QUERY,
            Body::ServerListReply(_) => ty::SERVER_LIST_REPLY,
            Body::NumberRequest(_) => ty::NUMBER_REQUEST,
            Body::NumberGrant(_) => ty::NUMBER_GRANT,
            Body::NumberRenew(_) => ty::NUMBER_RENEW,
            Body::NumberRelease(_) => ty::NUMBER_RELEASE,
            Body::Ack(_) => ty::ACK,
            Body::Keepalive(_) => ty::KEEPALIVE,
            Body::MgmtRequest(_) => ty::MGMT_REQUEST,
            Body::MgmtReply(_) => ty::MGMT_REPLY,
        }
    }

    /// Appends the body's bytes. Lists longer than their count field allows are
    /// truncated; a service advertisement, server list or management reply that would
    /// not fit in a datagram is cut to fit (fewer services / entries; management:
    /// status TOO_BIG, empty JSON).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut w = W(out);
        match self {
            Body::Register(m) => {
                w.u8(m.kind as u8);
                w.str(&m.name);
                w.mac(&m.mac);
                w.addrs(&m.addrs);
                w.u32(m.capabilities);
                w.u32(m.lease_ms);
            }
            Body::RegisterAck(m) => {
                w.u64(m.in_reply_to);
                w.u8(m.status);
                w.u32(m.lease_ms);
                w.u32(m.advert_interval_ms);
                w.u32(m.dead_interval_ms);
            }
            Body::ServiceAdvert(m) => {
                enc_info(&mut w, &m.origin);
                w.u32(m.age_ms);
                let count_at = w.0.len();
                w.u8(0);
                let mut n: u8 = 0;
                for s in &m.services {
                    let before = w.0.len();
                    enc_service(&mut w, s);
                    if w.0.len() - start > MAX_BODY || n == u8::MAX {
                        w.0.truncate(before);
                        break;
                    }
                    n += 1;
                }
                w.0[count_at] = n;
            }
            Body::FlowAdd(m) => {
                w.u64(m.origin);
                w.u64(m.flow_id);
                w.u64(m.target);
                enc_match(&mut w, &m.matcher);
                let n = m.qos.len().min(255);
                w.u8(n as u8);
                for q in &m.qos[..n] {
                    enc_qos(&mut w, q);
                }
                w.u32(m.lifetime_ms);
                if let Some((lo, hi)) = m.matcher.spi {
                    w.u8(EXT_SPI);
                    w.u8(8);
                    w.u32(lo);
                    w.u32(hi);
                }
            }
            Body::FlowDel(m) => {
                w.u64(m.origin);
                w.u64(m.flow_id);
            }
            Body::Drain(m) => {
                w.u64(m.target);
                w.u32(m.timeout_ms);
            }
            Body::Leave(m) => {
                w.u64(m.origin);
                w.u8(m.reason);
            }
            Body::ServerListQuery(m) => w.str(&m.service),
            Body::ServerListReply(m) => {
                w.u64(m.in_reply_to);
                w.u8(m.status);
                let count_at = w.0.len();
                w.u16(0);
                let mut n: u16 = 0;
                for e in &m.entries {
                    let before = w.0.len();
                    enc_entry(&mut w, e);
                    if w.0.len() - start > MAX_BODY || n == u16::MAX {
                        w.0.truncate(before);
                        break;
                    }
                    n += 1;
                }
                w.0[count_at..count_at + 2].copy_from_slice(&n.to_be_bytes());
            }
            Body::NumberRequest(m) => {
                w.u64(m.request_id);
                w.str(&m.pool);
                w.u32(m.lease_ms);
            }
            Body::NumberGrant(m) => {
                w.u64(m.in_reply_to);
                w.u64(m.request_id);
                w.u8(m.status);
                w.u64(m.grant_id);
                w.str(&m.pool);
                w.u64(m.first);
                w.u32(m.count);
                w.u32(m.lease_ms);
            }
            Body::NumberRenew(m) => {
                w.u64(m.grant_id);
                w.u32(m.lease_ms);
            }
            Body::NumberRelease(m) => w.u64(m.grant_id),
            Body::Ack(m) => {
                w.u64(m.in_reply_to);
                w.u8(m.status);
            }
            Body::Keepalive(m) => w.u8(m.state),
            Body::MgmtRequest(m) => {
                w.u8(m.op);
                w.str(&m.arg);
                w.u32(m.value);
            }
            Body::MgmtReply(m) => {
                w.u64(m.in_reply_to);
                if m.json.len() + 11 > MAX_BODY {
                    w.u8(status::TOO_BIG);
                    w.u16(0);
                } else {
                    w.u8(m.status);
                    w.u16(m.json.len() as u16);
                    w.0.extend_from_slice(m.json.as_bytes());
                }
            }
        }
    }

    /// Decodes a body of type `msg_type`; refuses unknown types and trailing bytes.
    pub fn decode(msg_type: u8, b: &[u8]) -> Result<Body, ProtoError> {
        let mut r = Rd { b };
        let body = match msg_type {
            ty::REGISTER => Body::Register(Register {
                kind: SystemKind::from_u8(r.u8()?)?,
                name: r.str()?,
                mac: r.mac()?,
                addrs: r.addrs()?,
                capabilities: r.u32()?,
                lease_ms: r.u32()?,
            }),
            ty::REGISTER_ACK => Body::RegisterAck(RegisterAck {
                in_reply_to: r.u64()?,
                status: r.u8()?,
                lease_ms: r.u32()?,
                advert_interval_ms: r.u32()?,
                dead_interval_ms: r.u32()?,
            }),
            ty::SERVICE_ADVERT => {
                let origin = dec_info(&mut r)?;
                let age_ms = r.u32()?;
                let n = r.u8()? as usize;
                let services = (0..n).map(|_| dec_service(&mut r)).collect::<R<Vec<_>>>()?;
                Body::ServiceAdvert(ServiceAdvert {
                    origin,
                    age_ms,
                    services,
                })
            }
            ty::FLOW_ADD => {
                let origin = r.u64()?;
                let flow_id = r.u64()?;
                let target = r.u64()?;
                let mut matcher = dec_match(&mut r)?;
                let n = r.u8()? as usize;
                let qos = (0..n).map(|_| dec_qos(&mut r)).collect::<R<Vec<_>>>()?;
                let lifetime_ms = r.u32()?;
                // Extensions to the end of the body. An unknown one is malformed: a
                // receiver must not apply a match it does not wholly understand.
                while r.end().is_err() {
                    match (r.u8()?, r.u8()?) {
                        (EXT_SPI, 8) if matcher.spi.is_none() => {
                            matcher.spi = Some((r.u32()?, r.u32()?));
                        }
                        _ => return Err(ProtoError::Malformed),
                    }
                }
                matcher.check().map_err(|_| ProtoError::Malformed)?;
                Body::FlowAdd(FlowAdvert {
                    origin,
                    flow_id,
                    target,
                    matcher,
                    qos,
                    lifetime_ms,
                })
            }
            ty::FLOW_DEL => Body::FlowDel(FlowWithdraw {
                origin: r.u64()?,
                flow_id: r.u64()?,
            }),
            ty::DRAIN => Body::Drain(Drain {
                target: r.u64()?,
                timeout_ms: r.u32()?,
            }),
            ty::LEAVE => Body::Leave(Leave {
                origin: r.u64()?,
                reason: r.u8()?,
            }),
            ty::SERVER_LIST_QUERY => Body::ServerListQuery(ServerListQuery { service: r.str()? }),
            ty::SERVER_LIST_REPLY => {
                let in_reply_to = r.u64()?;
                let status = r.u8()?;
                let n = r.u16()? as usize;
                let entries = (0..n).map(|_| dec_entry(&mut r)).collect::<R<Vec<_>>>()?;
                Body::ServerListReply(ServerListReply {
                    in_reply_to,
                    status,
                    entries,
                })
            }
            ty::NUMBER_REQUEST => Body::NumberRequest(NumberRequest {
                request_id: r.u64()?,
                pool: r.str()?,
                lease_ms: r.u32()?,
            }),
            ty::NUMBER_GRANT => Body::NumberGrant(NumberGrant {
                in_reply_to: r.u64()?,
                request_id: r.u64()?,
                status: r.u8()?,
                grant_id: r.u64()?,
                pool: r.str()?,
                first: r.u64()?,
                count: r.u32()?,
                lease_ms: r.u32()?,
            }),
            ty::NUMBER_RENEW => Body::NumberRenew(NumberRenew {
                grant_id: r.u64()?,
                lease_ms: r.u32()?,
            }),
            ty::NUMBER_RELEASE => Body::NumberRelease(NumberRelease { grant_id: r.u64()? }),
            ty::ACK => Body::Ack(Ack {
                in_reply_to: r.u64()?,
                status: r.u8()?,
            }),
            ty::KEEPALIVE => Body::Keepalive(Keepalive { state: r.u8()? }),
            ty::MGMT_REQUEST => Body::MgmtRequest(MgmtRequest {
                op: r.u8()?,
                arg: r.str()?,
                value: r.u32()?,
            }),
            ty::MGMT_REPLY => {
                let in_reply_to = r.u64()?;
                let status = r.u8()?;
                let n = r.u16()? as usize;
                let json = std::str::from_utf8(r.take(n)?)
                    .map_err(|_| ProtoError::Malformed)?
                    .to_owned();
                Body::MgmtReply(MgmtReply {
                    in_reply_to,
                    status,
                    json,
                })
            }
            _ => return Err(ProtoError::Malformed),
        };
        r.end()?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-assembled bytes of a Register body, checked against the encoder.
    #[test]
    fn register_vector() {
        let b = Body::Register(Register {
            kind: SystemKind::End,
            name: "web1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addrs: vec!["10.0.0.2".parse().unwrap()],
            capabilities: cap::SERVICES | cap::NAT,
            lease_ms: 3000,
        });
        let mut v = Vec::new();
        b.encode(&mut v);
        let expect: Vec<u8> = [
            &[2u8][..],
            &[4, b'w', b'e', b'b', b'1'],
            &[2, 0, 0, 0, 0, 1],
            &[1, 4, 10, 0, 0, 2],
            &[0, 0, 0, 5],
            &[0, 0, 0x0b, 0xb8],
        ]
        .concat();
        assert_eq!(v, expect);
        assert_eq!(Body::decode(ty::REGISTER, &v).unwrap(), b);
        assert!(Body::decode(ty::REGISTER, &v[..v.len() - 1]).is_err());
        let mut longer = v.clone();
        longer.push(0);
        assert!(Body::decode(ty::REGISTER, &longer).is_err());
    }

    #[test]
    fn oversized_advert_is_cut_to_fit() {
        let svc = Service {
            name: "x".repeat(255),
            vip: "::1".parse().unwrap(),
            proto: 6,
            ports: vec![(1, 2); 255],
            capacity: 0,
            weight: 0,
            load: 0,
            congestion: 0,
            response_time_us: 0,
        };
        let b = Body::ServiceAdvert(ServiceAdvert {
            origin: SystemInfo {
                id: 1,
                kind: SystemKind::End,
                name: "a".into(),
                mac: [0; 6],
                addrs: vec![],
                state: SysState::Up,
            },
            age_ms: 0,
            services: vec![svc; 200],
        });
        let mut v = Vec::new();
        b.encode(&mut v);
        assert!(v.len() <= MAX_BODY);
        let Ok(Body::ServiceAdvert(d)) = Body::decode(ty::SERVICE_ADVERT, &v) else {
            panic!("does not decode");
        };
        assert!(d.services.len() > 10 && d.services.len() < 200);
    }

    #[test]
    fn spi_extension() {
        let esp = FlowMatch {
            proto: ip_proto::ESP,
            src: "0.0.0.0".parse().unwrap(),
            src_plen: 0,
            dst: "203.0.113.1".parse().unwrap(),
            dst_plen: 32,
            sport: (0, 65535),
            dport: (0, 65535),
            spi: Some((0x1_0000, 0x1_ffff)),
        };
        let add = |matcher| {
            Body::FlowAdd(FlowAdvert {
                origin: 1,
                flow_id: 2,
                target: 1,
                matcher,
                qos: vec![],
                lifetime_ms: 0,
            })
        };
        let enc = |b: &Body| {
            let mut v = Vec::new();
            b.encode(&mut v);
            v
        };
        let b = add(esp);
        let v = enc(&b);
        // Without the SPI the body ends with the lifetime: the extension is type 1,
        // length 8, first and last SPI.
        let plain = enc(&add(FlowMatch { spi: None, ..esp }));
        assert_eq!(v.len(), plain.len() + 10);
        assert_eq!(&v[..plain.len()], &plain[..]);
        assert_eq!(&v[plain.len()..], &[1, 8, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
        assert_eq!(Body::decode(ty::FLOW_ADD, &v).unwrap(), b);
        assert_eq!(
            Body::decode(ty::FLOW_ADD, &plain).unwrap(),
            add(FlowMatch { spi: None, ..esp }),
            "a FlowAdd without extensions reads as before"
        );
        // Malformed: an unknown extension, a wrong length, the SPI twice, an empty range,
        // an SPI range for TCP, a cut extension.
        let mut unknown = v.clone();
        unknown[plain.len()] = 2;
        let mut long = plain.clone();
        long.extend_from_slice(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let mut twice = v.clone();
        twice.extend_from_slice(&v[plain.len()..]);
        let empty = enc(&add(FlowMatch {
            spi: Some((5, 4)),
            ..esp
        }));
        let tcp = enc(&add(FlowMatch { proto: 6, ..esp }));
        for bad in [
            &unknown,
            &long,
            &twice,
            &empty,
            &tcp,
            &v[..v.len() - 1].to_vec(),
        ] {
            assert!(Body::decode(ty::FLOW_ADD, bad).is_err(), "{bad:x?}");
        }
        assert!(FlowMatch { proto: 6, ..esp }.check().is_err());
        assert!(FlowMatch { proto: 51, ..esp }.check().is_err(), "AH");
    }

    #[test]
    fn qos_vector() {
        let b = Body::FlowAdd(FlowAdvert {
            origin: 1,
            flow_id: 2,
            target: 3,
            matcher: FlowMatch {
                proto: 6,
                src: "1.2.3.4".parse().unwrap(),
                src_plen: 32,
                dst: "5.6.7.8".parse().unwrap(),
                dst_plen: 32,
                sport: (1000, 1000),
                dport: (21, 21),
                spi: None,
            },
            qos: vec![
                Qos::Dscp(46),
                Qos::PushVlan {
                    vid: 100,
                    pcp: 5,
                    tpid: 0x8100,
                },
                Qos::SwapMpls { label: 0xABCDE },
            ],
            lifetime_ms: 0,
        });
        let mut v = Vec::new();
        b.encode(&mut v);
        // qos list starts after 3*8 + match(1+5+1+5+1+8) = 45 bytes
        assert_eq!(
            &v[45..],
            &[
                3, 1, 1, 46, 3, 5, 0, 100, 5, 0x81, 0, 8, 4, 0, 0x0A, 0xBC, 0xDE, 0, 0, 0, 0
            ]
        );
        assert_eq!(Body::decode(ty::FLOW_ADD, &v).unwrap(), b);
        // DSCP 64 is out of range.
        let mut bad = v.clone();
        bad[49] = 64;
        assert!(Body::decode(ty::FLOW_ADD, &bad).is_err());
    }
}
