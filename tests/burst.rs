//! `Worker::process_burst` (the DPDK runtime's path: parse a burst, prefetch the flow
//! table in stages, then decide each frame) must do exactly what `Worker::process` does
//! frame by frame: the same outcome, the same bytes out, the same counters.
//!
//! Inputs: for every shipped pipeline, a `gen mix` capture made for it (web, FTP, UDP,
//! ESP, ICMP, tagged traffic, both directions) and a damaged copy of it (bytes flipped,
//! frames cut short), the shipped sample, and all third-party captures in
//! `../shared/captures`; bursts of random sizes from 1 to 40 (so chunks of 32
//! are split too), one clock value per burst as in the runtime, and a small flow table so
//! eviction happens inside bursts. One test also swaps the tables between bursts while
//! flows live (a server down, one draining, QoS the express path cannot apply).
//! `process` never takes the express path, so this is that path's oracle.

mod common;

use flowgate::action::{FrameBuf, PacketBuf};
use flowgate::config::Pipeline;
use flowgate::r#gen::{GenArgs, Scenario};
use flowgate::pipeline::meta::DropReason;
use flowgate::pipeline::stats::Stats;
use flowgate::pipeline::{Outcome, Tables, Worker};
use flowgate::port::pcap::PcapReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// (timestamp, frame) of every packet of `path`.
fn frames(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v = Vec::new();
    while let Ok(Some(p)) = r.next_packet() {
        v.push((p.ts_ns, p.data.to_vec()));
    }
    v
}

fn worker(p: &Path, capacity: usize, tweak: fn(&mut Pipeline)) -> Worker {
    let mut pl = Pipeline::load(p).expect("pipeline");
    pl.flow_table.capacity = capacity;
    tweak(&mut pl);
    Worker::new(Arc::new(Tables::build(pl, 1)))
}

/// Runs `input` both ways through `pipeline`; panics on the first difference.
/// Returns the number of frames compared.
fn compare(pipeline: &Path, input: &[(u64, Vec<u8>)], capacity: usize, seed: u64) -> usize {
    compare_switching(pipeline, input, capacity, seed, &[], |_| {}).0
}

/// [`compare`], with `tweak` applied to the pipeline once loaded, and both workers
/// switched to new tables built from `switches[k].1` at the first burst boundary at or
/// after frame `switches[k].0` (as `Worker::set_tables` is used between bursts by the
/// runtime). Returns the number of frames compared and the (equal) counters.
fn compare_switching(
    pipeline: &Path,
    input: &[(u64, Vec<u8>)],
    capacity: usize,
    seed: u64,
    switches: &[(usize, Pipeline)],
    tweak: fn(&mut Pipeline),
) -> (usize, Stats) {
    let mut one = worker(pipeline, capacity, tweak);
    let mut burst = worker(pipeline, capacity, tweak);
    let mut x = seed | 1;
    let mut i = 0;
    let mut now = 0u64;
    let mut next_switch = 0;
    while i < input.len() {
        if let Some((at, p)) = switches.get(next_switch)
            && i >= *at
        {
            let mut p = p.clone();
            p.flow_table.capacity = capacity;
            let t = Arc::new(Tables::build(p, 2 + next_switch as u64));
            one.set_tables(Arc::clone(&t)).expect("same or grown shape");
            burst.set_tables(t).expect("same or grown shape");
            next_switch += 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (1 + (x % 40) as usize).min(input.len() - i);
        let chunk = &input[i..i + n];
        now = now.max(chunk[0].0);
        one.expire(now, 64);
        burst.expire(now, 64);
        let mut bufs: Vec<FrameBuf> = chunk
            .iter()
            .map(|(_, f)| {
                let mut b = FrameBuf::new(f.len().max(64) + 64);
                assert!(b.load(f));
                b
            })
            .collect();
        let mut outs = vec![Outcome::default(); n];
        burst.process_burst(&mut bufs, 0, now, &mut outs);
        let extra: Vec<(usize, Vec<u8>)> =
            burst.extra_frames().map(|(k, f)| (k, f.to_vec())).collect();
        for (k, (_, f)) in chunk.iter().enumerate() {
            let mut b = FrameBuf::new(f.len().max(64) + 64);
            assert!(b.load(f));
            let o = one.process(&mut b, 0, now);
            let at = format!("{}: frame {}", pipeline.display(), i + k + 1);
            assert_eq!(o, outs[k], "{at}: outcome");
            if o.route.is_some() && o.drop.is_none() {
                assert_eq!(b.data(), bufs[k].data(), "{at}: bytes out");
            }
            // Fragments made beyond the first: the same, after the same frame.
            let mine: Vec<&[u8]> = one.extra_frames().map(|(_, f)| f).collect();
            let theirs: Vec<&[u8]> = (extra.iter())
                .filter(|(j, _)| *j == k)
                .map(|(_, f)| &f[..])
                .collect();
            assert_eq!(mine, theirs, "{at}: fragments");
        }
        i += n;
    }
    assert_eq!(
        format!("{:?}", one.stats),
        format!("{:?}", burst.stats),
        "{}: counters",
        pipeline.display()
    );
    assert_eq!(one.flow_count(), burst.flow_count());
    (input.len(), one.stats)
}

/// `input` with, in about half of the frames, a few bytes flipped (most in the headers)
/// and in a quarter of them the frame cut short.
fn damage(input: &[(u64, Vec<u8>)], seed: u64) -> Vec<(u64, Vec<u8>)> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    input
        .iter()
        .map(|(t, f)| {
            let mut f = f.clone();
            if next() % 2 == 0 && !f.is_empty() {
                for _ in 0..1 + next() % 3 {
                    let at = (next() % f.len().min(64) as u64) as usize;
                    f[at] ^= 1 << (next() % 8);
                }
            }
            if next() % 4 == 0 {
                f.truncate((next() % (f.len() as u64 + 1)) as usize);
            }
            (*t, f)
        })
        .collect()
}

