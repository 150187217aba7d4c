//! Consent choices: an append-only history whose newest row is the current choice.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::schema::consents;

#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = consents)]
pub struct ConsentRecord {
    #[serde(skip)]
    pub id: Uuid,
    pub analytics: bool,
    pub marketing: bool,
    /// The privacy-policy version the choice was made under.
    pub policy_version: String,
    /// Where the choice was made from.
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn record(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    analytics: bool,
    marketing: bool,
    policy_version: &str,
    ip: Option<&str>,
) -> QueryResult<()> {
    diesel::insert_into(consents::table)
        .values((
            consents::id.eq(Uuid::now_v7()),
            consents::user_id.eq(user_id),
            consents::analytics.eq(analytics),
            consents::marketing.eq(marketing),
            consents::policy_version.eq(policy_version),
            consents::ip.eq(ip),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Newest first.
pub async fn history(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> QueryResult<Vec<ConsentRecord>> {
    consents::table
        .filter(consents::user_id.eq(user_id))
        .order((consents::created_at.desc(), consents::id.desc()))
        .select(ConsentRecord::as_select())
        .load(conn)
        .await
}
