//! `flowgate supervisor | agent | ctl`: clap arguments, YAML confs, and the run
//! functions that wire a state machine to [`super::driver::Driver`].
//!
//! Flags override the conf. Relative paths in a conf are relative to the current
//! directory (the demo runs from the repository root). The agent's local commands
//! (`flow add|del`, `drain`) travel over a unix socket as one JSON line each way.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig, AgentEvent, FlowSpec, NumberRoute};
use super::ana::PoolConf;
use super::driver::Driver;
use super::proto::*;
use super::store::FileStore;
use super::supervisor::{SupEvent, Supervisor, SupervisorConfig};

// ------------------------------------------------------------------ confs

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvertMode {
    /// Agents send advertisements to the supervisor, which relays them by unicast.
    #[default]
    Relay,
    /// Agents also send advertisements to the multicast group.
    Multicast,
}

/// `conf/supervisor.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConf {
    #[serde(default = "d_sup_name")]
    pub name: String,
    #[serde(default = "d_listen")]
    pub listen: String,
    #[serde(default = "d_state")]
    pub state_dir: PathBuf,
    #[serde(default = "d_key")]
    pub key_file: PathBuf,
    #[serde(default = "d_adv")]
    pub advert_interval_ms: u64,
    #[serde(default = "d_dead")]
    pub dead_interval_ms: u64,
    #[serde(default = "d_drain")]
    pub drain_timeout_ms: u64,
    #[serde(default)]
    pub adverts: AdvertMode,
    #[serde(default)]
    pub multicast_group: Option<String>,
    #[serde(default)]
    pub pools: Vec<PoolConf>,
}

fn d_sup_name() -> String {
    "supervisor".into()
}
fn d_listen() -> String {
    "127.0.0.1:7700".into()
}
fn d_state() -> PathBuf {
    "state/supervisor".into()
}
fn d_key() -> PathBuf {
    "conf/control.key".into()
}
fn d_adv() -> u64 {
    1000
}
fn d_dead() -> u64 {
    3500
}
fn d_drain() -> u64 {
    30_000
}

/// Where an agent's congestion figures come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CongestionConf {
    /// The service's socket queues: a TCP service's, how full its listeners' accept
    /// queues are ([`super::conns::accept_queue_permille`]); a UDP service's, how full
    /// its sockets' receive buffers are, or full after drops
    /// ([`super::conns::receive_queue_permille`]); `proto: any`, the larger. Also
    /// accepted under its first name, `accept-queue`.
    #[default]
    #[serde(alias = "accept-queue")]
    Queues,
    /// None (advertised as 0).
    None,
}

/// Where an agent's load figure comes from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "lowercase")]
pub enum LoadConf {
    /// A fixed per-mille figure.
    Static {
        #[serde(default)]
        value: u32,
    },
    /// `sh -c COMMAND`; its stdout's first number is the load in per mille.
    Command { command: String },
    /// The host's 1-minute load average, ×1000 / number of CPUs.
    #[default]
    Loadavg,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(u16),
    Range(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConf {
    pub name: String,
    pub vip: IpAddr,
    /// tcp, udp, any, or a protocol number.
    #[serde(default = "d_proto")]
    pub proto: String,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default = "d_cap")]
    pub capacity: u32,
    #[serde(default = "d_weight")]
    pub weight: u32,
    /// A health check of the local daemon: failing, the service is advertised at
    /// weight 0 ([`super::health`]).
    #[serde(default)]
    pub health: Option<super::health::HealthConf>,
}

fn d_proto() -> String {
    "tcp".into()
}
fn d_cap() -> u32 {
    1000
}
fn d_weight() -> u32 {
    100
}

/// `conf/agent.yaml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConf {
    pub name: String,
    #[serde(default = "d_listen")]
    pub supervisor: String,
    #[serde(default = "d_agent_listen")]
    pub listen: String,
    #[serde(default = "d_key")]
    pub key_file: PathBuf,
    #[serde(default = "d_mac")]
    pub mac: String,
    #[serde(default)]
    pub addrs: Vec<IpAddr>,
    #[serde(default)]
    pub adverts: AdvertMode,
    #[serde(default)]
    pub multicast_group: Option<String>,
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    #[serde(default = "d_adv")]
    pub advert_interval_ms: u64,
    #[serde(default = "d_dead")]
    pub dead_interval_ms: u64,
    #[serde(default = "d_agent_drain")]
    pub drain_timeout_ms: u64,
    #[serde(default)]
    pub load: LoadConf,
    #[serde(default)]
    pub congestion: CongestionConf,
    #[serde(default)]
    pub services: Vec<ServiceConf>,
    /// Pools to hold one grant from each (e.g. `nat-ports`), each a name or a name with
    /// a route (`{pool: nat-ports, route: {dst: 203.0.113.1, proto: [tcp, udp]}}`).
    #[serde(default)]
    pub numbers: Vec<NumberConf>,
    /// Where the agent writes the numbers it holds (JSON, rewritten on every change).
    #[serde(default)]
    pub numbers_file: Option<PathBuf>,
}

/// One entry of `numbers:` in `conf/agent.yaml`: a pool name, or a pool with a route.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum NumberConf {
    Pool(String),
    Routed { pool: String, route: RouteConf },
}

/// The map form of a `numbers:` entry (its errors name the key at fault, where an
/// untagged enum would only say that no form matched).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutedNumber {
    pool: String,
    route: RouteConf,
}

