//! The stats JSON in the Prometheus text exposition format (version 0.0.4): what
//! `flowgate replay --prometheus FILE` writes (for node_exporter's textfile collector) and
//! `flowgate run` serves on `stats.prometheus` (`GET /metrics`, [`Exporter`]).
//!
//! Rendered from the stats JSON itself, so the two never disagree: every counter of the
//! JSON is a metric, keys become labels (service, server, rule, port, reason). Drop
//! reasons the JSON leaves out (it lists only those that happened) are written as 0, so
//! a rate over a reason that starts happening has a series to start from.
//!
//! The same server answers `GET /flows?QUERY` when its owner hands it an [`Asks`] queue:
//! the request waits there for the management loop of `flowgate run`, which lists the
//! workers' flows ([`crate::pipeline::listing`]) and answers; and `GET /healthz` with
//! 200 `ok` or 503 and the reasons ([`Exporter::set_snapshot`]), for an orchestrator's
//! or an upstream router's health check.

use crate::pipeline::meta::DropReason;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Builds the exposition text, one metric family at a time.
struct Out {
    s: String,
}

impl Out {
    /// Starts family `name` (its `# HELP` and `# TYPE` lines).
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.s, "# HELP {name} {help}");
        let _ = writeln!(self.s, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.s.push_str(name);
        if !labels.is_empty() {
            self.s.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.s.push(',');
                }
                let _ = write!(self.s, "{k}=\"{}\"", escape(val));
            }
            self.s.push('}');
        }
        let _ = writeln!(self.s, " {v}");
    }

    /// Per `(field, kind, help)`, the family `{prefix}_{field}` (`_total` after it for a
    /// counter) with one sample per entry of `map`, labelled `label="KEY"`: the entry's
    /// `field`.
    fn keyed(
        &mut self,
        prefix: &str,
        label: &str,
        map: &Map<String, Value>,
        fields: &[(&str, &str, &str)],
    ) {
        for (field, kind, help) in fields {
            let total = if *kind == "counter" { "_total" } else { "" };
            let name = format!("{prefix}_{field}{total}");
            self.family(&name, kind, help);
            for (k, v) in map {
                self.sample(&name, &[(label, k)], num(&v[*field]).unwrap_or(0.0));
            }
        }
    }

    /// The family `name` with one sample per entry of each entry's `inner` map, labelled
    /// by both keys (`labels`: the outer's and the inner's names).
    fn nested(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: (&str, &str),
        map: &Map<String, Value>,
        inner: &str,
    ) {
        self.family(name, kind, help);
        for (a, v) in map {
            for (b, n) in v[inner].as_object().into_iter().flatten() {
                let kv = [(labels.0, a.as_str()), (labels.1, b.as_str())];
                self.sample(name, &kv, num(n).unwrap_or(0.0));
            }
        }
    }

    /// A family of one unlabelled sample, when `v` is a number.
    fn single(&mut self, name: &str, kind: &str, help: &str, v: &Value) {
        if let Some(x) = num(v) {
            self.family(name, kind, help);
            self.sample(name, &[], x);
        }
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        v => v.as_f64(),
    }
}

