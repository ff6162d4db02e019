//! Who may do what: API tokens with scopes, the allowed `Host` names, and the request checks that
//! keep browsers on other origins out.
//!
//! - **Tokens** are given by a file or an environment variable, never on a command line (where
//!   `ps` shows them). One entry per line (or separated by `;`): `TOKEN SCOPE[,SCOPE...]`, `#`
//!   starts a comment. Scopes: `read` (the read routes, when reads need a token), `write`
//!   (`POST /v1/events`, `POST /v1/impressions`), `catalog` (item changes: `POST /v1/items`,
//!   `DELETE /v1/items/{item}`; `admin` allows them too), `admin` (`POST /v1/admin/*`). A
//!   request presents one as `Authorization: Bearer TOKEN`; tokens are compared in constant
//!   time.
//! - **Host names**: a request whose `Host` is not allowed is refused (DNS rebinding: a page on
//!   another site that resolves its own name to this server). Loopback names are always allowed;
//!   others are configured, `*` allows any. `/healthz` and `/metrics` are exempt (probes and
//!   scrapers address the server by IP).
//! - **Write and admin routes take only `application/json`**, which a cross-site form or a
//!   simple `fetch` cannot send without a CORS preflight that this server never grants.

use std::collections::HashSet;
use std::fmt;

use crate::server::ServeError;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read routes (profiles, recommendations, similar items, users), when reads need a token.
    Read,
    /// `POST /v1/events` and `POST /v1/impressions`.
    Write,
    /// Item changes (`POST /v1/items`, `DELETE /v1/items/{item}`).
    Catalog,
    /// `POST /v1/admin/*` (and item changes).
    Admin,
}

impl Scope {
    /// The scope's name in token files.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Catalog => "catalog",
            Scope::Admin => "admin",
        }
    }
}

/// Shortest token accepted: guessing must be hopeless.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A bad token list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: entry {entry}: {problem}")]
pub struct TokensError {
    /// Where the list came from (a file path or an environment variable).
    pub source_name: String,
    /// The 1-based entry (line, or `;`-separated part).
    pub entry: usize,
    /// What is wrong (never the token itself).
    pub problem: String,
}

/// The API tokens and their scopes. `Debug` never shows a token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, HashSet<Scope>)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.entries.len())
    }
}

