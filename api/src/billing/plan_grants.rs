//! Which paid subscription charges grant plan credits, and how many. Stripe's and Creem's
//! event handlers say what a charge is ([`Charge`]); this module alone decides the credits.
//!
//! The rule:
//! 1. Nothing is granted for a charge that paid nothing (`amount_paid <= 0`), unless the
//!    catalog says the plan is free: a trial's $0 first invoice, a $0 proration, a change
//!    paid from the customer's balance.
//! 2. A paid plan period ([`Charge::Period`]: Stripe's `subscription_create` and
//!    `subscription_cycle`, so after a trial the first paid cycle; Creem's `subscription.paid`
//!    of an active subscription) grants the plan's monthly credits once, read from the
//!    subscription line's price (never a proration line), valid until the period's end plus
//!    the grace period.
//! 3. A plan change within a period ([`Charge::Change`]: Stripe's `subscription_update`
//!    invoice; Creem's second `subscription.paid` within one period, since Creem's payload
//!    does not say why it charged) grants, when it raises the period's level (the monthly
//!    credits of the highest plan this period was granted at), the pro-rata difference:
//!    `floor((new plan credits − level) × (period_end − from) / (period_end − period_start))`,
//!    where `from` is when the new plan starts (Stripe: the proration line's `period.start`;
//!    Creem: the event's time), `period_end` the proration line's `period.end` (Creem: the
//!    subscription's `current_period_end_date`), and `period_start` the subscription
//!    period's start where the provider states it (Creem), else one calendar month (the
//!    catalog's plans are monthly) before `period_end` (a Stripe proration line only states
//!    the prorated part). The level then becomes the new plan's credits, so down-and-up
//!    loops within a period grant nothing more. A downgrade grants and takes nothing; the
//!    next period grants the new plan.
//! 4. Anything else (`subscription_threshold`, `manual`, …) grants nothing.
//! 5. Each charge is recorded once per provider reference (the invoice or transaction id):
//!    a replay under another event id grants nothing. A charge that paid money but grants
//!    nothing is still recorded (0 credits, with its receipt) when the provider states the
//!    amount, so a refund of it finds it.

