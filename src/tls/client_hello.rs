//! A pure parser for the TLS ClientHello a new connection starts with.
//!
//! The ingress routes on the SNI *before* it decides what to do
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
    /// Number of input bytes (whole TLS records) that carried the ClientHello, i.e. the index
    /// just past the record that completed it. Bytes after it (if any) belong to later records.
    pub len: usize,
    /// The client lists a ChaCha20-Poly1305 suite before any AES-GCM one, as a client without
    /// AES instructions does: the terminate path then prefers ChaCha for it
    /// (`tls::ordered_provider`). Read from the suite list the parse walks anyway.
    pub chacha_first: bool,
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
    parse_into(buf, max_len, None)
}

/// The ALPN protocol names of the whole ClientHello at the start of `buf`, in client order
/// (empty without an ALPN extension); `None` unless [`parse`] gives `Complete`.
///
/// Separate from [`parse`] because only a terminate route with a TLS upstream needs the list
/// (to offer the backend what the client offered before finishing the client's handshake),
/// and collecting it there would cost every connection one allocation per protocol name.
/// [`parse`] still validates the extension.
pub fn alpn(buf: &[u8], max_len: usize) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    match parse_into(buf, max_len, Some(&mut out)) {
        Parse::Complete(_) => Some(out),
        _ => None,
    }
}

/// [`parse`], also collecting the ALPN names into `alpn` when asked.
fn parse_into(buf: &[u8], max_len: usize, alpn: Option<&mut Vec<Vec<u8>>>) -> Parse {
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
        Located::Done(Framing::SingleRecord { msg, len }) => parse_message(msg, len, alpn),
        Located::Done(Framing::MultiRecord { msg_len, len }) => {
            let msg = reassemble(buf.get(..len).unwrap_or_default(), msg_len);
            parse_message(&msg, len, alpn)
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
fn parse_message(msg: &[u8], len: usize, alpn: Option<&mut Vec<Vec<u8>>>) -> Parse {
    // The header was checked by `locate`; only the body remains.
    let body = msg.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
    match parse_body(body, alpn) {
        Ok((sni, chacha_first)) => Parse::Complete(ClientHello {
            sni,
            len,
            chacha_first,
        }),
        Err(what) => Parse::Malformed(what),
    }
}

/// Parses the ClientHello body (RFC 8446 §4.1.2, compatible with TLS 1.0–1.2 hellos) and
/// returns its SNI and [`ClientHello::chacha_first`].
fn parse_body(
    body: &[u8],
    alpn: Option<&mut Vec<Vec<u8>>>,
) -> Result<(Option<String>, bool), &'static str> {
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
    let chacha_first = chacha_first(suites);
    if r.is_empty() {
        // A hello without extensions (TLS 1.0-era clients): no SNI, no ALPN.
        return Ok((None, chacha_first));
    }
    let extensions = r.u16_vec().ok_or("truncated extensions")?;
    if !r.is_empty() {
        return Err("extensions length does not match message length");
    }
    Ok((parse_extensions(extensions, alpn)?, chacha_first))
}

/// Whether `suites` (the hello's cipher_suites) name a ChaCha20-Poly1305 suite before any
/// AES-GCM one; GREASE and suites of neither kind are skipped.
fn chacha_first(suites: &[u8]) -> bool {
    const CHACHA: [u16; 3] = [0x1303, 0xcca8, 0xcca9];
    const AES_GCM: [u16; 6] = [0x1301, 0x1302, 0xc02b, 0xc02c, 0xc02f, 0xc030];
    suites
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .find(|s| CHACHA.contains(s) || AES_GCM.contains(s))
        .is_some_and(|s| CHACHA.contains(&s))
}

fn parse_extensions(
    block: &[u8],
    mut alpn: Option<&mut Vec<Vec<u8>>>,
) -> Result<Option<String>, &'static str> {
    let mut sni = None;
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
            EXT_ALPN => parse_alpn(data, alpn.as_deref_mut())?,
            _ => {}
        }
    }
    if seen.has_duplicates() {
        return Err("duplicate extension");
    }
    Ok(sni)
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
            host = Some(crate::host::normalize_sni(name)?);
        }
    }
    Ok(host)
}

/// ALPN extension (RFC 7301 §3.1): a nonempty list of nonempty protocol names, validated,
/// and copied into `out` only if asked.
fn parse_alpn(data: &[u8], mut out: Option<&mut Vec<Vec<u8>>>) -> Result<(), &'static str> {
    let mut outer = Reader::new(data);
    let list = outer.u16_vec().ok_or("truncated ALPN list")?;
    if !outer.is_empty() {
        return Err("ALPN list length mismatch");
    }
    if list.is_empty() {
        return Err("empty ALPN list");
    }
    let mut r = Reader::new(list);
    while !r.is_empty() {
        let name = r.u8_vec().ok_or("truncated ALPN protocol name")?;
        if name.is_empty() {
            return Err("empty ALPN protocol name");
        }
        if let Some(out) = out.as_deref_mut() {
            out.push(name.to_vec());
        }
    }
    Ok(())
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
#[path = "client_hello/tests.rs"]
mod tests;

#[cfg(test)]
#[path = "client_hello/properties.rs"]
mod properties;
