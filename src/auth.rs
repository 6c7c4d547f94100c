//! Caller authentication: a bearer token per calling service, from config
//! (or a mounted secret file, read again on SIGHUP), checked in constant
//! time. `SlotAdmin` needs
//! an admin caller. With no tokens configured, authentication is off (local
//! runs); the k8s manifests turn it on.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use subtle::{Choice, ConstantTimeEq};
use tonic::{Code, codegen::http::Request};

use crate::{
    precheck::Precheck,
    status::{Refusal, reason},
};

/// Longest token accepted, in bytes; tokens are compared padded to this.
const MAX_TOKEN: usize = 128;
/// Shortest token accepted in config: anything shorter is guessable.
const MIN_TOKEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May call `Reservations`.
    Caller,
    /// May call everything, `SlotAdmin` included.
    Admin,
}

/// Who is calling; in every business request's extensions when auth is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

struct Entry {
    caller: Caller,
    padded: [u8; MAX_TOKEN],
    len: u64,
}

/// The configured tokens. Never printed.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Entry>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

fn pad(token: &[u8]) -> Option<[u8; MAX_TOKEN]> {
    let mut padded = [0u8; MAX_TOKEN];
    padded.get_mut(..token.len())?.copy_from_slice(token);
    Some(padded)
}

impl Tokens {
    /// Parses `name:role:token` entries, separated by commas or newlines;
    /// `#` starts a comment line. Roles: `caller`, `admin`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut names = HashMap::new();
        for entry in spec.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty() && !e.starts_with('#')) {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
                return Err("each token entry is name:role:token".into());
            };
            let role = match role {
                "caller" => Role::Caller,
                "admin" => Role::Admin,
                other => return Err(format!("token {name}: unknown role {other:?} (caller or admin)")),
            };
            if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len()) {
                return Err(format!("token {name}: must be {MIN_TOKEN} to {MAX_TOKEN} bytes"));
            }
            if names.insert(name.to_owned(), ()).is_some() {
                return Err(format!("token {name}: name given twice"));
            }
            let padded = pad(token.as_bytes()).expect("length checked above");
            entries.push(Entry { caller: Caller { name: name.to_owned(), role }, padded, len: token.len() as u64 });
        }
        Ok(Self(Arc::new(entries)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller a presented token belongs to. Compares against every
    /// configured token, each in full, whatever matches: the time taken says
    /// nothing about how much of which token was right.
    pub fn identify(&self, presented: &[u8]) -> Option<Caller> {
        let padded = pad(presented)?;
        let len = presented.len() as u64;
        let mut found = None;
        for entry in self.0.iter() {
            let same: Choice = entry.padded.ct_eq(&padded) & entry.len.ct_eq(&len);
            if bool::from(same) {
                found = Some(entry.caller.clone());
            }
        }
        found
    }
}

/// The tokens in force: read at start from `--auth-tokens` and
/// `--auth-tokens-file`, and again on [`Credentials::reload`] (SIGHUP),
/// which replaces the whole set at once. A reload cannot switch
/// authentication on or off: one that finds no tokens while it is on (an
/// emptied or half-written file) is refused and the old set stays, so a
/// broken Secret never opens the service.
#[derive(Debug, Clone)]
pub struct Credentials {
    inline: Arc<str>,
    file: Option<PathBuf>,
    current: Arc<RwLock<Tokens>>,
}

impl Credentials {
    pub fn load(inline: &str, file: Option<&Path>) -> Result<Self, String> {
        let tokens = read_tokens(inline, file)?;
        Ok(Self { inline: inline.into(), file: file.map(Path::to_owned), current: Arc::new(RwLock::new(tokens)) })
    }

    pub fn is_on(&self) -> bool {
        !self.current().is_empty()
    }

    fn current(&self) -> Tokens {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the tokens again; returns how many are in force now.
    pub fn reload(&self) -> Result<usize, String> {
        let tokens = read_tokens(&self.inline, self.file.as_deref())?;
        match (self.is_on(), tokens.is_empty()) {
            (true, true) => {
                Err("no tokens found; the ones in force stay (a reload cannot turn authentication off)".into())
            }
            (false, false) => Err("authentication was off at start; restart to turn it on".into()),
            _ => {
                let count = tokens.0.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = tokens;
                Ok(count)
            }
        }
    }
}

fn read_tokens(inline: &str, file: Option<&Path>) -> Result<Tokens, String> {
    let mut spec = inline.to_owned();
    if let Some(file) = file {
        let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let text = String::from_utf8(text).map_err(|_| format!("{} is not UTF-8", file.display()))?;
        spec = format!("{spec}\n{text}");
    }
    Tokens::parse(&spec)
}

/// The token of an `authorization` value of the Bearer scheme. The scheme
/// name is case-insensitive and may be followed by several spaces (RFC
/// 7235, section 2.1): `bearer <token>` is `Bearer <token>`.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii_start();
    (!token.is_empty()).then_some(token)
}

/// Checks the `authorization: Bearer <token>` header of business calls,
/// and puts the [`Caller`] in the request's extensions.
impl Precheck for Credentials {
    fn check<B>(&self, request: &mut Request<B>) -> Result<(), Refusal> {
        // Read in place: no copy of the set per call.
        let tokens = self.current.read().unwrap_or_else(|e| e.into_inner());
        if tokens.is_empty() {
            return Ok(());
        }
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| bearer_token(v.as_bytes()))
            .and_then(|token| tokens.identify(token));
        match presented {
            None => {
                Err(Refusal::new(Code::Unauthenticated, reason::UNAUTHENTICATED, "a valid bearer token is required"))
            }
            Some(caller)
                if caller.role != Role::Admin && request.uri().path().starts_with("/slotgate.v1.SlotAdmin/") =>
            {
                Err(Refusal::new(Code::PermissionDenied, reason::ADMIN_REQUIRED, "SlotAdmin needs an admin caller"))
            }
            Some(caller) => {
                request.extensions_mut().insert(caller);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_their_caller_and_nothing_else() {
        let tokens = Tokens::parse("web:caller:aaaaaaaaaaaaaaaa1, ops:admin:bbbbbbbbbbbbbbbb2\n# comment").unwrap();
        assert_eq!(tokens.identify(b"aaaaaaaaaaaaaaaa1").unwrap().name, "web");
        assert_eq!(tokens.identify(b"bbbbbbbbbbbbbbbb2").unwrap().role, Role::Admin);
        assert_eq!(tokens.identify(b"aaaaaaaaaaaaaaaa"), None, "a prefix is not the token");
        assert_eq!(tokens.identify(b"aaaaaaaaaaaaaaaa1\0"), None, "nor is the token padded");
        assert_eq!(tokens.identify(&[b'a'; 200]), None);
        assert_eq!(tokens.identify(b""), None);
    }

    #[test]
    fn the_bearer_schemes_name_is_read_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc"] {
            assert_eq!(bearer_token(value.as_bytes()), Some(&b"abc"[..]), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "Bearer ", "Bearer", "abc"] {
            assert_eq!(bearer_token(value.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn a_reload_replaces_the_tokens_but_never_turns_authentication_on_or_off() {
        let file = std::env::temp_dir().join(format!("slotgate-tokens-{}", std::process::id()));
        std::fs::write(&file, "web:caller:aaaaaaaaaaaaaaaa1\n").unwrap();
        let credentials = Credentials::load("", Some(&file)).unwrap();
        assert!(credentials.current().identify(b"aaaaaaaaaaaaaaaa1").is_some());
        std::fs::write(&file, "web:caller:bbbbbbbbbbbbbbbb2\n").unwrap();
        assert_eq!(credentials.reload(), Ok(1));
        assert!(credentials.current().identify(b"aaaaaaaaaaaaaaaa1").is_none(), "the old token is gone");
        assert!(credentials.current().identify(b"bbbbbbbbbbbbbbbb2").is_some());
        std::fs::write(&file, "").unwrap();
        assert!(credentials.reload().is_err());
        std::fs::write(&file, "web:caller:short").unwrap();
        assert!(credentials.reload().is_err());
        assert!(credentials.current().identify(b"bbbbbbbbbbbbbbbb2").is_some(), "a failed reload keeps the set");
        std::fs::remove_file(&file).unwrap();
        let off = Credentials::load("", None).unwrap();
        assert!(!off.is_on() && off.reload() == Ok(0));
    }

    #[test]
    fn weak_malformed_or_repeated_token_entries_are_refused() {
        assert!(Tokens::parse("web:caller:short").is_err());
        assert!(Tokens::parse("web:root:aaaaaaaaaaaaaaaa").is_err());
        assert!(Tokens::parse("web-aaaaaaaaaaaaaaaa").is_err());
        assert!(Tokens::parse("web:caller:aaaaaaaaaaaaaaaa,web:admin:bbbbbbbbbbbbbbbb").is_err());
        assert!(Tokens::parse("").unwrap().is_empty());
        assert_eq!(format!("{:?}", Tokens::parse("web:caller:aaaaaaaaaaaaaaaa").unwrap()), "Tokens(1 configured)");
    }
}
