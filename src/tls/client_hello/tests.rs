//! Unit tests of the ClientHello parser on real captured hellos.

use super::*;

const MAX: usize = 64 * 1024;

struct Capture {
    name: &'static str,
    bytes: &'static [u8],
    alpn: &'static [&'static [u8]],
}

const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

const CAPTURES: &[Capture] = &[
    Capture {
        name: "chromium156-pq",
        bytes: include_bytes!("../../../tests/data/clienthello-chromium156-pq.bin"),
        alpn: H2_H1,
    },
    Capture {
        name: "curl-openssl",
        bytes: include_bytes!("../../../tests/data/clienthello-curl-openssl.bin"),
        alpn: H2_H1,
    },
    Capture {
        name: "openssl-s_client",
        bytes: include_bytes!("../../../tests/data/clienthello-openssl-s_client.bin"),
        alpn: H2_H1,
    },
    Capture {
        name: "python-ssl",
        bytes: include_bytes!("../../../tests/data/clienthello-python-ssl.bin"),
        alpn: H2_H1,
    },
    Capture {
        name: "rustls-pq",
        bytes: include_bytes!("../../../tests/data/clienthello-rustls-pq.bin"),
        alpn: H2_H1,
    },
    Capture {
        name: "rustls-nopq",
        bytes: include_bytes!("../../../tests/data/clienthello-rustls-nopq.bin"),
        alpn: H2_H1,
    },
];

fn expected(len: usize) -> Parse {
    Parse::Complete(ClientHello {
        sni: Some("app.example.test".to_owned()),
        len,
        chacha_first: false,
    })
}

/// Parses `input` as capture `c` re-framed: the hello `len` bytes long, with the capture's
/// ALPN list.
fn assert_parses_as(c: &Capture, input: &[u8], len: usize, name: &str) {
    assert_eq!(parse(input, MAX), expected(len), "{name}");
    let want: Vec<Vec<u8>> = c.alpn.iter().map(|p| p.to_vec()).collect();
    assert_eq!(alpn(input, MAX), Some(want), "{name}: ALPN");
}

/// The handshake message carried by a single-record capture.
fn message(single_record: &[u8]) -> &[u8] {
    &single_record[RECORD_HEADER_LEN..]
}

/// Frames a handshake message into records whose payload sizes are taken from `sizes`
/// in turn (cycling), with record version 3.1 like real clients.
fn frame(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = msg;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (frag, tail) = rest.split_at(size.min(rest.len()));
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(frag.len() as u16).to_be_bytes());
        out.extend_from_slice(frag);
        rest = tail;
    }
    out
}

/// Builds a ClientHello handshake message with the given extensions (None: no block).
fn hello_msg(extensions: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session_id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // cipher_suites
    body.extend_from_slice(&[1, 0]); // compression_methods
    if let Some(exts) = extensions {
        let mut block = Vec::new();
        for (t, data) in exts {
            block.extend_from_slice(&t.to_be_bytes());
            block.extend_from_slice(&(data.len() as u16).to_be_bytes());
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
    }
    let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let msg = hello_msg(Some(extensions));
    frame(&msg, &[msg.len()])
}

fn sni_ext(name: &[u8]) -> (u16, Vec<u8>) {
    let mut entry = vec![NAME_TYPE_HOST_NAME];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name);
    let mut data = (entry.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&entry);
    (EXT_SERVER_NAME, data)
}

fn alpn_ext(protocols: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (EXT_ALPN, data)
}

fn sni_of(buf: &[u8]) -> Parse {
    parse(buf, MAX)
}

fn assert_every_prefix_needs_more(name: &str, input: &[u8]) {
    for n in 0..input.len() {
        assert_eq!(
            parse(&input[..n], MAX),
            Parse::NeedMore,
            "{name}: prefix of {n}/{} bytes",
            input.len()
        );
    }
}

