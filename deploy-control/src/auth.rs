//! Role checks: each route group requires its role's header, compared in constant time.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use berth_shared::headers;
use berth_shared::secret::Secret;

use crate::error::ApiError;
use crate::state::AppState;

/// The roles of SPEC §3.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Portals and `berth-api`: `X-DEPLOY-SECRET`.
    Deploy,
    /// Runners: `X-Runner-Token`.
    Runner,
    /// Runtime agents: `X-RT-Node-Token`.
    Node,
    /// Operators: `X-Admin-Token`.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Self::Deploy, Self::Runner, Self::Node, Self::Admin];

    fn header(self) -> (&'static str, &'static str) {
        match self {
            Self::Deploy => (headers::DEPLOY_SECRET, "X-DEPLOY-SECRET"),
            Self::Runner => (headers::RUNNER_TOKEN, "X-Runner-Token"),
            Self::Node => (headers::NODE_TOKEN, "X-RT-Node-Token"),
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
            Self::Admin => "adminToken",
        }
    }

    fn secret(self, state: &AppState) -> &Secret {
        let secrets = &state.settings().secrets;
        match self {
            Self::Deploy => &secrets.deploy,
            Self::Runner => &secrets.runner,
            Self::Node => &secrets.node,
            Self::Admin => &secrets.admin,
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

/// Middleware for [`axum::middleware::from_fn_with_state`] with `(state, role)`.
pub async fn require(
    State((state, role)): State<(AppState, Role)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(role, role.secret(&state), request.headers())?;
    Ok(next.run(request).await)
}
