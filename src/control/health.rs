//! Health checks of an end system's own services, run by its agent.
//!
//! Layer: control, beside the agent. A service with `health:` in the agent's conf is
//! probed every `interval_ms` by one of three probes: a TCP connect, an HTTP GET whose
//! status must be 2xx or 3xx, or a shell command whose exit status must be 0, each
//! bounded by `timeout_ms`. [`Checker`] turns the results into a verdict with
//! hysteresis: `fall` failures in a row make a healthy service unhealthy, `rise` passes
//! in a row make it healthy again. It starts unhealthy and the first pass makes it
//! healthy (an agent that starts before its daemon does not attract traffic). The agent
//! advertises an unhealthy service with weight 0 ([`super::agent::Agent::set_healthy`]):
//! the intermediate systems send it no new flows and keep the open ones, which a daemon
//! that died has lost anyway, and one that is only slow can still finish.
//!
//! Probes block, so each checked service gets a thread that only runs its probe and
//! reports the result ([`spawn`]); the verdicts are kept by the agent's loop.
//!
//! A passing probe also times the service: how long it took (the TCP handshake, the
//! HTTP request to its status line, the command). [`Checker`] smooths those times
//! (an exponentially weighted mean, each new time weighing a quarter) into the response
//! time the agent advertises, which `policy: response-time` weighs servers by. An
//! unchecked service advertises none (0), and the intermediate systems keep its
//! pipeline figure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// `health:` of a service in the agent's conf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConf {
    /// `ADDR:PORT`: passes when a TCP connection opens.
    #[serde(default)]
    pub tcp: Option<String>,
    /// `http://HOST[:PORT]/PATH`: passes on a status of 200 to 399.
    #[serde(default)]
    pub http: Option<String>,
    /// Run with `sh -c`: passes on exit status 0.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default = "d_interval")]
    pub interval_ms: u64,
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "d_rise")]
    pub rise: u32,
    #[serde(default = "d_fall")]
    pub fall: u32,
}

fn d_interval() -> u64 {
    1000
}
fn d_timeout() -> u64 {
    500
}
fn d_rise() -> u32 {
    2
}
fn d_fall() -> u32 {
    3
}

/// What a probe does, resolved from a [`HealthConf`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    Tcp(SocketAddr),
    /// Connect to `addr`, `GET path` with `Host: host`.
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
    },
    Command(String),
}

/// A validated health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

impl HealthConf {
    /// Validates and resolves (addresses through the resolver, once).
    pub fn check(&self) -> Result<Check> {
        let probe = match (&self.tcp, &self.http, &self.command) {
            (Some(a), None, None) => Probe::Tcp(resolve(a)?),
            (None, Some(u), None) => http_probe(u)?,
            (None, None, Some(c)) if !c.trim().is_empty() => Probe::Command(c.clone()),
            (None, None, Some(_)) => bail!("health: command is empty"),
            _ => bail!("health: give exactly one of tcp, http or command"),
        };
        if self.interval_ms == 0 || self.timeout_ms == 0 {
            bail!("health: interval_ms and timeout_ms must be > 0");
        }
        if self.rise == 0 || self.fall == 0 {
            bail!("health: rise and fall must be >= 1");
        }
        Ok(Check {
            probe,
            interval: Duration::from_millis(self.interval_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            rise: self.rise,
            fall: self.fall,
        })
    }
}

fn resolve(a: &str) -> Result<SocketAddr> {
    a.to_socket_addrs()
        .with_context(|| format!("health: address {a:?}"))?
        .next()
        .ok_or_else(|| anyhow!("health: {a:?} resolves to no address"))
}

/// `http://HOST[:PORT][/PATH]` (HOST a name, an IPv4 address or a bracketed IPv6 one).
fn http_probe(url: &str) -> Result<Probe> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("health: http {url:?} must start with http:// (no TLS)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        bail!("health: http {url:?}: no host");
    }
    // A port is given when the last ':' comes after any IPv6 literal's ']'.
    let has_port = authority
        .rfind(':')
        .is_some_and(|i| authority.rfind(']').is_none_or(|j| i > j));
    let hostport = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("health: http {url:?}: the path has spaces or control characters");
    }
    Ok(Probe::Http {
        addr: resolve(&hostport)?,
        host: authority.to_string(),
        path: path.to_string(),
    })
}

