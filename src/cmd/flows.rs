//! `flowgate flows`: the live flows of a running `flowgate run` (`GET /flows` on its
//! `stats.prometheus` address) or of a `flowgate replay --flows` file, as a table (one
//! line per flow, as `ipvsadm -Lnc` prints connections) or as the JSON itself.
//!
//! Layer: `cmd`. The filters are the query keys of `GET /flows`
//! ([`FlowFilter::parse`](crate::pipeline::listing::FlowFilter::parse)): sent to the
//! running system, which filters before it lists; applied here to a file's flows.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// `flowgate flows` arguments.
#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// A running flowgate's `stats.prometheus` address (ADDR:PORT).
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    pub from: Option<String>,
    /// A file written by `flowgate replay --flows`.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Only flows going to this server (or `gateway`, `drop`).
    #[arg(long)]
    pub to: Option<String>,
    /// Only flows of this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only flows of this pattern rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only flows with this address at either end.
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Only flows with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only flows of this IP protocol (name or number).
    #[arg(long)]
    pub proto: Option<String>,
    /// Only assured flows (true) or only the others (false).
    #[arg(long)]
    pub assured: Option<bool>,
    /// List at most this many (a running system lists 10000 unless told).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl FlowsArgs {
    /// The filters as `(key, value)` pairs, in `GET /flows` query keys.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let mut add = |k, x: Option<String>| {
            if let Some(x) = x {
                v.push((k, x));
            }
        };
        add("to", self.to.clone());
        add("service", self.service.clone());
        add("rule", self.rule.clone());
        add("addr", self.addr.map(|a| a.to_string()));
        add("port", self.port.map(|p| p.to_string()));
        add("proto", self.proto.clone());
        add("assured", self.assured.map(|a| a.to_string()));
        add("limit", self.limit.map(|l| l.to_string()));
        v
    }
}

