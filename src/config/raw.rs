//! Raw serde mirror of `pipelines/*.yaml`: field names are the file's contract.
//!
//! Every struct denies unknown fields, so a misspelt key is an error with a line number.
//! Values stay close to what was written (strings for addresses and names); `config::mod`
//! resolves them into typed config once.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub system: RawSystem,
    #[serde(default)]
    pub qos: BTreeMap<String, RawQos>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub flows: Vec<RawFlowRule>,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub flow_table: Option<RawFlowTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub mac: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    pub gateway: RawGateway,
    /// `switch` (default) or `router`.
    #[serde(default)]
    pub mode: Option<String>,
    /// ICMP errors a worker may send per second.
    #[serde(default)]
    pub icmp_rate: Option<u32>,
    /// The links' MTU: the largest IP packet (with its MPLS labels) a port sends.
    /// `mtu: 1500` (every port) or `mtu: { outside: 1500, inside: 9000 }` (by port
    /// name); read as a YAML value so that a wrong shape is reported at `system.mtu`.
    #[serde(default)]
    pub mtu: Option<serde_yaml_ng::Value>,
}

/// `gateway: "02:…"` or `gateway: { mac: "02:…", port: outside }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawGateway {
    Mac(String),
    Full(RawGatewayFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayFull {
    pub mac: String,
    #[serde(default)]
    pub port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub vip: String,
    pub proto: Text,
    /// Absent: every port (allowed only for protocols without ports).
    #[serde(default)]
    pub ports: Option<Vec<RawRange>>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub affinity: Option<RawAffinity>,
    #[serde(default)]
    pub qos: Option<RawQosRef>,
    #[serde(default)]
    pub reply_qos: Option<RawQosRef>,
    #[serde(default)]
    pub table_size: Option<usize>,
    /// `drop` (default) or `reject`: what a new flow gets when no server can take it.
    #[serde(default)]
    pub no_server: Option<String>,
    /// New flows a second each client may open (unset: no limit).
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// The only client networks whose new flows the service takes (unset: any).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// How many open flows each client may hold (unset: no limit).
    #[serde(default)]
    pub conn_limit: Option<RawConnLimit>,
    pub servers: Vec<RawServer>,
}

/// A service's `conn_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnLimit {
    /// Open flows each client (an IPv4 address, an IPv6 /64) may hold.
    pub per_source: u64,
}

/// A service's `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// New flows a second each client may open.
    #[serde(default)]
    pub per_source: Option<u64>,
    /// The most it may open at once (default: `per_source`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// New flows a second the service takes from all its clients together.
    #[serde(default)]
    pub total: Option<u64>,
    /// The most it takes at once (default: `total`).
    #[serde(default)]
    pub total_burst: Option<u64>,
    /// What one client is: its address cut to these prefixes (defaults 32 and 64).
    #[serde(default)]
    pub ipv4_prefix: Option<u64>,
    #[serde(default)]
    pub ipv6_prefix: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: String,
    pub mac: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub port: Option<String>,
    /// Static load figure, 0.0..1.0 (the control plane replaces it at run time).
    #[serde(default)]
    pub load: Option<f64>,
    /// Static response time in milliseconds (the control plane replaces it).
    #[serde(default)]
    pub response_ms: Option<f64>,
    /// `up` (default), `draining` or `down`.
    #[serde(default)]
    pub state: Option<String>,
    /// The most open flows the server takes (unset: no limit).
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// Seconds over which a server that comes up takes its weight (unset: at once).
    #[serde(default)]
    pub slow_start: Option<u32>,
    /// Failed connections (unanswered or refused) within `fail_timeout` that take the
    /// server out of new flows for `fail_timeout` (unset: never).
    #[serde(default)]
    pub max_fails: Option<u32>,
    /// Seconds (default 10): the window `max_fails` counts in, and how long it is out.
    #[serde(default)]
    pub fail_timeout: Option<u32>,
    /// A backup of this service: it takes the service's new flows only while no other
    /// (primary) server can (unset: false).
    #[serde(default)]
    pub backup: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowRule {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RawMatch,
    pub to: String,
    #[serde(default)]
    pub qos: Option<RawQosRef>,
    #[serde(default)]
    pub reply_qos: Option<RawQosRef>,
    /// Idle timeout of the flows this rule creates, seconds.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub in_port: Option<Text>,
    pub vlan: Option<RawRange>,
    pub pcp: Option<RawRange>,
    pub mpls: Option<RawRange>,
    pub ethertype: Option<Text>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Option<Text>,
    pub src_port: Option<RawRange>,
    pub dst_port: Option<RawRange>,
    pub dscp: Option<Text>,
    pub spi: Option<RawRange>,
}