impl Tokens {
    /// Parses a token list; `source_name` names it in errors.
    ///
    /// ```
    /// use pinnersage_server::auth::{Scope, Tokens};
    /// let tokens = Tokens::parse("# ops\nsecret-secret-0001 write,admin; reader-reader-0002 read", "env").unwrap();
    /// assert_eq!(tokens.len(), 2);
    /// assert!(tokens.scopes_of("secret-secret-0001").unwrap().contains(&Scope::Admin));
    /// assert!(tokens.scopes_of("nope").is_none());
    /// assert!(Tokens::parse("short write", "env").is_err());
    /// // Two tokens on one line: the error never shows either.
    /// let err = Tokens::parse("secret-secret-0001 second-token-0002 write", "env").unwrap_err();
    /// assert!(!err.to_string().contains("secret-secret") && !err.to_string().contains("second-token"));
    /// let err = Tokens::parse("secret-secret-0001 second-token-0002", "env").unwrap_err();
    /// assert!(!err.to_string().contains("second-token"), "{err}");
    /// ```
    pub fn parse(text: &str, source_name: &str) -> Result<Self, TokensError> {
        let mut entries: Vec<(Vec<u8>, HashSet<Scope>)> = Vec::new();
        let parts = text.split(['\n', ';']).map(|l| match l.find('#') {
            Some(i) => &l[..i],
            None => l,
        });
        for (k, part) in parts.enumerate() {
            let bad = |problem: String| TokensError {
                source_name: source_name.to_owned(),
                entry: k + 1,
                problem,
            };
            let mut fields = part.split_whitespace();
            let Some(token) = fields.next() else {
                continue;
            };
            let scopes_text = fields
                .next()
                .ok_or_else(|| bad("expected `TOKEN SCOPE[,SCOPE...]`".into()))?;
            if fields.next().is_some() {
                return Err(bad("expected `TOKEN SCOPE[,SCOPE...]`".into()));
            }
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(bad(format!(
                    "a token must have at least {MIN_TOKEN_CHARS} characters"
                )));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token must be printable ASCII".into()));
            }
            let mut scopes = HashSet::new();
            for name in scopes_text.split(',') {
                scopes.insert(match name.trim() {
                    "read" => Scope::Read,
                    "write" => Scope::Write,
                    "catalog" => Scope::Catalog,
                    "admin" => Scope::Admin,
                    // Two tokens on one line put a token here: only what cannot be a token
                    // (shorter than one) is shown.
                    other if other.chars().count() < MIN_TOKEN_CHARS => {
                        return Err(bad(format!(
                            "unknown scope {other:?} (expected read, write, catalog or admin)"
                        )));
                    }
                    _ => {
                        return Err(bad(
                            "unknown scope (expected read, write, catalog or admin; not shown: it is as long as a token)"
                                .into(),
                        ));
                    }
                });
            }
            if entries.iter().any(|(t, _)| t == token.as_bytes()) {
                return Err(bad("the same token is listed twice".into()));
            }
            entries.push((token.as_bytes().to_vec(), scopes));
        }
        Ok(Self { entries })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scopes of `presented`, if it is a known token. Every known token is compared, each in
    /// constant time, so the time taken tells nothing about which bytes matched.
    pub fn scopes_of(&self, presented: &str) -> Option<&HashSet<Scope>> {
        let mut found = None;
        for (token, scopes) in &self.entries {
            if constant_time_eq(token, presented.as_bytes()) {
                found = Some(scopes);
            }
        }
        found
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

/// The access policy of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// API tokens; none: every route is open (allowed on loopback addresses only, unless
    /// `insecure_no_auth`).
    pub tokens: Tokens,
    /// Read routes need a token with the `read` scope too.
    pub require_read: bool,
    /// `Host` names allowed besides the loopback names (`*`: any, and none).
    pub allowed_hosts: Vec<String>,
    /// Serve a non-loopback address without tokens (anyone who can reach it may write).
    pub insecure_no_auth: bool,
    /// On a non-loopback address, serve the read routes without a token (by default they need
    /// one there: profiles are personal data).
    pub open_reads: bool,
}

impl AuthConfig {
    /// Whether a request with this `Host` header value may be served.
    ///
    /// ```
    /// use pinnersage_server::auth::AuthConfig;
    /// let config = AuthConfig { allowed_hosts: vec!["api.example.com".into()], ..AuthConfig::default() };
    /// assert!(config.host_allowed(Some("127.0.0.1:8080")));
    /// assert!(config.host_allowed(Some("localhost")));
    /// assert!(config.host_allowed(Some("[::1]:9000")));
    /// assert!(config.host_allowed(Some("API.example.com:443")));
    /// assert!(!config.host_allowed(Some("attacker.example:8080")));
    /// assert!(!config.host_allowed(None));
    /// // `*` allows any host, and a request without one (HTTP/1.0 clients, probes).
    /// let any = AuthConfig { allowed_hosts: vec!["*".into()], ..AuthConfig::default() };
    /// assert!(any.host_allowed(Some("attacker.example")) && any.host_allowed(None));
    /// ```
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return self.allowed_hosts.iter().any(|h| h == "*");
        };
        let name = host_name(host).to_ascii_lowercase();
        let loopback = name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback
            || self
                .allowed_hosts
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(&name))
    }

    /// The scope a token must carry for a request to a route of `class`; `None`: no token needed.
    pub fn required(&self, class: RouteClass) -> Option<Scope> {
        if self.tokens.is_empty() {
            return None;
        }
        match class {
            RouteClass::Open => None,
            RouteClass::Read => self.require_read.then_some(Scope::Read),
            RouteClass::Write => Some(Scope::Write),
            RouteClass::Catalog => Some(Scope::Catalog),
            RouteClass::Admin => Some(Scope::Admin),
        }
    }

    /// The policy as it applies on `addr`: off loopback, a server with tokens needs one for
    /// reads too, unless reads were opened explicitly.
    ///
    /// ```
    /// use pinnersage_server::auth::{AuthConfig, RouteClass, Scope, Tokens};
    /// let tokens = Tokens::parse("reader-reader-0001 read", "env").unwrap();
    /// let auth = AuthConfig { tokens, ..AuthConfig::default() };
    /// let public = auth.on_address("0.0.0.0:8080".parse().unwrap());
    /// assert_eq!(public.required(RouteClass::Read), Some(Scope::Read));
    /// let local = auth.on_address("127.0.0.1:8080".parse().unwrap());
    /// assert_eq!(local.required(RouteClass::Read), None);
    /// let opened = AuthConfig { open_reads: true, ..auth };
    /// assert_eq!(opened.on_address("0.0.0.0:8080".parse().unwrap()).required(RouteClass::Read), None);
    /// ```
    pub fn on_address(&self, addr: std::net::SocketAddr) -> Self {
        let mut auth = self.clone();
        auth.require_read |= !addr.ip().is_loopback() && !self.open_reads;
        auth
    }

    /// Checks that serving on `addr` is safe: a non-loopback address needs tokens (or the
    /// explicit opt-out).
    pub fn check_listen(&self, addr: std::net::SocketAddr) -> Result<(), ServeError> {
        if addr.ip().is_loopback() || !self.tokens.is_empty() || self.insecure_no_auth {
            return Ok(());
        }
        Err(ServeError::Config(format!(
            "refusing to serve on {addr} without API tokens: anyone who can reach it could post \
             events and run batches. Give tokens with `tokens_file` or the PINNERSAGE_TOKENS \
             environment variable (see docs/security.md), listen on 127.0.0.1, or set \
             `insecure_no_auth` to serve it open anyway"
        )))
    }
}