/// Runs `flowgate flows`: prints the table (or JSON) to stdout.
pub fn run(a: &FlowsArgs) -> Result<()> {
    if let Some(p) = &a.proto
        && crate::config::parse_proto(p).is_none_or(|n| n == 0)
    {
        bail!("--proto {p}: not an IP protocol (a name such as tcp, or a number)");
    }
    let j = match (&a.from, &a.file) {
        (Some(addr), _) => fetch(addr, &query(&a.pairs()))?,
        (None, Some(f)) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let j: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a flow listing", f.display()))?;
            filter_file(&j, a).with_context(|| format!("{}: not a flow listing", f.display()))?
        }
        (None, None) => bail!("--from or --file is needed"),
    };
    let out = if a.json {
        format!("{j:#}\n")
    } else {
        render(&j).ok_or_else(|| anyhow!("not a flow listing"))?
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

/// `k=v&…`, values percent-encoded.
fn query(pairs: &[(&str, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `GET /flows?query` from `addr`: the listing, or the server's complaint as an error.
fn fetch(addr: &str, query: &str) -> Result<Value> {
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("--from {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("--from {addr}: no address"))?;
    let mut c = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).with_context(|| {
        format!("connecting to {sa} (is stats.prometheus set in the run's conf?)")
    })?;
    c.set_read_timeout(Some(crate::cmd::prom::ASK_TIMEOUT + Duration::from_secs(5)))?;
    write!(c, "GET /flows?{query} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = Vec::new();
    c.read_to_end(&mut resp)
        .with_context(|| format!("reading from {sa}"))?;
    let resp = String::from_utf8_lossy(&resp);
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{sa}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{sa}: {status}: {}", body.trim());
    }
    serde_json::from_str(body).with_context(|| format!("{sa}: not a flow listing"))
}

/// A file's listing with `a`'s filters and limit applied (what the running system does
/// before it lists): `matched` counts the flows that pass.
fn filter_file(j: &Value, a: &FlowsArgs) -> Option<Value> {
    let flows = j.get("flows")?.as_array()?;
    let s = |f: &Value, k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |f: &Value, k: &str| f.get(k).and_then(Value::as_u64);
    let proto = match &a.proto {
        Some(p) => Some(crate::pipeline::listing::proto_name(
            crate::config::parse_proto(p).filter(|&n| n != 0)?,
        )),
        None => None,
    };
    let addr = |f: &Value, k: &str| s(f, k).and_then(|x| x.parse::<IpAddr>().ok());
    let pass = |f: &&Value| {
        a.to.as_ref().is_none_or(|t| s(f, "to").as_ref() == Some(t))
            && a.service
                .as_ref()
                .is_none_or(|t| s(f, "service").as_ref() == Some(t))
            && a.rule
                .as_ref()
                .is_none_or(|t| s(f, "rule").as_ref() == Some(t))
            && a.addr
                .is_none_or(|x| addr(f, "src") == Some(x) || addr(f, "dst") == Some(x))
            && a.port.is_none_or(|p| {
                let p = Some(u64::from(p));
                n(f, "src_port") == p || n(f, "dst_port") == p
            })
            && proto.as_ref().is_none_or(|p| f.get("proto") == Some(p))
            && a.assured
                .is_none_or(|x| f.get("assured").and_then(Value::as_bool) == Some(x))
    };
    let kept: Vec<&Value> = flows.iter().filter(pass).collect();
    let listed: Vec<Value> = kept
        .iter()
        .take(a.limit.unwrap_or(usize::MAX))
        .map(|&f| f.clone())
        .collect();
    Some(serde_json::json!({
        "matched": kept.len(),
        "listed": listed.len(),
        "flows": listed,
    }))
}

/// One end of a flow: `addr:port` (`[addr]:port` for IPv6), or the address alone.
fn end(f: &Value, addr: &str, port: &str) -> String {
    let a = f.get(addr).and_then(Value::as_str).unwrap_or("?");
    match f.get(port).and_then(Value::as_u64) {
        Some(p) if a.contains(':') => format!("[{a}]:{p}"),
        Some(p) => format!("{a}:{p}"),
        None => a.to_owned(),
    }
}

/// The table: a header, one line per flow, and how many were listed of how many matched.
fn render(j: &Value) -> Option<String> {
    let flows = j.get("flows")?.as_array()?;
    let rows: Vec<[String; 9]> = flows
        .iter()
        .map(|f| {
            let txt = |k: &str| match f.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "-".into(),
                Some(v) => v.to_string(),
            };
            let owner = match (f.get("service"), f.get("rule")) {
                (Some(_), _) => format!("service:{}", txt("service")),
                (None, Some(_)) => format!("rule:{}", txt("rule")),
                _ => "-".into(),
            };
            let dst = match f.get("spi").and_then(Value::as_str) {
                Some(spi) => format!("{} spi {spi}", end(f, "dst", "dst_port")),
                None => end(f, "dst", "dst_port"),
            };
            let secs = |k: &str| {
                f.get(k)
                    .and_then(Value::as_u64)
                    .map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
            };
            let flag = |k: &str| f.get(k).and_then(Value::as_bool) == Some(true);
            let marks = if flag("assured") {
                "assured"
            } else if flag("replied") {
                "replied"
            } else {
                "-"
            };
            [
                txt("proto"),
                end(f, "src", "src_port"),
                dst,
                owner,
                txt("to"),
                txt("state"),
                secs("idle_ms"),
                secs("expires_in_ms"),
                marks.into(),
            ]
        })
        .collect();
    let head = [
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "OWNER",
        "TO",
        "STATE",
        "IDLE",
        "EXPIRES",
        "MARKS",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut o = String::new();
    let mut line = |cells: &[&str]| {
        let l: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(o, "{}", l.join("  ").trim_end());
    };
    line(&head);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    let _ = writeln!(
        o,
        "{} flows listed of {} matched",
        j.get("listed")
            .and_then(Value::as_u64)
            .unwrap_or(rows.len() as u64),
        j.get("matched")
            .and_then(Value::as_u64)
            .unwrap_or(rows.len() as u64),
    );
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> FlowsArgs {
        FlowsArgs {
            from: None,
            file: None,
            to: None,
            service: None,
            rule: None,
            addr: None,
            port: None,
            proto: None,
            assured: None,
            limit: None,
            json: false,
        }
    }

    fn listing() -> Value {
        json!({"matched": 3, "listed": 3, "flows": [
            {"proto": "tcp", "src": "198.51.100.7", "src_port": 40000, "dst": "203.0.113.10",
             "dst_port": 80, "service": "http", "to": "web1", "state": "established",
             "replied": true, "assured": true, "idle_ms": 1500, "expires_in_ms": 298500, "worker": 0},
            {"proto": "udp", "src": "2001:db8::7", "src_port": 5060, "dst": "2001:db8::1",
             "dst_port": 5060, "rule": "voice", "to": "gateway", "replied": false,
             "assured": false, "idle_ms": 10, "expires_in_ms": 59990, "worker": 1},
            {"proto": "esp", "src": "198.51.100.9", "dst": "203.0.113.20", "spi": "0x00000100",
             "service": "vpn", "to": "gw2", "replied": true, "assured": false, "idle_ms": 0,
             "expires_in_ms": 60000, "worker": 0},
        ]})
    }

    #[test]
    fn the_table_shows_every_flow_in_its_columns() {
        let t = render(&listing()).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("PROTO  SOURCE"), "{t}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "tcp",
                "198.51.100.7:40000",
                "203.0.113.10:80",
                "service:http",
                "web1",
                "established",
                "1.5s",
                "298.5s",
                "assured"
            ]
        );
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cols[1..5],
            [
                "[2001:db8::7]:5060",
                "[2001:db8::1]:5060",
                "rule:voice",
                "gateway"
            ]
        );
        assert_eq!(cols[5..], ["-", "0.0s", "60.0s", "-"]);
        assert!(lines[3].contains("203.0.113.20 spi 0x00000100"), "{t}");
        assert!(lines[3].ends_with("replied"), "{t}");
        assert_eq!(lines[4], "3 flows listed of 3 matched");
        assert!(render(&json!({"nope": 1})).is_none());
    }

    #[test]
    fn file_filters_match_the_query_keys() {
        let j = listing();
        let count = |a: &FlowsArgs| filter_file(&j, a).unwrap()["matched"].as_u64().unwrap();
        assert_eq!(count(&args()), 3);
        assert_eq!(
            count(&FlowsArgs {
                to: Some("web1".into()),
                ..args()
            }),
            1
        );
        assert_eq!(
            count(&FlowsArgs {
                service: Some("vpn".into()),
                ..args()
            }),
            1
        );
        assert_eq!(
            count(&FlowsArgs {
                rule: Some("voice".into()),
                ..args()
            }),
            1
        );
        let v6: IpAddr = "2001:db8:0::1".parse().unwrap();
        assert_eq!(
            count(&FlowsArgs {
                addr: Some(v6),
                ..args()
            }),
            1
        );
        assert_eq!(
            count(&FlowsArgs {
                port: Some(5060),
                ..args()
            }),
            1
        );
        assert_eq!(
            count(&FlowsArgs {
                port: Some(1),
                ..args()
            }),
            0
        );
        assert_eq!(
            count(&FlowsArgs {
                proto: Some("17".into()),
                ..args()
            }),
            1
        );
        assert_eq!(
            count(&FlowsArgs {
                proto: Some("ESP".into()),
                ..args()
            }),
            1
        );
        assert!(
            filter_file(
                &j,
                &FlowsArgs {
                    proto: Some("nope".into()),
                    ..args()
                }
            )
            .is_none()
        );
        assert_eq!(
            count(&FlowsArgs {
                assured: Some(false),
                ..args()
            }),
            2
        );
        let lim = filter_file(
            &j,
            &FlowsArgs {
                limit: Some(1),
                ..args()
            },
        )
        .unwrap();
        assert_eq!(
            (lim["matched"].as_u64(), lim["listed"].as_u64()),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn queries_are_percent_encoded() {
        let q = query(&[("to", "web 1&x".into()), ("addr", "2001:db8::1".into())]);
        assert_eq!(q, "to=web%201%26x&addr=2001:db8::1");
    }
}