/// `j` (the stats JSON of `replay --stats-json` or `run`) as exposition text.
pub fn render(j: &Value) -> String {
    let mut o = Out { s: String::new() };
    let counters: [(&str, &str); 14] = [
        ("packets_in", "Frames received."),
        ("packets_out", "Frames transmitted."),
        ("flows_created", "Flows created."),
        ("flows_evicted", "Flows evicted from a full flow table."),
        (
            "flows_evicted_assured",
            "Of those, assured flows (open connections): unassured flows go first.",
        ),
        ("flows_expired", "Flows expired by their timeout."),
        (
            "flows_moved",
            "Open flows moved by advertised flows (flowgate run).",
        ),
        ("arp_replies", "ARP requests answered."),
        ("nd_replies", "IPv6 neighbour solicitations answered."),
        (
            "icmp_errors",
            "ICMP errors sent: Time Exceeded (router mode), Fragmentation Needed and Packet Too Big (system.mtu), port unreachable (no_server: reject).",
        ),
        (
            "echo_replies",
            "Echo requests to the system's addresses answered.",
        ),
        (
            "announcements",
            "Gratuitous ARPs and unsolicited neighbour advertisements sent for the system's addresses.",
        ),
        (
            "fragments_out",
            "IPv4 fragments made beyond the first, for packets without DF over system.mtu.",
        ),
        (
            "fragments_unsent",
            "Of those, fragments flowgate run could not send (no mbuf left).",
        ),
    ];
    for (k, help) in counters {
        o.single(&format!("flowgate_{k}_total"), "counter", help, &j[k]);
    }
    if j["drops"].is_object() {
        let name = "flowgate_drops_total";
        o.family(name, "counter", "Frames dropped, by reason.");
        for r in DropReason::ALL {
            let n = num(&j["drops"][r.as_str()]).unwrap_or(0.0);
            o.sample(name, &[("reason", r.as_str())], n);
        }
    }
    if let Some(svcs) = j["services"].as_object() {
        o.keyed(
            "flowgate_service",
            "service",
            svcs,
            &[
                ("flows", "counter", "Flows a service created."),
                ("open_flows", "gauge", "Live flows a service created."),
                (
                    "packets",
                    "counter",
                    "Frames of a service's flows, both directions.",
                ),
            ],
        );
        // Keys only some services have: a family of those that do.
        for (key, name, kind, help) in [
            (
                "on_backup",
                "flowgate_service_on_backup",
                "gauge",
                "1 while a service's backup servers take its new flows (services with backups).",
            ),
            (
                "rate_limited",
                "flowgate_service_rate_limited_total",
                "counter",
                "New flows a service's rate_limit refused (services with one).",
            ),
            (
                "denied",
                "flowgate_service_denied_total",
                "counter",
                "New flows from clients outside a service's allow list (services with one).",
            ),
            (
                "conn_limited",
                "flowgate_service_conn_limited_total",
                "counter",
                "New flows a service's conn_limit refused: their client held its limit of open flows (services with one).",
            ),
            (
                "revoked",
                "flowgate_service_revoked_total",
                "counter",
                "Open flows cut because a reload narrowed a service's allow list and left their client out (services with one).",
            ),
        ] {
            let have: Vec<(&String, f64)> = (svcs.iter())
                .filter_map(|(k, v)| Some((k, num(v.get(key)?)?)))
                .collect();
            if !have.is_empty() {
                o.family(name, kind, help);
                for (k, n) in have {
                    o.sample(name, &[("service", k)], n);
                }
            }
        }
        o.nested(
            "flowgate_service_server_packets_total",
            "counter",
            "Frames a service sent to each of its servers.",
            ("service", "server"),
            svcs,
            "servers",
        );
    }
    for (key, name, kind, help) in [
        (
            "server_flows",
            "flowgate_server_flows",
            "gauge",
            "Live flows whose target is a server.",
        ),
        (
            "server_overflows",
            "flowgate_server_overflows_total",
            "counter",
            "New flows whose first choice was a server holding its max_flows.",
        ),
        (
            "server_max_flows",
            "flowgate_server_max_flows",
            "gauge",
            "A server's max_flows (servers with a limit).",
        ),
        (
            "server_fails",
            "flowgate_server_fails_total",
            "counter",
            "Failures of a server: a SYN sent again unanswered, a reset answering a SYN, a port unreachable on a flow never answered.",
        ),
        (
            "server_ejected",
            "flowgate_server_ejected",
            "gauge",
            "1 while the passive health check keeps a server out of new flows (servers with max_fails).",
        ),
    ] {
        if let Some(servers) = j[key].as_object().filter(|m| !m.is_empty()) {
            o.family(name, kind, help);
            for (k, v) in servers {
                o.sample(name, &[("server", k)], num(v).unwrap_or(0.0));
            }
        }
    }
    if let Some(rules) = j["flow_rules"].as_object() {
        o.keyed(
            "flowgate_flow_rule",
            "rule",
            rules,
            &[
                ("flows", "counter", "Flows a pattern rule created."),
                ("open_flows", "gauge", "Live flows a pattern rule created."),
                ("packets", "counter", "Frames of a pattern rule's flows."),
            ],
        );
    }
    runtime(&mut o, &j["runtime"]);
    control(&mut o, &j["control"]);
    o.s
}