impl<'de> Deserialize<'de> for NumberConf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NumberConf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a pool name, or {pool: NAME, route: {dst: ADDRESS, proto: …}}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<NumberConf, E> {
                Ok(NumberConf::Pool(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> std::result::Result<NumberConf, A::Error> {
                let r = RoutedNumber::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(NumberConf::Routed {
                    pool: r.pool,
                    route: r.route,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl NumberConf {
    pub fn pool(&self) -> &str {
        match self {
            NumberConf::Pool(p) | NumberConf::Routed { pool: p, .. } => p,
        }
    }
}

/// Where a held block is routed: traffic to `dst` with protocol `proto` (one or a list)
/// and a destination port in the block, or for `esp` an SPI in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConf {
    pub dst: IpAddr,
    #[serde(default = "d_route_proto")]
    pub proto: OneOrMany,
}

fn d_route_proto() -> OneOrMany {
    OneOrMany::One("tcp".into())
}

/// A string or a list of strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn d_agent_listen() -> String {
    "0.0.0.0:0".into()
}
fn d_mac() -> String {
    "02:00:00:00:00:01".into()
}
fn d_agent_drain() -> u64 {
    10_000
}

fn load_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads a key file: the key in hex (at least 32 bytes); lines starting with '#' are comments.
pub fn load_key(path: &Path) -> Result<Key> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let hex: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("");
    Key::from_hex(&hex).with_context(|| format!("key file {}", path.display()))
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("address {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("address {addr} resolves to nothing"))
}

/// Parses "02:00:00:00:00:01".
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("MAC {s}: expected six hex bytes separated by ':'");
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).with_context(|| format!("MAC {s}"))?;
    }
    Ok(m)
}

fn parse_proto(s: &str) -> Result<u8> {
    crate::config::parse_proto(s).ok_or_else(|| {
        anyhow!("protocol {s:?}: tcp, udp, icmp, icmpv6, esp, ah, gre, sctp, any or a number")
    })
}

/// "80" or "8000-8100".
pub fn parse_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a
        .trim()
        .parse()
        .with_context(|| format!("port range {s}"))?;
    let b: u16 = b
        .trim()
        .parse()
        .with_context(|| format!("port range {s}"))?;
    if a > b {
        bail!("port range {s}: first > last");
    }
    Ok((a, b))
}

fn parse_prefix(s: &str) -> Result<(IpAddr, u8)> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let a: IpAddr = a.parse().with_context(|| format!("address {s}"))?;
    let full = if a.is_ipv4() { 32 } else { 128 };
    let l = match l {
        Some(l) => l.parse().with_context(|| format!("prefix {s}"))?,
        None => full,
    };
    if l > full {
        bail!("prefix {s}: length > {full}");
    }
    Ok((a, l))
}

// ------------------------------------------------------------------ supervisor

