//! The credit ledger. Every operation locks the user's `credit_accounts` row, changes grants
//! and holds, and appends its ledger entry, all in one transaction (a savepoint when the
//! caller already has one; [`hold_within`] joins the caller's). Spending draws soonest-expiring grants first, then oldest.
//!
//! Invariants, checked by [`check_invariants`] after every test scenario:
//! `account.available = Σ available_delta = Σ remaining of unexpired grants` and
//! `account.held = Σ held_delta = Σ open hold amounts` (a grant is unexpired until its
//! `expired_at` is recorded), and `0 ≤ account.debt = Σ debt_delta` (credits a refund could
//! not take back, paid first out of the next grant: debt and available are never both
//! positive after a grant).
//!
//! A grant past its `expires_at` is never spent, whether or not the periodic sweep
//! ([`expire_due`]) has recorded its expiry yet: every operation expires the user's due grants
//! right after locking the account, at the transaction's instant, before it decides anything;
//! and reads ([`summary`], [`spendable`]) leave out what is due but not yet recorded.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::schema::{
    credit_accounts, credit_grants, credit_hold_allocations, credit_holds, ledger_entries,
};
use crate::wire_enum;

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("insufficient credits: {available} available, {required} required")]
    Insufficient { available: i64, required: i64 },
    #[error("no such hold")]
    UnknownHold,
    #[error("amount must be positive")]
    InvalidAmount,
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

wire_enum! {
    /// Where a grant's credits came from.
    #[schema(example = "purchase")]
    pub enum GrantSource {
        Purchase = "purchase",
        Subscription = "subscription",
        Promotion = "promotion",
        Admin = "admin",
        RefundReversal = "refund_reversal",
    }
}

/// The account row as locked for the rest of the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub available: i64,
    /// Whether the low-balance notice went out since the balance last recovered.
    pub low_balance_notified: bool,
}

/// The user's grants past their expiry whose expiry is not recorded yet, as of the
/// transaction's instant.
fn due(user_id: Uuid) -> credit_grants::BoxedQuery<'static, diesel::pg::Pg> {
    credit_grants::table
        .filter(credit_grants::user_id.eq(user_id))
        .filter(credit_grants::remaining.gt(0))
        .filter(credit_grants::expired_at.is_null())
        .filter(credit_grants::expires_at.le(diesel::dsl::now))
        .into_boxed()
}

/// The account row, locked for the rest of the transaction (created on first use), with the
/// user's due grants expired: nothing after this sees credits that expired before now. The
/// row almost always exists, so the lock is tried first, pipelined with the look-up of due
/// grants (which runs once the lock is held): one round trip on the spend path.
async fn lock_account(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Account> {
    Ok(lock_and_expire(conn, user_id).await?.0)
}

/// [`lock_account`], and the credits it expired.
async fn lock_and_expire(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
) -> QueryResult<(Account, i64)> {
    let locked = || {
        credit_accounts::table
            .find(user_id)
            .select((
                credit_accounts::available,
                credit_accounts::low_balance_notified,
            ))
            .for_update()
    };
    let account = |(available, low_balance_notified)| Account {
        available,
        low_balance_notified,
    };
    // Read once the lock is held (pipelined queries run in order), and kept still by it.
    let due_grants = due(user_id).select((credit_grants::id, credit_grants::remaining));
    let (mut first, mut second): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
    let (row, due_grants): (Option<_>, Vec<(Uuid, i64)>) = futures::try_join!(
        async { locked().first(&mut first).await.optional() },
        due_grants.load(&mut second)
    )?;
    let Some(row) = row else {
        // No account, so no grants either.
        diesel::insert_into(credit_accounts::table)
            .values(credit_accounts::user_id.eq(user_id))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        return Ok((locked().first(conn).await.map(account)?, 0));
    };
    let mut account = account(row);
    let expired = expire_grants(conn, user_id, due_grants).await?;
    account.available -= expired;
    Ok((account, expired))
}

wire_enum! {
    /// What a ledger entry records. `adjustment` is a manual correction (none is made by the
    /// service itself).
    #[schema(example = "capture")]
    pub enum LedgerEntryKind {
        Grant = "grant",
        Hold = "hold",
        Capture = "capture",
        Release = "release",
        Expiry = "expiry",
        Refund = "refund",
        /// Credits a refund could not take back (spent): owed, and later the part of a grant
        /// that paid them.
        Debt = "debt",
        Adjustment = "adjustment",
    }
}

struct Entry<'a> {
    user_id: Uuid,
    kind: LedgerEntryKind,
    available_delta: i64,
    held_delta: i64,
    /// Change to the credits owed (see [`claw_back`]).
    debt_delta: i64,
    grant_id: Option<Uuid>,
    hold_id: Option<Uuid>,
    description: &'a str,
}

