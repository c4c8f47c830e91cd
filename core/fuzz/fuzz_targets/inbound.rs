//! Any bytes as a stanza from the server, through the parsing every inbound message gets
//! (tether_core::engine::fuzzing::inbound_stanza).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(xml) = std::str::from_utf8(data) {
        tether_core::engine::fuzzing::inbound_stanza(xml);
    }
});