/// `flowgate run`'s `runtime` object.
fn runtime(o: &mut Out, r: &Value) {
    if !r.is_object() {
        return;
    }
    o.single(
        "flowgate_running",
        "gauge",
        "1 while flowgate run forwards, 0 in the final stats.",
        &r["running"],
    );
    o.single(
        "flowgate_live_flows",
        "gauge",
        "Flows in the flow tables.",
        &r["live_flows"],
    );
    o.single(
        "flowgate_flow_capacity",
        "gauge",
        "Flows the flow tables hold at most, all workers together (live_flows over this is how full they are).",
        &r["flow_capacity"],
    );
    o.single(
        "flowgate_tx_refused_total",
        "counter",
        "Frames a port's TX queue refused (freed, counted).",
        &r["tx_refused"],
    );
    o.single(
        "flowgate_dispatch_dropped_total",
        "counter",
        "Frames the software dispatcher could not hand to a worker.",
        &r["dispatch_dropped"],
    );
    if let Some(workers) = r["per_worker"].as_object() {
        o.keyed(
            "flowgate_worker",
            "worker",
            workers,
            &[
                ("packets_in", "counter", "Frames a worker processed."),
                ("packets_out", "counter", "Frames a worker forwarded."),
                ("dropped", "counter", "Frames a worker dropped (every reason)."),
                ("live_flows", "gauge", "Flows in a worker's flow table."),
                (
                    "busy_seconds",
                    "counter",
                    "Seconds a worker spent in poll loops that received frames (its rate is how busy the core is).",
                ),
            ],
        );
    }
    if let Some(ports) = r["ports"].as_object() {
        o.keyed(
            "flowgate_port",
            "port",
            ports,
            &[
                (
                    "ipackets",
                    "counter",
                    "Frames a port received (rte_eth_stats).",
                ),
                ("opackets", "counter", "Frames a port sent."),
                (
                    "imissed",
                    "counter",
                    "Frames a port dropped for want of RX descriptors.",
                ),
                ("ierrors", "counter", "Erroneous frames a port received."),
                ("oerrors", "counter", "Frames a port failed to send."),
                ("rx_nombuf", "counter", "RX mbuf allocation failures."),
                ("link_up", "gauge", "1 while a port's link is up."),
                (
                    "speed_mbps",
                    "gauge",
                    "A port's link speed in Mbps (0 when down or unknown).",
                ),
            ],
        );
    }
}

/// The control plane's view (`control`), when `flowgate run` follows one.
fn control(o: &mut Out, c: &Value) {
    if !c.is_object() {
        return;
    }
    o.single(
        "flowgate_control_registered",
        "gauge",
        "1 while registered with the supervisor.",
        &c["registered"],
    );
    let Some(servers) = c["servers"].as_object() else {
        return;
    };
    let name = "flowgate_server_state";
    o.family(
        name,
        "gauge",
        "1 for a server's state as the control plane sees it (up, draining, down).",
    );
    for (srv, v) in servers {
        for st in ["up", "draining", "down"] {
            let on = v["state"].as_str() == Some(st);
            o.sample(
                name,
                &[("server", srv), ("state", st)],
                f64::from(u8::from(on)),
            );
        }
    }
    let name = "flowgate_server_load";
    o.family(name, "gauge", "A server's advertised load, 0 to 1.");
    for (srv, v) in servers {
        o.sample(name, &[("server", srv)], num(&v["load"]).unwrap_or(0.0));
    }
    o.nested(
        "flowgate_server_weight_percent",
        "gauge",
        "A server's advertised weight per service, in percent of the pipeline's.",
        ("server", "service"),
        servers,
        "weights",
    );
}

/// How long a `GET /flows` waits for the management loop before it is answered 503.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests the HTTP server hands to its owner's management loop (`GET /flows`), which
/// takes them with [`next`](Asks::next) and answers each with [`Ask::answer`].
#[derive(Default)]
pub struct Asks {
    /// The requests not taken yet, and whether the owner has stopped taking them.
    pending: Mutex<(std::collections::VecDeque<Ask>, bool)>,
}

/// One request: its path's query, and where its answer goes.
pub struct Ask {
    pub query: String,
    reply: std::sync::mpsc::SyncSender<Answer>,
}

/// An answer: HTTP status line text (`"200 OK"`), content type, body.
pub struct Answer {
    pub status: &'static str,
    pub ctype: &'static str,
    pub body: String,
}

impl Asks {
    /// The oldest request not taken yet.
    pub fn next(&self) -> Option<Ask> {
        self.pending.lock().0.pop_front()
    }

    /// The owner takes no more requests: those waiting, and any later, are answered
    /// `answer` (so a stopping run is not held up by a client's wait).
    pub fn close(&self, answer: impl Fn() -> Answer) {
        let mut q = self.pending.lock();
        q.1 = true;
        for a in q.0.drain(..) {
            a.answer(answer());
        }
    }

