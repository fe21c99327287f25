//! What an agent reads of its server's TCP sockets.
//!
//! Layer: control (agent side).
//! - Open connections on the service ports, from `/proc/net/tcp` and `/proc/net/tcp6`:
//!   what an agent's drain waits for before it leaves, so that a graceful shutdown does
//!   not cut the connections the server still serves. A connection is open in every
//!   state but `LISTEN`, `TIME_WAIT` and `CLOSE`; it counts when its local port lies in
//!   one of the ranges. Unreadable files count as no connection (a drain then ends on
//!   its flows or timeout).
//! - Congestion: how full the listeners' accept queues are (connections the kernel has
//!   completed that the server has not accepted yet, over the listen backlog), from
//!   `ss -Hltn` (iproute2; `/proc/net/tcp` shows a listener's queue but not its
//!   backlog). A server that falls behind fills its queue before it refuses anyone;
//!   advertised, this steers new flows away from it under `policy: least-load`.
//!   For UDP services, how full the sockets' receive buffers are, from `ss -Hulnm`
//!   (queued bytes over the buffer's size), or full when a socket dropped datagrams since
//!   the last sample (a server that reads fast empties its buffer between samples, but
//!   not before the kernel has dropped what did not fit).

/// Open connections in the text of a `/proc/net/tcp`-format table whose local port is in
/// one of `ports` (inclusive ranges). Lines that do not parse are skipped.
pub fn count_open(table: &str, ports: &[(u16, u16)]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (Some(_sl), Some(local), Some(_remote), Some(st)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                return false;
            };
            let Some(port) = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            else {
                return false;
            };
            // 0A LISTEN, 06 TIME_WAIT, 07 CLOSE.
            !matches!(st, "0A" | "06" | "07")
                && u8::from_str_radix(st, 16).is_ok()
                && ports.iter().any(|&(a, b)| (a..=b).contains(&port))
        })
        .count() as u64
}

/// Open TCP connections (IPv4 and IPv6) on `ports` on this host.
pub fn open_connections(ports: &[(u16, u16)]) -> u64 {
    if ports.is_empty() {
        return 0;
    }
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| count_open(&t, ports))
        .sum()
}

/// The fullest accept queue of the TCP listeners on `ports` in `ss -Hltn` output
/// `text` (`State Recv-Q Send-Q Local:Port Peer:Port` a line; for a listener Recv-Q is
/// its queue, Send-Q its backlog), per mille, capped at 1000; 0 when none listens there.
/// Lines that do not parse are skipped.
pub fn accept_queue_permille(text: &str, ports: &[(u16, u16)]) -> u16 {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [state, queue, backlog, local, ..] = f[..] else {
                return None;
            };
            let port: u16 = local.rsplit_once(':')?.1.parse().ok()?;
            if state != "LISTEN" || !ports.iter().any(|&(a, b)| (a..=b).contains(&port)) {
                return None;
            }
            let (q, b): (u64, u64) = (queue.parse().ok()?, backlog.parse().ok()?);
            // A backlog of 0 still queues one connection.
            Some((q * 1000 / b.max(1)).min(1000) as u16)
        })
        .max()
        .unwrap_or(0)
}

/// A UDP socket as `ss -Hulnm` prints it: local address, port, and the `skmem` figures
/// that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSocket {
    /// `address:port` as printed (with the port: the key across samples).
    pub local: String,
    pub port: u16,
    /// Bytes in the receive queue (`r`, with the kernel's overhead) and the buffer's size
    /// (`rb`).
    pub queued: u64,
    pub buffer: u64,
    /// Datagrams dropped since the socket was made (`d`).
    pub drops: u64,
}

