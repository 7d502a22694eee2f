//! Cedar decides every action (docs/adr/0016-cedar-decides.md): the schema, the
//! default policies, loading a policy file (validated, with `FILE:LINE:COL` errors) and
//! deciding requests, each decision explained by the policies that made it.
//!
//! The contract:
//! - [`Policies::load`] parses and validates a policy text against the checked-in
//!   schema ([`SCHEMA`]); any error refuses the whole text. The caller keeps the old
//!   policies then.
//! - [`Policies::decide`] answers one request and caches the answer per (principal,
//!   action, resource, attributes). The cache belongs to the loaded policies, so a
//!   reload starts with an empty one. It holds at most [`CACHE_MAX`] answers; when full,
//!   it is cleared.
//! - A request the schema does not accept (an attribute of the wrong type, say) is
//!   denied, and the verdict says why: Cedar's default is deny.
//! - Pure: no IO, no clock. Callers read files and name the principals.

mod request;
mod routes;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

pub use request::{Act, Resource, Subject};
pub use routes::CedarRoutes;

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = include_str!("../../cedar/trellis.cedarschema");

/// The default policies (docs/adr/0016-cedar-decides.md).
pub const DEFAULT_POLICIES: &str = include_str!("../../cedar/default.cedar");

/// Most cached answers per loaded policy set.
pub const CACHE_MAX: usize = 65_536;

/// A policy text that was refused: where and why, as `FILE:LINE:COL: REASON`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct PolicyError {
    /// The file (or label) the text came from.
    pub file: String,
    /// 1-based line of the first problem.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, one line.
    pub reason: String,
}

/// The answer to one request, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// The policies that decided (their `@id`, else Cedar's id): the permits that
    /// allowed it, or the forbids that denied it; empty when nothing permitted it.
    pub policies: Vec<String>,
    /// Errors met while deciding (a policy that failed to evaluate is skipped).
    pub errors: Vec<String>,
}

/// A validated policy set with its decision cache.
pub struct Policies {
    set: PolicySet,
    schema: Schema,
    source: String,
    cache: Mutex<HashMap<String, Verdict>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("source", &self.source)
            .field("policies", &self.set.policies().count())
            .finish_non_exhaustive()
    }
}

fn schema() -> Schema {
    // The schema is part of this crate and covered by its tests.
    #[allow(clippy::expect_used)]
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _)| schema)
        .expect("the built-in Cedar schema parses")
}

/// Line and column (1-based) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The first labelled position of a diagnostic, and its one-line message.
fn located(file: &str, text: &str, d: &dyn Diagnostic, fallback: String) -> PolicyError {
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |l| l.offset());
    let (line, column) = position(text, offset);
    let mut reason = fallback.replace('\n', " ");
    if let Some(help) = d.help() {
        reason.push_str(&format!(" ({help})"));
    }
    PolicyError {
        file: file.to_owned(),
        line,
        column,
        reason: reason.replace('\n', " "),
    }
}

impl Policies {
    /// Parses `text` (read from `file`) and validates it against [`SCHEMA`].
    pub fn load(text: &str, file: &str) -> Result<Self, PolicyError> {
        let set = PolicySet::from_str(text).map_err(|e| {
            let first = e
                .iter()
                .next()
                .map_or_else(|| e.to_string(), |p| p.to_string());
            located(file, text, &e, first)
        })?;
        let schema = schema();
        let validated = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if let Some(e) = validated.validation_errors().next() {
            return Err(located(file, text, e, e.to_string()));
        }
        Ok(Self {
            set,
            schema,
            source: file.to_owned(),
            cache: Mutex::default(),
        })
    }

    /// The default policies, plus `extra` (generated rules).
    pub fn defaults(extra: &str) -> Result<Self, PolicyError> {
        let text = format!("{DEFAULT_POLICIES}\n{extra}");
        Self::load(&text, "built-in default policies")
    }

    /// Where the policies came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    /// Whether no policy is loaded (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides whether `subject` may do `act` on `resource`.
    pub fn decide(&self, subject: &Subject, act: Act, resource: &Resource) -> Verdict {
        let key = request::cache_key(subject, act, resource);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&key) {
            return v.clone();
        }
        let verdict = self.evaluate(subject, act, resource);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, verdict.clone());
        verdict
    }

    /// Whether every decision of `act` on a `Route` is the same whatever the route: each
    /// policy that can apply to `act` and a route has an open or `is Route` resource
    /// scope and no `when`/`unless` condition. Then one decision serves a bulk load of
    /// any size; otherwise each route is asked. Conservative: an action group (`in`)
    /// counts as applying, and any condition as depending on the route.
    pub fn uniform_over_routes(&self, act: Act) -> bool {
        use cedar_policy::{ActionConstraint, ResourceConstraint};
        let action = format!("Action::\"{}\"", act.name());
        self.set.policies().all(|p| {
            let applies = match p.action_constraint() {
                ActionConstraint::Any | ActionConstraint::In(_) => true,
                ActionConstraint::Eq(a) => a.to_string() == action,
            };
            if !applies {
                return true;
            }
            let on_routes = match p.resource_constraint() {
                ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => {
                    t.to_string() == "Route"
                }
                _ => true,
            };
            if !on_routes {
                return true;
            }
            let open_scope = matches!(
                p.resource_constraint(),
                ResourceConstraint::Any | ResourceConstraint::Is(_)
            );
            open_scope && !p.has_non_scope_constraint()
        })
    }

    /// Decides without the cache (what `policy check` explains).
    pub fn evaluate(&self, subject: &Subject, act: Act, resource: &Resource) -> Verdict {
        let built = request::build(subject, act, resource, &self.schema);
        let (request, entities): (_, Entities) = match built {
            Ok(r) => r,
            Err(why) => {
                return Verdict {
                    allowed: false,
                    policies: Vec::new(),
                    errors: vec![why],
                }
            }
        };
        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let policies = response
            .diagnostics()
            .reason()
            .map(|id| {
                self.set
                    .annotation(id, "id")
                    .map_or_else(|| id.to_string(), str::to_owned)
            })
            .collect();
        Verdict {
            allowed: response.decision() == Decision::Allow,
            policies,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        }
    }
}

/// The policies in force, swapped whole on reload; shared by everything that asks.
#[derive(Debug)]
pub struct Shared(RwLock<Arc<Policies>>);

impl Shared {
    /// Starts with `policies`.
    pub fn new(policies: Policies) -> Self {
        Self(RwLock::new(Arc::new(policies)))
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<Policies> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `policies` in force (with an empty cache).
    pub fn replace(&self, policies: Policies) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policies);
    }

    /// Decides with the policies in force.
    pub fn decide(&self, subject: &Subject, act: Act, resource: &Resource) -> Verdict {
        self.current().decide(subject, act, resource)
    }
}

#[cfg(test)]
mod tests;
