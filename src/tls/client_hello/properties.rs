//! Property tests: any framing of real hellos, and arbitrary bytes.

use super::*;
use proptest::prelude::*;

const HELLOS: [&[u8]; 3] = [
    include_bytes!("../../../tests/data/clienthello-chromium156-pq.bin"),
    include_bytes!("../../../tests/data/clienthello-curl-openssl.bin"),
    include_bytes!("../../../tests/data/clienthello-rustls-nopq.bin"),
];

/// Re-frames a one-record hello's payload into records of the given
/// sizes (cycled), and returns the bytes with the TCP segment cut points.
fn reframe(hello: &[u8], sizes: &[usize]) -> Vec<u8> {
    let payload = &hello[5..];
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < payload.len() {
        let n = sizes[i % sizes.len()].min(payload.len() - at);
        out.extend_from_slice(&[22, hello[1], hello[2]]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&payload[at..at + n]);
        at += n;
        i += 1;
    }
    out
}

proptest! {
    /// Any split into records, read through any split into segments,
    /// gives NeedMore until the last byte and then the same answer as
    /// the original single-record hello.
    #[test]
    fn any_split_same_answer(
        which in 0..HELLOS.len(),
        sizes in prop::collection::vec(1usize..600, 1..6),
        cuts in prop::collection::vec(1usize..400, 1..8),
    ) {
        let hello = HELLOS[which];
        let Parse::Complete(want) = parse(hello, 16384) else { panic!("capture must parse") };
        let framed = reframe(hello, &sizes);
        let mut seen = 0;
        let mut i = 0;
        while seen < framed.len() {
            seen = (seen + cuts[i % cuts.len()]).min(framed.len());
            i += 1;
            let got = parse(&framed[..seen], 16384);
            if seen < framed.len() {
                prop_assert_eq!(got, Parse::NeedMore);
            } else {
                let Parse::Complete(h) = got else { panic!("whole reframed hello must parse: {got:?}") };
                prop_assert_eq!(&h.sni, &want.sni);
                prop_assert_eq!(alpn(&framed, 16384), alpn(hello, 16384));
                prop_assert_eq!(h.len, framed.len());
            }
        }
    }

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..3000), cap in 0usize..20000) {
        let _ = parse(&bytes, cap);
    }
}
