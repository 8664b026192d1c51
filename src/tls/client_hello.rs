//! A pure parser for the TLS ClientHello a new connection starts with.
//!
//! The ingress routes on the SNI (and looks at the ALPN list) *before* it decides what to do
//! with a connection, so it must read the ClientHello itself from the raw bytes the client
//! sent. This module does only that: it takes the bytes read so far and says whether they hold
//! a whole hello, need more bytes, are not TLS at all, are broken, or are too large. It does no
//! I/O, has no state between calls (the caller re-parses its growing buffer) and must not panic
//! on any input: every length read is bounded and every slice is checked.
//!
//! Why reassembly across records is needed: a ClientHello is one handshake message, but TLS
//! lets a client split a handshake message over any number of records. Browsers now send
//! post-quantum key shares (X25519MLKEM768 alone is 1,216 bytes) plus GREASE ECH, so hellos of
//! 1.5–2 KB are normal and some stacks split them; hostile or fingerprint-evading clients
//! split hellos deliberately (down to 1-byte fragments) to slip past middleboxes that only look
//! at the first record. A parser that assumes "one record, one packet" then refuses real
//! browsers or is trivially evaded. The common case (the whole hello in the first record) is
//! still parsed in place without copying; only a hello that spans records is copied into a
//! `Vec` to be parsed contiguously.

/// Record content type of handshake records.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Bytes in a TLS record header: type(1), legacy_record_version(2), length(2).
const RECORD_HEADER_LEN: usize = 5;
/// Bytes in a handshake message header: msg_type(1), length(3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest record payload allowed: 2^14 plaintext plus the 2,048-byte allowance that
/// RFC 5246 grants compressed records (RFC 8446 §5.1 lowers it to 2^14 for TLS 1.3 plaintext;
/// we accept the looser bound since the record carrying a hello has no negotiated version yet).
const MAX_RECORD_PAYLOAD: usize = 16384 + 2048;
/// Extension type `server_name` (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// Extension type `application_layer_protocol_negotiation` (RFC 7301).
const EXT_ALPN: u16 = 16;
/// `NameType` `host_name` inside the server_name extension.
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Longest DNS name in presentation form without the trailing dot.
const MAX_HOST_NAME_LEN: usize = 253;

/// Outcome of parsing the bytes read so far from a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A whole ClientHello was read.
    Complete(ClientHello),
    /// The bytes so far are a valid prefix; read more.
    NeedMore,
    /// The first bytes are not a TLS handshake record (e.g. plain HTTP); nothing TLS-like.
    NotTls,
    /// TLS framing, but invalid contents; the str says what (static, for logs/metrics).
    Malformed(&'static str),
    /// The ClientHello handshake message (or the records carrying it) would exceed `max_len`.
    TooLarge,
}

/// What the ingress needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// server_name host_name, ASCII-lowercased, one trailing dot stripped; None if no SNI extension.
    pub sni: Option<String>,
    /// ALPN protocol names in client order (empty if no ALPN extension).
    pub alpn: Vec<Vec<u8>>,
    /// Number of input bytes (whole TLS records) that carried the ClientHello, i.e. the index
    /// just past the record that completed it. Bytes after it (if any) belong to later records.
    pub len: usize,
}

