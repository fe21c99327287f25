//! The run configuration (`conf/*.yaml`): which pipeline, EAL arguments, lcores, ports,
//! mempool, flow table size, stop rule and control plane (`control:`) for `flowgate run`
//! and `flowgate bench`.
//!
//! Layer: `runtime`, above `config`. Builds and is tested without the `dpdk` feature.
//! [`RunConf::load`] returns a validated [`RunConf`] or a [`ConfigError`] naming the file,
//! line and key, like [`crate::config::Pipeline::load`]. Unknown keys are refused.
//! Invariants after loading: at least one port and one worker lcore; port names are
//! unique; the management lcore is not a worker lcore; lcores are distinct; relative
//! `pipeline:` paths are resolved against the conf file's directory.

use crate::config::ConfigError;
use crate::config::locate::{self, Seg};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConf {
    pipeline: PathBuf,
    #[serde(default)]
    eal: Vec<String>,
    lcores: RawLcores,
    ports: Vec<RawPort>,
    #[serde(default)]
    mempool: Option<RawMempool>,
    #[serde(default)]
    flows: Option<RawFlows>,
    #[serde(default)]
    stop: Option<RawStop>,
    #[serde(default)]
    stats: Option<RawStats>,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default)]
    announce: Option<RawAnnounce>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnnounce {
    #[serde(default)]
    rounds: Option<u32>,
    #[serde(default)]
    interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    supervisor: String,
    key_file: PathBuf,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    advert_interval_ms: Option<u64>,
    #[serde(default)]
    dead_interval_ms: Option<u64>,
    #[serde(default)]
    unheard: Option<String>,
    #[serde(default)]
    flow_slots: Option<usize>,
    #[serde(default)]
    multicast_group: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLcores {
    management: u32,
    workers: Vec<u32>,
    #[serde(default)]
    cpus: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    device: String,
    #[serde(default)]
    rx_desc: Option<u16>,
    #[serde(default)]
    tx_desc: Option<u16>,
    #[serde(default)]
    mtu: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMempool {
    mbufs: u32,
    #[serde(default)]
    cache: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    capacity: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    #[serde(default)]
    idle_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStats {
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    json: Option<PathBuf>,
    #[serde(default)]
    prometheus: Option<String>,
}

/// The `control:` section: where the supervisor is and how this intermediate system
/// registers with it. With it, `flowgate run` follows the end systems' advertisements
/// (see [`crate::control::overlay`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlConf {
    pub supervisor: std::net::SocketAddr,
    /// The shared key file (resolved against the conf's directory).
    pub key_file: PathBuf,
    /// The name it registers under (default `flowgate`).
    pub name: String,
    /// Local UDP address (default `0.0.0.0:0`).
    pub listen: std::net::SocketAddr,
    pub advert_interval_ms: u64,
    pub dead_interval_ms: u64,
    pub unheard: crate::control::overlay::Unheard,
    /// Pattern rules reserved for advertised flows (at most that many apply at once).
    pub flow_slots: usize,
    /// The IPv4 multicast group to hear advertisements on, for a supervisor in multicast
    /// mode (which does not relay them); `None`: relay mode.
    pub multicast_group: Option<std::net::SocketAddr>,
}

/// Default [`ControlConf::flow_slots`].
pub const DEFAULT_FLOW_SLOTS: usize = 64;

/// One port: the name the pipeline uses and the DPDK device behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Name used by `port:` in the pipeline (`outside`, `inside`).
    pub name: String,
    /// A PCI address (`0000:03:00.0`) or a vdev string (`net_pcap0,rx_pcap=in.pcap`).
    pub device: String,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// The port's own MTU, set on the NIC (`rte_eth_dev_set_mtu`) at start; `None`
    /// leaves the PMD's (1500 on Ethernet NICs).
    pub mtu: Option<u16>,
}

impl PortSpec {
    /// True when `device` is a virtual device (given to the EAL with `--vdev`).
    pub fn is_vdev(&self) -> bool {
        self.device.starts_with("net_") || self.device.starts_with("eth_")
    }

    /// The ethdev name DPDK gives the device: the vdev name before the first comma, or the
    /// PCI address.
    pub fn dpdk_name(&self) -> &str {
        self.device.split(',').next().unwrap_or(&self.device)
    }
}

/// A validated run configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConf {
    /// The conf file it came from.
    pub source: PathBuf,
    /// The pipeline file, resolved against the conf's directory.
    pub pipeline: PathBuf,
    /// EAL arguments from the file (without `-l`, `--main-lcore`, `--vdev`, `-a`: see
    /// [`RunConf::eal_args`]).
    pub eal: Vec<String>,
    pub management_lcore: u32,
    pub worker_lcores: Vec<u32>,
    /// CPU set every lcore may run on (`lcores.cpus: "0-1"`, EAL `--lcores (..)@(..)`),
    /// for more lcores than CPUs (tests, small VMs); `None`: lcore i runs on CPU i.
    pub cpus: Option<String>,
    pub ports: Vec<PortSpec>,
    pub mbufs: u32,
    pub mbuf_cache: u32,
    /// Flow table capacity per run (split evenly between workers); `None` keeps the
    /// pipeline's `flow_table.capacity` per worker.
    pub flow_capacity: Option<usize>,
    /// Stop after this long without a received packet (0: never).
    pub idle_ms: u64,
    /// Period of the one-line rate summary (0: none).
    pub stats_interval_ms: u64,
    /// Where to write the stats JSON at exit (resolved against the conf's directory).
    pub stats_json: Option<PathBuf>,
    /// Where to serve the stats for Prometheus (`GET /metrics`, refreshed every
    /// `stats_interval_ms`), the run's health (`GET /healthz`) and its live flows
    /// (`GET /flows`).
    pub stats_prometheus: Option<std::net::SocketAddr>,
    /// The control plane (`None`: the pipeline alone decides).
    pub control: Option<ControlConf>,
    /// `announce`: how many gratuitous ARPs and unsolicited neighbour advertisements
    /// each owned address gets on every port when first owned (at the start, or brought
    /// by a reload), and how far apart (see `pipeline::reply::Announcer`); 0 rounds: none.
    pub announce_rounds: u32,
    pub announce_interval_ms: u64,
}