#[test]
fn captures_are_single_records_of_the_documented_sizes() {
    let sizes: Vec<(&str, usize)> = CAPTURES.iter().map(|c| (c.name, c.bytes.len())).collect();
    assert_eq!(
        sizes,
        [
            ("chromium156-pq", 1956),
            ("curl-openssl", 517),
            ("openssl-s_client", 340),
            ("python-ssl", 517),
            ("rustls-pq", 1491),
            ("rustls-nopq", 267),
        ]
    );
    for c in CAPTURES {
        let rec_len = usize::from(u16::from_be_bytes([c.bytes[3], c.bytes[4]]));
        assert_eq!(rec_len + RECORD_HEADER_LEN, c.bytes.len(), "{}", c.name);
    }
}

#[test]
fn captures_parse_and_every_prefix_needs_more() {
    for c in CAPTURES {
        assert_parses_as(c, c.bytes, c.bytes.len(), c.name);
        assert_every_prefix_needs_more(c.name, c.bytes);
    }
}

#[test]
fn captures_reframed_into_many_records_parse_the_same() {
    let framings: &[&[usize]] = &[
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[1, 7, 300],
        &[100],
        &[512],
        &[1000, 1],
        &[1, 3, 2000],
    ];
    for c in CAPTURES {
        let msg = message(c.bytes);
        for sizes in framings {
            let input = frame(msg, sizes);
            let name = format!("{} framed {sizes:?}", c.name);
            assert_parses_as(c, &input, input.len(), &name);
            assert_every_prefix_needs_more(&name, &input);
        }
    }
}

#[test]
fn chromium_pq_hello_split_in_four_records() {
    let c = &CAPTURES[0];
    let msg = message(c.bytes);
    let input = frame(msg, &[msg.len().div_ceil(4)]);
    assert_eq!(input.len(), c.bytes.len() + 3 * RECORD_HEADER_LEN);
    assert_parses_as(c, &input, input.len(), c.name);
}

#[test]
fn trailing_bytes_after_the_hello_records_are_not_counted() {
    for c in CAPTURES {
        // A later record (e.g. a change_cipher_spec, or early data) and garbage.
        let mut input = c.bytes.to_vec();
        input.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_parses_as(c, &input, c.bytes.len(), c.name);

        let msg = message(c.bytes);
        let mut framed = frame(msg, &[37]);
        let len = framed.len();
        framed.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3]);
        assert_parses_as(c, &framed, len, &format!("{} framed", c.name));
    }
}