/// Parses the ClientHello at the start of `buf`, the raw bytes read so far from a client.
///
/// `max_len` bounds both the ClientHello handshake message (4-byte header included) and the
/// total input bytes (record headers included) needed to carry it; [`Parse::TooLarge`] is
/// returned as soon as the length fields show it will be exceeded, without waiting for the
/// bytes, so a caller can size its buffer to `max_len` and never grow it further.
///
/// Every strict prefix of a valid hello gives [`Parse::NeedMore`]; the contents of the hello
/// are only validated once all of it has arrived, so a broken hello may first give `NeedMore`
/// and then [`Parse::Malformed`].
pub fn parse(buf: &[u8], max_len: usize) -> Parse {
    // Classify the very first bytes: anything but a handshake record with a TLS/SSLv3 record
    // version is "not TLS" (plain HTTP, SSLv2-style hellos whose first byte has the top bit
    // set, PROXY protocol headers, ...) so the caller can answer or drop it differently from
    // a broken TLS client.
    match buf.first() {
        None => return Parse::NeedMore,
        Some(&CONTENT_HANDSHAKE) => {}
        Some(_) => return Parse::NotTls,
    }
    if buf.get(1).is_some_and(|&major| major != 3) {
        return Parse::NotTls;
    }
    match locate(buf, max_len) {
        Located::Done(Framing::SingleRecord { msg, len }) => parse_message(msg, len),
        Located::Done(Framing::MultiRecord { msg_len, len }) => {
            let msg = reassemble(buf.get(..len).unwrap_or_default(), msg_len);
            parse_message(&msg, len)
        }
        Located::Stop(outcome) => outcome,
    }
}

/// Where the ClientHello message lies in the input.
enum Framing<'a> {
    /// The whole message is the payload of the first record: parse it in place.
    SingleRecord { msg: &'a [u8], len: usize },
    /// The message spans the records in `buf[..len]` and must be reassembled.
    MultiRecord { msg_len: usize, len: usize },
}

enum Located<'a> {
    Done(Framing<'a>),
    Stop(Parse),
}

/// Walks the record layer without copying or allocating: checks every record header, reads
/// the handshake header (which itself may be split across records) to learn the message
/// length, and finds the record that completes the message.
fn locate(buf: &[u8], max_len: usize) -> Located<'_> {
    use Located::Stop;

    let mut pos = 0; // start of the current record; always <= buf.len()
    let mut records = 0usize; // complete records consumed
    let mut have = 0usize; // handshake bytes in the complete records consumed
    let mut hs_header = [0u8; HANDSHAKE_HEADER_LEN];
    let mut msg_len: Option<usize> = None; // handshake header + body, once known

    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        // A later record may only be another handshake fragment: an alert, a
        // change_cipher_spec or early data before the hello is complete is a protocol error.
        // (The first record's first two bytes were classified by `parse`.)
        if rest.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
            return Stop(Parse::Malformed(
                "non-handshake record before ClientHello complete",
            ));
        }
        if rest.get(1).is_some_and(|&major| major != 3) {
            return Stop(Parse::Malformed("bad record version"));
        }
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Stop(Parse::NeedMore);
        };
        let rec_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if rec_len == 0 {
            return Stop(Parse::Malformed("empty handshake record"));
        }
        if rec_len > MAX_RECORD_PAYLOAD {
            return Stop(Parse::Malformed("record too long"));
        }
        let rec_end = pos + RECORD_HEADER_LEN + rec_len;
        if rec_end > max_len {
            return Stop(Parse::TooLarge);
        }

        // Whatever part of this record's payload has arrived.
        let payload_end = rec_end.min(buf.len());
        let payload = buf
            .get(pos + RECORD_HEADER_LEN..payload_end)
            .unwrap_or_default();

        // Pick up handshake header bytes until the message type and length are known.
        if msg_len.is_none() {
            for (i, &b) in payload.iter().enumerate() {
                let at = have + i;
                if at >= HANDSHAKE_HEADER_LEN {
                    break;
                }
                hs_header[at] = b;
                if at == 0 && b != HANDSHAKE_CLIENT_HELLO {
                    return Stop(Parse::Malformed(
                        "first handshake message is not a ClientHello",
                    ));
                }
                if at == HANDSHAKE_HEADER_LEN - 1 {
                    let body_len =
                        u32::from_be_bytes([0, hs_header[1], hs_header[2], hs_header[3]]);
                    let len = HANDSHAKE_HEADER_LEN + body_len as usize;
                    if len > max_len {
                        return Stop(Parse::TooLarge);
                    }
                    msg_len = Some(len);
                }
            }
        }

        // Once the message length is known, so is a lower bound on the input still needed:
        // if this record does not finish the message, at least one more record follows.
        let have_after = have + rec_len;
        if let Some(msg_len) = msg_len {
            if have_after < msg_len
                && rec_end + RECORD_HEADER_LEN + (msg_len - have_after) > max_len
            {
                return Stop(Parse::TooLarge);
            }
        }

        if payload_end < rec_end {
            return Stop(Parse::NeedMore);
        }
        records += 1;
        have = have_after;
        pos = rec_end;

        if let Some(msg_len) = msg_len {
            if have > msg_len {
                // The client sends nothing else in handshake records until the server
                // answers, so bytes after the hello in its last record are not legitimate.
                return Stop(Parse::Malformed("data after ClientHello in its record"));
            }
            if have == msg_len {
                let framing = if records == 1 {
                    // `payload` is the whole first record: the message, in place.
                    Framing::SingleRecord {
                        msg: payload,
                        len: rec_end,
                    }
                } else {
                    Framing::MultiRecord {
                        msg_len,
                        len: rec_end,
                    }
                };
                return Located::Done(framing);
            }
        }
    }
}