impl Probe {
    /// Runs the probe once, for at most about `timeout`: `Ok` when it passes, else why not.
    pub fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Probe::Tcp(a) => TcpStream::connect_timeout(a, timeout)
                .map(drop)
                .map_err(|e| format!("tcp {a}: {e}")),
            Probe::Http { addr, host, path } => http_get(*addr, host, path, timeout),
            Probe::Command(c) => command(c, timeout),
        }
    }
}

fn http_get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let err = |e: std::io::Error| format!("http {addr}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(err)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    s.set_write_timeout(Some(left())).map_err(err)?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: flowgate-agent\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(err)?;
    // The status line: "HTTP/1.x NNN ...".
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        if Instant::now() >= deadline {
            return Err(format!("http {addr}: no status line within {timeout:?}"));
        }
        s.set_read_timeout(Some(left())).map_err(err)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(err(e)),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/")
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("http {addr}: not an HTTP status line: {line:?}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("http {addr}{path}: status {status}"))
    }
}

fn command(c: &str, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(c)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("command {c:?}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("command {c:?}: {st}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("command {c:?}: no exit within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("command {c:?}: {e}")),
        }
    }
}

/// The verdict of one check over its results: `fall` failures in a row make a healthy
/// service unhealthy, `rise` passes in a row an unhealthy one healthy; it starts
/// unhealthy, and the first pass ever makes it healthy.
#[derive(Clone, Debug)]
pub struct Checker {
    rise: u32,
    fall: u32,
    healthy: bool,
    ever_passed: bool,
    /// Results in a row that disagree with the verdict.
    streak: u32,
    /// The passing probes' times, smoothed (µs); `None` before the first.
    response_us: Option<f64>,
}

impl Checker {
    pub fn new(rise: u32, fall: u32) -> Checker {
        Checker {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: false,
            ever_passed: false,
            streak: 0,
            response_us: None,
        }
    }

    /// Takes the time a passing probe took into the response time.
    pub fn time(&mut self, took: Duration) {
        let us = took.as_secs_f64() * 1e6;
        self.response_us = Some(match self.response_us {
            Some(r) => r + (us - r) / 4.0,
            None => us,
        });
    }

