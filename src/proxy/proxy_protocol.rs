//! PROXY protocol (HAProxy's spec, `proxy-protocol.txt`): the v2 header the
//! proxy can send upstream on routes that ask for it, and reading v1/v2
//! headers from a trusted load balancer in front.
//!
//! Sending is off by default: enclaves in the zero-trust scenario cannot
//! parse a header, and in passthrough it would be the one byte sequence the
//! proxy adds to the stream.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_PROXY: u8 = 0x21;
/// Address family and transport: TCP over IPv4 / IPv6.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;

/// The longest v2 header we send: 16 bytes of header + 36 of IPv6 addresses.
pub const V2_MAX_LEN: usize = 16 + 36;

/// Encodes a v2 PROXY header for a TCP connection from `src` to `dst`.
/// When the two families differ (an IPv4 client on an IPv6 listener), both
/// are sent as IPv6, the IPv4 one mapped, since one header has one family.
pub fn v2_header(src: SocketAddr, dst: SocketAddr) -> ([u8; V2_MAX_LEN], usize) {
    let mut out = [0u8; V2_MAX_LEN];
    out[..12].copy_from_slice(&V2_SIGNATURE);
    out[12] = V2_PROXY;
    let len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out[13] = TCP4;
            out[14..16].copy_from_slice(&12u16.to_be_bytes());
            out[16..20].copy_from_slice(&s.octets());
            out[20..24].copy_from_slice(&d.octets());
            out[24..26].copy_from_slice(&src.port().to_be_bytes());
            out[26..28].copy_from_slice(&dst.port().to_be_bytes());
            28
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out[13] = TCP6;
            out[14..16].copy_from_slice(&36u16.to_be_bytes());
            out[16..32].copy_from_slice(&v6(s).octets());
            out[32..48].copy_from_slice(&v6(d).octets());
            out[48..50].copy_from_slice(&src.port().to_be_bytes());
            out[50..52].copy_from_slice(&dst.port().to_be_bytes());
            52
        }
    };
    (out, len)
}

/// What reading a PROXY header from the start of a stream found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// A whole header of `len` bytes; `source` is the original client
    /// (`None` for `LOCAL` / `UNKNOWN`: a health check, keep the peer).
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// A valid prefix; read more.
    NeedMore,
    /// The bytes do not start with a PROXY header.
    Absent,
    /// A header, but broken.
    Invalid,
}

/// Longest v1 header (the spec's bound, CRLF included).
const V1_MAX_LEN: usize = 107;

/// Parses a v1 or v2 header at the start of `buf` (with the `ppp` crate).
pub fn parse(buf: &[u8]) -> Header {
    if buf.is_empty() {
        return Header::NeedMore;
    }
    if V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)]) {
        return parse_v2(buf);
    }
    if b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
        return parse_v1(buf);
    }
    Header::Absent
}

fn parse_v2(buf: &[u8]) -> Header {
    if buf.len() < 16 {
        return Header::NeedMore;
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Header::NeedMore;
    }
    match ppp::v2::Header::try_from(&buf[..len]) {
        Ok(h) => {
            let source = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    let ip = IpAddr::V6(a.source_address).to_canonical();
                    Some(SocketAddr::new(ip, a.source_port))
                }
                _ => None,
            };
            Header::Complete { len, source }
        }
        Err(_) => Header::Invalid,
    }
}