/// The entry and the balance change it records, sent together in one round trip (diesel-async
/// pipelines queries polled together on one connection; they run in order, in the caller's
/// transaction).
async fn append(conn: &mut AsyncPgConnection, e: Entry<'_>) -> QueryResult<()> {
    let entry = diesel::insert_into(ledger_entries::table).values((
        ledger_entries::id.eq(Uuid::now_v7()),
        ledger_entries::user_id.eq(e.user_id),
        ledger_entries::kind.eq(e.kind.as_str()),
        ledger_entries::available_delta.eq(e.available_delta),
        ledger_entries::held_delta.eq(e.held_delta),
        ledger_entries::debt_delta.eq(e.debt_delta),
        ledger_entries::grant_id.eq(e.grant_id),
        ledger_entries::hold_id.eq(e.hold_id),
        ledger_entries::description.eq(e.description),
    ));
    let balances = diesel::update(credit_accounts::table.find(e.user_id)).set((
        credit_accounts::available.eq(credit_accounts::available + e.available_delta),
        credit_accounts::held.eq(credit_accounts::held + e.held_delta),
        credit_accounts::debt.eq(credit_accounts::debt + e.debt_delta),
        credit_accounts::updated_at.eq(diesel::dsl::now),
    ));
    let (mut first, mut second): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
    futures::try_join!(entry.execute(&mut first), balances.execute(&mut second))?;
    Ok(())
}

/// The user's grants that can still be spent (unexpired at the transaction's instant), in the
/// order spending draws them: soonest-expiring first (no expiry last), then oldest.
pub fn spendable(user_id: Uuid) -> credit_grants::BoxedQuery<'static, diesel::pg::Pg> {
    credit_grants::table
        .filter(credit_grants::user_id.eq(user_id))
        .filter(credit_grants::remaining.gt(0))
        .filter(credit_grants::expired_at.is_null())
        .filter(
            credit_grants::expires_at
                .is_null()
                .or(credit_grants::expires_at.gt(diesel::dsl::now)),
        )
        .order((
            credit_grants::expires_at.asc().nulls_last(),
            credit_grants::created_at.asc(),
            credit_grants::id.asc(),
        ))
        .into_boxed()
}

pub struct NewGrant<'a> {
    pub user_id: Uuid,
    pub amount: i64,
    pub source: GrantSource,
    pub expires_at: Option<DateTime<Utc>>,
    pub reference: Option<&'a str>,
    pub description: &'a str,
}

/// Adds credits; returns the grant's id.
pub async fn grant(conn: &mut AsyncPgConnection, g: NewGrant<'_>) -> Result<Uuid, CreditError> {
    if g.amount <= 0 {
        return Err(CreditError::InvalidAmount);
    }
    conn.transaction::<_, CreditError, _>(async |conn| {
        lock_account(conn, g.user_id).await?;
        let debt: i64 = credit_accounts::table
            .find(g.user_id)
            .select(credit_accounts::debt)
            .first(conn)
            .await?;
        // Credits owed since a refund of spent credits are paid first out of this grant.
        let settled = debt.min(g.amount);
        let id = Uuid::now_v7();
        diesel::insert_into(credit_grants::table)
            .values((
                credit_grants::id.eq(id),
                credit_grants::user_id.eq(g.user_id),
                credit_grants::source.eq(g.source.as_str()),
                credit_grants::amount.eq(g.amount),
                credit_grants::remaining.eq(g.amount - settled),
                credit_grants::expires_at.eq(g.expires_at),
                credit_grants::reference.eq(g.reference),
                credit_grants::description.eq(g.description),
            ))
            .execute(conn)
            .await?;
        append(
            conn,
            Entry {
                user_id: g.user_id,
                kind: LedgerEntryKind::Grant,
                available_delta: g.amount,
                held_delta: 0,
                debt_delta: 0,
                grant_id: Some(id),
                hold_id: None,
                description: g.description,
            },
        )
        .await?;
        if settled > 0 {
            let description =
                format!("{settled} credits owed since a refund, paid from this grant");
            append(
                conn,
                Entry {
                    user_id: g.user_id,
                    kind: LedgerEntryKind::Debt,
                    available_delta: -settled,
                    held_delta: 0,
                    debt_delta: -settled,
                    grant_id: Some(id),
                    hold_id: None,
                    description: &description,
                },
            )
            .await?;
        }
        Ok(id)
    })
    .await
}

