//! Who may do what: users with secrets and scopes over namespaces, and
//! what a client without credentials may do in each namespace.
//!
//! Auth is on as soon as one `[[users]]` entry exists; with none, every
//! client may do everything (as Redis without `requirepass`). The HTTP
//! front end and the RESP port both ask [`Access::decide`], so the rule is
//! written once.
//!
//! Secrets are kept only as SHA-256 digests and compared in constant time
//! (`subtle`): the time a refusal takes says nothing of how much of a
//! secret matched. They are never logged: [`User`]'s `Debug` leaves the
//! digest out.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::namespace::Namespace;

/// What a credential allows in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read keys.
    Read,
    /// Write and delete keys.
    Write,
    /// The node's own routes: `/v1/cluster`, `/v1/node`, `/metrics`.
    Admin,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

/// A `[[users]]` entry as written in the config file.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name (RESP `AUTH <name> <secret>`; `default` for
    /// `AUTH <secret>`).
    pub name: String,
    /// The secret in clear (HTTP `Authorization: Bearer <secret>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Or its SHA-256, hex, so the file need not hold the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// The namespaces the user acts in; `"*"` for every one. A RESP
    /// user's commands act in the first (in `resp_namespace` for `"*"`).
    pub namespaces: Vec<String>,
    /// What the user may do there.
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("namespaces", &self.namespaces)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The namespaces a user acts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (`"*"`).
    All,
    /// These, the first being a RESP connection's.
    Listed(Vec<Namespace>),
}

/// A user, resolved: the digest of its secret, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    digest: [u8; 32],
    /// Where it acts.
    pub namespaces: Namespaces,
    /// What it may do there.
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("namespaces", &self.namespaces)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The digest of its secret, hex (`secret_sha256`).
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }

    fn covers(&self, ns: &Namespace) -> bool {
        match &self.namespaces {
            Namespaces::All => true,
            Namespaces::Listed(list) => list.contains(ns),
        }
    }

    /// The namespace a RESP connection of this user acts in.
    pub fn resp_namespace<'a>(&'a self, fallback: &'a Namespace) -> &'a Namespace {
        match &self.namespaces {
            Namespaces::Listed(list) => list.first().unwrap_or(fallback),
            Namespaces::All => fallback,
        }
    }
}

/// A `[[users]]` entry that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UserError {
    /// Neither or both of `secret` and `secret_sha256`.
    #[error("user {0:?}: give exactly one of secret and secret_sha256")]
    Secret(String),
    /// `secret_sha256` is not 64 hex digits.
    #[error("user {0:?}: secret_sha256 must be 64 hex digits")]
    Digest(String),
    /// A secret too short to be a credential.
    #[error("user {0:?}: the secret must be at least {SECRET_CHARS_MIN} characters")]
    Short(String),
    /// A namespace name that is not one.
    #[error("user {user:?}: {message}")]
    Namespace {
        /// The user.
        user: String,
        /// What is wrong.
        message: String,
    },
    /// Two users of one name.
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
    /// A user with no namespace or no scope.
    #[error("user {0:?}: needs at least one namespace and one scope")]
    Empty(String),
    /// An empty name.
    #[error("a user needs a name")]
    Unnamed,
}

