//! Frame decoding: every request and reply a node or client reads off a QUIC stream goes
//! through `proto::decode` first, so no byte sequence may panic it, and whatever it
//! accepts must be something we can send on again (a coordinator forwards what it decoded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumkv::proto::{self, Message, Reply, MAGIC, PROTOCOL_VERSION};

/// The node's default frame limit (`limits.max_frame_bytes`, 64 MiB).
const MAX_FRAME: usize = 64 << 20;

fn check(frame: &[u8]) {
    if let Ok(msg) = proto::decode::<Message>(frame, MAX_FRAME) {
        let again = proto::encode(&msg);
        proto::decode::<Message>(&again, usize::MAX).expect("a decoded message re-encodes");
    }
    if let Ok(reply) = proto::decode::<Reply>(frame, MAX_FRAME) {
        let again = proto::encode(&reply);
        let back = proto::decode::<Reply>(&again, usize::MAX).expect("a decoded reply re-encodes");
        // Peer replies carry objects and CRDT states; they must survive the round trip
        // exactly (client replies may hold a NaN ownership, which equals nothing).
        if let (Reply::Peer(a), Reply::Peer(b)) = (&reply, &back) {
            assert_eq!(a, b, "peer reply changed in a round trip");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The bytes as they arrive (size, magic and version checks included)...
    check(data);
    // ...and as the body of a valid header, so every input reaches the MessagePack decoder.
    let mut frame = Vec::with_capacity(data.len() + 4);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    frame.extend_from_slice(data);
    check(&frame);
});
