//! The ticket `ferry send` prints and `ferry recv` takes: everything a receiver needs to reach a
//! sender safely, as one short copy-pasteable string with no whitespace.
//!
//! Text form: `ferry` + the format version in decimal (`1`) + lowercase unpadded base32
//! (RFC 4648 alphabet `a-z2-7`; decoding ignores case) of the binary ticket:
//!
//! ```text
//! count: u8 (1..=32)                  number of addresses
//! count × (family: u8 = 4 | 6, then 4 or 16 address bytes)
//! port: u16 big-endian
//! token: 16 bytes                     presented to the sender, proves the ticket was seen
//! fingerprint: 32 bytes               SHA-256 of the sender's TLS certificate (DER)
//! manifest: 32 bytes                  BLAKE3 of the manifest's bytes
//! checksum: 4 bytes                   first 4 bytes of BLAKE3(version byte ‖ everything above)
//! ```
//!
//! The checksum makes a mistyped, changed or cut ticket fail to decode with a clear message
//! before any connection is tried. Since the first binary byte is below `0xd0`, the first base32
//! character is a letter, so the decimal version before it always reads unambiguously.
//!
//! The frame (`ferry`, decimal version, base32, trailing 4-byte checksum over the version byte and
//! the payload) stays the same in later versions, so that this ferry can tell a ticket from a
//! newer ferry apart from a damaged one.

use data_encoding::Encoding;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// The text every ticket starts with.
pub const PREFIX: &str = "ferry";
/// The ticket format this ferry writes and reads.
pub const TICKET_VERSION: u8 = 1;
/// At most this many addresses are written into a ticket; further ones are left out.
pub const MAX_ADDRS: usize = 32;
const CHECKSUM_LEN: usize = 4;

/// Where to reach a sender and what to expect from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Addresses of the sender, to try in order.
    pub addrs: Vec<IpAddr>,
    /// The sender's TCP port.
    pub port: u16,
    /// The secret the receiver presents to the sender.
    pub token: [u8; 16],
    /// SHA-256 of the sender's TLS certificate (DER).
    pub fingerprint: [u8; 32],
    /// BLAKE3 of the manifest bytes (see `Manifest::hash_of`).
    pub manifest: [u8; 32],
}

/// Why a ticket's text could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketError {
    /// It does not start with `ferry` and a version number.
    #[error(
        "not a ferry ticket: a ticket starts with \"ferry1\"; copy the whole line that `ferry send` printed"
    )]
    NotATicket,
    /// Its version is newer than this ferry reads.
    #[error(
        "this ticket was made by a newer ferry (version {0}; this ferry reads version {TICKET_VERSION}): \
         update ferry on this machine"
    )]
    Newer(u8),
    /// The checksum does not match: a character was changed.
    #[error(
        "the ticket is damaged: a character was mistyped or changed (checksum mismatch); copy it \
         again from the sender's output"
    )]
    Damaged,
    /// The text ends before the ticket does.
    #[error(
        "the ticket is truncated: its end is missing; copy the whole line that `ferry send` printed"
    )]
    Truncated,
    /// It lists no address.
    #[error(
        "the ticket has no addresses to connect to; run `ferry send` on a machine with a network \
         address (or give it one with --listen)"
    )]
    NoAddresses,
}

/// RFC 4648 base32, lowercase, no padding; decodes either case; non-zero trailing bits refused.
static BASE32: LazyLock<Encoding> = LazyLock::new(|| base32(true));
/// The same, accepting non-zero trailing bits (only to tell a cut ticket from a changed one).
static BASE32_LENIENT: LazyLock<Encoding> = LazyLock::new(|| base32(false));

fn base32(check_trailing_bits: bool) -> Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.check_trailing_bits = check_trailing_bits;
    spec.encoding().expect("a valid base32 specification")
}

