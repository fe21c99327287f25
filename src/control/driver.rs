//! Thin blocking UDP loops that drive the sans-IO state machines with the real clock.
//!
//! One loop per process: receive with a read timeout equal to the machine's next
//! deadline (capped at 50 ms so the caller's hook runs often), feed datagrams to
//! `handle`, fire `handle_timeout` when due, send whatever `poll_transmit` yields.
//! Send errors (e.g. ICMP port unreachable surfacing as ECONNREFUSED) are counted and
//! ignored: the protocol's retransmissions deal with loss.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::Transmit;
use super::agent::Agent;
use super::listener::Listener;
use super::proto::MAX_DATAGRAM;
use super::supervisor::Supervisor;

/// What the driver needs from a state machine.
pub trait Endpoint {
    fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<Instant>;
}

macro_rules! endpoint {
    ($t:ty) => {
        impl Endpoint for $t {
            fn handle(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
                <$t>::handle(self, now, from, data)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
                <$t>::poll_transmit(self, now)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$t>::poll_timeout(self)
            }
        }
    };
}
endpoint!(Supervisor);
endpoint!(Agent);
endpoint!(Listener);

/// Longest the loop sleeps before running the hook again.
pub const MAX_WAIT: Duration = Duration::from_millis(50);

/// A bound socket (plus, optionally, one joined to the advertisement group).
pub struct Driver {
    pub sock: UdpSocket,
    group: Option<UdpSocket>,
    buf: Vec<u8>,
    pub send_errors: u64,
}

impl Driver {
    pub fn bind(addr: SocketAddr) -> io::Result<Driver> {
        Ok(Driver {
            sock: UdpSocket::bind(addr)?,
            group: None,
            buf: vec![0u8; MAX_DATAGRAM + 1],
            send_errors: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Also receives datagrams sent to the IPv4 multicast `group` (on any interface).
    /// The group socket is bound with `SO_REUSEADDR`, so several systems on one host (a
    /// supervisor and an intermediate system, say) can all hear the group: Linux gives
    /// each of them a copy.
    pub fn join_group(&mut self, group: SocketAddr) -> io::Result<()> {
        let SocketAddr::V4(g) = group else {
            return Err(io::Error::other("only IPv4 multicast groups are supported"));
        };
        let raw = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        raw.set_reuse_address(true)?;
        raw.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, g.port())).into())?;
        let s: UdpSocket = raw.into();
        s.join_multicast_v4(g.ip(), &Ipv4Addr::UNSPECIFIED)?;
        s.set_nonblocking(true)?;
        self.sock.set_multicast_loop_v4(true)?;
        self.group = Some(s);
        Ok(())
    }

    fn flush<E: Endpoint>(&mut self, ep: &mut E, now: Instant) {
        while let Some(t) = ep.poll_transmit(now) {
            if self.sock.send_to(&t.payload, t.dst).is_err() {
                self.send_errors += 1;
            }
        }
    }

    /// Runs until `hook` returns false. The hook runs at least every [`MAX_WAIT`].
    pub fn run<E: Endpoint>(
        &mut self,
        ep: &mut E,
        mut hook: impl FnMut(&mut E, Instant) -> bool,
    ) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
            let go_on = hook(ep, now);
            self.flush(ep, now);
            if !go_on {
                return Ok(());
            }
            self.receive(ep, MAX_WAIT)?;
        }
    }

    /// One turn of [`run`](Self::run) without a hook, for a caller with its own loop
    /// (the intermediate system's management core): fires a due timeout, sends what the
    /// machine has to send, then waits at most `wait` (less when the machine's next
    /// deadline is sooner) for a datagram and hands it over.
    pub fn step<E: Endpoint>(&mut self, ep: &mut E, wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        self.flush(ep, now);
        self.receive(ep, wait)
    }

    /// Waits up to `wait` (capped by the machine's next deadline, at least 1 ms) for
    /// one datagram, hands it over and sends the replies; then takes what the group
    /// socket has queued.
    fn receive<E: Endpoint>(&mut self, ep: &mut E, wait: Duration) -> io::Result<()> {
        let wait = ep
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(wait)
            .clamp(Duration::from_millis(1), wait.max(Duration::from_millis(1)));
        self.sock.set_read_timeout(Some(wait))?;
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let now = Instant::now();
                ep.handle(now, from, &self.buf[..n]);
                self.flush(ep, now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        if let Some(g) = &self.group {
            while let Ok((n, from)) = g.recv_from(&mut self.buf) {
                ep.handle(Instant::now(), from, &self.buf[..n]);
            }
        }
        Ok(())
    }
}
