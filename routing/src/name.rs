//! Validated identifiers: service names, org ids and node ids.
//!
//! Every name that crosses a trust boundary is parsed into one of these types
//! first, so the rest of the core never sees an invalid one. Rules
//! (docs/protocol.md, "Names"):
//!
//! * **OrgId**: one DNS label, `[a-z0-9-]`, 1-63 bytes, no leading or trailing `-`.
//! * **NodeId**: `org/name`, both parts labels as above (`acme/edge-1`).
//! * **ServiceName**: dot-separated labels (`books.eu.acme`), each 1-63 bytes of
//!   `[a-z0-9_-]` with no leading or trailing `-`, at most 253 bytes and
//!   [`MAX_LABELS`] labels. A leading `*.` makes an aggregate (`*.eu.acme`)
//!   that covers every name below the suffix; lookups use the longest suffix
//!   match, the way IP uses the longest prefix (see [`ServiceName::lookup_keys`]).
//!
//! Names are lowercase only: the wire never carries two spellings of one name.

use std::fmt;
use std::sync::Arc;

/// Longest service name in bytes (as a DNS name).
pub const MAX_SERVICE_NAME_LEN: usize = 253;
/// Longest single label in bytes (as a DNS label).
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels a service name may have.
pub const MAX_LABELS: usize = 16;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What kind of name it was.
        kind: &'static str,
    },
    /// The name is longer than its limit.
    #[error("{kind} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// What kind of name it was.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name has more labels than allowed.
    #[error("service name has {count} labels, the limit is {max}")]
    TooManyLabels {
        /// How many labels it had.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A label is empty, too long, or has a bad character or hyphen.
    #[error("{kind} has an invalid label {label:?}: {why}")]
    BadLabel {
        /// What kind of name it was.
        kind: &'static str,
        /// The offending label (truncated to 64 bytes).
        label: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A node id lacks the `org/name` shape.
    #[error("node id {0:?} is not of the form org/name")]
    NodeIdShape(String),
    /// A `*` appears somewhere other than as the whole first label.
    #[error("service name {0:?} has a wildcard that is not a leading \"*.\" label")]
    BadWildcard(String),
}

fn check_label(kind: &'static str, label: &str, allow_underscore: bool) -> Result<(), NameError> {
    let bad = |why| NameError::BadLabel {
        kind,
        label: label.chars().take(64).collect(),
        why,
    };
    if label.is_empty() {
        return Err(bad("empty label"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(bad("label longer than 63 bytes"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(bad("label starts or ends with '-'"));
    }
    let ok = label.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (allow_underscore && b == b'_')
    });
    if !ok {
        return Err(bad(if allow_underscore {
            "only a-z, 0-9, '-' and '_' are allowed"
        } else {
            "only a-z, 0-9 and '-' are allowed"
        }));
    }
    Ok(())
}

/// An organization id: one lowercase DNS label (`acme`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(Arc<str>);

impl OrgId {
    /// Parses and validates an org id.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty { kind: "org id" });
        }
        check_label("org id", s, false)?;
        Ok(Self(Arc::from(s)))
    }

    /// The org id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node id, `org/name` (`acme/edge-1`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    full: Arc<str>,
}

impl NodeId {
    /// Parses and validates a node id.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty { kind: "node id" });
        }
        if s.len() > 2 * MAX_LABEL_LEN + 1 {
            return Err(NameError::TooLong {
                kind: "node id",
                len: s.len(),
                max: 2 * MAX_LABEL_LEN + 1,
            });
        }
        let (org, name) = s
            .split_once('/')
            .ok_or_else(|| NameError::NodeIdShape(s.to_string()))?;
        check_label("node id", org, false)?;
        check_label("node id", name, false)?;
        Ok(Self { full: Arc::from(s) })
    }

    /// Builds a node id from an org and a node name.
    pub fn from_parts(org: &OrgId, name: &str) -> Result<Self, NameError> {
        Self::new(&format!("{}/{}", org.as_str(), name))
    }

    /// The whole id as text.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The org part as text.
    pub fn org_str(&self) -> &str {
        // Validated at construction: there is exactly one '/'.
        self.full.split('/').next().unwrap_or_default()
    }

    /// The node's org.
    pub fn org(&self) -> OrgId {
        OrgId(Arc::from(self.org_str()))
    }

    /// Whether this node belongs to `org`.
    pub fn in_org(&self, org: &OrgId) -> bool {
        self.org_str() == org.as_str()
    }
}

