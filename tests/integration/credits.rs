//! The credit ledger: draw order, holds settled exactly once, expiry, claw-backs, no
//! overspending under concurrency, and the routes that show it. Invariants after each.

use std::time::Duration;

use chrono::Utc;
use gptimage2::credits::{
    CreditError, GrantSource,
    ledger::{self, NewGrant, NewHold, Settled},
};
use gptimage2_tests::{AppOptions, TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        workers: false,
        smtp: true,
        ..Default::default()
    })
    .await
}

async fn user(app: &TestApp) -> Uuid {
    app.register_user().await.id.parse().unwrap()
}

fn grant(
    user_id: Uuid,
    amount: i64,
    expires_in_days: Option<i64>,
    reference: Option<&'static str>,
) -> NewGrant<'static> {
    NewGrant {
        user_id,
        amount,
        source: GrantSource::Purchase,
        expires_at: expires_in_days.map(|d| Utc::now() + chrono::Duration::days(d)),
        reference,
        description: "test",
    }
}

fn spend(user_id: Uuid, amount: i64) -> NewHold<'static> {
    NewHold {
        user_id,
        amount,
        reference: None,
        api_key_id: None,
        description: "test spend",
    }
}

async fn remaining(app: &TestApp, grant: Uuid) -> i64 {
    app.db
        .client()
        .await
        .query_one(
            "SELECT remaining FROM credit_grants WHERE id = $1",
            &[&grant],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn spending_draws_soonest_expiring_grants_first() {
    let app = app().await;
    let u = user(&app).await;
    let mut conn = app.state.pool.get().await.unwrap();
    let forever = ledger::grant(&mut conn, grant(u, 100, None, None))
        .await
        .unwrap();
    let late = ledger::grant(&mut conn, grant(u, 100, Some(30), None))
        .await
        .unwrap();
    let soon = ledger::grant(&mut conn, grant(u, 50, Some(2), None))
        .await
        .unwrap();

    let hold = ledger::hold(&mut conn, spend(u, 120)).await.unwrap();
    assert_eq!(
        (
            remaining(&app, soon).await,
            remaining(&app, late).await,
            remaining(&app, forever).await
        ),
        (0, 30, 100)
    );
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 130,
            held: 120
        }
    );

    // Partial capture: 100 spent, 20 back to the grants it came from (latest-expiring first).
    assert_eq!(
        ledger::capture(&mut conn, hold, 100).await.unwrap(),
        Settled::Captured(100)
    );
    assert_eq!(remaining(&app, late).await, 50);
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 150,
            held: 0
        }
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn holds_settle_exactly_once() {
    let app = app().await;
    let u = user(&app).await;
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::grant(&mut conn, grant(u, 100, None, None))
        .await
        .unwrap();

    let a = ledger::hold(&mut conn, spend(u, 30)).await.unwrap();
    assert_eq!(
        ledger::capture(&mut conn, a, 30).await.unwrap(),
        Settled::Captured(30)
    );
    assert_eq!(
        ledger::capture(&mut conn, a, 30).await.unwrap(),
        Settled::Captured(30),
        "a retried capture is a no-op"
    );
    assert_eq!(
        ledger::release(&mut conn, a).await.unwrap(),
        Settled::Captured(30),
        "release after capture changes nothing"
    );

    let b = ledger::hold(&mut conn, spend(u, 20)).await.unwrap();
    assert_eq!(
        ledger::release(&mut conn, b).await.unwrap(),
        Settled::Released
    );
    assert_eq!(
        ledger::release(&mut conn, b).await.unwrap(),
        Settled::Released
    );
    assert_eq!(
        ledger::capture(&mut conn, b, 20).await.unwrap(),
        Settled::Released,
        "capture after release changes nothing"
    );

    let c = ledger::hold(&mut conn, spend(u, 10)).await.unwrap();
    assert!(matches!(
        ledger::capture(&mut conn, c, 11).await,
        Err(CreditError::InvalidAmount)
    ));
    assert!(matches!(
        ledger::release(&mut conn, Uuid::now_v7()).await,
        Err(CreditError::UnknownHold)
    ));

    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 60,
            held: 10
        }
    );
    let kinds: Vec<String> = app
        .db
        .client()
        .await
        .query("SELECT kind FROM ledger_entries ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kinds,
        ["grant", "hold", "capture", "hold", "release", "hold"]
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn insufficient_credits_change_nothing() {
    let app = app().await;
    let u = user(&app).await;
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::grant(&mut conn, grant(u, 5, None, None))
        .await
        .unwrap();
    match ledger::hold(&mut conn, spend(u, 6)).await {
        Err(CreditError::Insufficient {
            available: 5,
            required: 6,
        }) => {}
        other => panic!("expected Insufficient, got {other:?}"),
    }
    let holds: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM credit_holds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holds, 0);
    assert_eq!(ledger::summary(&mut conn, u).await.unwrap().available, 5);
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spends_never_overspend() {
    let app = app().await;
    let u = user(&app).await;
    let pool = gptimage2::db::build_pool(&app.db.url, 32).unwrap();
    {
        let mut conn = pool.get().await.unwrap();
        ledger::grant(&mut conn, grant(u, 6, Some(10), None))
            .await
            .unwrap();
        ledger::grant(&mut conn, grant(u, 4, None, None))
            .await
            .unwrap();
    }
    let spends = (0..100).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            ledger::hold(&mut conn, spend(u, 1)).await
        })
    });
    let mut ok = 0;
    for spend in spends {
        match spend.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CreditError::Insufficient { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(ok, 10, "exactly the balance is spent");
    let mut conn = pool.get().await.unwrap();
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 0,
            held: 10
        }
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn due_grants_expire_and_are_recorded() {
    let app = app().await;
    let u = user(&app).await;
    let mut conn = app.state.pool.get().await.unwrap();
    let short = ledger::grant(
        &mut conn,
        NewGrant {
            expires_at: Some(Utc::now() + chrono::Duration::milliseconds(300)),
            ..grant(u, 40, None, None)
        },
    )
    .await
    .unwrap();
    ledger::grant(&mut conn, grant(u, 10, None, None))
        .await
        .unwrap();
    // Part of the short grant is reserved while it expires; its return then expires too.
    let hold = ledger::hold(&mut conn, spend(u, 15)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ledger::expire_due(&mut conn).await.unwrap(), 25);
    assert_eq!(remaining(&app, short).await, 0);
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 10,
            held: 15
        }
    );
    ledger::release(&mut conn, hold).await.unwrap();
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap(),
        ledger::Summary {
            available: 10,
            held: 0
        },
        "returned credits of an expired grant expire"
    );
    assert_eq!(
        ledger::expire_due(&mut conn).await.unwrap(),
        0,
        "nothing twice"
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn refunds_claw_back_from_the_whole_balance_and_owe_the_rest() {
    let app = app().await;
    let u = user(&app).await;
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::grant(&mut conn, grant(u, 100, None, Some("pi_123")))
        .await
        .unwrap();
    ledger::grant(&mut conn, grant(u, 50, None, Some("pi_other")))
        .await
        .unwrap();
    // 70 of the refunded purchase were spent (it is drawn first: older).
    let hold = ledger::hold(&mut conn, spend(u, 70)).await.unwrap();
    ledger::capture(&mut conn, hold, 70).await.unwrap();
    let (clawed, lost) = ledger::claw_back(&mut conn, u, "pi_123", 100, "refund pi_123")
        .await
        .unwrap();
    // Issue #14: 30 of the refunded grant, then the rest of the balance (50); 20 are owed.
    assert_eq!((clawed, lost), (80, 20));
    assert_eq!(
        ledger::summary(&mut conn, u).await.unwrap().available,
        0,
        "the rest of the balance pays for the refunded credits, never negative"
    );
    assert_eq!(
        ledger::claw_back(&mut conn, u, "pi_123", 100, "again")
            .await
            .unwrap(),
        (0, 100),
        "with nothing left, all is owed"
    );
    // The next grant pays what is owed first.
    ledger::grant(&mut conn, grant(u, 150, None, None))
        .await
        .unwrap();
    assert_eq!(ledger::summary(&mut conn, u).await.unwrap().available, 30);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn credits_and_ledger_routes_show_everything() {
    let app = app().await;
    let user = app.register_user().await;
    let other = app.register_user().await;
    let u: Uuid = user.id.parse().unwrap();
    let mut conn = app.state.pool.get().await.unwrap();
    ledger::grant(&mut conn, grant(u, 100, None, None))
        .await
        .unwrap();
    ledger::grant(&mut conn, grant(u, 30, Some(5), None))
        .await
        .unwrap();
    let hold = ledger::hold(&mut conn, spend(u, 40)).await.unwrap();
    ledger::capture(&mut conn, hold, 25).await.unwrap();
    ledger::hold(&mut conn, spend(u, 5)).await.unwrap();

    let credits: Value = app
        .get_auth("/v1/credits", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            credits["balance"].as_i64(),
            credits["held"].as_i64(),
            credits["available"].as_i64()
        ),
        (Some(105), Some(5), Some(100))
    );
    let grants = credits["grants"].as_array().unwrap();
    // The expiring grant was drawn first and is used up; only the open-ended one is left.
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(grants[0]["expires_at"].is_null());
    assert_eq!(grants[0]["remaining"], 100);
    let me: Value = app
        .get_auth("/v1/me", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["credits"]["balance"], 105);

    let page: Value = app
        .get_auth("/v1/credits/ledger?limit=3", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["hold", "release", "capture"]);
    let next: Value = app
        .get_auth(
            &format!(
                "/v1/credits/ledger?limit=3&cursor={}",
                page["next_cursor"].as_str().unwrap()
            ),
            &user.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = next["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["hold", "grant", "grant"]);
    assert!(next["next_cursor"].is_null());

    // Nobody else's credits leak.
    let theirs: Value = app
        .get_auth("/v1/credits", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["balance"], 0);
    let theirs: Value = app
        .get_auth("/v1/credits/ledger", &other.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert!(theirs["data"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get("/v1/credits").await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_balance_mail_goes_out_once_per_crossing() {
    let app = spawn_app_with(AppOptions::default()).await;
    let user = app.register_user().await;
    let u: Uuid = user.id.parse().unwrap();
    let mut conn = app.state.pool.get().await.unwrap();
    let threshold = app.state.config.billing.low_balance_threshold;
    ledger::grant(&mut conn, grant(u, threshold + 5, None, None))
        .await
        .unwrap();
    let check = async |conn: &mut diesel_async::AsyncPgConnection| {
        gptimage2::credits::low_balance::check(conn, &app.state.config, u)
            .await
            .unwrap()
    };
    assert!(!check(&mut conn).await, "above the threshold: no mail");
    ledger::hold(&mut conn, spend(u, 10)).await.unwrap();
    assert!(check(&mut conn).await, "crossing downward sends one mail");
    ledger::hold(&mut conn, spend(u, 1)).await.unwrap();
    assert!(!check(&mut conn).await, "still low: no second mail");
    ledger::grant(&mut conn, grant(u, 100, None, None))
        .await
        .unwrap();
    assert!(!check(&mut conn).await, "recovered: re-armed silently");
    ledger::hold(&mut conn, spend(u, 100)).await.unwrap();
    assert!(check(&mut conn).await, "a new crossing mails again");
    let smtp = app.smtp.as_ref().unwrap();
    gptimage2_tests::eventually("two low-balance mails", Duration::from_secs(10), || async {
        let n = smtp
            .received()
            .iter()
            .filter(|m| {
                m.header("Subject")
                    .is_some_and(|s| s.contains("running low"))
            })
            .count();
        (n == 2).then_some(())
    })
    .await;
    app.assert_ledger_invariants().await;
}
