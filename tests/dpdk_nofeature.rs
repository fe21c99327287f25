//! Without the `dpdk` feature, `flowgate run` and `flowgate bench` refuse with a clear
//! message (and never touch the conf or the network).
#![cfg(not(feature = "dpdk"))]

mod common;

#[test]
fn run_and_bench_say_built_without_dpdk() {
    for args in [
        &["run", "--conf", "conf/pcap-replay.yaml"][..],
        &["bench", "--seconds", "1"][..],
    ] {
        let o = common::flowgate()
            .args(args)
            .current_dir(common::root())
            .output()
            .expect("spawn flowgate");
        assert!(!o.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("built without the dpdk feature"),
            "{args:?}: {err}"
        );
    }
}
