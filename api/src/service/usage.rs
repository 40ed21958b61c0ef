//! The usage log: every change a tenant's keys asked for, refused ones included.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::views::{Page, UsageView};
use crate::service::{Api, PageQuery};
use crate::storage::UsageRecord;

impl Api {
    /// Appends `line` to the caller's tenant's log; a failure is logged, never the caller's.
    pub async fn record_usage(&self, caller: &Caller, line: UsageRecord) {
        if let Err(e) = self
            .store
            .record_usage(&caller.tenant.tenant_id, &line)
            .await
        {
            tracing::error!(error = ?anyhow::Error::from(e), action = %line.action, "could not write the usage log");
        }
    }

    /// `GET /v1/usage`: newest first.
    pub async fn usage(&self, caller: &Caller, page: PageQuery) -> ApiResult<Page<UsageView>> {
        let limit = page.limit()?;
        let before = match &page.cursor {
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest("cursor is not a usage cursor".into()))?,
            ),
            None => None,
        };
        let rows = self
            .store
            .usage(&caller.tenant.tenant_id, before, limit)
            .await?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|r| r.id.to_string()))
            .flatten();
        Ok(Page {
            items: rows.iter().map(UsageView::from).collect(),
            next_cursor: next,
        })
    }
}