/// `input` with the TTL (IPv4, header checksum updated) or hop limit (IPv6) of every
/// fifth untagged IP frame set to 1 or 0.
fn expiring(input: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut out = input.to_vec();
    for (k, (_, f)) in out.iter_mut().enumerate().filter(|(k, _)| k % 5 == 0) {
        let ttl = (k % 2) as u8;
        match f.get(12..14) {
            Some([0x08, 0x00]) if f.len() >= 34 => {
                let old = u16::from_be_bytes([f[22], f[23]]);
                f[22] = ttl;
                let new = u16::from_be_bytes([f[22], f[23]]);
                let ck = u16::from_be_bytes([f[24], f[25]]);
                let ck = flowgate::wire::checksum::update16(ck, old, new);
                f[24..26].copy_from_slice(&ck.to_be_bytes());
            }
            Some([0x86, 0xdd]) if f.len() >= 54 => f[21] = ttl,
            _ => {}
        }
    }
    out
}

/// `input` with DF cleared (IPv4 header checksum updated) in every IPv4 frame, untagged
/// or with one tag: over an MTU, those are cut into fragments.
fn fragmentable(input: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut out = input.to_vec();
    for (_, f) in out.iter_mut() {
        let l3 = match f.get(12..14) {
            Some([0x08, 0x00]) => 14,
            Some([0x81, 0x00]) if f.get(16..18) == Some(&[0x08, 0x00]) => 18,
            _ => continue,
        };
        if f.len() < l3 + 20 {
            continue;
        }
        let old = u16::from_be_bytes([f[l3 + 6], f[l3 + 7]]);
        f[l3 + 6] &= !0x40;
        let new = u16::from_be_bytes([f[l3 + 6], f[l3 + 7]]);
        let ck = u16::from_be_bytes([f[l3 + 10], f[l3 + 11]]);
        let ck = flowgate::wire::checksum::update16(ck, old, new);
        f[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
    }
    out
}

#[test]
fn burst_path_equals_frame_by_frame_on_generated_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    let mut tested = 0;
    let mut too_big = 0;
    let mut fragments = 0;
    // And web-farm's VIPs behind every new-flow guard (allow lists, rate limits,
    // connection limits, least-flows, backups).
    let mut pipes = common::shipped_pipelines();
    pipes.push(common::root().join("tests/data/guarded.yaml"));
    for (n, p) in pipes.iter().enumerate() {
        let pl = Pipeline::load(p).expect("pipeline");
        if pl.services.is_empty() {
            continue; // gen writes traffic to services' VIPs; the captures test covers it
        }
        tested += 1;
        let out: PathBuf = dir.path().join(format!("{n}.pcap"));
        // Mix needs a TCP service; a UDP-only farm gets UDP flows.
        let tcp = pl.services.iter().any(|s| s.proto == 6);
        let scenario = if tcp { Scenario::Mix } else { Scenario::Udp };
        let mut args = GenArgs::new(scenario, 400, &out);
        args.seed = Some(7 + n as u64);
        flowgate::r#gen::run(&args, &flowgate::cmd::gen_spec(&pl)).expect("gen");
        let input = frames(&out);
        assert!(
            input.len() > 1000,
            "{}: only {} frames",
            p.display(),
            input.len()
        );
        // A table big enough for every flow, and one that must evict.
        let (k, stats) = compare_switching(p, &input, 1 << 16, 1 + n as u64, &[], |_| {});
        total += k;
        if p.ends_with("guarded.yaml") {
            let d = |r: DropReason| stats.drops[r as usize];
            let guards = [
                DropReason::NotAllowed,
                DropReason::RateLimited,
                DropReason::ServersFull,
            ];
            assert!(
                guards.iter().all(|&r| d(r) > 0),
                "every guard refused some: {:?}",
                stats.drops
            );
        }
        total += compare(p, &input, 64, 99 + n as u64);
        // Damaged copies: bytes flipped and frames cut short, so that bursts mix drops,
        // stateless frames and flow hits.
        let damaged = damage(&input, 5 + n as u64);
        total += compare(p, &damaged, 1 << 16, 7 + n as u64);
        // Every fifth frame with its TTL or hop limit run out: a router answers those
        // on the general path, in the middle of express bursts.
        total += compare(p, &expiring(&input), 1 << 16, 11 + n as u64);
        // Under the smallest MTU: the larger frames (some of them express flows' data,
        // tagged or not) are answered, cut into fragments or dropped on the general
        // path, mid-burst.
        let mtu = |p: &mut Pipeline| p.mtu = Some(1280);
        let (k, stats) = compare_switching(p, &input, 1 << 16, 13 + n as u64, &[], mtu);
        total += k;
        too_big += stats.icmp_errors + stats.drops[DropReason::MtuExceeded as usize];
        // An MTU per port (`system.mtu` by name): the express path takes frames within
        // the smallest, the general path checks the rest against their route's port.
        let by_port = |p: &mut Pipeline| p.port_mtu = vec![Some(1500), Some(1280)];
        let (k, stats) = compare_switching(p, &input, 1 << 16, 19 + n as u64, &[], by_port);
        total += k;
        too_big += stats.icmp_errors + stats.drops[DropReason::MtuExceeded as usize];
        // Without DF, IPv4 packets are cut into fragments instead.
        let input = fragmentable(&input);
        let (k, stats) = compare_switching(p, &input, 1 << 16, 17 + n as u64, &[], mtu);
        total += k;
        fragments += stats.fragments_out;
    }
    assert!(tested >= 3, "only {tested} pipelines with services");
    assert!(too_big > 0, "no frame was over the MTU");
    assert!(fragments > 0, "no frame was cut into fragments");
    assert!(total > 0);
}

