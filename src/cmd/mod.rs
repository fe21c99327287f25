//! Subcommand implementations behind `main.rs` (the CLI only parses arguments).
//!
//! These run at the edge: they use `anyhow` and print; the layers below return typed
//! errors.

pub mod check;
pub mod replay;
pub mod summary;

use crate::config::Pipeline;
use crate::r#gen::{GenService, GenSpec};

/// The `gen` network for a pipeline: its system and gateway MACs, and each service's
/// VIP, protocol, ports (every port of small ranges, the ends of large ones) and
/// server MACs.
pub fn gen_spec(p: &Pipeline) -> GenSpec {
    let services = p
        .services
        .iter()
        .filter(|s| s.proto == 6 || s.proto == 17)
        .map(|s| GenService {
            name: s.name.clone(),
            vip: s.vip,
            proto: s.proto,
            ports: s
                .ports
                .iter()
                .flat_map(|r| {
                    if u32::from(r.hi) - u32::from(r.lo) < 256 {
                        (r.lo..=r.hi).collect::<Vec<u16>>()
                    } else {
                        vec![r.lo, r.hi]
                    }
                })
                .collect(),
            servers: s
                .members
                .iter()
                .map(|m| p.servers[m.server as usize].mac)
                .collect(),
        })
        .collect();
    GenSpec {
        system_mac: p.mac,
        gateway_mac: p.gateway_mac,
        services,
        ..GenSpec::default()
    }
}
