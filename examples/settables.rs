//! How long a worker takes new tables between two bursts (`Worker::set_tables`), with
//! many pattern rules, when the management core built them after the worker's own
//! (`Tables::build_after`, what changed worked out there) and when it did not (the
//! worker checks the shape and the timeouts itself); and how long dropping the replaced
//! tables takes (done by the management thread in `flowgate run`).
//!
//! `cargo run --release --example settables [RULES]` (default 60000): five publications
//! of a server's load, as the control plane makes them.

use flowgate::config::Pipeline;
use flowgate::pipeline::{Tables, Worker};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60_000);
    let mut y = String::from(
        "system: { mac: \"02:00:00:00:00:01\", gateway: \"02:00:00:00:00:fe\" }\nflows:\n",
    );
    for i in 0..n {
        y += &format!(
            "  - {{ name: r{i}, match: {{ proto: udp, dst_port: {}, src: 10.{}.{}.{} }}, to: gateway }}\n",
            1000 + i % 60000,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
    }
    y += "services:\n  - name: web\n    vip: 192.0.2.10\n    proto: tcp\n    ports: [80]\n    servers:\n      - { name: a, mac: \"02:00:00:00:01:01\" }\n      - { name: b, mac: \"02:00:00:00:01:02\" }\n";
    let p = Pipeline::from_str(&y, Path::new("settables.yaml")).expect("pipeline");
    println!("{n} pattern rules");
    for after in [true, false] {
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        for g in 2..7u64 {
            let mut q = p.clone();
            q.servers[0].load = 0.01 * g as f64;
            let t = Arc::new(if after {
                Tables::build_after(q, g, w.tables())
            } else {
                Tables::build(q, g)
            });
            let t0 = Instant::now();
            let old = w.set_tables(t).expect("same shape");
            let took = t0.elapsed();
            let t0 = Instant::now();
            drop(old);
            println!(
                "{}: set_tables {:?}, dropping the replaced tables {:?}",
                if after { "built after" } else { "built afresh" },
                took,
                t0.elapsed()
            );
        }
    }
}