#[test]
fn not_tls() {
    assert_eq!(sni_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Parse::NotTls);
    assert_eq!(sni_of(b"G"), Parse::NotTls);
    assert_eq!(sni_of(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Parse::NotTls);
    // SSLv2-compatible hello: two-byte length with the top bit set, then msg_type 1.
    assert_eq!(sni_of(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Parse::NotTls);
    // Handshake content type but not a TLS record version.
    assert_eq!(sni_of(&[22, 0x47]), Parse::NotTls);
    assert_eq!(sni_of(&[22, 2, 0, 0, 5]), Parse::NotTls);
    // Other TLS record types first: still "not a TLS handshake".
    assert_eq!(sni_of(&[21, 3, 3, 0, 2, 2, 40]), Parse::NotTls);
}

#[test]
fn need_more_on_empty_and_header_only() {
    assert_eq!(sni_of(&[]), Parse::NeedMore);
    assert_eq!(sni_of(&[22]), Parse::NeedMore);
    assert_eq!(sni_of(&[22, 3]), Parse::NeedMore);
    assert_eq!(sni_of(&[22, 3, 1, 0x02]), Parse::NeedMore);
    assert_eq!(sni_of(&[22, 3, 1, 0x02, 0x00]), Parse::NeedMore);
}

#[test]
fn no_sni_no_alpn() {
    let input = hello(&[(10, vec![0, 2, 0, 0x1d])]);
    assert_eq!(
        sni_of(&input),
        Parse::Complete(ClientHello {
            sni: None,
            len: input.len(),
            chacha_first: false,
        })
    );
    assert_eq!(alpn(&input, MAX), Some(vec![]));
    // No extensions block at all.
    let msg = hello_msg(None);
    let input = frame(&msg, &[msg.len()]);
    assert_eq!(
        sni_of(&input),
        Parse::Complete(ClientHello {
            sni: None,
            len: input.len(),
            chacha_first: false,
        })
    );
    assert_eq!(alpn(&input, MAX), Some(vec![]));
}

#[test]
fn sni_normalised_and_alpn_order_kept() {
    let input = hello(&[
        alpn_ext(&[b"http/1.1", b"h2", b"x"]),
        sni_ext(b"App.Example.TEST."),
    ]);
    assert_eq!(
        sni_of(&input),
        Parse::Complete(ClientHello {
            sni: Some("app.example.test".into()),
            len: input.len(),
            chacha_first: false,
        })
    );
    assert_eq!(
        alpn(&input, MAX),
        Some(vec![b"http/1.1".to_vec(), b"h2".to_vec(), b"x".to_vec()])
    );
    let input = hello(&[sni_ext(b"my_svc-1.Internal")]);
    assert!(
        matches!(sni_of(&input), Parse::Complete(h) if h.sni.as_deref() == Some("my_svc-1.internal"))
    );
    // 253 characters plus a trailing dot is the longest name.
    let mut long = vec![b'a'; 253];
    long.push(b'.');
    assert!(
        matches!(sni_of(&hello(&[sni_ext(&long)])), Parse::Complete(h) if h.sni.as_ref().map(String::len) == Some(253))
    );
}

#[test]
fn server_name_without_host_name_entry() {
    // A server_name list holding only an unknown name type: no SNI to route on.
    let data = vec![0, 4, 7, 0, 1, b'x'];
    let input = hello(&[(EXT_SERVER_NAME, data)]);
    assert!(matches!(sni_of(&input), Parse::Complete(h) if h.sni.is_none()));
}

#[test]
fn malformed_sni() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty SNI host_name"),
        (b".", "empty SNI host_name"),
        (b"a b.test", "invalid character in SNI host_name"),
        (b"a/b", "invalid character in SNI host_name"),
        (b"a\0b", "invalid character in SNI host_name"),
        (
            "caf\u{e9}.test".as_bytes(),
            "invalid character in SNI host_name",
        ),
        (b"a..", "empty label in SNI host_name"),
        (b"a..b", "empty label in SNI host_name"),
        (b".a", "empty label in SNI host_name"),
        (&[b'a'; 254], "SNI host_name too long"),
    ];
    for (name, what) in cases {
        assert_eq!(
            sni_of(&hello(&[sni_ext(name)])),
            Parse::Malformed(what),
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    // Two host_name entries.
    let mut data = vec![0, 8, 0, 0, 1, b'a', 0, 0, 1, b'b'];
    assert_eq!(
        sni_of(&hello(&[(EXT_SERVER_NAME, data.clone())])),
        Parse::Malformed("duplicate host_name in server_name")
    );
    // List length not filling the extension, and entry overrunning the list.
    data[1] = 7;
    assert_eq!(
        sni_of(&hello(&[(EXT_SERVER_NAME, data.clone())])),
        Parse::Malformed("server_name list length mismatch")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_SERVER_NAME, vec![0, 4, 0, 0, 5, b'a'])])),
        Parse::Malformed("truncated server_name entry")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_SERVER_NAME, vec![0, 0])])),
        Parse::Malformed("empty server_name list")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_SERVER_NAME, vec![])])),
        Parse::Malformed("truncated server_name list")
    );
}

#[test]
fn malformed_alpn() {
    assert_eq!(
        sni_of(&hello(&[(EXT_ALPN, vec![0, 0])])),
        Parse::Malformed("empty ALPN list")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_ALPN, vec![0, 3, 2, b'h', b'2', 0])])),
        Parse::Malformed("ALPN list length mismatch")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_ALPN, vec![0, 4, 2, b'h', b'2', 0])])),
        Parse::Malformed("empty ALPN protocol name")
    );
    assert_eq!(
        sni_of(&hello(&[(EXT_ALPN, vec![0, 3, 3, b'h', b'2'])])),
        Parse::Malformed("truncated ALPN protocol name")
    );
}