/// `announce` by default: three rounds a second apart (one may be lost); none when every
/// port is a `net_pcap` capture.
pub const DEFAULT_ANNOUNCE_ROUNDS: u32 = 3;
pub const DEFAULT_ANNOUNCE_INTERVAL_MS: u64 = 1000;

/// Default mbufs (a power of two minus one, as the mempool likes).
pub const DEFAULT_MBUFS: u32 = 8191;
/// Default per-lcore mempool cache.
pub const DEFAULT_CACHE: u32 = 256;
/// Default descriptors per queue.
pub const DEFAULT_DESC: u16 = 1024;

/// What `ports[].mtu` may be: IPv4's minimum link MTU (RFC 791) to the frame size the
/// mbufs are made for at most (see [`RunConf::mbuf_data_room`]).
pub const PORT_MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=16_000;

/// Bytes an mbuf keeps in front of the frame (DPDK's `RTE_PKTMBUF_HEADROOM`): pushed tags
/// and labels go there.
pub const MBUF_HEADROOM: u16 = 128;

/// The data room of mbufs for frames up to 1500 bytes of MTU and a little more (DPDK's
/// `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes and the headroom).
pub const DEFAULT_DATA_ROOM: u16 = 2048 + MBUF_HEADROOM;

impl RunConf {
    /// Reads and validates a conf file.
    pub fn load(path: &Path) -> Result<RunConf, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        Self::from_str(&text, path)
    }

    /// Parses and validates `text` (named `path` in errors; relative paths resolve
    /// against its directory).
    pub fn from_str(text: &str, path: &Path) -> Result<RunConf, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConf = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            let msg = e.to_string();
            let (key, msg) = match msg.split_once(": ") {
                Some((k, m)) if !k.contains(' ') => (k.to_string(), m.to_string()),
                _ => (String::new(), msg),
            };
            let msg = match msg.rsplit_once(" at line ") {
                Some((m, _)) => m.to_string(),
                None => msg,
            };
            ConfigError {
                file: file.clone(),
                line,
                key,
                msg,
            }
        })?;
        let err = |p: &[Seg], msg: String| ConfigError {
            file: file.clone(),
            line: locate::line_of(text, p),
            key: locate::render(p),
            msg,
        };
        use Seg::{Idx, Key};
        let dir = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                dir.join(p)
            }
        };

        if raw.lcores.workers.is_empty() {
            return Err(err(
                &[Key("lcores"), Key("workers")],
                "at least one worker lcore is needed".into(),
            ));
        }
        for (i, w) in raw.lcores.workers.iter().enumerate() {
            if *w == raw.lcores.management {
                return Err(err(
                    &[Key("lcores"), Key("workers"), Idx(i)],
                    format!("lcore {w} is also the management lcore"),
                ));
            }
            if raw.lcores.workers[..i].contains(w) {
                return Err(err(
                    &[Key("lcores"), Key("workers"), Idx(i)],
                    format!("lcore {w} is listed twice"),
                ));
            }
        }
        if let Some(c) = &raw.lcores.cpus
            && (c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-'))
        {
            return Err(err(
                &[Key("lcores"), Key("cpus")],
                format!("{c:?} is not a CPU list like \"0-1\" or \"0,2\""),
            ));
        }
        if raw.ports.is_empty() {
            return Err(err(&[Key("ports")], "at least one port is needed".into()));
        }
        let mut ports = Vec::new();
        for (i, p) in raw.ports.iter().enumerate() {
            if p.name.is_empty() {
                return Err(err(
                    &[Key("ports"), Idx(i), Key("name")],
                    "empty port name".into(),
                ));
            }
            if raw.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(err(
                    &[Key("ports"), Idx(i), Key("name")],
                    format!("port {:?} is named twice", p.name),
                ));
            }
            let spec = PortSpec {
                name: p.name.clone(),
                device: p.device.clone(),
                rx_desc: p.rx_desc.unwrap_or(DEFAULT_DESC),
                tx_desc: p.tx_desc.unwrap_or(DEFAULT_DESC),
                mtu: match p.mtu {
                    None => None,
                    Some(m) if PORT_MTU_RANGE.contains(&m) => Some(m as u16),
                    Some(m) => {
                        return Err(err(
                            &[Key("ports"), Idx(i), Key("mtu")],
                            format!(
                                "mtu {m} is out of {}..={}",
                                PORT_MTU_RANGE.start(),
                                PORT_MTU_RANGE.end()
                            ),
                        ));
                    }
                },
            };
            if spec.dpdk_name().is_empty() || spec.device.contains(char::is_whitespace) {
                return Err(err(
                    &[Key("ports"), Idx(i), Key("device")],
                    format!("bad device {:?}", p.device),
                ));
            }
            if ports
                .iter()
                .any(|q: &PortSpec| q.dpdk_name() == spec.dpdk_name())
            {
                return Err(err(
                    &[Key("ports"), Idx(i), Key("device")],
                    format!("device {:?} is used twice", spec.dpdk_name()),
                ));
            }
            for k in [spec.rx_desc, spec.tx_desc] {
                if !(32..=16384).contains(&k) {
                    return Err(err(
                        &[Key("ports"), Idx(i)],
                        format!("descriptor count {k} is out of 32..=16384"),
                    ));
                }
            }
            ports.push(spec);
        }
        for (i, a) in raw.eal.iter().enumerate() {
            if matches!(
                a.as_str(),
                "-l" | "--lcores" | "-c" | "--main-lcore" | "--vdev" | "-a" | "--allow"
            ) || a.starts_with("--vdev=")
                || a.starts_with("--lcores=")
            {
                return Err(err(
                    &[Key("eal"), Idx(i)],
                    format!("{a:?} is derived from lcores/ports: remove it from eal"),
                ));
            }
        }
        let (mbufs, mbuf_cache) = match &raw.mempool {
            None => (DEFAULT_MBUFS, DEFAULT_CACHE),
            Some(m) => (m.mbufs, m.cache.unwrap_or(DEFAULT_CACHE)),
        };
        if mbufs < 1024 {
            return Err(err(
                &[Key("mempool"), Key("mbufs")],
                format!("{mbufs} is below 1024"),
            ));
        }
        // rte_mempool refuses a cache above RTE_MEMPOOL_CACHE_MAX_SIZE (512) or n / 1.5.
        if mbuf_cache > 512 || f64::from(mbuf_cache) * 1.5 > f64::from(mbufs) {
            return Err(err(
                &[Key("mempool"), Key("cache")],
                format!("{mbuf_cache} must be ≤ 512 and ≤ mbufs / 1.5"),
            ));
        }
        let flow_capacity = match &raw.flows {
            None => None,
            Some(f) => {
                if f.capacity == 0 || f.capacity > (1 << 28) {
                    return Err(err(
                        &[Key("flows"), Key("capacity")],
                        "must be in 1..=268435456".into(),
                    ));
                }
                Some(f.capacity)
            }
        };
        let (stats_interval_ms, stats_json) = match &raw.stats {
            None => (1000, None),
            Some(s) => (
                s.interval_ms.unwrap_or(1000),
                s.json.as_deref().map(resolve),
            ),
        };
        let stats_prometheus = match raw.stats.as_ref().and_then(|s| s.prometheus.as_deref()) {
            None => None,
            Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
                err(
                    &[Key("stats"), Key("prometheus")],
                    format!("{a:?} is not an address and port (e.g. 127.0.0.1:9464)"),
                )
            })?),
        };
        if stats_prometheus.is_some() && stats_interval_ms == 0 {
            return Err(err(
                &[Key("stats"), Key("interval_ms")],
                "stats.prometheus needs interval_ms > 0 (the metrics are refreshed every interval)"
                    .into(),
            ));
        }
        // Into capture files (every port a `net_pcap` vdev) announcements would only add
        // frames that `replay` does not write: none unless asked for.
        let captures = ports.iter().all(|p| p.device.starts_with("net_pcap"));
        let default_rounds = if captures { 0 } else { DEFAULT_ANNOUNCE_ROUNDS };
        let (announce_rounds, announce_interval_ms) = match &raw.announce {
            None => (default_rounds, DEFAULT_ANNOUNCE_INTERVAL_MS),
            Some(a) => (
                a.rounds.unwrap_or(default_rounds),
                a.interval_ms.unwrap_or(DEFAULT_ANNOUNCE_INTERVAL_MS),
            ),
        };
        if announce_rounds > 100 {
            return Err(err(
                &[Key("announce"), Key("rounds")],
                "must be in 0..=100".into(),
            ));
        }
        if !(10..=3_600_000).contains(&announce_interval_ms) {
            return Err(err(
                &[Key("announce"), Key("interval_ms")],
                "must be in 10..=3600000".into(),
            ));
        }
        let control = match &raw.control {
            None => None,
            Some(c) => {
                let at = |k: &'static str| [Key("control"), Key(k)];
                let addr = |k: &'static str, v: &str| {
                    v.parse::<std::net::SocketAddr>().map_err(|_| {
                        err(
                            &at(k),
                            format!("{v:?} is not an address like 127.0.0.1:7700"),
                        )
                    })
                };
                let advert = c.advert_interval_ms.unwrap_or(1000);
                let dead = c.dead_interval_ms.unwrap_or(3500);
                if advert == 0 || dead <= advert {
                    return Err(err(
                        &at("dead_interval_ms"),
                        format!(
                            "need 0 < advert_interval_ms ({advert}) < dead_interval_ms ({dead})"
                        ),
                    ));
                }
                let unheard = match c.unheard.as_deref() {
                    None | Some("keep") => crate::control::overlay::Unheard::Keep,
                    Some("down") => crate::control::overlay::Unheard::Down,
                    Some(u) => {
                        return Err(err(&at("unheard"), format!("{u:?} is not keep or down")));
                    }
                };
                let name = c.name.clone().unwrap_or_else(|| "flowgate".into());
                if name.is_empty() || name.len() > 64 {
                    return Err(err(&at("name"), "a name of 1 to 64 bytes is needed".into()));
                }
                let flow_slots = c.flow_slots.unwrap_or(DEFAULT_FLOW_SLOTS);
                if flow_slots > 4096 {
                    return Err(err(
                        &at("flow_slots"),
                        format!("{flow_slots} is above 4096"),
                    ));
                }
                let multicast_group = match &c.multicast_group {
                    None => None,
                    Some(g) => {
                        let a = addr("multicast_group", g)?;
                        if !matches!(a.ip(), std::net::IpAddr::V4(v) if v.is_multicast()) {
                            return Err(err(
                                &at("multicast_group"),
                                format!("{g:?} is not an IPv4 multicast group"),
                            ));
                        }
                        Some(a)
                    }
                };
                Some(ControlConf {
                    multicast_group,
                    flow_slots,
                    supervisor: addr("supervisor", &c.supervisor)?,
                    key_file: resolve(&c.key_file),
                    name,
                    listen: addr("listen", c.listen.as_deref().unwrap_or("0.0.0.0:0"))?,
                    advert_interval_ms: advert,
                    dead_interval_ms: dead,
                    unheard,
                })
            }
        };
        Ok(RunConf {
            control,
            source: path.to_path_buf(),
            pipeline: resolve(&raw.pipeline),
            eal: raw.eal,
            management_lcore: raw.lcores.management,
            worker_lcores: raw.lcores.workers,
            cpus: raw.lcores.cpus,
            ports,
            mbufs,
            mbuf_cache,
            flow_capacity,
            idle_ms: raw.stop.map_or(0, |s| s.idle_ms),
            stats_interval_ms,
            stats_json,
            stats_prometheus,
            announce_rounds,
            announce_interval_ms,
        })
    }

    /// The full EAL argument list: the file's `eal`, then `-l`, `--main-lcore`, and one
    /// `--vdev` (virtual device) or `-a` (PCI address) per port.
    pub fn eal_args(&self) -> Vec<String> {
        let mut a = self.eal.clone();
        a.extend(self.lcore_args());
        for p in &self.ports {
            a.push(if p.is_vdev() { "--vdev" } else { "-a" }.into());
            a.push(p.device.clone());
        }
        a
    }

    /// The EAL lcore options: `-l` (or `--lcores` with [`RunConf::cpus`]) and `--main-lcore`.
    pub fn lcore_args(&self) -> Vec<String> {
        let mut lcores = vec![self.management_lcore];
        lcores.extend(&self.worker_lcores);
        let list = lcores
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut a: Vec<String> = match &self.cpus {
            None => vec!["-l".into(), list],
            Some(c) => vec!["--lcores".into(), format!("({list})@({c})")],
        };
        a.push("--main-lcore".into());
        a.push(self.management_lcore.to_string());
        a
    }

    /// The mbufs' data room: [`DEFAULT_DATA_ROOM`], or more when a port's `mtu` needs it:
    /// the headroom and, rounded up to whole KB, an Ethernet header with two VLAN tags,
    /// the MTU and the CRC a PMD may leave in place; so that every frame a port takes
    /// fits one mbuf (flowgate does not chain segments).
    pub fn mbuf_data_room(&self) -> u16 {
        let most = self.ports.iter().filter_map(|p| p.mtu).max().unwrap_or(0);
        let frame = (14 + 8 + most + 4).div_ceil(1024) * 1024;
        DEFAULT_DATA_ROOM.max(MBUF_HEADROOM + frame)
    }

    /// The conf a SIGHUP runs with when the file now reads `fresh`: the settings the
    /// management core can take live — `pipeline` (the file it reloads),
    /// `flows.capacity`, `stop.idle_ms` and `stats.interval_ms` — from `fresh`, the rest
    /// as they run. Second: the keys of the rest that `fresh` changes, which take a
    /// restart.
    pub fn reload_from(&self, fresh: &RunConf) -> (RunConf, Vec<&'static str>) {
        let next = RunConf {
            pipeline: fresh.pipeline.clone(),
            flow_capacity: fresh.flow_capacity,
            idle_ms: fresh.idle_ms,
            stats_interval_ms: fresh.stats_interval_ms,
            ..self.clone()
        };
        let lcores = |c: &RunConf| (c.management_lcore, c.worker_lcores.clone(), c.cpus.clone());
        let kept = [
            ("eal", self.eal != fresh.eal),
            ("lcores", lcores(self) != lcores(fresh)),
            ("ports", self.ports != fresh.ports),
            (
                "mempool",
                (self.mbufs, self.mbuf_cache) != (fresh.mbufs, fresh.mbuf_cache),
            ),
            ("stats.json", self.stats_json != fresh.stats_json),
            (
                "stats.prometheus",
                self.stats_prometheus != fresh.stats_prometheus,
            ),
            ("control", self.control != fresh.control),
            (
                "announce",
                (self.announce_rounds, self.announce_interval_ms)
                    != (fresh.announce_rounds, fresh.announce_interval_ms),
            ),
        ];
        (next, kept.iter().filter(|k| k.1).map(|k| k.0).collect())
    }

    /// What `next` (from [`reload_from`](Self::reload_from)) changes of the live
    /// settings but the flow table's size (which the pipeline's reload reports), as
    /// `key old → new` phrases.
    pub fn live_changes(&self, next: &RunConf) -> Vec<String> {
        let mut v = Vec::new();
        if self.pipeline != next.pipeline {
            v.push(format!(
                "pipeline {} → {}",
                self.pipeline.display(),
                next.pipeline.display()
            ));
        }
        if self.idle_ms != next.idle_ms {
            v.push(format!("stop.idle_ms {} → {}", self.idle_ms, next.idle_ms));
        }
        if self.stats_interval_ms != next.stats_interval_ms {
            v.push(format!(
                "stats.interval_ms {} → {}",
                self.stats_interval_ms, next.stats_interval_ms
            ));
        }
        v
    }

    /// Index of port `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }
}