/// Concatenates the payloads of the records in `records` (already validated by [`locate`]).
fn reassemble(records: &[u8], msg_len: usize) -> Vec<u8> {
    let mut msg = Vec::with_capacity(msg_len);
    let mut r = Reader::new(records);
    while let Some(payload) = r.skip(3).and_then(|()| r.u16_vec()) {
        msg.extend_from_slice(payload);
    }
    msg
}

/// Parses a whole ClientHello handshake message (header included).
fn parse_message(msg: &[u8], len: usize) -> Parse {
    // The header was checked by `locate`; only the body remains.
    let body = msg.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
    match parse_body(body) {
        Ok((sni, alpn)) => Parse::Complete(ClientHello { sni, alpn, len }),
        Err(what) => Parse::Malformed(what),
    }
}

type Body = (Option<String>, Vec<Vec<u8>>);

/// Parses the ClientHello body (RFC 8446 §4.1.2, compatible with TLS 1.0–1.2 hellos).
fn parse_body(body: &[u8]) -> Result<Body, &'static str> {
    let mut r = Reader::new(body);
    let version = r.u16().ok_or("truncated legacy_version")?;
    if version >> 8 != 3 {
        return Err("bad legacy_version");
    }
    r.skip(32).ok_or("truncated random")?;
    let session_id = r.u8_vec().ok_or("truncated session_id")?;
    if session_id.len() > 32 {
        return Err("session_id too long");
    }
    let suites = r.u16_vec().ok_or("truncated cipher_suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("bad cipher_suites length");
    }
    let compression = r.u8_vec().ok_or("truncated compression_methods")?;
    if compression.is_empty() {
        return Err("empty compression_methods");
    }
    if r.is_empty() {
        // A hello without extensions (TLS 1.0-era clients): no SNI, no ALPN.
        return Ok((None, Vec::new()));
    }
    let extensions = r.u16_vec().ok_or("truncated extensions")?;
    if !r.is_empty() {
        return Err("extensions length does not match message length");
    }
    parse_extensions(extensions)
}

fn parse_extensions(block: &[u8]) -> Result<Body, &'static str> {
    let mut sni = None;
    let mut alpn = Vec::new();
    let mut seen = SeenTypes::default();
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let ext_type = r.u16().ok_or("truncated extension header")?;
        let data = r.u16_vec().ok_or("truncated extension")?;
        if !seen.insert(ext_type) {
            return Err("duplicate extension");
        }
        match ext_type {
            EXT_SERVER_NAME => sni = parse_server_name(data)?,
            EXT_ALPN => alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    if seen.has_duplicates() {
        return Err("duplicate extension");
    }
    Ok((sni, alpn))
}