#[test]
fn malformed_extensions() {
    assert_eq!(
        sni_of(&hello(&[
            sni_ext(b"a.test"),
            (10, vec![]),
            sni_ext(b"b.test")
        ])),
        Parse::Malformed("duplicate extension")
    );
    assert_eq!(
        sni_of(&hello(&[(0xfe0d, vec![]), (0xfe0d, vec![1])])),
        Parse::Malformed("duplicate extension")
    );
    // Many distinct extensions are fine; a duplicate far past the inline capacity is not.
    let many: Vec<(u16, Vec<u8>)> = (100..1100).map(|t| (t, vec![])).collect();
    assert!(matches!(sni_of(&hello(&many)), Parse::Complete(_)));
    let mut dup = many.clone();
    dup.push((1099, vec![]));
    assert_eq!(
        sni_of(&hello(&dup)),
        Parse::Malformed("duplicate extension")
    );
    let mut dup = many;
    dup.push((100, vec![]));
    assert_eq!(
        sni_of(&hello(&dup)),
        Parse::Malformed("duplicate extension")
    );

    // Extension length overrunning the block.
    let mut msg = hello_msg(Some(&[(10, vec![0, 2, 0, 0x1d])]));
    let at = msg.len() - 5; // length field of the extension
    msg[at] = 9;
    assert_eq!(
        sni_of(&frame(&msg, &[msg.len()])),
        Parse::Malformed("truncated extension")
    );
    // Extensions block shorter than the rest of the message.
    let mut msg = hello_msg(Some(&[(10, vec![0, 2, 0, 0x1d])]));
    let at = msg.len() - 9; // low byte of the block length
    msg[at] -= 1;
    assert_eq!(
        sni_of(&frame(&msg, &[msg.len()])),
        Parse::Malformed("extensions length does not match message length")
    );
    // A lone byte where the extensions block should start.
    let mut msg = hello_msg(None);
    msg.push(0);
    msg[3] += 1;
    assert_eq!(
        sni_of(&frame(&msg, &[msg.len()])),
        Parse::Malformed("truncated extensions")
    );
}

#[test]
fn malformed_body() {
    let base = hello_msg(None);
    let at_sid = HANDSHAKE_HEADER_LEN + 2 + 32;
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut msg = base.clone();
        f(&mut msg);
        let body_len = (msg.len() - HANDSHAKE_HEADER_LEN) as u32;
        msg[1..4].copy_from_slice(&body_len.to_be_bytes()[1..]);
        sni_of(&frame(&msg, &[msg.len()]))
    };
    assert_eq!(
        mutate(&|m| m[4] = 2),
        Parse::Malformed("bad legacy_version")
    );
    assert_eq!(
        mutate(&|m| m.truncate(20)),
        Parse::Malformed("truncated random")
    );
    assert_eq!(
        mutate(&|m| {
            m[at_sid] = 33;
            m.splice(at_sid + 1..at_sid + 1, [0; 33]);
        }),
        Parse::Malformed("session_id too long")
    );
    assert_eq!(
        mutate(&|m| m[at_sid] = 200),
        Parse::Malformed("truncated session_id")
    );
    assert_eq!(
        mutate(&|m| {
            m[at_sid + 2] = 3;
            m.insert(at_sid + 3, 0);
        }),
        Parse::Malformed("bad cipher_suites length")
    );
    assert_eq!(
        mutate(&|m| {
            m[at_sid + 2] = 0;
            m.drain(at_sid + 3..at_sid + 5);
        }),
        Parse::Malformed("bad cipher_suites length")
    );
    assert_eq!(
        mutate(&|m| m[at_sid + 2] = 200),
        Parse::Malformed("truncated cipher_suites")
    );
    assert_eq!(
        mutate(&|m| {
            let n = m.len();
            m[n - 2] = 0;
            m.pop();
        }),
        Parse::Malformed("empty compression_methods")
    );
    assert_eq!(
        mutate(&|m| {
            let n = m.len();
            m[n - 2] = 9;
        }),
        Parse::Malformed("truncated compression_methods")
    );
    assert_eq!(
        mutate(&|m| m.truncate(HANDSHAKE_HEADER_LEN + 1)),
        Parse::Malformed("truncated legacy_version")
    );
}