/// Server states and QoS that change while flows live: a server going down (its flows
/// move on their next packet, in both directions), one draining (its flows stay), and a
/// service whose QoS the express path cannot apply (MPLS push forward, tag pop in
/// reply), then back; all after a reload that added a server to `http`. The express path
/// must leave all of these to the general path, and take the grown tables as it does.
#[test]
fn burst_path_equals_frame_by_frame_when_tables_change() {
    use flowgate::config::ServerState;
    let dir = tempfile::tempdir().unwrap();
    let path = common::root().join("pipelines/web-farm.yaml");
    let base = Pipeline::load(&path).expect("pipeline");
    let out = dir.path().join("mix.pcap");
    let mut args = GenArgs::new(Scenario::Mix, 400, &out);
    args.seed = Some(11);
    flowgate::r#gen::run(&args, &flowgate::cmd::gen_spec(&base)).expect("gen");
    let input = frames(&out);
    let n = input.len();
    assert!(n > 1000, "only {n} frames");
    let server = |p: &Pipeline, name: &str| {
        p.servers
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    };
    // First a reload that grows the pipeline: a fourth server for `http`, so that most
    // connections start under the grown tables.
    let web3 = "      - { name: web3, mac: \"02:00:00:00:01:03\", ip: 10.0.0.13, weight: 200 }\n";
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(web3));
    let grown = Pipeline::from_str(
        &text.replace(
            web3,
            &format!("{web3}      - {{ name: web4, mac: \"02:00:00:00:01:04\", weight: 300 }}\n"),
        ),
        &path,
    )
    .expect("grown pipeline");
    let grown = base.regrow(grown).expect("it grows");
    let mut down = grown.clone();
    let (web2, web3) = (server(&down, "web2"), server(&down, "web3"));
    down.servers[web2].state = ServerState::Down;
    down.servers[web3].state = ServerState::Draining;
    let mut mpls = down.clone();
    for s in &mut mpls.services {
        s.qos.push_mpls = Some((100, 1, 64));
        s.reply_qos.pop_vlan = true;
    }
    let switches = [
        (n / 8, grown.clone()),
        (n / 4, down.clone()),
        (n / 2, mpls),
        (3 * n / 4, grown.clone()),
    ];
    let total = compare_switching(&path, &input, 1 << 16, 3, &switches, |_| {}).0
        + compare_switching(&path, &damage(&input, 9), 1 << 16, 4, &switches, |_| {}).0;
    assert_eq!(total, 2 * n);
}

#[test]
fn burst_path_equals_frame_by_frame_on_third_party_captures() {
    let mut inputs = vec![common::root().join("samples/web-farm.pcap")];
    if let Some(dir) = common::shared("captures") {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap")
            })
            .collect();
        v.sort();
        assert!(v.len() > 100, "only {} captures", v.len());
        inputs.extend(v);
    }
    let all: Vec<(u64, Vec<u8>)> = inputs
        .iter()
        .flat_map(|p| match PcapReader::open(p) {
            Ok(_) => frames(p),
            Err(_) => Vec::new(), // link types replay refuses; tests/replay.rs covers them
        })
        .collect();
    assert!(!all.is_empty());
    let pipes = common::shipped_pipelines();
    let rewrite_all = common::root().join("tests/data/rewrite-all.yaml");
    for (n, p) in pipes.iter().chain([&rewrite_all]).enumerate() {
        assert_eq!(compare(p, &all, 256, 1000 + n as u64), all.len());
    }
    eprintln!("{} frames from {} captures", all.len(), inputs.len());
}
