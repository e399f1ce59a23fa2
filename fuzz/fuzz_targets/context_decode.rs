//! Causal contexts: the opaque text a client gets from a read and sends back with a write.
//! It is client input, so no text may panic the parser, and what parses must be a vector
//! the node can hand out again unchanged.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use quorumkv::causality::VersionVector;

/// The one call that turns a client's context text into a version vector (kept apart so
/// a change of the context format changes only this line).
fn open_context(text: &str) -> Option<VersionVector> {
    VersionVector::from_context(text).ok()
}

fn check(text: &str) {
    if let Some(vv) = open_context(text) {
        let back = open_context(&vv.to_context()).expect("a context we issue parses");
        assert_eq!(back, vv, "context changed in a round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    // The text as a client would send it...
    check(&String::from_utf8_lossy(data));
    // ...and the bytes as the payload of a well-formed base64url text, so every input
    // also reaches the version-vector decoder behind the text encoding.
    check(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data));
});
