//! Causal contexts: the opaque text a client gets from a read and sends back with a write.
//! It is client input, so no text may panic the opener, no text that this cluster did not
//! seal may open, and what the body decoder accepts must seal and open back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv::context::{decode_body, ContextKey, MAX_CONTEXT_LEN};

fuzz_target!(|data: &[u8]| {
    let key = ContextKey::from_bytes(b"fuzz cluster key");
    // The text as a client would send it: refused unless it is one of ours (a forgery
    // would need the HMAC key), and never a panic.
    let text = String::from_utf8_lossy(data);
    if let Ok(vv) = key.open("ks", b"k", &"k", &text) {
        assert!(
            vv.0.is_empty(),
            "an unsealed context opened: {text:?} -> {vv:?}"
        );
    }
    // The bytes behind the MAC, as the decoder sees them once a seal verified: whatever it
    // accepts must survive a seal/open round trip unchanged.
    if let Ok(vv) = decode_body(data) {
        let sealed = key.seal("ks", b"k", &vv);
        let opened = key.open("ks", b"k", &"k", &sealed);
        if sealed.len() <= MAX_CONTEXT_LEN {
            assert_eq!(
                opened.expect("a context we seal opens"),
                vv,
                "context changed in a round trip"
            );
        } else {
            assert!(opened.is_err(), "an oversized context opened");
        }
    }
});
