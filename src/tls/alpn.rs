//! Which application protocol (ALPN) a terminated client may get: pure
//! rules, no sockets.
//!
//! The proxy relays bytes after termination and parses no HTTP, so the
//! protocol the client speaks is the one the backend hears. A client must
//! therefore never get a protocol the backend did not accept: with a TLS
//! upstream the proxy first offers the backend what the client offered
//! (narrowed to what the route allows, [`offer`]), and only then finishes
//! the client's handshake, selecting exactly the backend's choice (one of
//! [`server_lists`]'s configs). A plain-TCP backend negotiates nothing, so
//! there the route's list is the operator's word and is offered as is.
//!
//! `h2` is withheld on a certificate that also serves another tenant's
//! hosts (`crate::tls::coalescing`): a browser reuses an HTTP/2
//! connection for any host the certificate covers (RFC 9113 §9.1.1).

/// The ALPN id of HTTP/2 over TLS.
pub const H2: &[u8] = b"h2";

/// What to offer the backend for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// These protocols, in the client's order of preference; empty when
    /// the client offered none (the backend then selects none either).
    Protocols(Vec<Vec<u8>>),
    /// The client offered protocols and the route allows none of them:
    /// RFC 7301 answers that with a `no_application_protocol` alert.
    Mismatch,
}

/// The client's protocols that the route allows, in the client's order
/// (it asked for them in that order, and the backend, which picks, sees
/// the client's preference); `h2` dropped when `no_h2`.
pub fn offer(client: &[Vec<u8>], allowed: &[Vec<u8>], no_h2: bool) -> Offer {
    let list: Vec<Vec<u8>> = client
        .iter()
        .filter(|p| allowed.contains(p) && !(no_h2 && p.as_slice() == H2))
        .cloned()
        .collect();
    if list.is_empty() && !client.is_empty() {
        Offer::Mismatch
    } else {
        Offer::Protocols(list)
    }
}

/// `list` without `h2`.
pub fn without_h2(list: &[Vec<u8>]) -> Vec<Vec<u8>> {
    list.iter()
        .filter(|p| p.as_slice() != H2)
        .cloned()
        .collect()
}

/// Every ALPN list a terminate route's client handshake may be finished
/// with, so that each has its server config built with the snapshot, never
/// per connection. Learned (a TLS upstream): no protocol, or exactly one the
/// backend may select. Fixed (plain TCP): the route's list, and the same
/// without `h2` for a shared certificate.
pub fn server_lists(allowed: &[Vec<u8>], learned: bool) -> Vec<Vec<Vec<u8>>> {
    if learned {
        std::iter::once(Vec::new())
            .chain(allowed.iter().map(|p| vec![p.clone()]))
            .collect()
    } else {
        vec![allowed.to_vec(), without_h2(allowed)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn offer_keeps_the_clients_order_within_what_the_route_allows() {
        let allowed = l(&["h2", "http/1.1"]);
        let browser = l(&["h2", "http/1.1"]);
        assert_eq!(
            offer(&browser, &allowed, false),
            Offer::Protocols(l(&["h2", "http/1.1"]))
        );
        assert_eq!(
            offer(&l(&["http/1.1", "h2"]), &allowed, false),
            Offer::Protocols(l(&["http/1.1", "h2"]))
        );
        assert_eq!(
            offer(&l(&["spdy/3", "http/1.1"]), &allowed, false),
            Offer::Protocols(l(&["http/1.1"]))
        );
    }

    #[test]
    fn a_shared_certificate_withholds_h2() {
        let allowed = l(&["h2", "http/1.1"]);
        assert_eq!(
            offer(&l(&["h2", "http/1.1"]), &allowed, true),
            Offer::Protocols(l(&["http/1.1"]))
        );
        // An h2-only client (gRPC) has nothing left.
        assert_eq!(offer(&l(&["h2"]), &allowed, true), Offer::Mismatch);
    }

    #[test]
    fn no_client_alpn_offers_none_and_no_overlap_is_a_mismatch() {
        let allowed = l(&["http/1.1"]);
        assert_eq!(offer(&[], &allowed, false), Offer::Protocols(vec![]));
        assert_eq!(offer(&l(&["h2"]), &allowed, false), Offer::Mismatch);
        assert_eq!(offer(&l(&["h2"]), &[], false), Offer::Mismatch);
    }

    #[test]
    fn server_lists_cover_every_selection() {
        let allowed = l(&["h2", "http/1.1"]);
        assert_eq!(
            server_lists(&allowed, true),
            vec![vec![], l(&["h2"]), l(&["http/1.1"])]
        );
        assert_eq!(
            server_lists(&allowed, false),
            vec![allowed.clone(), l(&["http/1.1"])]
        );
        assert_eq!(without_h2(&l(&["h2"])), Vec::<Vec<u8>>::new());
    }
}