#[derive(Args, Debug, Clone)]
pub struct SupervisorArgs {
    #[arg(long, default_value = "conf/supervisor.yaml")]
    pub conf: PathBuf,
    /// State directory (the crash-safe log lives here).
    #[arg(long)]
    pub state: Option<PathBuf>,
    #[arg(long)]
    pub listen: Option<String>,
    /// Key file: the key in hex, at least 32 bytes.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    #[arg(long)]
    pub advert_interval_ms: Option<u64>,
    #[arg(long)]
    pub dead_interval_ms: Option<u64>,
    /// Don't log events to stderr.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_supervisor(a: &SupervisorArgs) -> Result<()> {
    let mut conf: SupervisorConf = load_yaml(&a.conf)?;
    if let Some(s) = &a.state {
        conf.state_dir = s.clone();
    }
    if let Some(s) = &a.listen {
        conf.listen = s.clone();
    }
    if let Some(s) = &a.key_file {
        conf.key_file = s.clone();
    }
    if let Some(v) = a.advert_interval_ms {
        conf.advert_interval_ms = v;
    }
    if let Some(v) = a.dead_interval_ms {
        conf.dead_interval_ms = v;
    }
    if conf.advert_interval_ms == 0 || conf.dead_interval_ms <= conf.advert_interval_ms {
        bail!(
            "{}: need 0 < advert_interval_ms < dead_interval_ms",
            a.conf.display()
        );
    }
    let key = load_key(&conf.key_file)?;
    let (store, records) = FileStore::open(&conf.state_dir)
        .with_context(|| format!("state dir {}", conf.state_dir.display()))?;
    let cfg = SupervisorConfig {
        name: conf.name.clone(),
        advert_interval: Duration::from_millis(conf.advert_interval_ms),
        dead_interval: Duration::from_millis(conf.dead_interval_ms),
        relay: conf.adverts == AdvertMode::Relay,
        drain_timeout: Duration::from_millis(conf.drain_timeout_ms),
        pools: conf.pools.clone(),
    };
    let n = records.len();
    let mut sup = Supervisor::restore(
        cfg,
        key,
        SeqGen::from_wall_clock(),
        Instant::now(),
        records,
        Box::new(store),
    )
    .map_err(|e| anyhow!("{}: {e}", a.conf.display()))?;
    let mut drv =
        Driver::bind(resolve(&conf.listen)?).with_context(|| format!("binding {}", conf.listen))?;
    if conf.adverts == AdvertMode::Multicast
        && let Some(g) = &conf.multicast_group
    {
        drv.join_group(resolve(g)?)
            .with_context(|| format!("joining {g}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    crate::logln!(
        "supervisor {} listening on {} (state {}, {} records restored, {} systems, {} grants)",
        conf.name,
        drv.local_addr()?,
        conf.state_dir.display(),
        n,
        sup.systems().count(),
        sup.grants().count()
    );
    let quiet = a.quiet;
    drv.run(&mut sup, |s, _now| {
        while let Some(e) = s.poll_event() {
            if !quiet && !matches!(e, SupEvent::Refused { .. }) {
                crate::logln!("supervisor: {e:?}");
            } else if !quiet && let SupEvent::Refused { from, error } = e {
                crate::logln!("supervisor: refused datagram from {from}: {error}");
            }
        }
        !stop.load(Ordering::Relaxed)
    })?;
    Ok(())
}

// ------------------------------------------------------------------ agent

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[arg(long, default_value = "conf/agent.yaml")]
    pub conf: PathBuf,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub supervisor: Option<String>,
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Unix socket for `flow add|del` and `drain`.
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Static load (per mille) instead of the conf's load source.
    #[arg(long)]
    pub load: Option<u32>,
    #[command(subcommand)]
    pub cmd: Option<AgentCmd>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AgentCmd {
    /// Advertise or withdraw a flow through the running agent.
    Flow {
        #[command(subcommand)]
        cmd: FlowCmd,
    },
    /// Drain the running agent: advertise draining, wait for flows, leave.
    Drain {
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// What the running agent advertises and holds (JSON): its state, each service with
    /// the load, congestion, response time and weight it advertises, its number blocks
    /// and flows.
    Status,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FlowCmd {
    /// Advertise a flow (exact or pattern); prints its id.
    Add(Box<FlowAddArgs>),
    /// Withdraw a flow by id.
    Del { id: u64 },
}

/// A flow as given on the command line (and sent to the agent as JSON).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
pub struct FlowAddArgs {
    /// tcp, udp, esp, ah, any, another name or a number.
    #[arg(long, default_value = "tcp")]
    pub proto: String,
    /// Source address or prefix (a.b.c.d[/len]).
    #[arg(long, default_value = "0.0.0.0/0")]
    pub src: String,
    #[arg(long, default_value = "0.0.0.0/0")]
    pub dst: String,
    /// Source port or range (N or N-M).
    #[arg(long, default_value = "0-65535")]
    pub sport: String,
    #[arg(long, default_value = "0-65535")]
    pub dport: String,
    /// ESP security parameter index or range (N or N-M, decimal or 0x hex); needs
    /// --proto esp.
    #[arg(long)]
    pub spi: Option<String>,
    /// End system the flow goes to (name); default: this agent.
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub dscp: Option<u8>,
    #[arg(long)]
    pub pcp: Option<u8>,
    /// VID,PCP or VID,PCP,TPID (TPID default 0x8100).
    #[arg(long)]
    pub push_vlan: Option<String>,
    #[arg(long)]
    pub pop_vlan: bool,
    #[arg(long)]
    pub set_vlan: Option<u16>,
    /// LABEL,TC,TTL.
    #[arg(long)]
    pub push_mpls: Option<String>,
    #[arg(long)]
    pub pop_mpls: bool,
    #[arg(long)]
    pub swap_mpls: Option<u32>,
    /// 0 = until withdrawn.
    #[arg(long, default_value_t = 0)]
    pub lifetime_ms: u32,
}

/// "N" or "N-M", each decimal or 0x hex.
fn parse_spi_range(s: &str) -> Result<(u32, u32)> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (
        num(a).with_context(|| format!("spi {s}"))?,
        num(b).with_context(|| format!("spi {s}"))?,
    );
    if a > b {
        bail!("spi {s}: empty range");
    }
    Ok((a, b))
}

fn num(s: &str) -> Result<u32> {
    let s = s.trim();
    Ok(if let Some(h) = s.strip_prefix("0x") {
        u32::from_str_radix(h, 16)?
    } else {
        s.parse()?
    })
}

impl FlowAddArgs {
    /// Validates into a [`FlowSpec`].
    pub fn to_spec(&self) -> Result<FlowSpec> {
        let (src, src_plen) = parse_prefix(&self.src)?;
        let (dst, dst_plen) = parse_prefix(&self.dst)?;
        if src.is_ipv4() != dst.is_ipv4() {
            bail!("src and dst must be the same address family");
        }
        let matcher = FlowMatch {
            proto: parse_proto(&self.proto)?,
            src,
            src_plen,
            dst,
            dst_plen,
            sport: parse_range(&self.sport)?,
            dport: parse_range(&self.dport)?,
            spi: self.spi.as_deref().map(parse_spi_range).transpose()?,
        };
        matcher.check().map_err(|e| anyhow!("flow: {e}"))?;
        let mut qos = Vec::new();
        if let Some(v) = self.dscp {
            if v > 63 {
                bail!("dscp {v} > 63");
            }
            qos.push(Qos::Dscp(v));
        }
        if let Some(v) = self.pcp {
            if v > 7 {
                bail!("pcp {v} > 7");
            }
            qos.push(Qos::Pcp(v));
        }
        if self.pop_vlan {
            qos.push(Qos::PopVlan);
        }
        if let Some(p) = &self.push_vlan {
            let f: Vec<&str> = p.split(',').collect();
            let vid = num(f.first().copied().unwrap_or(""))?;
            let pcp = f.get(1).map(|x| num(x)).transpose()?.unwrap_or(0);
            let tpid = f.get(2).map(|x| num(x)).transpose()?.unwrap_or(0x8100);
            if vid > 4095 || pcp > 7 || tpid > 0xFFFF {
                bail!("push_vlan {p}: vid <= 4095, pcp <= 7, tpid 16 bits");
            }
            qos.push(Qos::PushVlan {
                vid: vid as u16,
                pcp: pcp as u8,
                tpid: tpid as u16,
            });
        }
        if let Some(v) = self.set_vlan {
            if v > 4095 {
                bail!("set_vlan {v} > 4095");
            }
            qos.push(Qos::SetVlan { vid: v });
        }
        if self.pop_mpls {
            qos.push(Qos::PopMpls);
        }
        if let Some(p) = &self.push_mpls {
            let f: Vec<&str> = p.split(',').collect();
            let label = num(f.first().copied().unwrap_or(""))?;
            let tc = f.get(1).map(|x| num(x)).transpose()?.unwrap_or(0);
            let ttl = f.get(2).map(|x| num(x)).transpose()?.unwrap_or(64);
            if label >= 1 << 20 || tc > 7 || ttl > 255 {
                bail!("push_mpls {p}: label < 2^20, tc <= 7, ttl <= 255");
            }
            qos.push(Qos::PushMpls {
                label,
                tc: tc as u8,
                ttl: ttl as u8,
            });
        }
        if let Some(l) = self.swap_mpls {
            if l >= 1 << 20 {
                bail!("swap_mpls {l} >= 2^20");
            }
            qos.push(Qos::SwapMpls { label: l });
        }
        Ok(FlowSpec {
            target: self.target.as_deref().map(system_id),
            matcher,
            qos,
            lifetime_ms: self.lifetime_ms,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum LocalReq {
    FlowAdd(Box<FlowAddArgs>),
    FlowDel { id: u64 },
    Drain { timeout_ms: Option<u64> },
    Status,
}

/// `ctl weight`'s value: a number, or `clear` ([`WEIGHT_CLEAR`]).
fn parse_weight(s: &str) -> Result<u32, String> {
    match s {
        "clear" => Ok(WEIGHT_CLEAR),
        n => match n.parse::<u32>() {
            Ok(WEIGHT_CLEAR) | Err(_) => {
                Err(format!("{n:?}: a weight below {WEIGHT_CLEAR}, or clear"))
            }
            Ok(w) => Ok(w),
        },
    }
}

fn socket_path(conf: &AgentConf, a: &AgentArgs, name: &str) -> PathBuf {
    a.control_socket
        .clone()
        .or_else(|| conf.control_socket.clone())
        .unwrap_or_else(|| std::env::temp_dir().join(format!("flowgate-agent-{name}.sock")))
}

pub fn run_agent(a: &AgentArgs) -> Result<()> {
    let mut conf: AgentConf = load_yaml(&a.conf)?;
    if let Some(n) = &a.name {
        conf.name = n.clone();
    }
    if let Some(s) = &a.supervisor {
        conf.supervisor = s.clone();
    }
    if let Some(k) = &a.key_file {
        conf.key_file = k.clone();
    }
    if let Some(l) = a.load {
        conf.load = LoadConf::Static { value: l };
    }
    let sock_path = socket_path(&conf, a, &conf.name);
    match &a.cmd {
        Some(AgentCmd::Flow {
            cmd: FlowCmd::Add(f),
        }) => {
            f.to_spec()?;
            local_call(&sock_path, &LocalReq::FlowAdd(f.clone()))
        }
        Some(AgentCmd::Flow {
            cmd: FlowCmd::Del { id },
        }) => local_call(&sock_path, &LocalReq::FlowDel { id: *id }),
        Some(AgentCmd::Drain { timeout_ms }) => local_call(
            &sock_path,
            &LocalReq::Drain {
                timeout_ms: *timeout_ms,
            },
        ),
        Some(AgentCmd::Status) => local_call(&sock_path, &LocalReq::Status),
        None => agent_main(&conf, &a.conf, &sock_path),
    }
}

fn local_call(path: &Path, req: &LocalReq) -> Result<()> {
    let mut s = UnixStream::connect(path)
        .with_context(|| format!("connecting to the agent at {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp)?;
    let v: serde_json::Value = serde_json::from_str(resp.trim()).context("agent's reply")?;
    println!("{v}");
    if v.get("ok").and_then(|x| x.as_bool()) != Some(true) {
        bail!("agent refused the request");
    }
    Ok(())
}

fn sample_load(src: &LoadConf) -> u32 {
    match src {
        LoadConf::Static { value } => *value,
        LoadConf::Command { command } => std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .and_then(|w| w.parse::<f64>().ok())
            })
            .map(|v| v.clamp(0.0, u32::MAX as f64) as u32)
            .unwrap_or(0),
        LoadConf::Loadavg => {
            let cpus = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1) as f64;
            std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse().ok()))
                .map(|l: f64| (l * 1000.0 / cpus).clamp(0.0, u32::MAX as f64) as u32)
                .unwrap_or(0)
        }
    }
}

/// A service whose congestion the sampler reads: its index in the agent's conf, whether
/// from TCP accept queues, UDP receive queues or both (`proto: any`), and its ports.
#[derive(Clone, Debug)]
struct Watched {
    index: usize,
    tcp: bool,
    udp: bool,
    ports: Vec<(u16, u16)>,
}

type ServicePorts = Vec<Watched>;

/// What the sampler thread measured.
struct Sample {
    load: u32,
    /// Per TCP or UDP service (index): its congestion.
    congestion: Vec<(usize, u16)>,
    /// Why `ss` could not be run (the services' congestion is then 0).
    ss_failed: Option<String>,
}

impl Sample {
    /// Sets the figures for the agent's next adverts; logs the first failure to run
    /// `ss` (`*failed` remembers it).
    fn apply(self, ag: &mut Agent, failed: &mut bool) {
        ag.set_load(self.load);
        for (i, c) in self.congestion {
            ag.set_congestion(i, c);
        }
        if let Some(e) = self.ss_failed
            && !std::mem::replace(failed, true)
        {
            crate::logln!("agent: congestion not measured (advertised as 0): {e}");
        }
    }
}

/// Samples the load (`load`, which may run a command) and each watched service's
/// congestion (`congestion`; `ss` is run once for all TCP services and once for all UDP
/// ones) every `every` on a thread of its own, and sends each sample to `tx`; it ends
/// when the receiver is gone.
fn spawn_sampler(
    load: LoadConf,
    congestion: Option<ServicePorts>,
    every: Duration,
    tx: std::sync::mpsc::Sender<Sample>,
) -> std::io::Result<()> {
    use super::conns;
    std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || {
            // Each UDP socket's drop count at the last sample.
            let mut drops = std::collections::HashMap::new();
            loop {
                let t0 = Instant::now();
                let services = congestion.as_deref().unwrap_or_default();
                let mut ss_failed = None;
                // No stale figure stays advertised: 0 for what `ss` did not show.
                let mut run = |want: bool, args: &str| {
                    (want.then(|| conns::ss(args)))
                        .and_then(|r| r.map_err(|e| ss_failed = Some(e)).ok())
                        .unwrap_or_default()
                };
                let tcp = run(services.iter().any(|w| w.tcp), "-Hltn");
                let udp = conns::udp_sockets(&run(services.iter().any(|w| w.udp), "-Hulnm"));
                let figure = |w: &Watched| {
                    let t = if w.tcp {
                        conns::accept_queue_permille(&tcp, &w.ports)
                    } else {
                        0
                    };
                    let u = if w.udp {
                        conns::receive_queue_permille(&udp, &drops, &w.ports)
                    } else {
                        0
                    };
                    (w.index, t.max(u))
                };
                let sample = Sample {
                    load: sample_load(&load),
                    congestion: services.iter().map(figure).collect(),
                    ss_failed,
                };
                drops = udp.into_iter().map(|s| (s.local, s.drops)).collect();
                if tx.send(sample).is_err() {
                    return;
                }
                std::thread::sleep(every.saturating_sub(t0.elapsed()));
            }
        })
        .map(drop)
}

/// The routes of `numbers:` entries that have one.
fn number_routes(numbers: &[NumberConf]) -> Result<Vec<NumberRoute>> {
    let mut out = Vec::new();
    for n in numbers {
        if let NumberConf::Routed { pool, route } = n {
            let names = match &route.proto {
                OneOrMany::One(p) => vec![p.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            let protos = names
                .iter()
                .map(|p| parse_proto(p))
                .collect::<Result<Vec<u8>>>()
                .with_context(|| format!("numbers: {pool}: route.proto"))?;
            if protos.is_empty() {
                bail!("numbers: {pool}: route.proto lists no protocol");
            }
            out.push(NumberRoute {
                pool: pool.clone(),
                dst: route.dst,
                protos,
            });
        }
    }
    Ok(out)
}

/// The numbers `agent` holds at `now`, by pool: what `numbers_file` holds.
pub fn numbers_json(agent: &Agent, now: Instant) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for g in agent.grants(now) {
        m.insert(
            g.pool.clone(),
            serde_json::json!({
                "first": g.first,
                "last": g.last(),
                "count": g.count,
                "grant": g.grant_id,
                "lease_ms": g.lease_ms,
            }),
        );
    }
    serde_json::Value::Object(m)
}

/// `flowgate agent status`: the agent's state and what it advertises and holds.
fn status_json(ag: &Agent, now: Instant) -> serde_json::Value {
    let state = if ag.is_left() {
        "left"
    } else if ag.is_draining() {
        "draining"
    } else {
        "up"
    };
    let services: Vec<serde_json::Value> = ag
        .advertised()
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "vip": s.vip.to_string(),
                "proto": s.proto,
                "ports": s.ports,
                "weight": s.weight,
                "load": s.load,
                "congestion": s.congestion,
                "response_time_us": s.response_time_us,
            })
        })
        .collect();
    serde_json::json!({
        "ok": true,
        "name": ag.name(),
        "registered": ag.is_registered(),
        "state": state,
        "services": services,
        "numbers": numbers_json(ag, now),
        "flows": ag.flows().count(),
    })
}