/// server_name extension (RFC 6066 §3): the host_name entry, validated and normalised.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer.u16_vec().ok_or("truncated server_name list")?;
    if !outer.is_empty() {
        return Err("server_name list length mismatch");
    }
    if list.is_empty() {
        return Err("empty server_name list");
    }
    let mut host = None;
    let mut r = Reader::new(list);
    while !r.is_empty() {
        let name_type = r.u8().ok_or("truncated server_name entry")?;
        let name = r.u16_vec().ok_or("truncated server_name entry")?;
        if name_type == NAME_TYPE_HOST_NAME {
            // RFC 6066: at most one name of each type.
            if host.is_some() {
                return Err("duplicate host_name in server_name");
            }
            host = Some(normalise_host_name(name)?);
        }
    }
    Ok(host)
}

/// Validates an SNI host_name and returns it lowercased without its trailing dot.
///
/// The name becomes a routing key and appears in logs, so only DNS-name characters are let
/// through: letters, digits, `-`, `.` and `_` (not valid in host names, but real services use
/// it). Empty labels (a leading dot or `..`) are refused so that `a..b` or `.b` can never look
/// like a suffix match of a routed name.
fn normalise_host_name(name: &[u8]) -> Result<String, &'static str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return Err("empty SNI host_name");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("SNI host_name too long");
    }
    if !name
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return Err("invalid character in SNI host_name");
    }
    if name.first() == Some(&b'.')
        || name.last() == Some(&b'.')
        || name.windows(2).any(|w| w == b"..")
    {
        return Err("empty label in SNI host_name");
    }
    // All bytes are ASCII, so this cannot fail; map rather than unwrap to stay panic-free.
    String::from_utf8(name.to_ascii_lowercase()).map_err(|_| "invalid character in SNI host_name")
}

