//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP) with HMAC-SHA-1, the
//! variant every authenticator app speaks, plus the base32 text form of the secret.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per code.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps either side of now still accepted, for clocks that drift and slow typists.
pub const WINDOW: u64 = 1;
/// Bytes of a new secret: 160 bits, the HMAC-SHA-1 block the RFC recommends.
pub const SECRET_LEN: usize = 20;

/// The HOTP value of `counter` under `key`, with `digits` digits (RFC 4226 section 5.3).
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC accepts keys of any length, so this never fails.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return 0;
    };
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[hash.len() - 1] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The time step a unix time falls in.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The code for a time step, zero-padded.
pub fn code_for_step(key: &[u8], step: u64, digits: u32) -> String {
    format!(
        "{:0width$}",
        hotp(key, step, digits),
        width = digits as usize
    )
}

/// The step, within [`WINDOW`] of `unix_secs`, whose code `code` is; `None` when the code
/// matches none. Every candidate is compared, and in constant time, so the answer's timing
/// does not tell which step matched or how much of the code was right.
pub fn verify(key: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_secs);
    let mut found = None;
    for step in now.saturating_sub(WINDOW)..=now + WINDOW {
        let expected = code_for_step(key, step, DIGITS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding, as authenticator apps expect secrets.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (any case, spaces and padding ignored); `None` for other characters.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let value = BASE32
            .iter()
            .position(|&b| b as char == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The `otpauth://` URI authenticator apps scan from a QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label = format!("{}:{}", percent_encode(issuer), percent_encode(account));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        base32_encode(secret),
        percent_encode(issuer)
    )
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The SHA-1 seed of RFC 6238 appendix B.
    const RFC_KEY: &[u8] = b"12345678901234567890";

    /// (unix time, 8-digit TOTP) from RFC 6238 appendix B, SHA-1 column.
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc_6238_vectors_with_eight_digits() {
        for (time, expected) in RFC_VECTORS {
            assert_eq!(
                code_for_step(RFC_KEY, step_at(time), 8),
                expected,
                "T={time}"
            );
        }
    }

    #[test]
    fn six_digit_codes_are_the_same_truncation() {
        // Truncation takes the value modulo 10^digits, so a 6-digit code is the last six
        // digits of the 8-digit one.
        for (time, eight) in RFC_VECTORS {
            assert_eq!(
                code_for_step(RFC_KEY, step_at(time), 6),
                eight[2..],
                "T={time}"
            );
        }
        assert_eq!(code_for_step(RFC_KEY, step_at(59), 6), "287082");
    }

    #[test]
    fn rfc_4226_hotp_vectors() {
        let expected = [755224, 287082, 359152, 969429, 338314];
        for (counter, value) in expected.into_iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), value);
        }
    }

    #[test]
    fn verify_accepts_one_step_either_side_and_no_more() {
        let now = 1_234_567_890;
        let step = step_at(now);
        for offset in [-1i64, 0, 1] {
            let s = (step as i64 + offset) as u64;
            let code = code_for_step(RFC_KEY, s, DIGITS);
            assert_eq!(verify(RFC_KEY, &code, now), Some(s), "offset {offset}");
        }
        for offset in [-3i64, -2, 2, 3] {
            let code = code_for_step(RFC_KEY, (step as i64 + offset) as u64, DIGITS);
            let current = code_for_step(RFC_KEY, step, DIGITS);
            if code != current {
                assert_eq!(verify(RFC_KEY, &code, now), None, "offset {offset}");
            }
        }
        assert_eq!(verify(RFC_KEY, "12345", now), None);
        assert_eq!(verify(RFC_KEY, "abcdef", now), None);
        assert_eq!(verify(RFC_KEY, "", now), None);
        let spaced = code_for_step(RFC_KEY, step, DIGITS);
        let spaced = format!("{} {}", &spaced[..3], &spaced[3..]);
        assert_eq!(verify(RFC_KEY, &spaced, now), Some(step));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32_encode(b""), "");
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32_decode("MZXW6YTBOI======").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(
            base32_decode("mzxw 6ytb oi").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(base32_decode("MZ1"), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri("tradegraph", "ann@example.com", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/tradegraph:ann%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=tradegraph&algorithm=SHA1&digits=6&period=30"
        );
    }

    proptest! {
        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(base32_decode(&base32_encode(&bytes)), Some(bytes));
        }

        #[test]
        fn the_current_code_always_verifies(key in proptest::collection::vec(any::<u8>(), 1..40), time in 30u64..4_000_000_000) {
            let code = code_for_step(&key, step_at(time), DIGITS);
            prop_assert_eq!(code.len(), 6);
            let step = verify(&key, &code, time);
            prop_assert!(step.is_some());
            // A code of an adjacent step may coincide; the match is always within the window.
            let step = step.unwrap_or_default();
            prop_assert!(step + WINDOW >= step_at(time) && step <= step_at(time) + WINDOW);
        }
    }
}