fn checksum(version: u8, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(&[version]);
    h.update(payload);
    let mut out = [0; CHECKSUM_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

/// Why a version-1 payload did not parse.
enum Short {
    /// The bytes ran out before the structure was complete.
    Truncated,
    /// Something other than running out (bad family tag, extra bytes, zero count).
    Malformed,
}

/// Length of a whole version-1 binary ticket (checksum included) whose start is `bin`, as far
/// as its address list tells.
fn expected_len(bin: &[u8]) -> Result<usize, Short> {
    let count = *bin.first().ok_or(Short::Truncated)? as usize;
    if count > MAX_ADDRS {
        return Err(Short::Malformed);
    }
    let mut at = 1;
    for _ in 0..count {
        at += match bin.get(at).ok_or(Short::Truncated)? {
            4 => 5,
            6 => 17,
            _ => return Err(Short::Malformed),
        };
    }
    Ok(at + 2 + 16 + 32 + 32 + CHECKSUM_LEN)
}

fn parse_payload(p: &[u8]) -> Result<Ticket, Short> {
    let mut rd = p;
    let mut take = |n: usize| -> Result<&[u8], Short> {
        if rd.len() < n {
            return Err(Short::Truncated);
        }
        let (head, tail) = rd.split_at(n);
        rd = tail;
        Ok(head)
    };
    let count = take(1)?[0] as usize;
    if count > MAX_ADDRS {
        return Err(Short::Malformed);
    }
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let addr = match take(1)?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(take(4)?).expect("4 bytes"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(take(16)?).expect("16 bytes"),
            )),
            _ => return Err(Short::Malformed),
        };
        addrs.push(addr);
    }
    let port = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
    let token = take(16)?.try_into().expect("16 bytes");
    let fingerprint = take(32)?.try_into().expect("32 bytes");
    let manifest = take(32)?.try_into().expect("32 bytes");
    if !rd.is_empty() {
        return Err(Short::Malformed);
    }
    Ok(Ticket {
        addrs,
        port,
        token,
        fingerprint,
        manifest,
    })
}

impl Ticket {
    /// The ticket as text: `ferry1` followed by lowercase base32, no whitespace. At most
    /// [`MAX_ADDRS`] addresses are written (the first ones).
    pub fn encode(&self) -> String {
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        let mut bin = Vec::with_capacity(1 + addrs.len() * 17 + 82 + CHECKSUM_LEN);
        bin.push(addrs.len() as u8);
        for a in addrs {
            match a {
                IpAddr::V4(v4) => {
                    bin.push(4);
                    bin.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    bin.push(6);
                    bin.extend_from_slice(&v6.octets());
                }
            }
        }
        bin.extend_from_slice(&self.port.to_be_bytes());
        bin.extend_from_slice(&self.token);
        bin.extend_from_slice(&self.fingerprint);
        bin.extend_from_slice(&self.manifest);
        let sum = checksum(TICKET_VERSION, &bin);
        bin.extend_from_slice(&sum);
        format!("{PREFIX}{TICKET_VERSION}{}", BASE32.encode(&bin))
    }