pub struct NewHold<'a> {
    pub user_id: Uuid,
    pub amount: i64,
    pub reference: Option<&'a str>,
    pub api_key_id: Option<Uuid>,
    pub description: &'a str,
}

/// Reserves credits for work in progress; fails with `Insufficient` and changes nothing
/// when the available balance does not cover it.
pub async fn hold(conn: &mut AsyncPgConnection, h: NewHold<'_>) -> Result<Uuid, CreditError> {
    conn.transaction::<_, CreditError, _>(async |conn| Ok(hold_within(conn, &h).await?.id))
        .await
}

/// A hold placed by [`hold_within`], and the account it left.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub id: Uuid,
    /// The account after the hold, still locked by the caller's transaction.
    pub account: Account,
}

/// [`hold`] as part of the caller's transaction, which must be open (no savepoint of its
/// own: the submit that calls it fails whole anyway).
pub async fn hold_within(
    conn: &mut AsyncPgConnection,
    h: &NewHold<'_>,
) -> Result<Held, CreditError> {
    if h.amount <= 0 {
        return Err(CreditError::InvalidAmount);
    }
    let account = lock_account(conn, h.user_id).await?;
    if account.available < h.amount {
        return Err(CreditError::Insufficient {
            available: account.available,
            required: h.amount,
        });
    }
    let id = Uuid::now_v7();
    let insert = diesel::insert_into(credit_holds::table).values((
        credit_holds::id.eq(id),
        credit_holds::user_id.eq(h.user_id),
        credit_holds::amount.eq(h.amount),
        credit_holds::reference.eq(h.reference),
        credit_holds::api_key_id.eq(h.api_key_id),
    ));
    let grants = spendable(h.user_id).select((credit_grants::id, credit_grants::remaining));
    // Independent, so one round trip (see `append`); the account lock keeps the grants still.
    let shared: &AsyncPgConnection = conn;
    let (_, grants): (usize, Vec<(Uuid, i64)>) = futures::try_join!(
        insert.execute(&mut { shared }),
        grants.load(&mut { shared })
    )?;
    let mut needed = h.amount;
    let mut takes = Vec::new();
    for (grant_id, remaining) in grants {
        if needed == 0 {
            break;
        }
        let take = remaining.min(needed);
        takes.push((grant_id, take));
        needed -= take;
    }
    if needed > 0 {
        // The account said yes but the grants disagree: the invariant is broken.
        return Err(CreditError::Db(diesel::result::Error::QueryBuilderError(
            format!(
                "ledger invariant broken for user {}: grants short by {needed}",
                h.user_id
            )
            .into(),
        )));
    }
    // Each grant's decrement and its allocation, all in one round trip.
    let writes = takes.iter().flat_map(|&(grant_id, take)| {
        let decrement = diesel::update(credit_grants::table.find(grant_id))
            .set(credit_grants::remaining.eq(credit_grants::remaining - take));
        let allocation = diesel::insert_into(credit_hold_allocations::table).values((
            credit_hold_allocations::hold_id.eq(id),
            credit_hold_allocations::grant_id.eq(grant_id),
            credit_hold_allocations::amount.eq(take),
        ));
        [
            Box::pin(async move { decrement.execute(&mut { shared }).await })
                as futures::future::BoxFuture<'_, QueryResult<usize>>,
            Box::pin(async move { allocation.execute(&mut { shared }).await }),
        ]
    });
    futures::future::try_join_all(writes).await?;
    append(
        conn,
        Entry {
            user_id: h.user_id,
            kind: LedgerEntryKind::Hold,
            available_delta: -h.amount,
            held_delta: h.amount,
            debt_delta: 0,
            grant_id: None,
            hold_id: Some(id),
            description: h.description,
        },
    )
    .await?;
    Ok(Held {
        id,
        account: Account {
            available: account.available - h.amount,
            ..account
        },
    })
}

