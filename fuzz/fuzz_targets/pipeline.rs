//! Any text as a pipeline file: a clear error or a pipeline, never a panic; a pipeline
//! that loads is listed as `flowgate check` lists it, compiles into tables, and is
//! judged as a reload of `tests/data/guarded.yaml` (and that one as a reload of it),
//! building the tables a SIGHUP would publish when the reload is taken.
#![no_main]

use flowgate::config::Pipeline;
use flowgate::pipeline::Tables;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const GUARDED: &str = include_str!("../../tests/data/guarded.yaml");

/// Tables for `p`, its flow table kept small (a file may ask for millions of flows).
fn tables(mut p: Pipeline) -> Tables {
    p.flow_table.capacity = p.flow_table.capacity.min(1024);
    Tables::build(p, 1)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = Pipeline::from_str(text, Path::new("fuzz.yaml")) else {
        return;
    };
    let _ = flowgate::cmd::check::render(&p);
    let old = Pipeline::from_str(GUARDED, Path::new("guarded.yaml")).expect("guarded");
    for (from, to) in [(&old, &p), (&p, &old)] {
        let _ = flowgate::cmd::check::reload_verdict(from, to.clone());
        if let Ok(grown) = from.regrow(to.clone()) {
            let before = tables(from.clone());
            let mut grown = grown;
            grown.flow_table.capacity = before.pipeline.flow_table.capacity;
            let _ = Tables::build_after(grown, 2, &before);
        }
    }
    let _ = tables(p);
});