    /// Reads a ticket. Surrounding whitespace is ignored (and so is whitespace inside, in case a
    /// terminal wrapped it), and so is case. Refuses, before any connection: text that is not a
    /// ticket, a ticket from a newer ferry, a damaged or truncated one, and one with no address.
    pub fn decode(text: &str) -> Result<Ticket, TicketError> {
        let text: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let rest = text.strip_prefix(PREFIX).ok_or(TicketError::NotATicket)?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if rest.is_empty() {
            return Err(TicketError::Truncated);
        }
        if digits == 0 {
            // "ferry" then something else: the version digit was lost or changed.
            return Err(TicketError::Damaged);
        }
        let (version, body) = rest.split_at(digits);
        // A version that does not fit a byte or starts with 0 was never written by any ferry.
        let version: u8 = match version.parse() {
            Ok(v) if v > 0 && !version.starts_with('0') => v,
            _ => return Err(TicketError::Damaged),
        };
        if body.is_empty() {
            return Err(TicketError::Truncated);
        }
        // Cut short, or changed? A binary too short to hold a whole ticket was most likely cut.
        let cut_or_changed = |bin: &[u8]| {
            let short = match expected_len(bin) {
                Ok(n) => n > bin.len(),
                Err(Short::Truncated) => true,
                Err(Short::Malformed) => false,
            };
            if version == TICKET_VERSION && short {
                TicketError::Truncated
            } else {
                TicketError::Damaged
            }
        };
        let bin = match BASE32.decode(body.as_bytes()) {
            Ok(bin) => bin,
            Err(e) if e.kind == data_encoding::DecodeKind::Length => {
                return Err(TicketError::Truncated);
            }
            // Non-zero bits after the last byte: a ticket cut in the middle of a character, or a
            // changed last character.
            Err(e) if e.kind == data_encoding::DecodeKind::Trailing => {
                let bin = BASE32_LENIENT
                    .decode(body.as_bytes())
                    .map_err(|_| TicketError::Damaged)?;
                return Err(cut_or_changed(&bin));
            }
            Err(_) => return Err(TicketError::Damaged),
        };
        let Some(split) = bin.len().checked_sub(CHECKSUM_LEN) else {
            return Err(TicketError::Truncated);
        };
        let (payload, sum) = bin.split_at(split);
        if checksum(version, payload) != sum {
            return Err(cut_or_changed(&bin));
        }
        if version > TICKET_VERSION {
            return Err(TicketError::Newer(version));
        }
        if version < TICKET_VERSION {
            return Err(TicketError::Damaged);
        }
        let ticket = parse_payload(payload).map_err(|_| TicketError::Damaged)?;
        if ticket.addrs.is_empty() {
            return Err(TicketError::NoAddresses);
        }
        Ok(ticket)
    }

