use std::{fmt, str::FromStr};

use uuid::Uuid;

/// Names a reservation in Redis (its hold), in PostgreSQL (its primary key)
/// and to callers. Derived from the caller's `request_id`, so every retry of
/// one attempt names the same reservation before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationId(pub Uuid);

/// Fixed namespace of the UUIDv5 derivation. Changing it would give existing
/// request ids new reservation ids, breaking replays: never change it.
const NAMESPACE: Uuid = Uuid::from_u128(0x5e47_6a7e_0000_4000_8000_736c_6f74_6761);

impl ReservationId {
    /// The id of the reservation `caller` asks for with `request_id`. Each
    /// calling service has request ids of its own; without authentication
    /// the caller is empty.
    pub fn for_request(caller: &str, request_id: &str) -> Self {
        if caller.is_empty() {
            Self(Uuid::new_v5(&NAMESPACE, request_id.as_bytes()))
        } else {
            Self(Uuid::new_v5(&NAMESPACE, format!("{caller}\0{request_id}").as_bytes()))
        }
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ReservationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// The short human-facing code printed on a booking, e.g. `SG-7K2M-9QXD-4B1T`:
/// 60 bits in Crockford base32 (no I, L, O, U to misread). With `salt` 0
/// they are the id's own hash bits (the 60 bits at its top, skipping the
/// version nibble every id shares); a code another reservation already has
/// is replaced by one made with the next salt. Made before the insert, so
/// the winner's transaction needs no second statement to fill it in; the
/// database keeps it unique, and the code a reservation got is stored with
/// it.
pub fn reservation_code(id: ReservationId, salt: u32) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let raw = id.0.as_u128();
    let bits = if salt == 0 {
        // 48 bits above the version nibble, then the 12 below it.
        (((raw >> 80) as u64) << 12) | ((raw >> 64) as u64 & 0xfff)
    } else {
        let mut seed = id.0.as_bytes().to_vec();
        seed.extend_from_slice(&salt.to_be_bytes());
        fnv1a64(&seed) as u64 >> 4
    };
    let mut code = String::from("SG");
    for i in 0..12 {
        if i % 4 == 0 {
            code.push('-');
        }
        let shift = 55 - 5 * i;
        code.push(ALPHABET[((bits >> shift) & 31) as usize] as char);
    }
    code
}

/// A reservation code as a caller typed it, in the form the database holds:
/// upper case, with the letters Crockford base32 reads as digits (I and L
/// as 1, O as 0) turned into them. `None` if it is not a code at all.
pub fn parse_code(typed: &str) -> Option<String> {
    let upper = typed.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix("SG-")?;
    let groups: Vec<&str> = rest.split('-').collect();
    if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
        return None;
    }
    let mut code = String::from("SG");
    for group in groups {
        code.push('-');
        for c in group.chars() {
            let c = match c {
                'I' | 'L' => '1',
                'O' => '0',
                c if c.is_ascii_digit() || (c.is_ascii_uppercase() && c != 'U') => c,
                _ => return None,
            };
            code.push(c);
        }
    }
    Some(code)
}

/// FNV-1a, 64 bits: a stable digest of a request's canonical payload, to
/// tell a replay (same payload) from a reused request id. Stability across
/// builds matters (it is stored); collision resistance against an attacker
/// does not (a caller can only confuse its own requests).
pub(super) fn fnv1a64(bytes: &[u8]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_id_always_names_the_same_reservation() {
        let a = ReservationId::for_request("", "req-1");
        assert_eq!(a, ReservationId::for_request("", "req-1"));
        assert_ne!(a, ReservationId::for_request("", "req-2"));
        assert_ne!(a, ReservationId::for_request("web", "req-1"), "callers have request ids of their own");
        assert_eq!(a.to_string().parse::<ReservationId>().unwrap(), a);
    }

    #[test]
    fn a_code_has_three_groups_of_four_unambiguous_characters() {
        let id = ReservationId::for_request("", "req-1");
        let code = reservation_code(id, 0);
        assert_eq!(code.len(), "SG-XXXX-XXXX-XXXX".len(), "{code}");
        assert!(code.starts_with("SG-"));
        assert!(!code[3..].contains(['I', 'L', 'O', 'U']));
        assert_ne!(code, reservation_code(ReservationId::for_request("", "req-2"), 0));
        assert_ne!(code, reservation_code(id, 1), "a salt makes another code");
    }

    #[test]
    fn a_code_uses_sixty_bits_of_the_id_and_none_of_its_version_nibble() {
        // Ids differing only in the bits next to the version nibble still
        // get different codes; the nibble itself changes nothing.
        let base = uuid::Uuid::from_u128(0x1234_5678_9abc_5def_8000_0000_0000_0000);
        let code = |u: u128| reservation_code(ReservationId(uuid::Uuid::from_u128(u)), 0);
        assert_ne!(code(base.as_u128()), code(base.as_u128() ^ (1 << 64)));
        assert_eq!(code(base.as_u128()), code(base.as_u128() ^ (0xf << 76)));
    }

    #[test]
    fn a_typed_code_is_read_in_either_case_with_crockfords_look_alikes() {
        let code = reservation_code(ReservationId::for_request("", "req-1"), 0);
        assert_eq!(parse_code(&code.to_lowercase()).as_deref(), Some(code.as_str()));
        assert_eq!(parse_code(" sg-0o1l-iI00-AB12 ").as_deref(), Some("SG-0011-1100-AB12"));
        for bad in ["", "SG-1234-5678", "XX-1234-5678-9ABC", "SG-1234-5678-9ABU", "SG-12345-678-9ABC"] {
            assert_eq!(parse_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn fnv_matches_its_published_test_vector() {
        assert_eq!(fnv1a64(b"a") as u64, 0xaf63_dc4c_8601_ec8c);
    }
}