/// ALPN extension (RFC 7301 §3.1): a nonempty list of nonempty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut outer = Reader::new(data);
    let list = outer.u16_vec().ok_or("truncated ALPN list")?;
    if !outer.is_empty() {
        return Err("ALPN list length mismatch");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    let mut protocols = Vec::new();
    let mut r = Reader::new(list);
    while !r.is_empty() {
        let name = r.u8_vec().ok_or("truncated ALPN protocol name")?;
        if name.is_empty() {
            return Err("empty ALPN protocol name");
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}

/// Duplicate-extension detector that does not allocate for ordinary hellos.
///
/// Real hellos carry about 10–20 extensions, checked by a linear scan of a small inline
/// array. A hostile hello can carry up to ~16,000 empty extensions; scanning those would be
/// quadratic, so past the inline capacity the types are collected and sorted once at the end.
struct SeenTypes {
    inline: [u16; Self::INLINE],
    count: usize,
    spill: Vec<u16>,
}

impl Default for SeenTypes {
    fn default() -> Self {
        Self {
            inline: [0; Self::INLINE],
            count: 0,
            spill: Vec::new(),
        }
    }
}

impl SeenTypes {
    const INLINE: usize = 32;

    /// Records `t`; false if it was already seen (checked exactly only while inline).
    fn insert(&mut self, t: u16) -> bool {
        if self.count < Self::INLINE {
            if self.inline[..self.count].contains(&t) {
                return false;
            }
            self.inline[self.count] = t;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(t);
        }
        self.count += 1;
        true
    }

    /// Exact duplicate check over everything inserted (only needed after a spill).
    fn has_duplicates(&mut self) -> bool {
        if self.spill.is_empty() {
            return false;
        }
        self.spill.sort_unstable();
        self.spill.windows(2).any(|w| w[0] == w[1])
    }
}

/// A bounds-checked big-endian cursor over a byte slice: every read returns `None` instead
/// of panicking when the input is too short.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn u8_vec(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    fn u16_vec(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests {
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
            bytes: include_bytes!("../../tests/data/clienthello-chromium156-pq.bin"),
            alpn: H2_H1,
        },
        Capture {
            name: "curl-openssl",
            bytes: include_bytes!("../../tests/data/clienthello-curl-openssl.bin"),
            alpn: H2_H1,
        },
        Capture {
            name: "openssl-s_client",
            bytes: include_bytes!("../../tests/data/clienthello-openssl-s_client.bin"),
            alpn: H2_H1,
        },
        Capture {
            name: "python-ssl",
            bytes: include_bytes!("../../tests/data/clienthello-python-ssl.bin"),
            alpn: H2_H1,
        },
        Capture {
            name: "rustls-pq",
            bytes: include_bytes!("../../tests/data/clienthello-rustls-pq.bin"),
            alpn: H2_H1,
        },
        Capture {
            name: "rustls-nopq",
            bytes: include_bytes!("../../tests/data/clienthello-rustls-nopq.bin"),
            alpn: H2_H1,
        },
    ];

    fn expected(c: &Capture, len: usize) -> Parse {
        Parse::Complete(ClientHello {
            sni: Some("app.example.test".to_owned()),
            alpn: c.alpn.iter().map(|p| p.to_vec()).collect(),
            len,
        })
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
            assert_eq!(
                parse(c.bytes, MAX),
                expected(c, c.bytes.len()),
                "{}",
                c.name
            );
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
                assert_eq!(parse(&input, MAX), expected(c, input.len()), "{name}");
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
        assert_eq!(parse(&input, MAX), expected(c, input.len()));
    }

    #[test]
    fn trailing_bytes_after_the_hello_records_are_not_counted() {
        for c in CAPTURES {
            // A later record (e.g. a change_cipher_spec, or early data) and garbage.
            let mut input = c.bytes.to_vec();
            input.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
            input.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(parse(&input, MAX), expected(c, c.bytes.len()), "{}", c.name);

            let msg = message(c.bytes);
            let mut framed = frame(msg, &[37]);
            let len = framed.len();
            framed.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3]);
            assert_eq!(parse(&framed, MAX), expected(c, len), "{} framed", c.name);
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
                alpn: vec![],
                len: input.len()
            })
        );
        // No extensions block at all.
        let msg = hello_msg(None);
        let input = frame(&msg, &[msg.len()]);
        assert_eq!(
            sni_of(&input),
            Parse::Complete(ClientHello {
                sni: None,
                alpn: vec![],
                len: input.len()
            })
        );
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
                alpn: vec![b"http/1.1".to_vec(), b"h2".to_vec(), b"x".to_vec()],
                len: input.len()
            })
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
        assert_eq!(parse(c.bytes, c.bytes.len()), expected(c, c.bytes.len()));
        assert_eq!(parse(c.bytes, c.bytes.len() - 1), Parse::TooLarge);
        // Known from the record header alone, before the payload arrives.
        assert_eq!(parse(&c.bytes[..5], 1000), Parse::TooLarge);
        assert_eq!(parse(&c.bytes[..5], 1956), Parse::NeedMore);

        // Fragmented: known from the handshake header, 4 bytes into the message...
        let framed = frame(msg, &[1]);
        assert_eq!(parse(&framed[..6 * 3], 1950), Parse::NeedMore);
        assert_eq!(parse(&framed[..6 * 4], 1950), Parse::TooLarge);
        // ...and the record headers count too: 1,951 one-byte records need 11,706 bytes.
        assert_eq!(parse(&framed, framed.len()), expected(c, framed.len()));
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
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const HELLOS: [&[u8]; 3] = [
        include_bytes!("../../tests/data/clienthello-chromium156-pq.bin"),
        include_bytes!("../../tests/data/clienthello-curl-openssl.bin"),
        include_bytes!("../../tests/data/clienthello-rustls-nopq.bin"),
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
                    prop_assert_eq!(&h.alpn, &want.alpn);
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
}