fn parse_v1(buf: &[u8]) -> Header {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN {
            Header::Invalid
        } else {
            Header::NeedMore
        };
    };
    let len = end + 2;
    // The spec makes v1 US-ASCII with one CRLF at the end. Checking that
    // here also keeps ppp from slicing inside a multi-byte character at a
    // stray CR, which panics (found by fuzzing; see tests/data/fuzz/).
    let line = &buf[..len];
    if !line.is_ascii() || line[..end].contains(&b'\r') {
        return Header::Invalid;
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Header::Invalid;
    };
    match ppp::v1::Header::try_from(text) {
        Ok(h) => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(
                    IpAddr::V6(a.source_address).to_canonical(),
                    a.source_port,
                )),
                ppp::v1::Addresses::Unknown => None,
            };
            Header::Complete { len, source }
        }
        Err(_) => Header::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes our v2 header with an independent implementation (ppp) and
    /// checks the layout byte by byte against the spec.
    #[test]
    fn v2_ipv4_layout_matches_the_spec() {
        let src: SocketAddr = "192.0.2.10:51000".parse().unwrap();
        let dst: SocketAddr = "198.51.100.7:443".parse().unwrap();
        let (buf, len) = v2_header(src, dst);
        let h = &buf[..len];
        assert_eq!(len, 28);
        assert_eq!(
            &h[..12],
            b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
        );
        assert_eq!(h[12], 0x21, "version 2, PROXY");
        assert_eq!(h[13], 0x11, "TCP over IPv4");
        assert_eq!(&h[14..16], &[0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 10]);
        assert_eq!(&h[20..24], &[198, 51, 100, 7]);
        assert_eq!(&h[24..26], &51000u16.to_be_bytes());
        assert_eq!(&h[26..28], &443u16.to_be_bytes());
        let decoded = ppp::v2::Header::try_from(h).unwrap();
        assert_eq!(decoded.command, ppp::v2::Command::Proxy);
        assert_eq!(decoded.protocol, ppp::v2::Protocol::Stream);
        match decoded.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(SocketAddr::from((a.source_address, a.source_port)), src);
                assert_eq!(
                    SocketAddr::from((a.destination_address, a.destination_port)),
                    dst
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(h),
            Header::Complete {
                len: 28,
                source: Some(src)
            }
        );
    }

    #[test]
    fn v2_mixed_families_are_sent_as_ipv6() {
        let src: SocketAddr = "192.0.2.10:1".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let (buf, len) = v2_header(src, dst);
        assert_eq!((len, buf[13]), (52, 0x21));
        match ppp::v2::Header::try_from(&buf[..len]).unwrap().addresses {
            ppp::v2::Addresses::IPv6(a) => {
                assert_eq!(
                    a.source_address,
                    "::ffff:192.0.2.10".parse::<std::net::Ipv6Addr>().unwrap()
                );
                assert_eq!(
                    a.destination_address,
                    "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap()
                );
            }
            other => panic!("{other:?}"),
        }
        // Read back, the mapped client is reported as IPv4.
        assert_eq!(
            parse(&buf[..len]),
            Header::Complete {
                len: 52,
                source: Some(src)
            }
        );
    }

    /// Inputs the fuzzer found; each once panicked inside ppp's v1 parser.
    #[test]
    fn fuzz_regressions() {
        for input in [
            include_bytes!("../../tests/data/fuzz/ppp-v1-utf8-boundary-1.bin").as_slice(),
            include_bytes!("../../tests/data/fuzz/ppp-v1-utf8-boundary-2.bin").as_slice(),
        ] {
            // The fuzz target's first two bytes choose the hello cap.
            assert_eq!(parse(&input[2..]), Header::Invalid);
        }
        assert_eq!(parse(b"PROXY \r\xc4\xbe\r\n"), Header::Invalid);
    }

    #[test]
    fn v1_and_prefixes() {
        let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n\x16\x03\x01";
        assert_eq!(
            parse(v1),
            Header::Complete {
                len: v1.len() - 3,
                source: Some("203.0.113.9:40000".parse().unwrap())
            }
        );
        for i in 0..v1.len() - 3 {
            assert_eq!(parse(&v1[..i]), Header::NeedMore, "prefix {i}");
        }
        let (v2, len) = v2_header("10.1.1.1:5".parse().unwrap(), "10.2.2.2:6".parse().unwrap());
        for i in 0..len {
            assert_eq!(parse(&v2[..i]), Header::NeedMore, "v2 prefix {i}");
        }
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Header::Absent);
        assert_eq!(parse(b"PROXY garbage here\r\n"), Header::Invalid);
        assert_eq!(parse(&[b'P'; 200]), Header::Absent);
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&long), Header::Invalid);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Header::Complete {
                len: 15,
                source: None
            }
        );
    }
}