/// Maps the pipeline's port indices (`Pipeline::ports`, first-seen order) to conf port
/// indices, by name. The worker is given pipeline indices as `in_port` and returns them in
/// `Route::port`; conf ports the pipeline never names get the indices after the named
/// ones. With a single conf port every pipeline port maps to it ("everything leaves
/// through it"); with several, a pipeline port missing from the conf is an error.
///
/// Returns (pipeline index → conf index, conf index → pipeline index).
pub fn map_ports(
    conf: &RunConf,
    pipeline_ports: &[String],
) -> Result<(Vec<usize>, Vec<u16>), String> {
    let mut to_conf = Vec::new();
    let mut to_pipe = vec![u16::MAX; conf.ports.len()];
    for (pi, name) in pipeline_ports.iter().enumerate() {
        let ci = match conf.port_index(name) {
            Some(c) => c,
            None if conf.ports.len() == 1 => 0,
            None => {
                return Err(format!(
                    "the pipeline names port {name:?}, which {} does not define (ports: {})",
                    conf.source.display(),
                    conf.ports
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        };
        to_conf.push(ci);
        if to_pipe[ci] == u16::MAX {
            to_pipe[ci] = pi as u16;
        }
    }
    for (ci, tp) in to_pipe.iter_mut().enumerate() {
        if *tp == u16::MAX {
            *tp = to_conf.len() as u16;
            to_conf.push(ci);
        }
    }
    Ok((to_conf, to_pipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
pipeline: ../pipelines/web-farm.yaml
eal: ["--no-huge", "-m", "512", "--no-pci", "--no-telemetry", "--file-prefix", "fg"]
lcores: { management: 0, workers: [1] }
ports:
  - { name: outside, device: "net_af_packet0,iface=veth-out" }
  - { name: inside,  device: "0000:03:00.0" }
mempool: { mbufs: 8191, cache: 256 }
flows: { capacity: 1000000 }
stop: { idle_ms: 0 }
"#;

    fn parse(t: &str) -> Result<RunConf, ConfigError> {
        RunConf::from_str(t, Path::new("/etc/fg/conf/x.yaml"))
    }

    #[test]
    fn a_reload_takes_the_live_settings_and_names_the_rest() {
        let run = parse(GOOD).expect("valid");
        let same = run.reload_from(&parse(GOOD).expect("valid"));
        assert_eq!(same.0.pipeline, run.pipeline);
        assert!(same.1.is_empty() && run.live_changes(&same.0).is_empty());

        let edited = GOOD
            .replace("../pipelines/web-farm.yaml", "../pipelines/other.yaml")
            .replace("idle_ms: 0", "idle_ms: 500")
            .replace("capacity: 1000000", "capacity: 4096")
            .replace("mbufs: 8191", "mbufs: 16383")
            .replace("workers: [1]", "workers: [1, 2]")
            .replace("0000:03:00.0", "0000:04:00.0")
            + "stats: { interval_ms: 250, json: s.json }\n";
        let (next, restart) = run.reload_from(&parse(&edited).expect("valid"));
        assert_eq!(
            next.pipeline,
            Path::new("/etc/fg/conf/../pipelines/other.yaml")
        );
        assert_eq!(
            (next.idle_ms, next.flow_capacity, next.stats_interval_ms),
            (500, Some(4096), 250)
        );
        // What takes a restart runs on as it was.
        assert_eq!((next.mbufs, &next.worker_lcores), (8191, &vec![1]));
        assert_eq!((&next.ports, &next.stats_json), (&run.ports, &None));
        assert_eq!(restart, ["lcores", "ports", "mempool", "stats.json"]);
        assert_eq!(
            run.live_changes(&next),
            [
                "pipeline /etc/fg/conf/../pipelines/web-farm.yaml → /etc/fg/conf/../pipelines/other.yaml",
                "stop.idle_ms 0 → 500",
                "stats.interval_ms 1000 → 250"
            ]
        );
    }

    #[test]
    fn parses_the_issue_example() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(
            c.pipeline,
            Path::new("/etc/fg/conf/../pipelines/web-farm.yaml")
        );
        assert_eq!(c.management_lcore, 0);
        assert_eq!(c.worker_lcores, vec![1]);
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].dpdk_name(), "net_af_packet0");
        assert!(c.ports[0].is_vdev());
        assert!(!c.ports[1].is_vdev());
        assert_eq!(c.ports[1].dpdk_name(), "0000:03:00.0");
        assert_eq!((c.mbufs, c.mbuf_cache), (8191, 256));
        assert_eq!(c.flow_capacity, Some(1_000_000));
        assert_eq!(c.idle_ms, 0);
        assert_eq!(c.stats_interval_ms, 1000);
        let a = c.eal_args();
        assert_eq!(&a[..7], &c.eal[..]);
        let rest: Vec<&str> = a[7..].iter().map(String::as_str).collect();
        assert_eq!(
            rest,
            [
                "-l",
                "0,1",
                "--main-lcore",
                "0",
                "--vdev",
                "net_af_packet0,iface=veth-out",
                "-a",
                "0000:03:00.0"
            ]
        );
    }

    #[test]
    fn defaults_and_absolute_paths() {
        let c = parse(
            "pipeline: /p.yaml\nlcores: {management: 2, workers: [3, 4]}\nports: [{name: a, device: net_null0}]\n\
             stats: {json: out.json, interval_ms: 0}\n",
        )
        .expect("valid");
        assert_eq!(c.pipeline, Path::new("/p.yaml"));
        assert_eq!(
            (c.mbufs, c.mbuf_cache, c.flow_capacity, c.idle_ms),
            (DEFAULT_MBUFS, DEFAULT_CACHE, None, 0)
        );
        assert_eq!(
            c.stats_json.as_deref(),
            Some(Path::new("/etc/fg/conf/out.json"))
        );
        assert_eq!(c.stats_interval_ms, 0);
        assert_eq!(c.ports[0].rx_desc, DEFAULT_DESC);
        assert_eq!(
            (c.ports[0].mtu, c.mbuf_data_room()),
            (None, DEFAULT_DATA_ROOM)
        );
        assert_eq!(&c.eal_args()[..2], ["-l", "2,3,4"]);
        let c = parse(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1, 2], cpus: \"0-1\"}\nports: [{name: a, device: net_null0}]\n",
        )
        .expect("valid");
        assert_eq!(
            &c.eal_args()[..4],
            ["--lcores", "(0,1,2)@(0-1)", "--main-lcore", "0"]
        );
    }

    #[test]
    fn announcements_by_default_on_live_ports_and_as_asked() {
        let base = "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\n";
        let ann = |c: &RunConf| (c.announce_rounds, c.announce_interval_ms);
        let live = parse(&format!("{base}ports: [{{name: a, device: net_null0}}]\n")).unwrap();
        assert_eq!(ann(&live), (3, 1000));
        let pcap = format!("{base}ports: [{{name: a, device: \"net_pcap0,rx_pcap=in.pcap\"}}]\n");
        assert_eq!(ann(&parse(&pcap).unwrap()), (0, 1000), "none into captures");
        let asked = parse(&format!(
            "{pcap}announce: {{rounds: 5, interval_ms: 200}}\n"
        ))
        .unwrap();
        assert_eq!(ann(&asked), (5, 200));
        let off = parse(&format!(
            "{base}ports: [{{name: a, device: net_null0}}]\nannounce: {{rounds: 0}}\n"
        ))
        .unwrap();
        assert_eq!(ann(&off), (0, 1000));
        // A restart takes a change.
        let (_, kept) = live.reload_from(&off);
        assert_eq!(kept, ["announce"]);
        for (bad, key) in [
            ("announce: {rounds: 101}", "announce.rounds"),
            ("announce: {interval_ms: 5}", "announce.interval_ms"),
            ("announce: {every: 1}", "announce"),
        ] {
            let e = parse(&format!(
                "{base}ports: [{{name: a, device: net_null0}}]\n{bad}\n"
            ))
            .expect_err(bad)
            .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn control_section() {
        let base = "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports: [{name: a, device: net_null0}]\n";
        assert_eq!(parse(base).expect("valid").control, None);
        let control = |y: &str| parse(y).expect("valid").control.expect("control");
        let c = control(&format!(
            "{base}control: {{ supervisor: \"127.0.0.1:7700\", key_file: control.key }}\n"
        ));
        assert_eq!(c.supervisor, "127.0.0.1:7700".parse().unwrap());
        assert_eq!(c.key_file, Path::new("/etc/fg/conf/control.key"));
        assert_eq!(
            (c.name.as_str(), c.advert_interval_ms, c.dead_interval_ms),
            ("flowgate", 1000, 3500)
        );
        assert_eq!(c.listen, "0.0.0.0:0".parse().unwrap());
        assert_eq!(c.unheard, crate::control::overlay::Unheard::Keep);
        assert_eq!(c.flow_slots, DEFAULT_FLOW_SLOTS);
        assert_eq!(c.multicast_group, None);
        // Unquoted, as in docs/RUNNING.md.
        let c = control(&format!(
            "{base}control:\n  supervisor: 192.168.77.2:7700\n  key_file: control.key\n  multicast_group: 239.255.70.71:7701\n"
        ));
        assert_eq!(c.supervisor, "192.168.77.2:7700".parse().unwrap());
        assert_eq!(
            c.multicast_group,
            Some("239.255.70.71:7701".parse().unwrap())
        );
        let c = control(&format!(
            "{base}control:\n  supervisor: \"[::1]:7700\"\n  key_file: /k\n  name: lb1\n  unheard: down\n  flow_slots: 8\n  multicast_group: \"239.255.70.71:7701\"\n  advert_interval_ms: 200\n  dead_interval_ms: 700\n"
        ));
        assert_eq!(
            (c.name.as_str(), c.advert_interval_ms, c.dead_interval_ms),
            ("lb1", 200, 700)
        );
        assert_eq!(c.unheard, crate::control::overlay::Unheard::Down);
        assert_eq!(c.flow_slots, 8);
        assert_eq!(
            c.multicast_group,
            Some("239.255.70.71:7701".parse().unwrap())
        );
        bad(
            &format!("{base}control:\n  supervisor: nowhere\n  key_file: k\n"),
            "control.supervisor",
            "not an address",
        );
        bad(
            &format!(
                "{base}control:\n  supervisor: \"127.0.0.1:1\"\n  key_file: k\n  unheard: maybe\n"
            ),
            "control.unheard",
            "keep or down",
        );
        bad(
            &format!(
                "{base}control:\n  supervisor: \"127.0.0.1:1\"\n  key_file: k\n  dead_interval_ms: 500\n"
            ),
            "control.dead_interval_ms",
            "advert_interval_ms",
        );
        bad(
            &format!("{base}control:\n  supervisor: \"127.0.0.1:1\"\n"),
            "control",
            "key_file",
        );
        bad(
            &format!(
                "{base}control:\n  supervisor: \"127.0.0.1:1\"\n  key_file: k\n  multicast_group: \"10.0.0.1:7701\"\n"
            ),
            "control.multicast_group",
            "not an IPv4 multicast group",
        );
    }

    fn bad(t: &str, key: &str, needle: &str) {
        let e = parse(t).expect_err("must be refused");
        assert_eq!(e.file, "/etc/fg/conf/x.yaml");
        assert_eq!(e.key, key, "{e}");
        assert!(e.msg.contains(needle), "{e}");
        assert!(e.line >= 1, "{e}");
    }

    #[test]
    fn port_mtus_size_the_mbufs() {
        let conf = |a: &str, b: &str| {
            parse(&format!(
                "pipeline: p.yaml\nlcores: {{management: 0, workers: [1]}}\n\
                 ports: [{{name: a, device: net_null0{a}}}, {{name: b, device: net_null1{b}}}]\n"
            ))
        };
        // Up to 1500 bytes of MTU and more, the default 2 KB mbufs hold the frame.
        let c = conf(", mtu: 1400", ", mtu: 1500").expect("valid");
        assert_eq!(c.ports[0].mtu, Some(1400));
        assert_eq!(c.mbuf_data_room(), DEFAULT_DATA_ROOM);
        // Jumbo: the largest port's frame, in whole KB, and the headroom.
        let c = conf(", mtu: 9000", "").expect("valid");
        assert_eq!((c.ports[1].mtu, c.mbuf_data_room()), (None, 128 + 9216));
        let c = conf("", ", mtu: 16000").expect("valid");
        assert_eq!(c.mbuf_data_room(), 128 + 16 * 1024);
        for m in ["67", "16001", "-1"] {
            let e = conf(&format!(", mtu: {m}"), "").expect_err(m);
            assert!(e.key.starts_with("ports[0]"), "{e}");
        }
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports: [{name: a, device: net_null0, mtu: 20000}]\n",
            "ports[0].mtu",
            "mtu 20000 is out of 68..=16000",
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let base = "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports: [{name: a, device: net_null0}]\n";
        bad(&format!("{base}bogus: 1\n"), "", "unknown field `bogus`");
        bad(
            &format!("{base}mempool: {{mbufs: 8191, size: 3}}\n"),
            "mempool",
            "unknown field `size`",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: []}\nports: [{name: a, device: net_null0}]\n",
            "lcores.workers",
            "at least one",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 1, workers: [1]}\nports: [{name: a, device: net_null0}]\n",
            "lcores.workers[0]",
            "management",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports: []\n",
            "ports",
            "at least one",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports:\n  - {name: a, device: net_null0}\n  - {name: a, device: net_null1}\n",
            "ports[1].name",
            "named twice",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports:\n  - {name: a, device: net_null0}\n  - {name: b, device: \"net_null0,size=64\"}\n",
            "ports[1].device",
            "used twice",
        );
        bad(
            &format!("{base}eal: [\"--no-huge\", \"-l\", \"0-3\"]\n"),
            "eal[1]",
            "derived",
        );
        bad(
            "pipeline: p.yaml\nlcores: {management: 0, workers: [1], cpus: \"all\"}\nports: [{name: a, device: net_null0}]\n",
            "lcores.cpus",
            "CPU list",
        );
        bad(
            &format!("{base}mempool: {{mbufs: 100}}\n"),
            "mempool.mbufs",
            "below 1024",
        );
        bad(
            &format!("{base}mempool: {{mbufs: 2047, cache: 1500}}\n"),
            "mempool.cache",
            "512",
        );
        bad(
            &format!("{base}flows: {{capacity: 0}}\n"),
            "flows.capacity",
            "1..=",
        );
        bad(
            "lcores: {management: 0, workers: [1]}\nports: [{name: a, device: net_null0}]\n",
            "",
            "missing field `pipeline`",
        );
        bad(
            &format!("{base}stats: {{prometheus: \"localhost\"}}\n"),
            "stats.prometheus",
            "not an address and port",
        );
        bad(
            &format!("{base}stats: {{prometheus: \"127.0.0.1:9464\", interval_ms: 0}}\n"),
            "stats.interval_ms",
            "interval_ms > 0",
        );
        let c = parse(&format!("{base}stats: {{prometheus: \"[::1]:9464\"}}\n")).expect("valid");
        assert_eq!(c.stats_prometheus, Some("[::1]:9464".parse().unwrap()));
    }

    #[test]
    fn shipped_confs_parse_and_name_loadable_pipelines() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf"));
        for name in [
            "pcap-replay.yaml",
            "veth-demo.yaml",
            "null-bench.yaml",
            "null-bench-huge.yaml",
            "vfio-example.yaml",
        ] {
            let c = RunConf::load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            let p = crate::config::Pipeline::load(&c.pipeline)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            map_ports(&c, &p.ports).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let v = RunConf::load(&dir.join("vfio-example.yaml")).expect("vfio");
        assert!(v.ports.iter().all(|p| !p.is_vdev()));
        assert!(!v.eal.iter().any(|a| a == "--no-huge"));
        // The two bench confs differ only in the memory mode.
        let (a, b) = (
            RunConf::load(&dir.join("null-bench.yaml")).expect("null-bench"),
            RunConf::load(&dir.join("null-bench-huge.yaml")).expect("null-bench-huge"),
        );
        assert!(a.eal.iter().any(|x| x == "--no-huge"));
        assert!(!b.eal.iter().any(|x| x == "--no-huge" || x == "-m"));
        assert_eq!(
            (a.ports.len(), a.mbufs, a.worker_lcores.clone()),
            (b.ports.len(), b.mbufs, b.worker_lcores.clone())
        );
    }

    #[test]
    fn ports_map_by_name() {
        let c = parse(GOOD).expect("valid");
        // The pipeline saw `inside` first, then `outside`.
        let (to_conf, to_pipe) = map_ports(&c, &["inside".into(), "outside".into()]).expect("maps");
        assert_eq!(to_conf, vec![1, 0]);
        assert_eq!(to_pipe, vec![1, 0]);
        // A pipeline naming no port: conf order.
        let (to_conf, to_pipe) = map_ports(&c, &[]).expect("maps");
        assert_eq!(to_conf, vec![0, 1]);
        assert_eq!(to_pipe, vec![0, 1]);
        // Only `inside` named: it is pipeline port 0; `outside` gets index 1.
        let (to_conf, to_pipe) = map_ports(&c, &["inside".into()]).expect("maps");
        assert_eq!(to_conf, vec![1, 0]);
        assert_eq!(to_pipe, vec![1, 0]);
        let e = map_ports(&c, &["dmz".into()]).expect_err("unknown port");
        assert!(e.contains("\"dmz\""), "{e}");
        // One conf port: everything leaves through it.
        let one =
            parse("pipeline: p.yaml\nlcores: {management: 0, workers: [1]}\nports: [{name: a, device: net_null0}]\n")
                .expect("valid");
        let (to_conf, to_pipe) =
            map_ports(&one, &["inside".into(), "outside".into()]).expect("maps");
        assert_eq!(to_conf, vec![0, 0]);
        assert_eq!(to_pipe, vec![0]);
    }
}
