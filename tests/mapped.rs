//! IPv6 packets with IPv4-mapped addresses (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2: the form
//! IPv6 software gives an IPv4 node, not an address of the wire) are dropped as `bad_ipv6`. flowgate holds an IPv4 address in its mapped form,
//! so before 2026-12-07 such a packet was the IPv4 packet it maps: an IPv6 SYN to
//! `::ffff:<VIP>` was load-balanced by the IPv4 service, and an IPv6 RST with a
//! connection's mapped addresses and ports closed that IPv4 connection's flow. A pipeline
//! naming such an address (a VIP, a system address) is refused with the IPv4 form.
//!
//! Frames are built by scapy, run through `flowgate replay` (the CLI a user runs), and
//! read back by tshark.

mod common;

const INPUT: &str = r#"
conf.verb = 0
GW, SYS, S = "02:00:00:00:00:fe", "02:00:00:00:00:01", "02:00:00:00:01:01"
C, V = "198.51.100.7", "203.0.113.10"
MC, MV = "::ffff:" + C, "::ffff:" + V
def E(): return Ether(src=GW, dst=SYS)
fs = [
  E()/IP(src=C, dst=V, id=1)/TCP(sport=40000, dport=80, flags="S", seq=100),
  Ether(src=S, dst=SYS)/IP(src=V, dst=C, id=2)/TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101),
  E()/IP(src=C, dst=V, id=3)/TCP(sport=40000, dport=80, flags="A", seq=101, ack=501),
  # The connection's ends, mapped: a reset, and the same from the server's side.
  E()/IPv6(src=MC, dst=MV)/TCP(sport=40000, dport=80, flags="R", seq=101),
  Ether(src=S, dst=SYS)/IPv6(src=MV, dst=MC)/TCP(sport=80, dport=40000, flags="R", seq=501),
  # A new connection to the VIP's mapped form from an IPv6 client, and a datagram.
  E()/IPv6(src="2001:db8::7", dst=MV)/TCP(sport=40001, dport=80, flags="S"),
  E()/IPv6(src=MC, dst="2001:db8:100::10")/UDP(sport=40000, dport=53),
  E()/IP(src=C, dst=V, id=4)/TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501)/Raw(b"GET /"),
]
for i, p in enumerate(fs): p.time = 1.0 + i / 100
wrpcap(OUT, fs)
"#;

#[test]
fn ipv6_packets_with_ipv4_mapped_addresses_are_dropped() {
    if !common::have_oracles() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (input, output, flows) = (
        dir.path().join("in.pcap"),
        dir.path().join("out.pcap"),
        dir.path().join("flows.json"),
    );
    common::scapy(&format!(
        "from scapy.all import *\nOUT = {:?}\n{INPUT}",
        input.to_str().unwrap()
    ));
    let pipeline = common::root().join("pipelines/web-farm.yaml");
    let stats = output.with_extension("json");
    common::replay_with(
        &pipeline,
        &input,
        &output,
        &[
            "--stats-json".as_ref(),
            stats.as_os_str(),
            "--flows".as_ref(),
            flows.as_os_str(),
        ],
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(j["drops"]["bad_ipv6"], 4, "{j}");
    assert_eq!(j["packets_out"], 4, "{j}");
    // What left: the IPv4 connection only, its data on the server its SYN went to.
    let rows = common::tshark_fields(&output, "", &["eth.dst", "ip.id", "ipv6.src"]);
    let ids: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(ids, ["0x0001", "0x0002", "0x0003", "0x0004"], "{rows:?}");
    assert!(rows.iter().all(|r| r[2].is_empty()), "no IPv6 frame left");
    assert_eq!(rows[3][0], rows[0][0], "the data went where the SYN went");
    // The resets closed nothing: the connection is listed as established.
    let listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&flows).unwrap()).unwrap();
    let listed = listing["flows"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listing}");
    assert_eq!(listed[0]["state"], "established", "{listing}");
    assert_eq!(listed[0]["src"], "198.51.100.7", "{listing}");
}

#[test]
fn a_pipeline_naming_an_ipv4_mapped_address_is_refused() {
    let text = std::fs::read_to_string(common::root().join("pipelines/web-farm.yaml")).unwrap();
    for (from, to, key) in [
        (
            "vip: 203.0.113.10",
            "vip: \"::ffff:203.0.113.10\"",
            "services[0].vip",
        ),
        (
            "addresses: [203.0.113.1,",
            "addresses: [\"::ffff:203.0.113.1\",",
            "system.addresses[0]",
        ),
        (
            "ip: 10.0.0.11",
            "ip: \"::ffff:10.0.0.11\"",
            "services[0].servers[0].ip",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let e = flowgate::config::Pipeline::from_str(
            &text.replacen(from, to, 1),
            std::path::Path::new("mapped.yaml"),
        )
        .expect_err(to)
        .to_string();
        assert!(e.contains(key), "{e}");
        assert!(
            e.contains("IPv4-mapped") && e.contains("write it as IPv4"),
            "{e}"
        );
    }
}