/// The shortest secret accepted in clear.
pub const SECRET_CHARS_MIN: usize = 8;

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl UserConfig {
    /// Checks the entry and keeps the digest of its secret.
    ///
    /// # Errors
    ///
    /// [`UserError`] naming the user and what is wrong.
    pub fn resolve(&self) -> Result<User, UserError> {
        let name = self.name.clone();
        if name.is_empty() {
            return Err(UserError::Unnamed);
        }
        let digest = match (&self.secret, &self.secret_sha256) {
            (Some(s), None) if s.chars().count() < SECRET_CHARS_MIN => return Err(UserError::Short(name)),
            (Some(s), None) => digest(s.as_bytes()),
            (None, Some(hex_digest)) => {
                let bytes = hex::decode(hex_digest.trim()).map_err(|_| UserError::Digest(name.clone()))?;
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| UserError::Digest(name.clone()))?
            }
            _ => return Err(UserError::Secret(name)),
        };
        if self.namespaces.is_empty() || self.scopes.is_empty() {
            return Err(UserError::Empty(name));
        }
        let namespaces = if self.namespaces.iter().any(|n| n == "*") {
            Namespaces::All
        } else {
            let list = self
                .namespaces
                .iter()
                .map(|n| Namespace::new(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| UserError::Namespace { user: name.clone(), message: e.to_string() })?;
            Namespaces::Listed(list)
        };
        let mut scopes = self.scopes.clone();
        scopes.sort_unstable();
        scopes.dedup();
        Ok(User { name, digest, namespaces, scopes })
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// `scope` in `namespace`.
    In(&'a Namespace, Scope),
    /// The admin scope (the node's own routes).
    Admin,
    /// Any access at all: a user, or a namespace open to anonymous
    /// clients (finding the closest node).
    Any,
    /// A user, or anonymous access of any scope to this namespace (RESP
    /// connection commands, in the connection's namespace).
    Session(&'a Namespace),
}

/// The verdict on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allowed,
    /// No credential, and anonymous clients may not: HTTP 401, RESP
    /// `-NOAUTH`.
    Unauthenticated,
    /// A credential that does not reach this far: HTTP 403, RESP
    /// `-NOPERM`.
    Forbidden,
}

/// Every user, and what anonymous clients may do per namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    users: Vec<Arc<User>>,
    anonymous: BTreeMap<Namespace, Vec<Scope>>,
}

impl Access {
    /// From resolved users and the `anonymous` setting of each namespace.
    ///
    /// # Errors
    ///
    /// [`UserError::Duplicate`] for two users of one name.
    pub fn new(users: Vec<User>, anonymous: BTreeMap<Namespace, Vec<Scope>>) -> Result<Access, UserError> {
        let mut seen = std::collections::BTreeSet::new();
        for u in &users {
            if !seen.insert(u.name.clone()) {
                return Err(UserError::Duplicate(u.name.clone()));
            }
        }
        Ok(Access { users: users.into_iter().map(Arc::new).collect(), anonymous })
    }

    /// Whether credentials are checked at all.
    pub fn is_on(&self) -> bool {
        !self.users.is_empty()
    }

    /// The user whose secret this is (HTTP's bearer token). Every user's
    /// digest is compared, so the time taken does not depend on which one
    /// matched.
    pub fn by_secret(&self, secret: &[u8]) -> Option<Arc<User>> {
        let d = digest(secret);
        let mut found = None;
        for u in &self.users {
            if bool::from(u.digest.ct_eq(&d)) {
                found = Some(u.clone());
            }
        }
        found
    }

    /// The user `name` if `secret` is its secret (RESP `AUTH`).
    pub fn by_name(&self, name: &[u8], secret: &[u8]) -> Option<Arc<User>> {
        let d = digest(secret);
        let user = self.users.iter().find(|u| u.name.as_bytes() == name)?;
        bool::from(user.digest.ct_eq(&d)).then(|| user.clone())
    }

    /// Whether `user` (or an anonymous client, for `None`) may do `need`.
    pub fn decide(&self, user: Option<&User>, need: Need<'_>) -> Decision {
        if !self.is_on() {
            return Decision::Allowed;
        }
        let anonymous_may = match need {
            Need::In(ns, scope) => self.anonymous.get(ns).is_some_and(|s| s.contains(&scope)),
            Need::Admin => false,
            Need::Any => self.anonymous.values().any(|s| !s.is_empty()),
            Need::Session(ns) => self.anonymous.get(ns).is_some_and(|s| !s.is_empty()),
        };
        if anonymous_may {
            return Decision::Allowed;
        }
        let Some(user) = user else { return Decision::Unauthenticated };
        let allowed = match need {
            Need::In(ns, scope) => user.covers(ns) && user.scopes.contains(&scope),
            Need::Admin => user.scopes.contains(&Scope::Admin),
            Need::Any | Need::Session(_) => true,
        };
        if allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden
        }
    }
}