    /// The token as lowercase hex (how it travels over HTTP).
    pub fn token_hex(&self) -> String {
        hex::encode(self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Ticket {
        Ticket {
            addrs: vec![
                "192.168.1.20".parse().unwrap(),
                "fe80::1c2b:3dff:fe4e:5f60".parse().unwrap(),
                "10.0.0.7".parse().unwrap(),
            ],
            port: 43817,
            token: *b"0123456789abcdef",
            fingerprint: *blake3::hash(b"cert").as_bytes(),
            manifest: *blake3::hash(b"manifest").as_bytes(),
        }
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let t = sample();
        let s = t.encode();
        assert!(s.starts_with("ferry1"), "{s}");
        assert!(!s.chars().any(char::is_whitespace));
        assert!(
            s[6..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(Ticket::decode(&s).unwrap(), t);
        // Case and surrounding (or wrapped-in) whitespace do not matter.
        assert_eq!(
            Ticket::decode(&format!("  {}\n", s.to_uppercase())).unwrap(),
            t
        );
        let wrapped = format!("{}\n  {}", &s[..40], &s[40..]);
        assert_eq!(Ticket::decode(&wrapped).unwrap(), t);

        let one = Ticket {
            addrs: vec!["::1".parse().unwrap()],
            ..t.clone()
        };
        assert_eq!(Ticket::decode(&one.encode()).unwrap(), one);
        assert_eq!(t.token_hex(), "30313233343536373839616263646566");
    }

    #[test]
    fn first_base32_character_is_a_letter() {
        for n in 0..=MAX_ADDRS {
            let t = Ticket {
                addrs: vec![IpAddr::V6(Ipv6Addr::LOCALHOST); n],
                ..sample()
            };
            let s = t.encode();
            assert!(s.as_bytes()[6].is_ascii_lowercase(), "{n}: {s}");
        }
    }

    #[test]
    fn every_single_character_change_is_detected() {
        let s = sample().encode();
        let alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        let mut tried = 0;
        for (i, orig) in s.char_indices() {
            for c in alphabet.chars().filter(|&c| c != orig) {
                let mut changed = s.clone();
                changed.replace_range(i..i + 1, c.encode_utf8(&mut [0; 4]));
                let err = Ticket::decode(&changed).expect_err(&changed);
                if i >= PREFIX.len() {
                    assert!(
                        matches!(err, TicketError::Damaged | TicketError::Truncated),
                        "{changed}: {err:?}"
                    );
                }
                tried += 1;
            }
        }
        assert!(tried > 5000);
        // Removing or doubling any one character is caught too.
        for i in 0..s.len() {
            let mut removed = s.clone();
            removed.remove(i);
            assert!(Ticket::decode(&removed).is_err(), "{removed}");
            let mut doubled = s.clone();
            doubled.insert(i, s.as_bytes()[i] as char);
            assert!(Ticket::decode(&doubled).is_err(), "{doubled}");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let s = sample().encode();
        for len in PREFIX.len()..s.len() {
            let err = Ticket::decode(&s[..len]).unwrap_err();
            assert_eq!(err, TicketError::Truncated, "cut at {len}");
        }
        assert!(
            TicketError::Truncated.to_string().contains("truncated"),
            "message names the problem"
        );
    }

    #[test]
    fn wrong_prefix_is_not_a_ticket() {
        let s = sample().encode();
        for bad in [
            "",
            "hello",
            "https://example.com/file",
            &s[1..],
            &s.replacen("ferry", "fery", 1),
        ] {
            assert_eq!(Ticket::decode(bad), Err(TicketError::NotATicket), "{bad}");
        }
        // "ferry" and then no version: damaged (or cut right after the prefix).
        let no_version = s.replacen("ferry1", "ferry", 1);
        assert_eq!(Ticket::decode(&no_version), Err(TicketError::Damaged));
        assert_eq!(Ticket::decode("ferry"), Err(TicketError::Truncated));
        assert!(
            TicketError::NotATicket
                .to_string()
                .contains("not a ferry ticket")
        );
    }

    #[test]
    fn newer_version_is_named() {
        // What a future ferry with the same frame would write.
        let payload = b"some future payload";
        let mut bin = payload.to_vec();
        bin.extend_from_slice(&checksum(2, payload));
        let s = format!("ferry2{}", BASE32.encode(&bin));
        let err = Ticket::decode(&s).unwrap_err();
        assert_eq!(err, TicketError::Newer(2));
        assert!(err.to_string().contains("newer ferry (version 2"), "{err}");
    }

    #[test]
    fn no_addresses_is_refused() {
        let t = Ticket {
            addrs: vec![],
            ..sample()
        };
        assert_eq!(Ticket::decode(&t.encode()), Err(TicketError::NoAddresses));
    }

    #[test]
    fn too_many_addresses_keeps_the_first() {
        let addrs: Vec<IpAddr> = (0..40u8)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
            .collect();
        let t = Ticket {
            addrs: addrs.clone(),
            ..sample()
        };
        let back = Ticket::decode(&t.encode()).unwrap();
        assert_eq!(back.addrs, addrs[..MAX_ADDRS]);
    }

    fn any_ticket() -> impl Strategy<Value = Ticket> {
        let addr = prop_oneof![
            any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        ];
        (
            proptest::collection::vec(addr, 1..=MAX_ADDRS),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(addrs, port, token, fingerprint, manifest)| Ticket {
                addrs,
                port,
                token,
                fingerprint,
                manifest,
            })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*", tail in "[a-z2-7]{0,200}") {
            let _ = Ticket::decode(&text);
            let _ = Ticket::decode(&format!("ferry1{tail}"));
            let _ = Ticket::decode(&format!("ferry{text}"));
        }

        #[test]
        fn encode_then_decode_round_trips(t in any_ticket()) {
            prop_assert_eq!(Ticket::decode(&t.encode()), Ok(t));
        }

        #[test]
        fn any_single_character_change_is_refused(
            t in any_ticket(),
            at in any::<proptest::sample::Index>(),
            with in proptest::char::any(),
        ) {
            let s = t.encode();
            let i = at.index(s.len());
            let old = s.as_bytes()[i] as char;
            // Case is not a change (decoding ignores it), and whitespace is skipped as a wrap.
            prop_assume!(!with.eq_ignore_ascii_case(&old) && !with.is_whitespace());
            let changed = format!("{}{with}{}", &s[..i], &s[i + 1..]);
            prop_assert!(Ticket::decode(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn a_cut_ticket_is_refused(t in any_ticket(), at in any::<proptest::sample::Index>()) {
            let s = t.encode();
            let cut = &s[..at.index(s.len())];
            prop_assert!(Ticket::decode(cut).is_err(), "{} accepted", cut);
        }
    }
}