/// The host part of a `Host` header value (`[::1]:80` -> `::1`, `a.b:8080` -> `a.b`).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// What a route does, for the access policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// No token ever: `/`, `/healthz`, `/metrics`, `/openapi.json`.
    Open,
    /// Reads of profiles and recommendations.
    Read,
    /// `POST /v1/events` and `POST /v1/impressions`.
    Write,
    /// Item changes: `POST /v1/items`, `POST /v1/items/delete`, `DELETE /v1/items/{item}`.
    Catalog,
    /// `POST /v1/admin/*`.
    Admin,
}

impl pinnersage_core::error::Kind for TokensError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bad_token_lists_name_the_entry_and_never_the_token() {
        let cases = [
            ("0123456789abcdef", "expected `TOKEN SCOPE"),
            ("0123456789abcdef write extra", "expected `TOKEN SCOPE"),
            ("0123456789abcdef delete", "unknown scope \"delete\""),
            (
                "0123456789abcdef write\n0123456789abcdef read",
                "listed twice",
            ),
        ];
        for (text, expected) in cases {
            let err = Tokens::parse(text, "tokens.txt").unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.starts_with("tokens.txt: entry "), "{err}");
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
        assert!(format!("{:?}", Tokens::parse(cases[0].0, "x")).len() < 200);
        let tokens = Tokens::parse("0123456789abcdef write", "x").unwrap();
        assert_eq!(format!("{tokens:?}"), "Tokens(1 redacted)");
    }

    #[test]
    fn non_loopback_addresses_need_tokens_or_the_opt_out() {
        let open = AuthConfig::default();
        assert!(open.check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(open.check_listen("[::1]:8080".parse().unwrap()).is_ok());
        let err = open
            .check_listen("0.0.0.0:8080".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`insecure_no_auth`"), "{err}");
        let tokens = AuthConfig {
            tokens: Tokens::parse("0123456789abcdef write", "x").unwrap(),
            ..AuthConfig::default()
        };
        assert!(tokens.check_listen("0.0.0.0:8080".parse().unwrap()).is_ok());
        let opted_out = AuthConfig {
            insecure_no_auth: true,
            ..AuthConfig::default()
        };
        assert!(
            opted_out
                .check_listen("0.0.0.0:80".parse().unwrap())
                .is_ok()
        );
    }
}
