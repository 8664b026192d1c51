//! The one TLS record the proxy writes itself: a fatal alert refusing a
//! connection before any handshake, so the client sees why instead of a reset.

/// Alert description `unrecognized_name` (RFC 6066, section 3).
pub const UNRECOGNIZED_NAME: u8 = 112;
/// Alert description `no_application_protocol` (RFC 7301, section 3.2).
pub const NO_APPLICATION_PROTOCOL: u8 = 120;
/// Alert description `handshake_failure`.
pub const HANDSHAKE_FAILURE: u8 = 40;

/// A plaintext fatal alert record. The record version is TLS 1.0 (0x0301),
/// which every client accepts before version negotiation.
pub fn fatal(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, description]
}

#[cfg(test)]
mod tests {
    #[test]
    fn unrecognized_name_record() {
        assert_eq!(
            super::fatal(super::UNRECOGNIZED_NAME),
            [21, 3, 1, 0, 2, 2, 112]
        );
    }
}