/// Puts `amount` of a hold back into the grants it came from, latest-expiring first, except
/// what a refund of the grant took back while held (`refunded_held`): that returns to
/// nothing. Returns the credits that returned to nothing.
async fn return_to_grants(
    conn: &mut AsyncPgConnection,
    hold_id: Uuid,
    mut amount: i64,
) -> QueryResult<i64> {
    let allocations: Vec<(Uuid, i64, i64)> = credit_hold_allocations::table
        .inner_join(credit_grants::table)
        .filter(credit_hold_allocations::hold_id.eq(hold_id))
        .order((
            credit_grants::expires_at.desc().nulls_first(),
            credit_grants::created_at.desc(),
        ))
        .select((
            credit_hold_allocations::grant_id,
            credit_hold_allocations::amount,
            credit_grants::refunded_held,
        ))
        .load(conn)
        .await?;
    let mut refunded = 0;
    for (grant_id, allocated, refunded_held) in allocations {
        if amount == 0 {
            break;
        }
        let back = allocated.min(amount);
        let gone = back.min(refunded_held);
        diesel::update(credit_grants::table.find(grant_id))
            .set((
                credit_grants::remaining.eq(credit_grants::remaining + (back - gone)),
                credit_grants::refunded_held.eq(credit_grants::refunded_held - gone),
            ))
            .execute(conn)
            .await?;
        amount -= back;
        refunded += gone;
    }
    Ok(refunded)
}

/// What happened to a hold; settling twice returns the first outcome and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Captured(i64),
    Released,
}

/// Spends `amount` (≤ the hold) of a hold and returns the rest. Exactly once: a retried
/// capture or a capture after a release changes nothing.
pub async fn capture(
    conn: &mut AsyncPgConnection,
    hold_id: Uuid,
    amount: i64,
) -> Result<Settled, CreditError> {
    settle(conn, hold_id, Some(amount)).await
}

/// Returns the whole hold. Exactly once, like [`capture`].
pub async fn release(conn: &mut AsyncPgConnection, hold_id: Uuid) -> Result<Settled, CreditError> {
    settle(conn, hold_id, None).await
}

