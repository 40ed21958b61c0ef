//! Role checks: each route group requires its role's header, compared in constant time. A
//! node's `X-RT-Node-Token` is its own credential (SPEC §7), looked up by its hash: the request
//! then carries the [`NodeCaller`] it speaks for, and the handler refuses any other node id.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use berth_shared::headers;
use berth_shared::secret::Secret;

use crate::error::ApiError;
use crate::queue::credential;
use crate::service::nodes;
pub use crate::service::nodes::NodeCaller;
use crate::state::AppState;

/// The roles of SPEC §3.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Portals and `berth-api`: `X-DEPLOY-SECRET`.
    Deploy,
    /// Runners: `X-Runner-Token`.
    Runner,
    /// Runtime agents: `X-RT-Node-Token`, each node's own credential.
    Node,
    /// A new runtime agent, once: `X-RT-Join-Token`.
    Join,
    /// Operators: `X-Admin-Token`.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Self::Deploy,
        Self::Runner,
        Self::Node,
        Self::Join,
        Self::Admin,
    ];

    fn header(self) -> (&'static str, &'static str) {
        match self {
            Self::Deploy => (headers::DEPLOY_SECRET, "X-DEPLOY-SECRET"),
            Self::Runner => (headers::RUNNER_TOKEN, "X-Runner-Token"),
            Self::Node => (headers::NODE_TOKEN, "X-RT-Node-Token"),
            Self::Join => (headers::JOIN_TOKEN, "X-RT-Join-Token"),
            Self::Admin => (headers::ADMIN_TOKEN, "X-Admin-Token"),
        }
    }

    /// The header that carries the role's secret, as the OpenAPI document names it.
    pub fn header_name(self) -> &'static str {
        self.header().1
    }

    /// The name of the role's security scheme in the OpenAPI document.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Deploy => "deploySecret",
            Self::Runner => "runnerToken",
            Self::Node => "nodeToken",
            Self::Join => "joinToken",
            Self::Admin => "adminToken",
        }
    }

    /// The role's one secret; `None` for nodes, which each have their own.
    fn secret(self, state: &AppState) -> Option<&Secret> {
        let secrets = &state.settings().secrets;
        match self {
            Self::Deploy => Some(&secrets.deploy),
            Self::Runner => Some(&secrets.runner),
            Self::Node => None,
            Self::Join => Some(&secrets.node_join),
            Self::Admin => Some(&secrets.admin),
        }
    }
}

/// Checks that `headers` carry `role`'s secret.
pub fn check(role: Role, secret: &Secret, headers: &HeaderMap) -> Result<(), ApiError> {
    let (name, shown) = role.header();
    match headers.get(name) {
        None => Err(ApiError::Unauthorized(format!(
            "missing the {shown} header"
        ))),
        Some(value) if secret.matches(value.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(format!(
            "the {shown} header is not valid"
        ))),
    }
}

/// Middleware for [`axum::middleware::from_fn_with_state`] with `(state, role)`. For
/// [`Role::Node`] it adds the [`NodeCaller`] the credential speaks for to the request.
pub async fn require(
    State((state, role)): State<(AppState, Role)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match role.secret(&state) {
        Some(secret) => check(role, secret, request.headers())?,
        None => {
            let caller = node_caller(&state, request.headers()).await?;
            request.extensions_mut().insert(caller);
        }
    }
    Ok(next.run(request).await)
}

/// The node whose credential `headers` carry in `X-RT-Node-Token`.
async fn node_caller(state: &AppState, headers: &HeaderMap) -> Result<NodeCaller, ApiError> {
    let (name, shown) = Role::Node.header();
    let presented = match headers.get(name).map(|v| v.to_str()) {
        None => {
            return Err(ApiError::Unauthorized(format!(
                "missing the {shown} header"
            )))
        }
        Some(Ok(value)) => value,
        Some(Err(_)) => {
            return Err(ApiError::Unauthorized(format!(
                "the {shown} header is not valid"
            )))
        }
    };
    Ok(nodes::authenticate(state, credential::hash(presented)).await?)
}