/// `affinity: source` (or `connection`), or `{ by: source, ipv4_prefix, ipv6_prefix }`.
///
/// Deserialized by hand rather than as an untagged enum, so that a mistake inside the
/// map keeps serde's own message and key (`services[0].affinity.ipv4_prefx: unknown
/// field`) instead of "did not match any variant".
#[derive(Debug)]
pub enum RawAffinity {
    Name(String),
    Spec(RawAffinitySpec),
}

impl<'de> Deserialize<'de> for RawAffinity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawAffinity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`connection`, `source`, or a map with `by` and prefixes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAffinity, E> {
                Ok(RawAffinity::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<RawAffinity, A::Error> {
                RawAffinitySpec::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawAffinity::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAffinitySpec {
    pub by: String,
    #[serde(default)]
    pub ipv4_prefix: Option<u64>,
    #[serde(default)]
    pub ipv6_prefix: Option<u64>,
}

/// A QoS class name or inline attributes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawQosRef {
    Class(String),
    Inline(RawQos),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQos {
    pub dscp: Option<Text>,
    pub pcp: Option<u8>,
    pub push_vlan: Option<RawPushVlan>,
    pub pop_vlan: Option<bool>,
    pub set_vlan: Option<RawSetVlan>,
    pub push_mpls: Option<RawPushMpls>,
    pub pop_mpls: Option<bool>,
    pub swap_mpls: Option<RawSwapMpls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPushVlan {
    pub vid: u16,
    #[serde(default)]
    pub pcp: Option<u8>,
    #[serde(default)]
    pub tpid: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSetVlan {
    pub vid: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPushMpls {
    pub label: u32,
    #[serde(default)]
    pub tc: Option<u8>,
    #[serde(default)]
    pub ttl: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwapMpls {
    pub label: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowTable {
    #[serde(default)]
    pub capacity: Option<usize>,
    #[serde(default)]
    pub tcp_syn_timeout: Option<u64>,
    #[serde(default)]
    pub tcp_established_timeout: Option<u64>,
    #[serde(default)]
    pub tcp_closing_timeout: Option<u64>,
    #[serde(default)]
    pub idle_timeout: Option<u64>,
}

/// A number or an inclusive range written `"lo-hi"` (or a number as a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRange {
    pub lo: u64,
    pub hi: u64,
}

impl<'de> Deserialize<'de> for RawRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawRange;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a range \"lo-hi\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawRange, E> {
                Ok(RawRange { lo: v, hi: v })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawRange, E> {
                u64::try_from(v)
                    .map(|v| RawRange { lo: v, hi: v })
                    .map_err(|_| E::custom(format!("negative value {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawRange, E> {
                let parse = |t: &str| {
                    let t = t.trim();
                    let r = if let Some(h) = t.strip_prefix("0x") {
                        u64::from_str_radix(h, 16)
                    } else {
                        t.parse()
                    };
                    r.map_err(|_| E::custom(format!("bad number {t:?} in {s:?}")))
                };
                let (lo, hi) = match s.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let v = parse(s)?;
                        (v, v)
                    }
                };
                if lo > hi {
                    return Err(E::custom(format!("empty range {s:?}")));
                }
                Ok(RawRange { lo, hi })
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar written either as a string or as a number (`proto: tcp`, `proto: 6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
