//! The ClientHello parser on arbitrary bytes: it must never panic, and a
//! `Complete` answer must be consistent with its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mse_proxy::tls::client_hello::{parse, Parse};

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the cap, so small caps are explored too.
    let (cap, bytes) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => (16384, data),
    };
    if let Parse::Complete(h) = parse(bytes, cap) {
        assert!(h.len <= bytes.len() && h.len <= cap);
        // Every prefix of a complete hello is an incomplete one.
        assert_eq!(parse(&bytes[..h.len - 1], cap), Parse::NeedMore);
        if let Some(sni) = h.sni {
            assert!(!sni.is_empty() && sni.len() <= 253 && !sni.ends_with('.'));
            assert_eq!(sni, sni.to_ascii_lowercase());
        }
    }
    // PROXY protocol headers are read from the same untrusted bytes.
    let _ = mse_proxy::proxy::proxy_protocol::parse(bytes);
});
