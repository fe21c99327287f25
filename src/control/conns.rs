//! Open TCP connections on a server's service ports, from `/proc/net/tcp` and
//! `/proc/net/tcp6`: what an agent's drain waits for before it leaves, so that a
//! graceful shutdown does not cut the connections the server still serves.
//!
//! Layer: control (agent side). A connection is open in every state but `LISTEN`,
//! `TIME_WAIT` and `CLOSE`; it counts when its local port lies in one of the ranges.
//! Unreadable files count as no connection (a drain then ends on its flows or timeout).

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

#[cfg(test)]
mod tests {
    use super::*;

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
