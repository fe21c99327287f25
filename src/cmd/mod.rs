//! Subcommand implementations behind `main.rs` (the CLI only parses arguments).
//!
//! These run at the edge: they use `anyhow` and print; the layers below return typed
//! errors.

pub mod check;
pub mod flows;
pub mod prom;
pub mod replay;
pub mod summary;

use crate::config::Pipeline;
use crate::r#gen::{GenService, GenSpec};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Writes `j` (pretty, with a final newline) to `path` whole: into `path` + `.tmp` beside
/// it, then renamed over `path`, so that a reader never sees half a file (stats files
/// that monitoring reads while they are rewritten, the agent's numbers file). A path that
/// is not a regular file (`/dev/stdout`, a pipe) is written in place.
pub fn write_json(path: &Path, j: &serde_json::Value) -> anyhow::Result<()> {
    write_whole(path, &(serde_json::to_string_pretty(j)? + "\n"))
}

/// Writes `text` to `path` whole, as [`write_json`] does.
pub fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    // Not a regular file (`/dev/stdout`, a pipe): written in place, as there is no
    // file to replace.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return std::fs::write(path, text).with_context(|| format!("writing {}", path.display()));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_files_are_replaced_whole_and_devices_written_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s.json");
        write_json(&f, &serde_json::json!({"a": 1})).expect("first");
        write_json(&f, &serde_json::json!({"a": 2})).expect("again");
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        assert!(!dir.path().join("s.json.tmp").exists(), "no temporary left");
        write_json(Path::new("/dev/null"), &back).expect("a device");
        assert!(!Path::new("/dev/null.tmp").exists());
        let e = write_json(&dir.path().join("no/such/dir.json"), &back).unwrap_err();
        assert!(format!("{e:#}").contains("no/such"), "{e:#}");
    }
}
