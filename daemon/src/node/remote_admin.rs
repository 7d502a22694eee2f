//! Remote admin at a node (docs/adr/0017-operator-tokens.md; the server is
//! [`crate::admin::remote_server`]). A request is served only when its token verifies
//! against the own org's token keys and revocations in the newest trust snapshot and is
//! bound to the TLS client certificate; then Cedar decides with the token's operator and
//! role as principal, exactly as for the socket's local operator.

use std::sync::Arc;

use trellis_routing::OrgId;

use super::admin_server::{handle, AdminCtx};
use super::trust::TrustStore;
use crate::admin::remote_server::{self, Handler};

/// The node's remote admin handler.
pub fn handler(ctx: Arc<AdminCtx>, trust: Arc<TrustStore>, org: OrgId) -> Handler {
    Arc::new(move |r, cert| {
        let (ctx, trust, org) = (ctx.clone(), trust.clone(), org.clone());
        Box::pin(async move {
            let (keys, revoked) = trust.operator_tokens(&org);
            let who = remote_server::operator(&r.token, org.as_str(), &keys, &revoked, &cert)
                .inspect_err(|_| ctx.view.count("remote_admin_refused", 1))?;
            handle(&ctx, &who, r.request).await
        })
    })
}