    /// The smoothed response time in µs, at least 1 once a probe passed (0: none yet).
    pub fn response_us(&self) -> u32 {
        self.response_us.map_or(0, |r| (r.round() as u32).max(1))
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Takes one result; the new verdict when it changed.
    pub fn record(&mut self, pass: bool) -> Option<bool> {
        if pass == self.healthy {
            self.streak = 0;
            self.ever_passed |= pass;
            return None;
        }
        self.streak += 1;
        let first = pass && !self.ever_passed;
        self.ever_passed |= pass;
        let need = if pass { self.rise } else { self.fall };
        if first || self.streak >= need {
            self.healthy = pass;
            self.streak = 0;
            Some(pass)
        } else {
            None
        }
    }
}

/// One probe result: the service's index (in the agent's conf) and the outcome: how
/// long a passing probe took, or why it failed.
pub type Report = (usize, Result<Duration, String>);

/// Starts a thread that runs `check`'s probe every interval and sends each result,
/// tagged `index`, to `tx`; it ends when the receiver is gone.
pub fn spawn(index: usize, check: Check, tx: Sender<Report>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("health-{index}"))
        .spawn(move || {
            loop {
                let t0 = Instant::now();
                let r = check.probe.run(check.timeout).map(|()| t0.elapsed());
                if tx.send((index, r)).is_err() {
                    return;
                }
                std::thread::sleep(check.interval.saturating_sub(t0.elapsed()));
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn checker_has_hysteresis() {
        let mut c = Checker::new(2, 3);
        assert!(!c.healthy());
        assert_eq!(c.record(false), None, "starts unhealthy");
        assert_eq!(
            c.record(true),
            Some(true),
            "the first pass ever counts at once"
        );
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a pass breaks the streak");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false), "three in a row");
        assert_eq!(c.record(true), None, "rise is 2 after the first pass");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        let mut c = Checker::new(1, 1);
        assert_eq!(c.record(true), Some(true));
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(true), Some(true));
    }

    #[test]
    fn checker_smooths_the_probe_times() {
        let mut c = Checker::new(2, 3);
        assert_eq!(c.response_us(), 0, "none before a probe passed");
        c.time(Duration::from_micros(2000));
        assert_eq!(c.response_us(), 2000, "the first time as it is");
        c.time(Duration::from_micros(6000));
        assert_eq!(c.response_us(), 3000, "a quarter of the way to the next");
        for _ in 0..40 {
            c.time(Duration::from_micros(10_000));
        }
        assert!(
            (9_990..=10_000).contains(&c.response_us()),
            "{}",
            c.response_us()
        );
        let mut fast = Checker::new(1, 1);
        fast.time(Duration::from_nanos(10));
        assert_eq!(fast.response_us(), 1, "at least 1 µs once timed");
    }

    fn conf(yaml: &str) -> Result<Check> {
        serde_yaml_ng::from_str::<HealthConf>(yaml)
            .map_err(|e| anyhow!("{e}"))?
            .check()
    }

    #[test]
    fn confs_are_checked() {
        let c = conf("{tcp: '127.0.0.1:80'}").unwrap();
        assert_eq!(c.probe, Probe::Tcp("127.0.0.1:80".parse().unwrap()));
        assert_eq!((c.interval.as_millis(), c.timeout.as_millis()), (1000, 500));
        assert_eq!((c.rise, c.fall), (2, 3));
        let c = conf("{http: 'http://127.0.0.1:8080/health?x=1', rise: 1}").unwrap();
        assert_eq!(
            c.probe,
            Probe::Http {
                addr: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".into(),
                path: "/health?x=1".into()
            }
        );
        let c = conf("{http: 'http://[::1]'}").unwrap();
        assert_eq!(
            c.probe,
            Probe::Http {
                addr: "[::1]:80".parse().unwrap(),
                host: "[::1]".into(),
                path: "/".into()
            }
        );
        for bad in [
            "{}",
            "{tcp: '127.0.0.1:80', command: 'true'}",
            "{command: ' '}",
            "{http: 'https://127.0.0.1/'}",
            "{http: 'http:///x'}",
            "{http: 'http://127.0.0.1/a b'}",
            "{tcp: 'nowhere'}",
            "{tcp: '127.0.0.1:80', rise: 0}",
            "{tcp: '127.0.0.1:80', interval_ms: 0}",
            "{tcp: '127.0.0.1:80', bogus: 1}",
        ] {
            assert!(conf(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tcp_probe() {
        // On 127.0.0.2, which no other test binds: the probe of the closed port below
        // must not reach a listener another test bound to the freed port (the likely
        // way a CI run's `conns::tests::sees_a_real_connection`, counting its port's
        // connections, saw one too many; not reproduced).
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        let a = l.local_addr().unwrap();
        let t = Duration::from_millis(500);
        assert_eq!(Probe::Tcp(a).run(t), Ok(()));
        drop(l);
        assert!(Probe::Tcp(a).run(t).is_err(), "closed port passes");
    }

    /// A one-shot HTTP server answering `status`; the request line it got.
    fn serve(status: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !status.is_empty() {
                let _ = s.write_all(format!("{status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            } else {
                std::thread::sleep(Duration::from_millis(400));
            }
            req
        });
        (a, h)
    }

    #[test]
    fn http_probe_reads_the_status() {
        let t = Duration::from_millis(200);
        for (status, pass) in [
            ("HTTP/1.1 200 OK", true),
            ("HTTP/1.0 302 Found", true),
            ("HTTP/1.1 503 Service Unavailable", false),
            ("SSH-2.0-OpenSSH_9.2", false),
            ("", false), // no answer within the timeout
        ] {
            let (a, h) = serve(status);
            let p = Probe::Http {
                addr: a,
                host: "svc.example".into(),
                path: "/healthz".into(),
            };
            let t0 = Instant::now();
            let r = p.run(t);
            assert_eq!(r.is_ok(), pass, "{status:?}: {r:?}");
            assert!(
                t0.elapsed() < Duration::from_millis(350),
                "{status:?}: timeout kept"
            );
            let req = h.join().unwrap();
            assert!(
                req.starts_with("GET /healthz HTTP/1.0\r\n")
                    && req.contains("\r\nHost: svc.example\r\n"),
                "{req:?}"
            );
        }
    }

    #[test]
    fn command_probe() {
        let t = Duration::from_millis(300);
        assert_eq!(Probe::Command("exit 0".into()).run(t), Ok(()));
        assert!(Probe::Command("exit 3".into()).run(t).is_err());
        let t0 = Instant::now();
        let r = Probe::Command("sleep 5".into()).run(t);
        assert!(r.is_err_and(|e| e.contains("no exit")));
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "killed at the timeout"
        );
    }
}