#[test]
fn malformed_framing() {
    let c = &CAPTURES[1];
    let msg = message(c.bytes);

    // Handshake type 2 (ServerHello) instead of ClientHello, single and fragmented.
    let mut bad = msg.to_vec();
    bad[0] = 2;
    let what = Parse::Malformed("first handshake message is not a ClientHello");
    assert_eq!(sni_of(&frame(&bad, &[bad.len()])), what);
    assert_eq!(sni_of(&frame(&bad, &[1])[..6]), what);

    // Empty record and oversized record.
    assert_eq!(
        sni_of(&[22, 3, 1, 0, 0]),
        Parse::Malformed("empty handshake record")
    );
    assert_eq!(
        sni_of(&[22, 3, 1, 0x48, 0x01]),
        Parse::Malformed("record too long")
    );
    assert_eq!(sni_of(&[22, 3, 1, 0x48, 0x00]), Parse::NeedMore);

    // A non-handshake record (change_cipher_spec, alert) in the middle of the hello.
    let mut input = frame(&msg[..100], &[100]);
    let what = Parse::Malformed("non-handshake record before ClientHello complete");
    for t in [20u8, 21, 23] {
        let mut bad = input.clone();
        bad.extend_from_slice(&[t, 3, 3, 0, 1, 1]);
        assert_eq!(sni_of(&bad), what, "type {t}");
        // Known from the type byte alone.
        assert_eq!(sni_of(&bad[..input.len() + 1]), what, "type {t}");
    }
    // A later record with a bad version, or with a length of 0.
    let mut bad = input.clone();
    bad.extend_from_slice(&[22, 1]);
    assert_eq!(sni_of(&bad), Parse::Malformed("bad record version"));
    input.extend_from_slice(&[22, 3, 3, 0, 0]);
    assert_eq!(sni_of(&input), Parse::Malformed("empty handshake record"));

    // The record completing the hello carries more handshake bytes after it.
    let mut extra = msg.to_vec();
    extra.extend_from_slice(&[20, 0, 0, 0]);
    assert_eq!(
        sni_of(&frame(&extra, &[extra.len()])),
        Parse::Malformed("data after ClientHello in its record")
    );
    assert_eq!(
        sni_of(&frame(&extra, &[300])),
        Parse::Malformed("data after ClientHello in its record")
    );
    // A handshake length that understates the body.
    let mut short = msg.to_vec();
    short[3] -= 1;
    assert_eq!(
        sni_of(&frame(&short, &[short.len()])),
        Parse::Malformed("data after ClientHello in its record")
    );
}