fn agent_main(conf: &AgentConf, conf_path: &Path, sock_path: &Path) -> Result<()> {
    let key = load_key(&conf.key_file)?;
    let supervisor = resolve(&conf.supervisor)?;
    let group = match (conf.adverts, &conf.multicast_group) {
        (AdvertMode::Multicast, Some(g)) => Some(resolve(g)?),
        (AdvertMode::Multicast, None) => bail!(
            "{}: adverts: multicast needs multicast_group",
            conf_path.display()
        ),
        _ => None,
    };
    let mut services = Vec::new();
    let mut checks = Vec::new();
    for (i, s) in conf.services.iter().enumerate() {
        if let Some(h) = &s.health {
            let c = h
                .check()
                .with_context(|| format!("{}: services[{i}] ({})", conf_path.display(), s.name))?;
            checks.push((i, c));
        }
        let mut ports = Vec::new();
        for p in &s.ports {
            ports.push(match p {
                PortSpec::One(n) => (*n, *n),
                PortSpec::Range(r) => parse_range(r)?,
            });
        }
        services.push(Service {
            name: s.name.clone(),
            vip: s.vip,
            proto: parse_proto(&s.proto)?,
            ports,
            capacity: s.capacity,
            weight: s.weight,
            load: 0,
            congestion: 0,
            response_time_us: 0,
        });
    }
    // A drain waits for the open TCP connections on these ports (see `conns`).
    let tcp_ports: Vec<(u16, u16)> = services
        .iter()
        .filter(|s| matches!(s.proto, 0 | 6))
        .flat_map(|s| s.ports.iter().copied())
        .collect();
    // Per TCP or UDP service: the ports whose socket queues are its congestion.
    let congestion_ports: ServicePorts = services
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s.proto, 0 | 6 | 17) && !s.ports.is_empty())
        .map(|(index, s)| Watched {
            index,
            tcp: s.proto != 17,
            udp: s.proto != 6,
            ports: s.ports.clone(),
        })
        .collect();
    let mut capabilities = cap::FLOWS;
    if !services.is_empty() {
        capabilities |= cap::SERVICES;
    }
    if group.is_some() {
        capabilities |= cap::MULTICAST;
    }
    let cfg = AgentConfig {
        name: conf.name.clone(),
        mac: parse_mac(&conf.mac)?,
        addrs: conf.addrs.clone(),
        capabilities,
        supervisor,
        group,
        advert_interval: Duration::from_millis(conf.advert_interval_ms.max(1)),
        dead_interval: Duration::from_millis(conf.dead_interval_ms.max(2)),
        services,
        pools: {
            let mut p: Vec<String> = Vec::new();
            for n in &conf.numbers {
                if !p.iter().any(|x| x == n.pool()) {
                    p.push(n.pool().to_string());
                }
            }
            p
        },
        routes: number_routes(&conf.numbers)?,
        drain_timeout: Duration::from_millis(conf.drain_timeout_ms),
    };
    // On one machine the agent stays on loopback, unless it sends to a multicast group:
    // a group datagram from 127.0.0.1 leaves on a real interface and is dropped there as
    // a martian, so no listener would hear it.
    let listen = if conf.listen == "0.0.0.0:0" && supervisor.ip().is_loopback() && group.is_none() {
        "127.0.0.1:0".to_string()
    } else {
        conf.listen.clone()
    };
    let mut drv = Driver::bind(resolve(&listen)?).with_context(|| format!("binding {listen}"))?;
    let _ = std::fs::remove_file(sock_path);
    let ctl = UnixListener::bind(sock_path)
        .with_context(|| format!("control socket {}", sock_path.display()))?;
    ctl.set_nonblocking(true)?;
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, term.clone())?;
    crate::logln!(
        "agent {} on {} -> supervisor {} (control socket {})",
        conf.name,
        drv.local_addr()?,
        supervisor,
        sock_path.display()
    );
    let mut agent = Agent::new(cfg, key, SeqGen::from_wall_clock(), Instant::now());
    // Health checks: one probing thread each; the verdicts are kept here. A checked
    // service starts unhealthy (weight 0) until its first probe passes.
    let (health_tx, health_rx) = std::sync::mpsc::channel();
    let mut checkers: Vec<Option<super::health::Checker>> = vec![None; conf.services.len()];
    for (i, check) in checks {
        checkers[i] = Some(super::health::Checker::new(check.rise, check.fall));
        agent.set_healthy(Instant::now(), i, false);
        super::health::spawn(i, check, health_tx.clone())
            .context("starting a health-check thread")?;
    }
    drop(health_tx);
    let interval = Duration::from_millis(conf.advert_interval_ms.max(1));
    // Load and congestion are sampled on a thread of their own (a load command or `ss`
    // that hangs must not hold up adverts and renewals); open connections are read
    // here (a file read).
    let (sample_tx, sample_rx) = std::sync::mpsc::channel();
    let congestion = (conf.congestion == CongestionConf::Queues && !congestion_ports.is_empty())
        .then_some(congestion_ports);
    spawn_sampler(conf.load.clone(), congestion, interval / 2, sample_tx)
        .context("starting the load sampler thread")?;
    let mut ss_failed = false;
    // The first adverts carry the first sample (at once for a static load or the load
    // average; a slow command gets an advert interval, then adverts go on without it).
    if let Ok(s) = sample_rx.recv_timeout(interval) {
        s.apply(&mut agent, &mut ss_failed);
    }
    let mut next_sample = Instant::now();
    let res = drv.run(&mut agent, |ag, now| {
        if term.swap(false, Ordering::Relaxed) {
            crate::logln!("agent: SIGTERM, draining");
            ag.drain(now, None);
        }
        while let Ok(s) = sample_rx.try_recv() {
            s.apply(ag, &mut ss_failed);
        }
        if now >= next_sample {
            ag.set_active(super::conns::open_connections(&tcp_ports));
            next_sample = now + interval / 2;
        }
        while let Ok((stream, _)) = ctl.accept() {
            serve_local(ag, now, stream);
        }
        while let Ok((i, r)) = health_rx.try_recv() {
            let Some(c) = checkers.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if let Ok(took) = &r {
                c.time(*took);
                ag.set_response_time(i, c.response_us());
            }
            if let Some(healthy) = c.record(r.is_ok()) {
                ag.set_healthy(now, i, healthy);
                let name = &conf.services[i].name;
                match r {
                    Ok(_) => crate::logln!("agent: service {name} is healthy"),
                    Err(e) => crate::logln!("agent: service {name} is unhealthy (weight 0): {e}"),
                }
            }
        }
        let mut numbers_changed = false;
        while let Some(e) = ag.poll_event() {
            match &e {
                AgentEvent::Granted(g) => crate::logln!(
                    "agent: granted {} [{}..{}] (grant {}, lease {} ms)",
                    g.pool,
                    g.first,
                    g.last(),
                    g.grant_id,
                    g.lease_ms
                ),
                other => crate::logln!("agent: {other:?}"),
            }
            numbers_changed |= matches!(
                e,
                AgentEvent::Granted(_) | AgentEvent::NumberLost(_) | AgentEvent::Left
            );
        }
        if numbers_changed
            && let Some(f) = &conf.numbers_file
            && let Err(e) = crate::cmd::write_json(f, &numbers_json(ag, now))
        {
            crate::logln!("agent: numbers_file: {e:#}");
        }
        !ag.is_left()
    });
    let _ = std::fs::remove_file(sock_path);
    res?;
    Ok(())
}