/// The UDP sockets in `ss -Hulnm` output: each socket's line (`State Recv-Q Send-Q
/// Local:Port Peer:Port`) followed by its indented `skmem:(r…,rb…,…,d…)` line. Sockets
/// whose lines do not parse are skipped.
pub fn udp_sockets(text: &str) -> Vec<UdpSocket> {
    let mut out = Vec::new();
    let mut pending: Option<(String, u16)> = None;
    for l in text.lines() {
        if let Some(m) = l.trim_start().strip_prefix("skmem:(") {
            let Some((local, port)) = pending.take() else {
                continue;
            };
            // Up to the closing parenthesis (ss may pad the line with spaces after it).
            let figures = m.split(')').next().unwrap_or_default();
            let field =
                |k: &str| (figures.split(',')).find_map(|f| f.strip_prefix(k)?.parse::<u64>().ok());
            // `r` is also the start of `rb`: the numbers tell them apart.
            if let (Some(queued), Some(buffer), Some(drops)) = (field("r"), field("rb"), field("d"))
            {
                out.push(UdpSocket {
                    local,
                    port,
                    queued,
                    buffer,
                    drops,
                });
            }
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        pending = match f[..] {
            [_, _, _, local, ..] => local
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .map(|p| (local.to_string(), p)),
            _ => None,
        };
    }
    out
}

/// How full the receive buffers of the UDP sockets on `ports` are, per mille, the fullest
/// (capped at 1000); 1000 for a socket whose drop count rose since `before` (each
/// socket's `drops` at the last sample, by `local`). 0 when no socket is there.
pub fn receive_queue_permille(
    now: &[UdpSocket],
    before: &std::collections::HashMap<String, u64>,
    ports: &[(u16, u16)],
) -> u16 {
    now.iter()
        .filter(|s| ports.iter().any(|&(a, b)| (a..=b).contains(&s.port)))
        .map(|s| {
            if before.get(&s.local).is_some_and(|&d| s.drops > d) {
                1000
            } else {
                (s.queued * 1000 / s.buffer.max(1)).min(1000) as u16
            }
        })
        .max()
        .unwrap_or(0)
}

/// Runs `ss` with `args` (`-Hltn`: TCP listeners; `-Hulnm`: UDP sockets with their
/// memory), IPv4 and IPv6; `Err` when it cannot be run.
pub fn ss(args: &str) -> Result<String, String> {
    let o = std::process::Command::new("ss")
        .arg(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    if !o.status.success() {
        return Err(format!("ss {args}: {}", o.status));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_receive_queues_read_from_ss() {
        let ss = "UNCONN 15808  0      127.0.0.1:5353 0.0.0.0:*
	 skmem:(r15808,rb16384,t0,tb212992,f576,w0,o0,bl0,d84)
UNCONN 0      0        0.0.0.0:53 0.0.0.0:*
	 skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d3)
UNCONN 0      0              *:53       *:*
	 skmem:(r53248,rb212992,t0,tb212992,f0,w0,o0,bl0,d0)
UNCONN 0      0        0.0.0.0:9999 0.0.0.0:*
garbage
	 skmem:(r1,rb2,d0)
";
        let socks = udp_sockets(ss);
        assert_eq!(socks.len(), 3, "{socks:?}");
        assert_eq!(
            socks[0],
            UdpSocket {
                local: "127.0.0.1:5353".into(),
                port: 5353,
                queued: 15808,
                buffer: 16384,
                drops: 84
            }
        );
        let none = std::collections::HashMap::new();
        assert_eq!(receive_queue_permille(&socks, &none, &[(5353, 5353)]), 964);
        assert_eq!(
            receive_queue_permille(&socks, &none, &[(53, 53)]),
            250,
            "the fuller"
        );
        assert_eq!(receive_queue_permille(&socks, &none, &[(80, 80)]), 0);
        // Drops since the last sample: full, whatever the queue holds now.
        let before: std::collections::HashMap<String, u64> = [
            ("0.0.0.0:53".to_string(), 2),
            ("127.0.0.1:5353".to_string(), 84),
        ]
        .into();
        assert_eq!(receive_queue_permille(&socks, &before, &[(53, 53)]), 1000);
        assert_eq!(
            receive_queue_permille(&socks, &before, &[(5353, 5353)]),
            964
        );
        assert!(udp_sockets("").is_empty());
        // ss pads a line with spaces after the parenthesis when other lines are longer.
        let padded = format!(
            "UNCONN 0 0 0.0.0.0:53 0.0.0.0:*\n\t skmem:(r1,rb4,d3){}\n",
            " ".repeat(6)
        );
        assert_eq!(udp_sockets(&padded)[0].drops, 3);
    }

    /// A socket with a small buffer that reads nothing: its queue fills, then it drops.
    #[test]
    fn a_real_receive_queue_fills_and_drops() {
        let Ok(_) = ss("-Hulnm") else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "ss (iproute2) in CI");
            return;
        };
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sample = || udp_sockets(&ss("-Hulnm").unwrap());
        let ports = [(port, port)];
        let empty = std::collections::HashMap::new();
        assert_eq!(receive_queue_permille(&sample(), &empty, &ports), 0);
        let first = sample();
        let mine = |v: &[UdpSocket]| v.iter().find(|s| s.port == port).cloned().unwrap();
        let before: std::collections::HashMap<String, u64> =
            [(mine(&first).local, mine(&first).drops)].into();
        let sent = mine(&first).buffer / 1000 + 50;
        for _ in 0..sent {
            client.send_to(&[0u8; 900], ("127.0.0.1", port)).unwrap();
        }
        let now = sample();
        assert!(mine(&now).drops > 0, "{:?}", mine(&now));
        assert_eq!(receive_queue_permille(&now, &before, &ports), 1000);
        // The same drops seen again: the fill alone, which is high.
        let seen: std::collections::HashMap<String, u64> =
            [(mine(&now).local, mine(&now).drops)].into();
        let fill = receive_queue_permille(&now, &seen, &ports);
        assert!((500..1000).contains(&fill), "{fill}");
        drop(server);
    }

    #[test]
    fn accept_queues_read_from_ss() {
        let ss = "LISTEN 0      5          127.0.0.1:8000       0.0.0.0:*
LISTEN 3      4            0.0.0.0:80         0.0.0.0:*
LISTEN 2      128             [::]:80            [::]:*
LISTEN 9      8      127.0.0.53%lo:53         0.0.0.0:*
ESTAB  7      0          127.0.0.1:443    127.0.0.1:5000
garbage
";
        assert_eq!(accept_queue_permille(ss, &[(80, 80)]), 750, "the fullest");
        assert_eq!(accept_queue_permille(ss, &[(8000, 8000)]), 0);
        assert_eq!(accept_queue_permille(ss, &[(53, 53)]), 1000, "capped");
        assert_eq!(
            accept_queue_permille(ss, &[(443, 443)]),
            0,
            "not a listener"
        );
        assert_eq!(
            accept_queue_permille(ss, &[(1, 79)]),
            1000,
            "53 in the range, 80 not"
        );
        assert_eq!(accept_queue_permille("", &[(80, 80)]), 0);
    }

    /// A listener with a backlog of 4 that accepts nothing, and 2 then 4 clients (no more:
    /// the kernel drops the SYNs of a full queue, and a connect would hang).
    #[test]
    fn a_real_accept_queue_fills() {
        let Ok(text) = ss("-Hltn") else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "ss (iproute2) in CI");
            return;
        };
        drop(text);
        let py = "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(4)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)";
        let mut server = std::process::Command::new("/usr/bin/python3")
            .args(["-c", py])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("port");
        let port: u16 = line.trim().parse().expect("a port");
        let fill = || accept_queue_permille(&ss("-Hltn").expect("ss"), &[(port, port)]);
        assert_eq!(fill(), 0);
        let mut clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        assert_eq!(fill(), 500, "2 of 4");
        clients.extend(
            (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect")),
        );
        assert_eq!(fill(), 1000, "full");
        let _ = server.kill();
        let _ = server.wait();
    }

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A71000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A71000A:0050 0264330A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0A71000A:0050 0364330A:9C41 06 00000000:00000000 03:00000F9A 00000000     0        0 0 3 0000000000000000
   3: 0A71000A:1F90 0464330A:9C42 08 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   4: 0A71000A:0016 0564330A:9C43 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   5: garbage
";

    #[test]
    fn counts_open_connections_on_the_ports() {
        // Port 80: one listener (no), one established (yes), one TIME_WAIT (no).
        assert_eq!(count_open(TCP, &[(80, 80)]), 1);
        // 8000 (0x1F40) - 8100 holds 8080 (0x1F90) in CLOSE_WAIT: open.
        assert_eq!(count_open(TCP, &[(80, 80), (8000, 8100)]), 2);
        assert_eq!(count_open(TCP, &[(443, 443)]), 0);
        assert_eq!(count_open("", &[(80, 80)]), 0);
    }

    #[test]
    fn sees_a_real_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let before = open_connections(&[(port, port)]);
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (s, _) = l.accept().unwrap();
        // Both ends are local: the server side has the port as its local port.
        assert_eq!(open_connections(&[(port, port)]), before + 1);
        drop((c, s));
    }
}
