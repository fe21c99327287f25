//! Cheap change: on a 10K-rule set, one inserted or removed rule is visible to lookups
//! within 1 ms (issue 3), and lookups stay exact before and after a background rebuild.

use flowgate::classify::linear::Linear;
use flowgate::classify::synth::{Profile, rules, trace};
use flowgate::classify::update::Updatable;
use flowgate::classify::{Classifier, Decision, Key, Range, Rule, v4_mapped};
use std::time::{Duration, Instant};

#[test]
fn insert_and_remove_visible_within_1ms_on_10k_rules() {
    let base = rules(Profile::Acl, 10_000, 42);
    let mut u = Updatable::new(&base);
    let key = Key {
        src: v4_mapped([198, 51, 100, 7]),
        dst: v4_mapped([203, 0, 113, 9]),
        proto: 17,
        src_port: 40000,
        dst_port: 4789,
        ..Key::default()
    };
    let before = u.lookup(&key);
    let mut times = Vec::new();
    for i in 0..50u16 {
        let mut r = Rule::any(Decision::Service(7));
        r.src = Range::exact(key.src);
        r.dst = Range::exact(key.dst);
        r.dst_port = Range::exact(4789);
        r.src_port = Range::exact(40000 + (i % 2));
        let t0 = Instant::now();
        let id = u.insert(r, usize::from(i) * 37).expect("insert");
        let hit = u.lookup(&key);
        let t_ins = t0.elapsed();
        if i % 2 == 0 {
            assert_eq!(hit, Some(id), "inserted rule must win at once");
        }
        let t1 = Instant::now();
        u.remove(id).expect("remove");
        let after = u.lookup(&key);
        let t_rem = t1.elapsed();
        assert_eq!(after, before, "removed rule must vanish at once");
        times.push(t_ins);
        times.push(t_rem);
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    eprintln!("insert/remove + lookup on 10K rules: median {median:?}, max {max:?}");
    assert!(median < Duration::from_millis(1), "median {median:?}");
}

#[test]
fn removing_a_base_rule_falls_back_exactly_then_rebuild_restores_fast_path() {
    let base = rules(Profile::Ipc, 1_000, 9);
    let keys = trace(&base, 2_000, 3);
    let mut u = Updatable::new(&base);
    // Remove the rule most keys hit, and a few others.
    let lin = Linear::new(base.clone());
    let mut hits = vec![0usize; base.len()];
    for k in &keys {
        if let Some(i) = lin.lookup(k) {
            hits[i as usize] += 1;
        }
    }
    let top = (0..base.len()).max_by_key(|&i| hits[i]).expect("non-empty");
    let gone = [top, 3, 500, 999];
    for &g in &gone {
        u.remove(g as u32).expect("remove");
    }
    let model = |k: &Key| (0..base.len()).find(|i| !gone.contains(i) && base[*i].matches(k));
    for k in &keys {
        assert_eq!(u.lookup(k).map(|i| i as usize), model(k));
    }
    u.start_rebuild();
    assert!(u.finish_rebuild());
    assert_eq!(u.delta_len(), 0);
    let mut out = vec![None; keys.len()];
    u.lookup_batch(&keys, &mut out);
    for (k, o) in keys.iter().zip(&out) {
        assert_eq!(o.map(|i| i as usize), model(k));
    }
}
