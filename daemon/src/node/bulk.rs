//! Bulk originations (`trellis routes advertise --file`, `routes withdraw --file`): many
//! services applied as one change. Every route is checked first (Cedar's
//! `originate_route`, and whether this node may use the name); one refusal refuses the
//! whole load and nothing is applied. Then the router takes them in one input (one
//! manifest version, one attribute set per protocol), the store in one op (one
//! transaction), the audit log in one event, and the answer waits for the commit.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use trellis_routing::{Input, ProtocolHint, ServiceName};

use super::route_store::{protocol_name, StoreOp};
use super::routing_loop::RoutingLoop;
use crate::admin::{ApiError, BulkResult, ErrorKind};

/// A node's origin manifest lists every service it originates, and peers refuse one
/// longer than [`MAX_MANIFEST_SERVICES`] (closing the session): a change that would
/// originate more is refused here, before any peer sees it.
pub(super) fn within_manifest_limit(originated: usize) -> Result<(), ApiError> {
    use trellis_routing::manifest::MAX_MANIFEST_SERVICES;
    if originated > MAX_MANIFEST_SERVICES {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "nothing applied: this node would originate {originated} services, and an origin \
                 manifest lists at most {MAX_MANIFEST_SERVICES} (peers refuse a longer one); \
                 originate the rest from another node"
            ),
        ));
    }
    Ok(())
}

/// Refusals named in one answer; the rest are counted.
const NAMED: usize = 5;

/// How long the answer waits for the commit: 5 s, plus 20 µs a route (a million routes
/// commit in a few seconds on a loaded disk).
fn commit_wait(routes: usize) -> Duration {
    Duration::from_secs(5) + Duration::from_micros(20 * routes as u64)
}

fn refused(kind: ErrorKind, total: usize, why: &[String]) -> ApiError {
    let more = why.len().saturating_sub(NAMED);
    let mut message = format!(
        "{} of {total} routes refused, nothing applied: {}",
        why.len(),
        why.iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    ApiError::new(kind, message)
}

impl RoutingLoop {
    pub(super) fn advertise_many(
        &mut self,
        now: Instant,
        routes: Vec<(ServiceName, ProtocolHint, String)>,
        reply: oneshot::Sender<Result<BulkResult, ApiError>>,
    ) {
        let operator = crate::admin::authz::local_operator(self.local.org().as_str());
        let (mut forbidden, mut bad) = (Vec::new(), Vec::new());
        let act = trellis_policy::cedar::Act::OriginateRoute;
        // With policies that cannot tell routes apart, the first route's answer is
        // every route's.
        let ask_each = !self.policy_uniform_over_routes(act);
        let mut uniform_refusal: Option<String> = None;
        for (i, (service, _, _)) in routes.iter().enumerate() {
            if let Some(why) = uniform_refusal.as_ref() {
                // Refused by a decision that cannot tell routes apart: every route is.
                forbidden.push(format!("{service}: {why}"));
                continue;
            }
            let route = trellis_policy::cedar::Resource::Route {
                service: service.as_str().to_owned(),
                origin_org: self.local.org().as_str().to_owned(),
                communities: Vec::new(),
                path_len: 0,
            };
            let allowed = if i == 0 || ask_each {
                self.policy_allows(&operator, act, &route)
            } else {
                Ok(())
            };
            if let Err(why) = allowed {
                if !ask_each {
                    uniform_refusal = Some(why.clone());
                }
                forbidden.push(format!("{service}: {why}"));
            } else if let Err(refusal) = self.router.may_originate(&self.local, service) {
                bad.push(format!("{service}: {refusal}"));
            }
        }
        if !forbidden.is_empty() || !bad.is_empty() {
            let n = (forbidden.len() + bad.len()) as u64;
            self.view.count("originations_refused", n);
            let kind = if forbidden.is_empty() {
                ErrorKind::BadRequest
            } else {
                ErrorKind::Forbidden
            };
            forbidden.extend(bad);
            let _ = reply.send(Err(refused(kind, routes.len(), &forbidden)));
            return;
        }
        let total = routes.len();
        let after = {
            let view = self.view.read();
            view.originated.len()
                + routes
                    .iter()
                    .filter(|(s, _, _)| !view.originated.contains_key(s.as_str()))
                    .count()
        };
        if let Err(e) = within_manifest_limit(after) {
            self.view.count("originations_refused", total as u64);
            let _ = reply.send(Err(e));
            return;
        }
        let span = self.observer.origination_span("advertise", "(bulk)");
        let _entered = span.enter();
        let mut changed = 0;
        {
            let mut view = self.view.write();
            for (service, protocol, endpoint) in &routes {
                let entry = (endpoint.clone(), protocol_name(*protocol).to_owned());
                if view
                    .originated
                    .insert(service.as_str().to_owned(), entry.clone())
                    != Some(entry)
                {
                    changed += 1;
                }
            }
        }
        self.router.handle(
            now,
            Input::OriginateMany {
                routes: routes.iter().map(|(s, p, _)| (s.clone(), *p)).collect(),
            },
        );
        self.log_event(
            "route.advertise",
            &format!("{total} services"),
            format!("bulk load, {changed} new or changed"),
        );
        self.persist(StoreOp::OriginateMany(routes));
        self.reply_when_durable_within(
            reply,
            Ok(BulkResult {
                requested: total,
                changed,
            }),
            commit_wait(total),
        );
    }

    pub(super) fn withdraw_many(
        &mut self,
        now: Instant,
        services: Vec<ServiceName>,
        reply: oneshot::Sender<Result<BulkResult, ApiError>>,
    ) {
        let total = services.len();
        let missing: Vec<String> = {
            let view = self.view.read();
            services
                .iter()
                .filter(|s| !view.originated.contains_key(s.as_str()))
                .map(|s| format!("{s}: not originated here"))
                .collect()
        };
        if !missing.is_empty() {
            let _ = reply.send(Err(refused(ErrorKind::NotFound, total, &missing)));
            return;
        }
        let span = self.observer.origination_span("withdraw", "(bulk)");
        let _entered = span.enter();
        {
            let mut view = self.view.write();
            for service in &services {
                view.originated.remove(service.as_str());
            }
        }
        self.router.handle(
            now,
            Input::StopOriginatingMany {
                services: services.clone(),
            },
        );
        self.log_event(
            "route.withdraw",
            &format!("{total} services"),
            "bulk withdrawal".into(),
        );
        self.persist(StoreOp::StopOriginatingMany(services));
        self.reply_when_durable_within(
            reply,
            Ok(BulkResult {
                requested: total,
                changed: total,
            }),
            commit_wait(total),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_routing::manifest::MAX_MANIFEST_SERVICES;

    #[test]
    fn a_node_originates_at_most_what_one_manifest_lists() {
        assert!(within_manifest_limit(MAX_MANIFEST_SERVICES).is_ok());
        let e = within_manifest_limit(MAX_MANIFEST_SERVICES + 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.starts_with("nothing applied") && !e.message.contains('\n'));
    }

    #[test]
    fn a_refusal_names_five_and_counts_the_rest() {
        let why: Vec<String> = (0..8).map(|i| format!("s{i}.globex: not acme's")).collect();
        let e = refused(ErrorKind::BadRequest, 10, &why);
        assert!(e
            .message
            .starts_with("8 of 10 routes refused, nothing applied"));
        assert!(e.message.contains("s4.globex") && !e.message.contains("s5.globex"));
        assert!(e.message.ends_with("and 3 more"), "{}", e.message);
    }
}