#[test]
fn too_large() {
    let c = &CAPTURES[0]; // 1,956 bytes: a 1,951-byte message in one record
    let msg = message(c.bytes);
    assert_eq!(parse(c.bytes, c.bytes.len()), expected(c.bytes.len()));
    assert_eq!(parse(c.bytes, c.bytes.len() - 1), Parse::TooLarge);
    // Known from the record header alone, before the payload arrives.
    assert_eq!(parse(&c.bytes[..5], 1000), Parse::TooLarge);
    assert_eq!(parse(&c.bytes[..5], 1956), Parse::NeedMore);

    // Fragmented: known from the handshake header, 4 bytes into the message...
    let framed = frame(msg, &[1]);
    assert_eq!(parse(&framed[..6 * 3], 1950), Parse::NeedMore);
    assert_eq!(parse(&framed[..6 * 4], 1950), Parse::TooLarge);
    // ...and the record headers count too: 1,951 one-byte records need 11,706 bytes.
    assert_eq!(parse(&framed, framed.len()), expected(framed.len()));
    assert_eq!(parse(&framed, framed.len() - 1), Parse::TooLarge);
    assert_eq!(
        parse(&framed[..framed.len() - 1], framed.len() - 1),
        Parse::TooLarge
    );
    // Once the message length is known, each record boundary gives a lower bound on
    // the input still needed: here 24 bytes read + 5 + 1,947 message bytes = 1,976.
    assert_eq!(parse(&framed[..6 * 4], 1976), Parse::NeedMore);
    assert_eq!(parse(&framed[..6 * 4], 1975), Parse::TooLarge);

    // A handshake length field claiming 16 MB in a small record.
    assert_eq!(
        parse(&[22, 3, 1, 0, 10, 1, 0xff, 0xff, 0xff], MAX),
        Parse::TooLarge
    );
    assert_eq!(
        parse(&[22, 3, 1, 0, 10, 1, 0xff, 0xff], MAX),
        Parse::NeedMore
    );
    // Small max_len rejects even tiny hellos.
    assert_eq!(parse(CAPTURES[5].bytes, 100), Parse::TooLarge);
}

/// Deterministic xorshift so the mutation test needs no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for c in CAPTURES {
        let msg = message(c.bytes);
        for round in 0..300 {
            let mut input = if round % 3 == 0 {
                frame(msg, &[1 + rng.below(400)])
            } else {
                c.bytes.to_vec()
            };
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(input.len());
                input[i] = rng.next() as u8;
            }
            let cut = rng.below(input.len() + 1);
            let _ = parse(&input, MAX);
            let _ = parse(&input[..cut], MAX);
            let _ = parse(&input, rng.below(4000));
        }
        // Every single-byte change to a length-bearing region, every value class.
        for i in 0..c.bytes.len().min(200) {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut input = c.bytes.to_vec();
                input[i] = v;
                let _ = parse(&input, MAX);
            }
        }
    }
}

/// A hello whose cipher_suites are `suites` (no extensions).
fn hello_with_suites(suites: &[u16]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// [`ClientHello::chacha_first`] of `input`; `None` unless it is a whole valid hello.
fn chacha_of(input: &[u8], max: usize) -> Option<bool> {
    match parse(input, max) {
        Parse::Complete(h) => Some(h.chacha_first),
        _ => None,
    }
}

#[test]
fn captured_clients_prefer_aes_gcm() {
    for c in CAPTURES {
        assert_eq!(chacha_of(c.bytes, MAX), Some(false), "{}", c.name);
    }
}

#[test]
fn chacha_is_preferred_only_when_listed_before_every_aes_gcm_suite() {
    let one = |suites: &[u16]| {
        let msg = hello_with_suites(suites);
        let single = chacha_of(&frame(&msg, &[msg.len()]), MAX).unwrap();
        // The same hello in records of 7 bytes: reassembled, same answer.
        assert_eq!(
            Some(single),
            chacha_of(&frame(&msg, &[7]), MAX),
            "{suites:x?}"
        );
        single
    };
    // GREASE and suites of neither kind are skipped.
    assert!(one(&[0x0a0a, 0x1303, 0x1301, 0x1302]));
    assert!(one(&[0xcca9, 0xc02b]));
    assert!(one(&[0x009c, 0xcca8, 0xc02f]));
    assert!(!one(&[0x1301, 0x1303]));
    assert!(!one(&[0x1302, 0x1303]));
    assert!(!one(&[0xc030, 0xcca8]));
    assert!(!one(&[0x0a0a, 0x009c]));
    // Not a whole valid hello: no answer.
    let msg = hello_with_suites(&[0x1303]);
    let whole = frame(&msg, &[msg.len()]);
    assert_eq!(chacha_of(&whole, MAX), Some(true));
    assert_eq!(chacha_of(&whole[..whole.len() - 1], MAX), None);
    assert_eq!(chacha_of(&whole, 16), None);
    assert_eq!(chacha_of(b"GET / HTTP/1.1\r\n", MAX), None);
}