async fn settle(
    conn: &mut AsyncPgConnection,
    hold_id: Uuid,
    capture: Option<i64>,
) -> Result<Settled, CreditError> {
    conn.transaction::<_, CreditError, _>(async |conn| {
        let user_id: Uuid = credit_holds::table
            .find(hold_id)
            .select(credit_holds::user_id)
            .first(conn)
            .await
            .optional()?
            .ok_or(CreditError::UnknownHold)?;
        lock_account(conn, user_id).await?;
        let (amount, status, captured): (i64, String, i64) = credit_holds::table
            .find(hold_id)
            .select((
                credit_holds::amount,
                credit_holds::status,
                credit_holds::captured,
            ))
            .first(conn)
            .await?;
        match status.as_str() {
            "captured" => return Ok(Settled::Captured(captured)),
            "released" => return Ok(Settled::Released),
            _ => {}
        }
        let spent = match capture {
            Some(n) if n < 0 || n > amount => return Err(CreditError::InvalidAmount),
            Some(n) => n,
            None => 0,
        };
        let back = amount - spent;
        let refunded = return_to_grants(conn, hold_id, back).await?;
        diesel::update(credit_holds::table.find(hold_id))
            .set((
                credit_holds::status.eq(if capture.is_some() {
                    "captured"
                } else {
                    "released"
                }),
                credit_holds::captured.eq(spent),
                credit_holds::settled_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        if spent > 0 {
            append(
                conn,
                Entry {
                    user_id,
                    kind: LedgerEntryKind::Capture,
                    available_delta: 0,
                    held_delta: -spent,
                    debt_delta: 0,
                    grant_id: None,
                    hold_id: Some(hold_id),
                    description: "",
                },
            )
            .await?;
        }
        if back > 0 {
            append(
                conn,
                Entry {
                    user_id,
                    kind: LedgerEntryKind::Release,
                    available_delta: back,
                    held_delta: -back,
                    debt_delta: 0,
                    grant_id: None,
                    hold_id: Some(hold_id),
                    description: "",
                },
            )
            .await?;
        }
        if refunded > 0 {
            append(
                conn,
                Entry {
                    user_id,
                    kind: LedgerEntryKind::Refund,
                    available_delta: -refunded,
                    held_delta: 0,
                    debt_delta: 0,
                    grant_id: None,
                    hold_id: Some(hold_id),
                    description: "held credits of a refunded purchase",
                },
            )
            .await?;
        }
        // Credits returned to grants that expired meanwhile expire now.
        expire_user(conn, user_id).await?;
        Ok(if capture.is_some() {
            Settled::Captured(spent)
        } else {
            Settled::Released
        })
    })
    .await
}

/// Expires the user's due grants; the account must be locked.
async fn expire_user(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<i64> {
    let due: Vec<(Uuid, i64)> = credit_grants::table
        .filter(credit_grants::user_id.eq(user_id))
        .filter(credit_grants::remaining.gt(0))
        .filter(credit_grants::expires_at.le(diesel::dsl::now))
        .select((credit_grants::id, credit_grants::remaining))
        .for_update()
        .load(conn)
        .await?;
    expire_grants(conn, user_id, due).await
}

/// Expires `due` (grant id, remaining) of the user; returns the credits expired.
async fn expire_grants(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    due: Vec<(Uuid, i64)>,
) -> QueryResult<i64> {
    let mut total = 0;
    for (grant_id, remaining) in due {
        diesel::update(credit_grants::table.find(grant_id))
            .set((
                credit_grants::remaining.eq(0),
                credit_grants::expired_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        append(
            conn,
            Entry {
                user_id,
                kind: LedgerEntryKind::Expiry,
                available_delta: -remaining,
                held_delta: 0,
                debt_delta: 0,
                grant_id: Some(grant_id),
                hold_id: None,
                description: "expired",
            },
        )
        .await?;
        total += remaining;
    }
    Ok(total)
}

/// Expires every due grant (run periodically by the workers); returns credits expired.
pub async fn expire_due(conn: &mut AsyncPgConnection) -> Result<i64, CreditError> {
    let users: Vec<Uuid> = credit_grants::table
        .filter(credit_grants::remaining.gt(0))
        .filter(credit_grants::expires_at.le(diesel::dsl::now))
        .select(credit_grants::user_id)
        .distinct()
        .load(conn)
        .await?;
    let mut total = 0;
    for user_id in users {
        total += conn
            .transaction::<_, CreditError, _>(async |conn| {
                Ok(lock_and_expire(conn, user_id).await?.1)
            })
            .await?;
    }
    Ok(total)
}

/// Takes up to `amount` from `grants` (id, remaining) in their order, each with a `refund`
/// entry; returns what is still to take.
async fn take_back(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    grants: Vec<(Uuid, i64)>,
    amount: i64,
    description: &str,
) -> QueryResult<i64> {
    let mut left = amount;
    for (grant_id, remaining) in grants {
        let take = remaining.min(left);
        if take == 0 {
            break;
        }
        diesel::update(credit_grants::table.find(grant_id))
            .set(credit_grants::remaining.eq(credit_grants::remaining - take))
            .execute(conn)
            .await?;
        append(
            conn,
            Entry {
                user_id,
                kind: LedgerEntryKind::Refund,
                available_delta: -take,
                held_delta: 0,
                debt_delta: 0,
                grant_id: Some(grant_id),
                hold_id: None,
                description,
            },
        )
        .await?;
        left -= take;
    }
    Ok(left)
}

/// Takes back `amount` credits for a refund of the grants with `reference` (a refunded
/// purchase): their remaining credits, then what running generations hold of them (it goes
/// when those holds are released; captured, it is spent), then the rest of the available
/// balance in spending order. Never below zero: what is still short is recorded as debt
/// (a `debt` entry), paid first out of the user's next grant. Returns (taken back, owed).
pub async fn claw_back(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    reference: &str,
    amount: i64,
    description: &str,
) -> Result<(i64, i64), CreditError> {
    if amount <= 0 {
        return Err(CreditError::InvalidAmount);
    }
    conn.transaction::<_, CreditError, _>(async |conn| {
        lock_account(conn, user_id).await?;
        let grants: Vec<(Uuid, i64)> = credit_grants::table
            .filter(credit_grants::user_id.eq(user_id))
            .filter(credit_grants::reference.eq(reference))
            .filter(credit_grants::remaining.gt(0))
            .select((credit_grants::id, credit_grants::remaining))
            .for_update()
            .load(conn)
            .await?;
        let mut left = take_back(conn, user_id, grants, amount, description).await?;
        // What running generations hold of the grants goes when their holds are released.
        if left > 0 {
            let allocations: Vec<(Uuid, i64, i64)> = credit_hold_allocations::table
                .inner_join(credit_holds::table)
                .inner_join(credit_grants::table)
                .filter(credit_grants::user_id.eq(user_id))
                .filter(credit_grants::reference.eq(reference))
                .filter(credit_holds::status.eq("held"))
                .select((
                    credit_grants::id,
                    credit_hold_allocations::amount,
                    credit_grants::refunded_held,
                ))
                .load(conn)
                .await?;
            let mut held: Vec<(Uuid, i64, i64)> = Vec::new();
            for (grant_id, amount, marked) in allocations {
                match held.iter_mut().find(|(id, _, _)| *id == grant_id) {
                    Some(entry) => entry.1 += amount,
                    None => held.push((grant_id, amount, marked)),
                }
            }
            for (grant_id, held, marked) in held {
                let take = (held - marked).max(0).min(left);
                if take == 0 {
                    continue;
                }
                diesel::update(credit_grants::table.find(grant_id))
                    .set(credit_grants::refunded_held.eq(credit_grants::refunded_held + take))
                    .execute(conn)
                    .await?;
                left -= take;
            }
        }
        // Then the rest of the balance, in spending order.
        if left > 0 {
            let others: Vec<(Uuid, i64)> = spendable(user_id)
                .select((credit_grants::id, credit_grants::remaining))
                .load(conn)
                .await?;
            left = take_back(conn, user_id, others, left, description).await?;
        }
        // What is still short was spent: owed, and paid first out of the next grant.
        if left > 0 {
            let owed = format!("{description}: {left} credits already spent are owed");
            append(
                conn,
                Entry {
                    user_id,
                    kind: LedgerEntryKind::Debt,
                    available_delta: 0,
                    held_delta: 0,
                    debt_delta: left,
                    grant_id: None,
                    hold_id: None,
                    description: &owed,
                },
            )
            .await?;
        }
        Ok((amount - left, left))
    })
    .await
}

/// A user's balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub available: i64,
    pub held: i64,
}

impl Summary {
    pub fn balance(&self) -> i64 {
        self.available + self.held
    }
}

/// The user's balances now: credits past their expiry are not available, even before their
/// expiry is recorded (which the next operation on the account or the sweep does).
pub async fn summary(conn: &mut AsyncPgConnection, user_id: Uuid) -> QueryResult<Summary> {
    let row = credit_accounts::table
        .find(user_id)
        .select((credit_accounts::available, credit_accounts::held));
    // Rarely any, so summed here rather than as a numeric in SQL.
    let expired = due(user_id).select(credit_grants::remaining);
    // Both in one round trip (see `append`).
    let (mut first, mut second): (&AsyncPgConnection, &AsyncPgConnection) = (conn, conn);
    let (row, expired): (Option<(i64, i64)>, Vec<i64>) = futures::try_join!(
        async { row.first(&mut first).await.optional() },
        expired.load(&mut second)
    )?;
    let (available, held) = row.unwrap_or((0, 0));
    Ok(Summary {
        available: available - expired.iter().sum::<i64>(),
        held,
    })
}

/// Every user's balances agree with their ledger, grants and holds; returns the violations.
pub async fn check_invariants(conn: &mut AsyncPgConnection) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Violation {
        #[diesel(sql_type = diesel::sql_types::Text)]
        problem: String,
    }
    let rows: Vec<Violation> = diesel::sql_query(
        "WITH l AS (SELECT user_id, sum(available_delta)::bigint AS a, sum(held_delta)::bigint AS h, sum(debt_delta)::bigint AS d FROM ledger_entries GROUP BY user_id),
              g AS (SELECT user_id, sum(remaining)::bigint AS r FROM credit_grants WHERE expired_at IS NULL GROUP BY user_id),
              o AS (SELECT user_id, sum(amount)::bigint AS o FROM credit_holds WHERE status = 'held' GROUP BY user_id)
         SELECT format('user %s: available %s, ledger %s, grants %s; held %s, ledger %s, open holds %s; debt %s, ledger %s',
                       c.user_id, c.available, coalesce(l.a, 0), coalesce(g.r, 0), c.held, coalesce(l.h, 0), coalesce(o.o, 0), c.debt, coalesce(l.d, 0)) AS problem
         FROM credit_accounts c
         LEFT JOIN l ON l.user_id = c.user_id LEFT JOIN g ON g.user_id = c.user_id LEFT JOIN o ON o.user_id = c.user_id
         WHERE c.available <> coalesce(l.a, 0) OR c.available <> coalesce(g.r, 0)
            OR c.held <> coalesce(l.h, 0) OR c.held <> coalesce(o.o, 0)
            OR c.debt <> coalesce(l.d, 0) OR c.debt < 0",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|v| v.problem).collect())
}
