//! Any datagrams into the supervisor's handler, both raw and re-signed with the right
//! key (so the body decoder and the state machine behind it are reached).
//! `cargo +nightly fuzz run supervisor`
#![no_main]

use flowgate::control::ana::PoolConf;
use flowgate::control::proto::{Body, Key, SeqGen};
use flowgate::control::store::MemStore;
use flowgate::control::supervisor::{Supervisor, SupervisorConfig};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let key = Key::new(&[7u8; 32]).expect("32-byte key");
    let now = Instant::now();
    let cfg = SupervisorConfig {
        name: "fuzz".into(),
        advert_interval: Duration::from_millis(100),
        dead_interval: Duration::from_millis(300),
        relay: true,
        drain_timeout: Duration::from_secs(1),
        pools: vec![PoolConf {
            name: "p".into(),
            first: Some(0),
            last: Some(99),
            prefix: None,
            block: 10,
            lease_ms: 200,
        }],
    };
    let mut sup = Supervisor::new(cfg, key.clone(), SeqGen::new(1), now,
        Box::new(MemStore::default())).expect("valid config");
    let from = "127.0.0.1:1".parse().expect("addr");
    // Chunks: [type, sender, len, body...]; each chunk is sent raw and signed.
    let mut rest = data;
    let mut seq = 1u64;
    let mut t = now;
    while rest.len() >= 3 {
        let (ty, sender, len) = (rest[0], rest[1] as u64, rest[2] as usize);
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        sup.handle(t, from, body);
        if let Ok(b) = Body::decode(ty, body) {
            seq += 1;
            sup.handle(t, from, &key.seal(sender, seq, &b));
        }
        t += Duration::from_millis(len as u64);
        if sup.poll_timeout().is_some_and(|d| d <= t) {
            sup.handle_timeout(t);
        }
        while sup.poll_transmit(t).is_some() {}
        while sup.poll_event().is_some() {}
    }
});