    /// Queues `query` and waits (at most [`ASK_TIMEOUT`]) for its answer; `None` when
    /// it did not come in time or the owner has closed the queue.
    fn ask(&self, query: &str) -> Option<Answer> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut q = self.pending.lock();
            if q.1 {
                return None;
            }
            q.0.push_back(Ask {
                query: query.to_owned(),
                reply: tx,
            });
        }
        rx.recv_timeout(ASK_TIMEOUT).ok()
    }
}

impl Ask {
    /// Answers the request (nobody hears it when the client's wait timed out).
    pub fn answer(self, a: Answer) {
        let _ = self.reply.send(a);
    }
}

/// What `GET /healthz` answers, as of the last snapshot ([`Exporter::set_snapshot`]).
#[derive(Debug)]
struct Health {
    /// Why the run was not healthy at the last snapshot; empty when it was.
    reasons: Vec<String>,
    /// When the last snapshot was taken; `None` before the first.
    at: Option<Instant>,
    /// A snapshot older than this says the management loop has stopped taking them.
    stale_after: Duration,
    /// The run is stopping.
    stopping: bool,
}

impl Health {
    /// `None` when healthy, else why not (one reason a line).
    fn verdict(&self) -> Option<String> {
        if self.stopping {
            return Some("stopping\n".into());
        }
        let Some(at) = self.at else {
            return Some("starting: no snapshot of the workers yet\n".into());
        };
        let age = at.elapsed();
        if age > self.stale_after {
            return Some(format!(
                "the last snapshot is {:.1} s old (at most {:.1} s expected): the management loop has stopped taking them\n",
                age.as_secs_f64(),
                self.stale_after.as_secs_f64()
            ));
        }
        (!self.reasons.is_empty()).then(|| self.reasons.iter().map(|r| format!("{r}\n")).collect())
    }
}

/// Why the run whose stats JSON is `j` is not healthy: not running, or a port's link
/// down (its `runtime` object, see docs/RUNNING.md).
fn unhealthy(j: &Value) -> Vec<String> {
    let rt = &j["runtime"];
    let mut v = Vec::new();
    if rt["running"] != true {
        v.push("not running".to_string());
    }
    if let Some(ports) = rt["ports"].as_object() {
        for (name, p) in ports {
            if p["link_up"] == false {
                v.push(format!("port {name}: link down"));
            }
        }
    }
    v
}

