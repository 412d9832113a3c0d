//! The operator page's login sessions: a random token in an `HttpOnly;
//! SameSite=Strict` cookie, kept here only as its SHA-256, with an expiry
//! and who logged in. Failed logins are limited per client address.
//!
//! Sessions live in this process: behind a load balancer over several
//! replicas, the page needs sticky sessions (or a login per replica).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "castari_gw_session";

/// Login attempts allowed per client address per minute.
pub const ATTEMPTS_PER_MINUTE: u32 = 10;

/// Who a session belongs to.
#[derive(Clone, PartialEq, Eq)]
pub enum Principal {
    /// The holder of the admin key, by its SHA-256: the session ends when
    /// the admin key changes.
    AdminKey([u8; 32]),
    /// A local key with the `admin` role, by id: the session ends when the
    /// key is revoked, expires or loses the role.
    Key(String),
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AdminKey(_) => f.write_str("AdminKey"),
            Self::Key(id) => f.debug_tuple("Key").field(id).finish(),
        }
    }
}

#[derive(Debug)]
struct Session {
    expires: Instant,
    principal: Principal,
}

/// Every open session, by the hash of its token.
#[derive(Debug)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    attempts: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// No sessions yet.
    pub fn new() -> Self {
        let per_minute = NonZeroU32::new(ATTEMPTS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self {
            open: Mutex::new(HashMap::new()),
            attempts: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Counts a login attempt from `client`. `Err(wait)`: too many in the
    /// last minute; try again after `wait`.
    pub fn attempt(&self, client: IpAddr) -> Result<(), Duration> {
        use governor::clock::Clock;
        let clock = governor::clock::DefaultClock::default();
        self.attempts
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    /// Opens a session for `principal` that lasts `ttl`: the token for
    /// the cookie, or `None` without the OS's randomness (no safe token).
    pub fn open(&self, principal: Principal, ttl: Duration) -> Option<String> {
        let mut bytes = [0u8; 32];
        if getrandom::fill(&mut bytes).is_err() {
            tracing::error!("no randomness for a session token; login refused");
            return None;
        }
        let token = hex(&bytes);
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, s| s.expires > now);
        open.insert(
            digest(&token),
            Session {
                expires: now + ttl,
                principal,
            },
        );
        Some(token)
    }

    /// Who the session of `token` belongs to, while it lasts.
    pub fn find(&self, token: &str) -> Option<Principal> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&digest(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.principal.clone())
    }

    /// Ends the session of `token`, if any.
    pub fn close(&self, token: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.remove(&digest(token));
    }

    /// Forgets old login attempts and expired sessions (the sampler calls
    /// it now and then).
    pub fn tidy(&self) {
        self.attempts.retain_recent();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, s| s.expires > now);
    }
}

/// The session token in a `Cookie` header, if any.
pub fn token_in(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_token_until_closed_or_expired() {
        let sessions = Sessions::new();
        let token = sessions
            .open(Principal::AdminKey([7; 32]), Duration::from_secs(60))
            .unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.find(&token), Some(Principal::AdminKey([7; 32])));
        assert_eq!(sessions.find("nope"), None);
        assert_eq!(sessions.find(""), None);
        sessions.close(&token);
        assert_eq!(sessions.find(&token), None);

        let token = sessions
            .open(Principal::Key("key_a".into()), Duration::ZERO)
            .unwrap();
        assert_eq!(sessions.find(&token), None, "expired at once");
    }

    #[test]
    fn tokens_differ_and_only_their_hashes_are_kept() {
        let sessions = Sessions::new();
        let a = sessions
            .open(Principal::AdminKey([7; 32]), Duration::from_secs(60))
            .unwrap();
        let b = sessions
            .open(Principal::AdminKey([7; 32]), Duration::from_secs(60))
            .unwrap();
        assert_ne!(a, b);
        let kept = format!("{:?}", sessions.open.lock().unwrap());
        assert!(!kept.contains(&a) && !kept.contains(&b));
    }

    #[test]
    fn login_attempts_are_limited_per_address() {
        let sessions = Sessions::new();
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..ATTEMPTS_PER_MINUTE {
            sessions.attempt(one).unwrap();
        }
        let wait = sessions.attempt(one).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        sessions.attempt(two).unwrap();
    }

    #[test]
    fn the_token_is_read_from_the_cookie_header() {
        assert_eq!(token_in("a=1; castari_gw_session=abc; b=2"), Some("abc"));
        assert_eq!(token_in("castari_gw_sessionx=abc"), None);
        assert_eq!(token_in(""), None);
    }
}