fn serve_local(ag: &mut Agent, now: Instant, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut rd = BufReader::new(&stream);
    if rd.read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<LocalReq>(line.trim()) {
        Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        Ok(LocalReq::FlowAdd(f)) => match f.to_spec() {
            Ok(spec) => {
                let id = ag.add_flow(now, spec);
                serde_json::json!({"ok": true, "flow_id": id})
            }
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        },
        Ok(LocalReq::FlowDel { id }) => {
            let ok = ag.del_flow(now, id);
            serde_json::json!({"ok": ok, "flow_id": id})
        }
        Ok(LocalReq::Drain { timeout_ms }) => {
            ag.drain(now, timeout_ms.map(Duration::from_millis));
            serde_json::json!({"ok": true, "state": "draining"})
        }
        Ok(LocalReq::Status) => status_json(ag, now),
    };
    let mut w = &stream;
    let _ = writeln!(w, "{reply}");
}

// ------------------------------------------------------------------ ctl

#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub supervisor: String,
    #[arg(long, default_value = "conf/control.key")]
    pub key_file: PathBuf,
    /// Print JSON (an array of objects).
    #[arg(long, global = true)]
    pub json: bool,
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CtlCmd {
    /// Registered systems.
    Systems,
    /// Advertised services.
    Services,
    /// Advertised flows.
    Flows,
    /// Number grants.
    Numbers,
    /// Drain a system (graceful shutdown).
    Drain {
        name: String,
        #[arg(long, default_value_t = 0)]
        timeout_ms: u32,
    },
    /// Override the weight of a system's services (`clear`: its own weights again).
    Weight {
        name: String,
        #[arg(value_parser = parse_weight)]
        weight: u32,
    },
    /// Supervisor counters.
    Stats,
    /// Server-list query (the protocol's, not management).
    Servers {
        #[arg(default_value = "")]
        service: String,
    },
}