/// A tiny HTTP server for Prometheus scrapes: `GET /metrics` answers the text last
/// [`set`](Exporter::set), `GET /healthz` whether the last snapshot was healthy and
/// recent, and `GET /flows` the management loop's listing when there is an [`Asks`]
/// queue. It runs on a thread of its own, one connection at a time, each bounded by a
/// 1 s timeout, so a stuck client delays a scrape but never the data plane or the
/// management loop (which only swaps the text under a lock). Stopped and joined on drop.
pub struct Exporter {
    addr: SocketAddr,
    text: Arc<Mutex<String>>,
    health: Arc<Mutex<Health>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Listens on `addr` (a clear error when it cannot); `GET /flows` goes to `asks`
    /// (404 without).
    pub fn bind(addr: SocketAddr, asks: Option<Arc<Asks>>) -> anyhow::Result<Exporter> {
        use anyhow::Context as _;
        let l = TcpListener::bind(addr)
            .with_context(|| format!("stats.prometheus: listening on {addr}"))?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let text = Arc::new(Mutex::new(String::new()));
        let health = Arc::new(Mutex::new(Health {
            reasons: Vec::new(),
            at: None,
            stale_after: Duration::from_secs(3),
            stopping: false,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, h, st) = (Arc::clone(&text), Arc::clone(&health), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("prometheus".into())
            .spawn(move || {
                while !st.load(Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            // A client that misbehaves only loses its own scrape.
                            let _ = serve(c, &t, &h, asks.as_deref());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(Exporter {
            addr,
            text,
            health,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The text the next scrapes get.
    pub fn set(&self, text: String) {
        *self.text.lock() = text;
    }

    /// A snapshot of the run, its stats JSON `j`: the metrics rendered from it, and what
    /// `GET /healthz` answers until the next one: 200 `ok` while `j` says the run is
    /// running with every port's link up and the snapshot is at most `stale_after` old
    /// ([`set_stale_after`](Self::set_stale_after)), else 503 and why.
    pub fn set_snapshot(&self, j: &Value) {
        self.set(render(j));
        let mut h = self.health.lock();
        h.reasons = unhealthy(j);
        h.at = Some(Instant::now());
    }

    /// How old a snapshot may be before `GET /healthz` says the run stopped taking them
    /// (3 s until set; a few snapshot intervals is right).
    pub fn set_stale_after(&self, d: Duration) {
        self.health.lock().stale_after = d;
    }

    /// The run is stopping: `GET /healthz` answers 503 from now on.
    pub fn stopping(&self) {
        self.health.lock().stopping = true;
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one HTTP/1.x request on `c`: the metrics for `GET /metrics` (or `/`), the
/// health verdict for `GET /healthz`, what `asks`' owner answers for `GET /flows`, 404
/// for other paths, 405 for other methods.
fn serve(
    mut c: TcpStream,
    text: &Mutex<String>,
    health: &Mutex<Health>,
    asks: Option<&Asks>,
) -> std::io::Result<()> {
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(1)))?;
    c.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let (status, ctype, body) = match (method, path, asks) {
        ("GET" | "HEAD", "/metrics" | "/", _) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            text.lock().clone(),
        ),
        ("GET" | "HEAD", "/healthz", _) => match health.lock().verdict() {
            None => ("200 OK", "text/plain", "ok\n".into()),
            Some(why) => ("503 Service Unavailable", "text/plain", why),
        },
        ("GET", "/flows", Some(asks)) => match asks.ask(query) {
            Some(a) => (a.status, a.ctype, a.body),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "the management loop did not answer in time, or is stopping\n".into(),
            ),
        },
        ("GET" | "HEAD", _, _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /flows\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics, /healthz or /flows\n".into(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    c.write_all(resp.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_counters_labels_and_escapes() {
        let j = json!({
            "packets_in": 10, "packets_out": 7, "drops": {"no_server": 3},
            "flows_created": 4, "flows_evicted": 0, "flows_expired": 1, "flows_moved": 0,
            "arp_replies": 2, "nd_replies": 0,
            "services": {"web": {"flows": 4, "open_flows": 3, "packets": 7, "servers": {"a\"b": 5, "c": 2}}},
            "flow_rules": {"voice": {"flows": 0, "open_flows": 0, "packets": 0}},
            "runtime": {"running": true, "live_flows": 3, "flow_capacity": 1024, "tx_refused": 0, "dispatch_dropped": 0,
                        "per_worker": {"0": {"lcore": 1, "packets_in": 6, "packets_out": 4, "dropped": 2,
                                             "live_flows": 2, "busy_seconds": 0.5, "busy": 0.25},
                                       "1": {"lcore": 2, "packets_in": 4, "packets_out": 3, "dropped": 1,
                                             "live_flows": 1, "busy_seconds": 0.25, "busy": 0.125}},
                        "ports": {"outside": {"ipackets": 10, "opackets": 7, "imissed": 0,
                                  "ierrors": 0, "oerrors": 0, "rx_nombuf": 0,
                                  "link_up": true, "speed_mbps": 10000}}},
            "control": {"registered": true,
                        "servers": {"s1": {"state": "draining", "load": 0.25,
                                           "weights": {"web": 100}}}},
        });
        let t = render(&j);
        for line in [
            "# TYPE flowgate_packets_in_total counter",
            "flowgate_packets_in_total 10",
            "flowgate_drops_total{reason=\"no_server\"} 3",
            "flowgate_service_server_packets_total{service=\"web\",server=\"a\\\"b\"} 5",
            "flowgate_flow_rule_flows_total{rule=\"voice\"} 0",
            "# TYPE flowgate_service_open_flows gauge",
            "flowgate_service_open_flows{service=\"web\"} 3",
            "flowgate_flow_rule_open_flows{rule=\"voice\"} 0",
            "flowgate_running 1",
            "# TYPE flowgate_flow_capacity gauge",
            "flowgate_flow_capacity 1024",
            "flowgate_port_ipackets_total{port=\"outside\"} 10",
            "flowgate_worker_packets_in_total{worker=\"0\"} 6",
            "flowgate_worker_dropped_total{worker=\"1\"} 1",
            "# TYPE flowgate_worker_live_flows gauge",
            "flowgate_worker_live_flows{worker=\"1\"} 1",
            "# TYPE flowgate_worker_busy_seconds_total counter",
            "flowgate_worker_busy_seconds_total{worker=\"0\"} 0.5",
            "# TYPE flowgate_port_link_up gauge",
            "flowgate_port_link_up{port=\"outside\"} 1",
            "flowgate_port_speed_mbps{port=\"outside\"} 10000",
            "flowgate_control_registered 1",
            "flowgate_server_state{server=\"s1\",state=\"draining\"} 1",
            "flowgate_server_state{server=\"s1\",state=\"up\"} 0",
            "flowgate_server_load{server=\"s1\"} 0.25",
            "flowgate_server_weight_percent{server=\"s1\",service=\"web\"} 100",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Every drop reason has a series; each family is declared once.
        let drops = t
            .lines()
            .filter(|l| l.starts_with("flowgate_drops_total{"))
            .count();
        assert_eq!(drops, DropReason::ALL.len());
        let mut types: Vec<&str> = t.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let n = types.len();
        types.dedup();
        assert_eq!(types.len(), n);
        // Replay's JSON has no runtime or control: none of their families.
        let r = render(&json!({"packets_in": 1, "drops": {}}));
        assert!(!r.contains("flowgate_running") && !r.contains("flowgate_server_state"));
        assert_eq!(escape("a\\b\n\"c\""), "a\\\\b\\n\\\"c\\\"");
    }

    /// Sends `req` to `addr`; the whole response.
    fn ask(addr: SocketAddr, req: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        r
    }

    /// `GET /healthz`: 503 starting before the first snapshot; 200 `ok` for a running
    /// snapshot with every link up; 503 naming each port whose link is down, for a
    /// snapshot not running, for one older than `stale_after`, and once stopping.
    #[test]
    fn healthz_says_whether_the_last_snapshot_was_healthy_and_recent() {
        let e = Exporter::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let a = e.local_addr();
        let health = |want: &str, body: &str| {
            let r = ask(a, "GET /healthz HTTP/1.0\r\n\r\n");
            assert!(r.starts_with(&format!("HTTP/1.0 {want}")), "{r}");
            let (_, b) = r.split_once("\r\n\r\n").unwrap();
            assert!(b.contains(body), "{body:?} in {b:?}");
            b.to_string()
        };
        // The zeros set at the start are no snapshot.
        e.set("flowgate_packets_in_total 0\n".into());
        health("503", "starting");
        let snap = |running: bool, out_up: bool| {
            json!({"packets_in": 1, "runtime": {"running": running, "ports": {
                "outside": {"link_up": out_up}, "inside": {"link_up": true}}}})
        };
        e.set_snapshot(&snap(true, true));
        assert_eq!(health("200 OK", "ok"), "ok\n");
        assert!(ask(a, "GET /metrics HTTP/1.0\r\n\r\n").contains("flowgate_packets_in_total 1"));
        let h = ask(a, "HEAD /healthz HTTP/1.0\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.0 200") && h.ends_with("\r\n\r\n"),
            "{h}"
        );
        e.set_snapshot(&snap(true, false));
        let b = health("503", "port outside: link down");
        assert!(!b.contains("inside"), "{b}");
        e.set_snapshot(&snap(false, true));
        health("503", "not running");
        e.set_snapshot(&snap(true, true));
        health("200", "ok");
        e.set_stale_after(Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(200));
        health("503", "the management loop has stopped taking them");
        e.set_snapshot(&snap(true, true));
        health("200", "ok");
        e.stopping();
        health("503", "stopping");
    }

    #[test]
    fn exporter_serves_the_latest_text() {
        let e = Exporter::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let a = e.local_addr();
        e.set("flowgate_packets_in_total 1\n".into());
        let r = ask(a, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.ends_with("\r\n\r\nflowgate_packets_in_total 1\n"), "{r}");
        e.set("flowgate_packets_in_total 2\n".into());
        assert!(ask(a, "GET /metrics HTTP/1.0\r\n\r\n").ends_with("total 2\n"));
        assert!(ask(a, "GET /nope HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
        assert!(ask(a, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405"));
        let h = ask(a, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.0 200") && h.ends_with("\r\n\r\n"),
            "{h}"
        );
        // A client that sends nothing and hangs up does not stop the next scrape.
        drop(TcpStream::connect(a).unwrap());
        assert!(ask(a, "GET / HTTP/1.0\r\n\r\n").ends_with("total 2\n"));
        // The address in use: a clear error.
        let err = Exporter::bind(a, None).err().expect("in use").to_string();
        assert!(err.contains("stats.prometheus"), "{err}");
        // Stopped on drop: its thread ended, letting go of the text and the listener. (Not
        // a refused connect: a test running beside this one may bind the port freed.)
        let text = Arc::downgrade(&e.text);
        drop(e);
        assert!(
            text.upgrade().is_none(),
            "the exporter's thread ended on drop"
        );
    }
}