use chrono::{DateTime, Months, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{
    billing::{self, Payment, catalog::Plan},
    db::schema::plan_periods,
    error::ApiError,
};

/// What a provider says a subscription charge paid for.
#[derive(Debug, Clone, Copy)]
pub enum Charge<'a> {
    /// A plan period starts and is paid (first paid period or renewal).
    Period,
    /// A plan change within the current period; `previous` is the plan changed from when
    /// the provider says (Stripe's "Unused time on …" line).
    Change { previous: Option<&'a Plan> },
    /// Not a plan period nor a change (the provider's reason, for the log).
    Other(&'a str),
}

/// A paid subscription charge, as a provider reported it.
pub struct PlanPayment<'a> {
    pub user_id: Uuid,
    pub provider: &'a str,
    /// The invoice or transaction id: each is recorded (and granted) at most once.
    pub reference: &'a str,
    pub subscription_id: &'a str,
    pub charge: Charge<'a>,
    /// The plan the charge is for: the subscription line's plan, or the plan changed to.
    pub plan: &'a Plan,
    /// What was paid in money, when the provider says so (Creem's subscription events do
    /// not: then the plan's price is recorded).
    pub amount_paid: Option<i64>,
    pub currency: &'a str,
    /// Recorded on the payment (e.g. `customer_conflict`); a flag that withholds credits
    /// records the charge without them.
    pub flag: Option<billing::PaymentFlag>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: DateTime<Utc>,
    /// When the paid part begins: the period's start, or when the plan changed.
    pub from: DateTime<Utc>,
    pub grace: chrono::Duration,
}

/// What a charge granted.
#[derive(Debug, PartialEq, Eq)]
pub enum Granted {
    /// A full period: the plan's monthly credits.
    Period(i64),
    /// An upgrade's pro-rata difference.
    Upgrade(i64),
    /// Nothing, and why.
    Nothing(&'static str),
    /// This charge was recorded before.
    Replay,
}

/// Records a subscription charge and grants what [the rule](self) says, in the caller's
/// transaction.
pub async fn record_plan_payment(
    conn: &mut AsyncPgConnection,
    p: PlanPayment<'_>,
) -> Result<Granted, ApiError> {
    // The period's row, locked: concurrent charges of one period are decided one by one.
    diesel::insert_into(plan_periods::table)
        .values((
            plan_periods::provider.eq(p.provider),
            plan_periods::subscription_id.eq(p.subscription_id),
            plan_periods::period_end.eq(p.period_end),
            plan_periods::user_id.eq(p.user_id),
            plan_periods::plan_id.eq(&p.plan.id),
            plan_periods::credits.eq(0_i64),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    let level: i64 = plan_periods::table
        .find((p.provider, p.subscription_id, p.period_end))
        .select(plan_periods::credits)
        .for_update()
        .first(conn)
        .await?;
    let decision = decide(level, &p);
    let raises_level = decision.is_ok();
    let (credits, granted) = match decision {
        Ok((credits, Kind::Period)) => (credits, Granted::Period(credits)),
        Ok((credits, Kind::Upgrade)) => (credits, Granted::Upgrade(credits)),
        Err(why) => {
            tracing::info!(
                provider = p.provider,
                reference = p.reference,
                plan = %p.plan.id,
                why,
                "subscription charge grants no plan credits"
            );
            if p.amount_paid.is_none_or(|paid| paid <= 0) {
                return Ok(Granted::Nothing(why));
            }
            (0, Granted::Nothing(why))
        }
    };
    let recorded = billing::record_payment(
        conn,
        Payment {
            user_id: p.user_id,
            provider: p.provider,
            kind: "renewal",
            provider_reference: p.reference,
            item_id: &p.plan.id,
            amount_cents: p.amount_paid.unwrap_or(p.plan.price_cents),
            currency: p.currency,
            credits,
            credits_expire_at: Some(p.period_end + p.grace),
            flag: p.flag,
        },
    )
    .await?;
    if recorded.is_none() {
        return Ok(Granted::Replay);
    }
    if raises_level {
        diesel::update(plan_periods::table.find((p.provider, p.subscription_id, p.period_end)))
            .filter(plan_periods::credits.lt(p.plan.monthly_credits))
            .set((
                plan_periods::credits.eq(p.plan.monthly_credits),
                plan_periods::plan_id.eq(&p.plan.id),
                plan_periods::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
    }
    Ok(granted)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Period,
    Upgrade,
}

/// The credits a charge grants given the period's `level` (0: not granted yet), or why
/// it grants none.
fn decide(level: i64, p: &PlanPayment<'_>) -> Result<(i64, Kind), &'static str> {
    let plan = p.plan;
    if p.amount_paid.is_some_and(|paid| paid <= 0) && plan.price_cents > 0 {
        return Err("nothing was paid and the plan is not free");
    }
    let previous = match p.charge {
        Charge::Other(_) => return Err("not a plan period nor a plan change"),
        Charge::Period if level == 0 => return Ok((plan.monthly_credits, Kind::Period)),
        // A period paid again (Creem's charge for a change): a change from the level.
        Charge::Period => None,
        Charge::Change { previous } => previous,
    };
    let base = if level > 0 {
        level
    } else {
        match previous {
            Some(previous) => previous.monthly_credits,
            None => return Err("a plan change in a period that was never granted"),
        }
    };
    if plan.monthly_credits <= base {
        return Err("not an upgrade: the new plan's credits come with the next period");
    }
    let start = p.period_start.unwrap_or_else(|| {
        p.period_end
            .checked_sub_months(Months::new(1))
            .unwrap_or(p.period_end)
    });
    Ok((
        pro_rata(plan.monthly_credits - base, start, p.from, p.period_end),
        Kind::Upgrade,
    ))
}

/// `floor(difference × (end − from) / (end − start))`, `from` clamped into the period.
fn pro_rata(difference: i64, start: DateTime<Utc>, from: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let length = (end - start).num_seconds();
    if length <= 0 || difference <= 0 {
        return 0;
    }
    let remaining = (end - from).num_seconds().clamp(0, length);
    (i128::from(difference) * i128::from(remaining) / i128::from(length)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn plan(id: &str, credits: i64, price: i64) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            monthly_credits: credits,
            price_cents: price,
            currency: "usd".into(),
            stripe_price_id: None,
            creem_product_id: None,
        }
    }

    fn payment<'a>(plan: &'a Plan, charge: Charge<'a>, paid: Option<i64>) -> PlanPayment<'a> {
        PlanPayment {
            user_id: Uuid::nil(),
            provider: "stripe",
            reference: "in_1",
            subscription_id: "sub_1",
            charge,
            plan,
            amount_paid: paid,
            currency: "usd",
            flag: None,
            period_start: None,
            period_end: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            from: Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap(),
            grace: chrono::Duration::days(3),
        }
    }

    #[test]
    fn a_paid_period_grants_the_plan_once() {
        let pro = plan("pro", 2500, 2900);
        assert_eq!(
            decide(0, &payment(&pro, Charge::Period, Some(2900))),
            Ok((2500, Kind::Period))
        );
        assert!(decide(2500, &payment(&pro, Charge::Period, Some(2900))).is_err());
    }

    #[test]
    fn nothing_paid_grants_nothing_unless_the_plan_is_free() {
        let pro = plan("pro", 2500, 2900);
        assert!(decide(0, &payment(&pro, Charge::Period, Some(0))).is_err());
        let free = plan("free", 50, 0);
        assert_eq!(
            decide(0, &payment(&free, Charge::Period, Some(0))),
            Ok((50, Kind::Period))
        );
    }

    #[test]
    fn an_upgrade_grants_the_difference_for_the_rest_of_the_period() {
        let (starter, pro) = (plan("starter", 500, 900), plan("pro", 2500, 2900));
        let change = Charge::Change {
            previous: Some(&starter),
        };
        // 15 of November's 30 days remain.
        assert_eq!(
            decide(500, &payment(&pro, change, Some(1000))),
            Ok((1000, Kind::Upgrade))
        );
        // The level decides, not the plan the provider says it came from.
        assert!(decide(2500, &payment(&pro, change, Some(1000))).is_err());
        // A downgrade grants nothing.
        let down = Charge::Change {
            previous: Some(&pro),
        };
        assert!(decide(2500, &payment(&starter, down, Some(100))).is_err());
        assert!(decide(500, &payment(&pro, Charge::Other("manual"), Some(900))).is_err());
    }

    #[test]
    fn pro_rata_is_clamped_to_the_period() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        assert_eq!(pro_rata(2000, start, start, end), 2000);
        assert_eq!(
            pro_rata(2000, start, start - chrono::Duration::days(5), end),
            2000
        );
        assert_eq!(pro_rata(2000, start, end, end), 0);
        assert_eq!(
            pro_rata(2000, start, end + chrono::Duration::days(1), end),
            0
        );
        assert_eq!(pro_rata(2000, end, start, end), 0);
    }
}
