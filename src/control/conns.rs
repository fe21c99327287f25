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

/// This host's TCP listeners as `ss -Hltn` prints them (IPv4 and IPv6); `Err` when it
/// cannot be run.
pub fn listeners() -> Result<String, String> {
    let o = std::process::Command::new("ss")
        .args(["-Hltn"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    if !o.status.success() {
        return Err(format!("ss -Hltn: {}", o.status));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let Ok(text) = listeners() else {
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
        let fill = || accept_queue_permille(&listeners().expect("ss"), &[(port, port)]);
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