/// One request/reply exchange with retries; returns the reply body.
pub fn exchange(sup: SocketAddr, key: &Key, body: &Body, timeout: Duration) -> Result<Body> {
    let bind = if sup.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(bind)?;
    let me = system_id(&format!(
        "ctl-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let mut seq = SeqGen::from_wall_clock();
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut sent = Vec::new();
    while Instant::now() < deadline {
        let s = seq.next_seq();
        sent.push(s);
        sock.send_to(&key.seal(me, s, body), sup)?;
        let wait_until = (Instant::now() + Duration::from_millis(500)).min(deadline);
        while Instant::now() < wait_until {
            let left = wait_until.saturating_duration_since(Instant::now());
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = key.open(&buf[..n]) else {
                continue;
            };
            let rt = match &m.body {
                Body::MgmtReply(r) => r.in_reply_to,
                Body::ServerListReply(r) => r.in_reply_to,
                Body::Ack(r) => r.in_reply_to,
                _ => continue,
            };
            if sent.contains(&rt) {
                return Ok(m.body);
            }
        }
    }
    bail!("no answer from the supervisor at {sup} within {timeout:?}")
}

pub fn run_ctl(a: &CtlArgs) -> Result<()> {
    let key = load_key(&a.key_file)?;
    let sup = resolve(&a.supervisor)?;
    let timeout = Duration::from_millis(a.timeout_ms);
    let (op, arg, value) = match &a.cmd {
        CtlCmd::Systems => (op::SYSTEMS, String::new(), 0),
        CtlCmd::Services => (op::SERVICES, String::new(), 0),
        CtlCmd::Flows => (op::FLOWS, String::new(), 0),
        CtlCmd::Numbers => (op::NUMBERS, String::new(), 0),
        CtlCmd::Drain { name, timeout_ms } => (op::DRAIN, name.clone(), *timeout_ms),
        CtlCmd::Weight { name, weight } => (op::WEIGHT, name.clone(), *weight),
        CtlCmd::Stats => (op::STATS, String::new(), 0),
        CtlCmd::Servers { service } => {
            let reply = exchange(
                sup,
                &key,
                &Body::ServerListQuery(ServerListQuery {
                    service: service.clone(),
                }),
                timeout,
            )?;
            let Body::ServerListReply(r) = reply else {
                bail!("unexpected reply");
            };
            let v: Vec<serde_json::Value> = r
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.name, "state": e.state.as_str(), "service": e.service,
                        "vip": e.vip.to_string(), "proto": e.proto, "weight": e.weight,
                        "load": e.load, "congestion": e.congestion,
                        "response_time_us": e.response_time_us,
                        "mac": super::supervisor::fmt_mac(&e.mac),
                        "addrs": e.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(v), a.json);
            return Ok(());
        }
    };
    let reply = exchange(
        sup,
        &key,
        &Body::MgmtRequest(MgmtRequest { op, arg, value }),
        timeout,
    )?;
    let Body::MgmtReply(r) = reply else {
        bail!("unexpected reply");
    };
    let v: serde_json::Value = serde_json::from_str(&r.json).unwrap_or(serde_json::Value::Null);
    if r.status != status::OK {
        bail!("supervisor refused (status {}): {}", r.status, r.json);
    }
    print_json(&v, a.json);
    Ok(())
}

fn print_json(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    let Some(items) = v.as_array() else {
        println!("{v}");
        return;
    };
    for it in items {
        match it.as_object() {
            Some(o) => {
                let line: Vec<String> = o
                    .iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                println!("{}", line.join("  "));
            }
            None => println!("{it}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_pool_names_or_routed_pools() {
        let c: AgentConf = serde_yaml_ng::from_str(
            "name: a\nnumbers:\n  - ipsec-spi\n  - {pool: nat-ports, route: {dst: 203.0.113.1, proto: [tcp, udp]}}\n  \
             - {pool: nat-ports, route: {dst: \"2001:db8::1\"}}\nnumbers_file: /run/n.json\n",
        )
        .expect("valid");
        let pools: Vec<&str> = c.numbers.iter().map(NumberConf::pool).collect();
        assert_eq!(pools, ["ipsec-spi", "nat-ports", "nat-ports"]);
        let r = number_routes(&c.numbers).expect("routes");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].protos, vec![6, 17]);
        assert_eq!(r[1].protos, vec![6], "tcp by default");
        assert_eq!(c.numbers_file.as_deref(), Some(Path::new("/run/n.json")));
        // A protocol that is not one is an error naming the pool.
        let bad: AgentConf = serde_yaml_ng::from_str(
            "name: a\nnumbers: [{pool: nat-ports, route: {dst: 203.0.113.1, proto: tcpp}}]\n",
        )
        .expect("parses");
        let e = format!("{:#}", number_routes(&bad.numbers).unwrap_err());
        assert!(e.contains("nat-ports") && e.contains("tcpp"), "{e}");
        // Unknown keys are refused, by name.
        for (yaml, key) in [
            ("{pool: p, route: {dst: 10.0.0.1, port: 5}}", "port"),
            ("{pool: p, rout: {dst: 10.0.0.1}}", "rout"),
        ] {
            let e = serde_yaml_ng::from_str::<AgentConf>(&format!("name: a\nnumbers: [{yaml}]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        }
        let e = serde_yaml_ng::from_str::<AgentConf>("name: a\nnumbers: [[1]]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a pool name"), "{e}");
        // IPsec: SPI blocks routed for ESP.
        let c: AgentConf = serde_yaml_ng::from_str(
            "name: a\nnumbers: [{pool: ipsec-spi, route: {dst: 203.0.113.1, proto: esp}}]\n",
        )
        .expect("valid");
        assert_eq!(number_routes(&c.numbers).expect("routes")[0].protos, [50]);
    }

    #[test]
    fn congestion_sources_by_either_name() {
        let of = |y: &str| serde_yaml_ng::from_str::<AgentConf>(y).map(|c| c.congestion);
        assert_eq!(
            of("name: a\n").unwrap(),
            CongestionConf::Queues,
            "the default"
        );
        assert_eq!(
            of("name: a\ncongestion: queues\n").unwrap(),
            CongestionConf::Queues
        );
        assert_eq!(
            of("name: a\ncongestion: accept-queue\n").unwrap(),
            CongestionConf::Queues,
            "the first name"
        );
        assert_eq!(
            of("name: a\ncongestion: none\n").unwrap(),
            CongestionConf::None
        );
        assert!(of("name: a\ncongestion: sockets\n").is_err());
    }

    /// `flowgate agent flow add` as typed.
    fn flow_args(args: &[&str]) -> Result<FlowSpec> {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            f: FlowAddArgs,
        }
        use clap::Parser;
        let p = P::try_parse_from(std::iter::once("add").chain(args.iter().copied()))?;
        p.f.to_spec()
    }

    #[test]
    fn flow_add_takes_an_spi_range_for_esp_only() {
        let s = flow_args(&[
            "--proto",
            "esp",
            "--dst",
            "203.0.113.1/32",
            "--spi",
            "0x100-0x1ff",
        ])
        .expect("valid");
        assert_eq!((s.matcher.proto, s.matcher.spi), (50, Some((0x100, 0x1ff))));
        let s = flow_args(&["--proto", "esp", "--spi", "4096"]).expect("one SPI");
        assert_eq!(s.matcher.spi, Some((4096, 4096)));
        for (args, why) in [
            (&["--proto", "ah", "--spi", "5"][..], "needs protocol esp"),
            (&["--spi", "5"][..], "needs protocol esp"),
            (&["--proto", "esp", "--spi", "9-5"][..], "empty range"),
            (&["--proto", "esp", "--spi", "x"][..], "spi x"),
            (&["--proto", "espp"][..], "espp"),
        ] {
            let e = format!("{:#}", flow_args(args).unwrap_err());
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
