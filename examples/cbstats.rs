use flowgate::classify::{classbench::{parse_rules, parse_trace}, compiled::{Compiled, Params}};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let rules = parse_rules(&std::fs::read_to_string(&a[1]).unwrap()).unwrap();
    let trace = parse_trace(&std::fs::read_to_string(&a[2]).unwrap()).unwrap();
    let mut p = Params::default();
    if let Some(s) = a.get(3) { p.spfac = s.parse().unwrap(); }
    if let Some(s) = a.get(4) { p.partition = s == "1"; }
    if let Some(s) = a.get(5) { p.leaf_max = s.parse().unwrap(); }
    let t = std::time::Instant::now();
    let c = Compiled::build_with(&rules, p);
    println!("{:?} {:?}", t.elapsed(), c.stats());
    let nt = c.stats().trees;
    let mut lv = vec![0u64; nt]; let mut lr = vec![0u64; nt];
    for e in &trace { for (i, (l, r)) in c.path_profile(&e.key).into_iter().enumerate() { lv[i] += l as u64; lr[i] += r as u64; } }
    let n = trace.len() as f64;
    timing(&c, &trace.iter().map(|e| e.key).collect::<Vec<_>>());
    for i in 0..nt { println!("tree {i}: avg levels {:.2} avg leaf lanes {:.2}", lv[i] as f64 / n, lr[i] as f64 / n); }
}
#[allow(dead_code)]
fn cpu() -> u64 { flowgate::classify::bench_cmd::thread_cpu_ns().unwrap() }
pub fn timing(c: &Compiled, keys: &[flowgate::classify::Key]) {
    use flowgate::classify::Classifier;
    let reps = 20;
    let t = cpu(); let mut s = 0u64;
    for _ in 0..reps { for k in keys { s = s.wrapping_add(c.lookup(k).unwrap_or(0) as u64); } }
    let single = (reps * keys.len()) as f64 * 1e9 / (cpu() - t) as f64;
    let t = cpu(); let mut out = [0u32; 32];
    for _ in 0..reps { for kc in keys.chunks(32) { c.lookup_burst(kc, &mut out[..kc.len()]); s = s.wrapping_add(out[0] as u64); } }
    let burst = (reps * keys.len()) as f64 * 1e9 / (cpu() - t) as f64;
    println!("single {:.2} Mpps  burst {:.2} Mpps  ({s})", single / 1e6, burst / 1e6);
}
