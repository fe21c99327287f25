//! Any bytes through the control-protocol decoder: framing + MAC check, and every
//! body decoder directly (bypassing the MAC, which fuzzing could not forge).
//! `cargo +nightly fuzz run decode`
#![no_main]

use flowgate::control::proto::{Body, Key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::new(&[7u8; 32]).expect("32-byte key");
    let _ = key.open(data);
    if let Some((&t, body)) = data.split_first() {
        // (Bodies near the datagram limit may be re-encoded as TOO_BIG: skip those.)
        if let (Ok(b), true) = (Body::decode(t, body), data.len() < 60_000) {
            // Whatever decodes must re-encode to the same bytes.
            let mut out = Vec::new();
            b.encode(&mut out);
            assert_eq!(Body::decode(t, &out).ok(), Some(b));
        }
    }
});