/// A service name such as `books.acme`, or an aggregate such as `*.eu.acme`.
///
/// Cheap to clone (one shared allocation); compared, hashed and ordered as text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(Arc<str>);

impl ServiceName {
    /// Parses and validates a service name (see the module docs for the rules).
    pub fn new(s: &str) -> Result<Self, NameError> {
        Self::check(s)?;
        Ok(Self(Arc::from(s)))
    }

    fn check(s: &str) -> Result<(), NameError> {
        const KIND: &str = "service name";
        if s.is_empty() {
            return Err(NameError::Empty { kind: KIND });
        }
        if s.len() > MAX_SERVICE_NAME_LEN {
            return Err(NameError::TooLong {
                kind: KIND,
                len: s.len(),
                max: MAX_SERVICE_NAME_LEN,
            });
        }
        let body = match s.strip_prefix("*.") {
            Some(rest) => rest,
            None => s,
        };
        if body.contains('*') {
            return Err(NameError::BadWildcard(s.chars().take(64).collect()));
        }
        let mut count = 0;
        for label in body.split('.') {
            count += 1;
            if count > MAX_LABELS {
                return Err(NameError::TooManyLabels {
                    count: body.split('.').count(),
                    max: MAX_LABELS,
                });
            }
            check_label(KIND, label, true)?;
        }
        Ok(())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is an aggregate (`*.suffix`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The table keys to try, most specific first, when resolving this name:
    /// the name itself, then `*.parent` for each parent suffix
    /// (`a.eu.acme` → `a.eu.acme`, `*.eu.acme`, `*.acme`). A name never
    /// matches the aggregate of itself (`*.acme` does not cover `acme`).
    pub fn lookup_keys(&self) -> impl Iterator<Item = String> + '_ {
        let body = self.0.strip_prefix("*.").unwrap_or(&self.0);
        let exact = std::iter::once(self.0.to_string());
        let parents = body
            .match_indices('.')
            .map(move |(i, _)| format!("*.{}", &body[i + 1..]));
        exact.chain(parents)
    }
}

macro_rules! text_traits {
    ($t:ty, $get:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str($get(self))
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", $get(self))
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                $get(self)
            }
        }
    };
}

text_traits!(OrgId, OrgId::as_str);
text_traits!(NodeId, NodeId::as_str);
text_traits!(ServiceName, ServiceName::as_str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_dns_label_rules() {
        for ok in ["books.acme", "a", "_grpc.books.acme", "x-1.y2", "*.eu.acme"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "Books.acme",
            "books..acme",
            ".acme",
            "acme.",
            "-a.acme",
            "a-.acme",
            "a b",
            "a.*.acme",
            "*",
            "*.",
            "**.acme",
        ] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn over_long_names_are_rejected_with_a_typed_error() {
        let label = "a".repeat(64);
        assert!(matches!(
            ServiceName::new(&label),
            Err(NameError::BadLabel { .. })
        ));
        let long = vec!["abcdefghijklmno"; 16].join(".");
        assert!(matches!(
            ServiceName::new(&long),
            Err(NameError::TooLong { .. })
        ));
        let many = vec!["a"; 17].join(".");
        assert!(matches!(
            ServiceName::new(&many),
            Err(NameError::TooManyLabels { .. })
        ));
    }

    #[test]
    fn node_ids_are_org_slash_name() {
        let id = NodeId::new("acme/edge-1").unwrap();
        assert_eq!(id.org_str(), "acme");
        assert!(id.in_org(&OrgId::new("acme").unwrap()));
        for bad in [
            "acme",
            "acme/",
            "/edge",
            "acme/edge/1",
            "Acme/edge",
            "acme/ed ge",
        ] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn lookup_keys_go_from_exact_to_shortest_suffix() {
        let n = ServiceName::new("api.eu.acme").unwrap();
        let keys: Vec<_> = n.lookup_keys().collect();
        assert_eq!(keys, ["api.eu.acme", "*.eu.acme", "*.acme"]);
        let w = ServiceName::new("*.eu.acme").unwrap();
        let keys: Vec<_> = w.lookup_keys().collect();
        assert_eq!(keys, ["*.eu.acme", "*.acme"]);
    }
}