/// A fresh secret for `geocache token new`: 32 random bytes, hex.
///
/// # Errors
///
/// The system's random source failed.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The SHA-256 of a secret, hex: what `secret_sha256` takes.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(n: &str) -> Namespace {
        Namespace::new(n).unwrap()
    }

    fn user(name: &str, secret: &str, namespaces: &[&str], scopes: &[Scope]) -> User {
        UserConfig {
            name: name.into(),
            secret: Some(secret.into()),
            secret_sha256: None,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.to_vec(),
        }
        .resolve()
        .unwrap()
    }

    fn access() -> Access {
        Access::new(
            vec![
                user("app1", "secret-one", &["a"], &[Scope::Read, Scope::Write]),
                user("reader", "secret-two", &["a", "b"], &[Scope::Read]),
                user("ops", "secret-three", &["*"], &[Scope::Admin]),
            ],
            BTreeMap::from([(ns("open"), vec![Scope::Read])]),
        )
        .unwrap()
    }

    #[test]
    fn without_users_everything_is_allowed() {
        let open = Access::default();
        assert_eq!(open.decide(None, Need::Admin), Decision::Allowed);
        assert_eq!(open.decide(None, Need::In(&ns("x"), Scope::Write)), Decision::Allowed);
    }

    #[test]
    fn scopes_and_namespaces_bound_each_user() {
        let a = access();
        let app1 = a.by_secret(b"secret-one").unwrap();
        let reader = a.by_name(b"reader", b"secret-two").unwrap();
        let ops = a.by_secret(b"secret-three").unwrap();
        assert_eq!(a.decide(Some(&app1), Need::In(&ns("a"), Scope::Write)), Decision::Allowed);
        assert_eq!(a.decide(Some(&app1), Need::In(&ns("b"), Scope::Read)), Decision::Forbidden);
        assert_eq!(a.decide(Some(&reader), Need::In(&ns("b"), Scope::Read)), Decision::Allowed);
        assert_eq!(a.decide(Some(&reader), Need::In(&ns("a"), Scope::Write)), Decision::Forbidden);
        assert_eq!(a.decide(Some(&app1), Need::Admin), Decision::Forbidden);
        assert_eq!(a.decide(Some(&ops), Need::Admin), Decision::Allowed);
        assert_eq!(a.decide(None, Need::In(&ns("a"), Scope::Read)), Decision::Unauthenticated);
        assert_eq!(a.decide(None, Need::In(&ns("open"), Scope::Read)), Decision::Allowed);
        assert_eq!(a.decide(None, Need::In(&ns("open"), Scope::Write)), Decision::Unauthenticated);
        assert_eq!(a.decide(None, Need::Any), Decision::Allowed);
        assert_eq!(a.decide(None, Need::Session(&ns("open"))), Decision::Allowed);
        assert_eq!(a.decide(None, Need::Session(&ns("a"))), Decision::Unauthenticated);
        assert_eq!(a.decide(Some(&reader), Need::Session(&ns("x"))), Decision::Allowed);
        assert_eq!(a.decide(None, Need::Admin), Decision::Unauthenticated);
    }

    #[test]
    fn wrong_secrets_and_names_find_no_one() {
        let a = access();
        assert!(a.by_secret(b"secret-on").is_none());
        assert!(a.by_name(b"app1", b"secret-two").is_none());
        assert!(a.by_name(b"nobody", b"secret-one").is_none());
    }

    #[test]
    fn a_digest_stands_for_its_secret_and_bad_entries_are_refused() {
        let by_digest = UserConfig {
            name: "d".into(),
            secret_sha256: Some(secret_sha256("the-secret")),
            namespaces: vec!["a".into()],
            scopes: vec![Scope::Read],
            ..UserConfig::default()
        }
        .resolve()
        .unwrap();
        let a = Access::new(vec![by_digest], BTreeMap::new()).unwrap();
        assert!(a.by_name(b"d", b"the-secret").is_some());
        let bad = |c: UserConfig| c.resolve().unwrap_err();
        let base = UserConfig {
            name: "u".into(),
            secret: Some("long-enough".into()),
            namespaces: vec!["a".into()],
            scopes: vec![Scope::Read],
            ..UserConfig::default()
        };
        assert!(matches!(
            bad(UserConfig { secret: Some("short".into()), ..base.clone() }),
            UserError::Short(_)
        ));
        assert!(matches!(bad(UserConfig { secret: None, ..base.clone() }), UserError::Secret(_)));
        assert!(matches!(
            bad(UserConfig { secret_sha256: Some("zz".into()), secret: None, ..base.clone() }),
            UserError::Digest(_)
        ));
        assert!(matches!(
            bad(UserConfig { namespaces: vec!["A B".into()], ..base.clone() }),
            UserError::Namespace { .. }
        ));
        assert!(matches!(bad(UserConfig { scopes: vec![], ..base.clone() }), UserError::Empty(_)));
        let twice = Access::new(vec![base.resolve().unwrap(), base.resolve().unwrap()], BTreeMap::new());
        assert!(matches!(twice, Err(UserError::Duplicate(_))));
        assert!(!format!("{base:?}").contains("long-enough"), "Debug never shows a secret");
    }

    #[test]
    fn fresh_secrets_differ() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
