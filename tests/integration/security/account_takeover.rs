//! Attacks: see `security.rs`.
//!
//! Account takeover footholds (issue #13, points 1 and 11). An attacker registers the victim's
//! address before the victim does ("pre-hijacking") and arms the account: an API key, a
//! mobile session with its refresh token, the webhook secret. Whichever way the real owner
//! later proves the mailbox (Google sign-in, password reset, the verification link), every
//! one of those must stop working. Until then the unverified account cannot mint them at all.
//! And a stolen access token must not turn into a password: not by guessing the current one,
//! not by setting a first one on a Google-only account.

use gptimage2_tests::{
    AppOptions, TestApp, TestUser,
    oauth_fake::{FakeProvider, FakeUser},
    spawn_app_with,
    stripe_fake::StripeFake,
    users::PASSWORD,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::oauth::{access_token, json_of, sign_in};

const VICTIM: &str = "victim@example.com";

async fn app_with(env: Vec<(String, String)>) -> TestApp {
    spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await
}

async fn problem(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = res.text().await.unwrap();
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "a problem, not {status} {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn assert_email_unverified(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("email_unverified")),
        "{what} must wait for a verified address: {body}"
    );
}

/// What an attacker holds after pre-registering the victim's address.
struct Foothold {
    account: TestUser,
    api_key: String,
    mobile_access: String,
    mobile_refresh: String,
    webhook_secret: String,
}

async fn create_key(app: &TestApp, token: &str) -> Response {
    app.client
        .post(app.url("/v1/me/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "mine now"}))
        .send()
        .await
        .unwrap()
}

/// The attacker registers `VICTIM` (never verified), signs in on a "phone" too, and takes an
/// API key and the webhook secret. Where the API refuses one to an unverified account (as it
/// must), the test plants it in the database instead, as one created before that rule
/// existed: whatever the attacker got must die when the owner shows up.
async fn pre_register(app: &TestApp) -> Foothold {
    let account = app.register_with(VICTIM, PASSWORD, "Squatter").await;
    let (mobile_access, mobile_refresh) = app.login_mobile(VICTIM, PASSWORD).await;
    let res = create_key(app, &account.access_token).await;
    let api_key = if res.status() == StatusCode::CREATED {
        res.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        let (status, body) = problem(res).await;
        assert_email_unverified(status, &body, "an API key");
        let key = gptimage2::auth::tokens::random_token("gi2_");
        app.db
            .client()
            .await
            .execute(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash)
                 VALUES (gen_random_uuid(), $1::text::uuid, 'planted', $2, $3)",
                &[
                    &account.id,
                    &key[..12].to_string(),
                    &gptimage2::auth::tokens::hash_token(&key),
                ],
            )
            .await
            .unwrap();
        key
    };
    let res = app
        .get_auth("/v1/me/webhook-secret", &account.access_token)
        .await;
    let webhook_secret = if res.status() == StatusCode::OK {
        res.json::<Value>().await.unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        let (status, body) = problem(res).await;
        assert_email_unverified(status, &body, "the webhook secret");
        let mut conn = app.state.pool.get().await.unwrap();
        gptimage2::generations::webhooks::secret_for(&mut conn, account.id.parse().unwrap())
            .await
            .unwrap()
            .expose()
            .to_string()
    };
    // Every credential works before the owner shows up, and its check is served from the
    // read cache: revoking it must reach the cache too.
    app.until_cached(&api_key, "/v1/me", "api_key").await;
    app.until_cached(&mobile_access, "/v1/me", "session").await;
    app.until_cached(&account.access_token, "/v1/me", "session")
        .await;
    Foothold {
        account,
        api_key,
        mobile_access,
        mobile_refresh,
        webhook_secret,
    }
}

async fn refresh_mobile(app: &TestApp, refresh_token: &str) -> StatusCode {
    app.post_json(
        "/v1/auth/refresh",
        &json!({ "refresh_token": refresh_token }),
    )
    .await
    .status()
}

/// Nothing the attacker held answers any more, the owner's webhook secret is a new one, and
/// the owner's security log says why. `owner` is a token of the real owner, signed in after
/// proving the mailbox.
async fn assert_foothold_gone(app: &TestApp, foothold: &Foothold, owner: &str, proof: &str) {
    for (what, token) in [
        ("the attacker's API key", &foothold.api_key),
        ("the attacker's web session", &foothold.account.access_token),
        ("the attacker's phone session", &foothold.mobile_access),
    ] {
        assert_eq!(
            app.get_auth("/v1/me", token).await.status(),
            StatusCode::UNAUTHORIZED,
            "{what} still answers GET /v1/me after the owner's {proof}"
        );
        assert_eq!(
            app.get_auth("/v1/generations", token).await.status(),
            StatusCode::UNAUTHORIZED,
            "{what} still lists the owner's prompts after the owner's {proof}"
        );
    }
    assert_eq!(
        refresh_mobile(app, &foothold.mobile_refresh).await,
        StatusCode::UNAUTHORIZED,
        "the attacker's refresh token still works after the owner's {proof}"
    );
    let secret = json_of(app, "/v1/me/webhook-secret", owner).await["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        secret, foothold.webhook_secret,
        "the attacker still knows the webhook secret after the owner's {proof}"
    );
    let events = json_of(app, "/v1/me/activity?limit=100", owner).await["data"]
        .as_array()
        .unwrap()
        .clone();
    let revoked = events
        .iter()
        .find(|e| e["kind"] == "credentials_revoked")
        .unwrap_or_else(|| {
            panic!("the security log does not say what the {proof} ended: {events:#?}")
        });
    let details = &revoked["details"];
    assert!(details["sessions"].as_i64().unwrap() >= 2, "{details}");
    assert_eq!(details["api_keys"], 1, "{details}");
    assert_eq!(details["webhook_secret_rotated"], true, "{details}");
}

#[tokio::test]
async fn attacker_api_key_survives_victim_google_sign_in() {
    let google = FakeProvider::google(FakeUser::new(VICTIM).named("Victim")).await;
    let app = app_with(google.env()).await;
    let foothold = pre_register(&app).await;

    // The victim signs in with Google and lands in the pre-registered account.
    let landing = sign_in(&app, &google).await;
    let (owner, _) = access_token(&app, &landing).await;
    let me = json_of(&app, "/v1/me", &owner).await;
    assert_eq!(me["id"], foothold.account.id.as_str());
    assert_eq!(me["email_verified"], true);

    assert_foothold_gone(&app, &foothold, &owner, "Google sign-in").await;
    let events = json_of(&app, "/v1/me/activity?limit=100", &owner).await;
    let revoked = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "credentials_revoked")
        .unwrap()
        .clone();
    assert_eq!(revoked["details"]["reason"], "identity_linked");
}

#[tokio::test]
async fn attacker_api_key_survives_victim_password_reset() {
    let app = app_with(Vec::new()).await;
    let foothold = pre_register(&app).await;

    // The victim cannot sign in (the attacker chose the password), so they reset it.
    let res = app
        .post_json("/v1/auth/password/forgot", &json!({ "email": VICTIM }))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let token = app.mailed_token(VICTIM, "/reset-password").await;
    let res = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": token, "password": "a mailbox-proven passphrase" }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (owner, _) = app
        .login_mobile(VICTIM, "a mailbox-proven passphrase")
        .await;

    assert_foothold_gone(&app, &foothold, &owner, "password reset").await;
}

#[tokio::test]
async fn attacker_session_survives_victim_email_verification() {
    let app = app_with(Vec::new()).await;
    let foothold = pre_register(&app).await;

    // The verification mail went to the victim's mailbox; the victim follows it.
    let token = app.mailed_token(VICTIM, "/verify-email").await;
    let res = app
        .post_json("/v1/auth/verify-email", &json!({ "token": token }))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "following the link signs no one in"
    );
    for (what, token) in [
        ("the attacker's API key", &foothold.api_key),
        ("the attacker's web session", &foothold.account.access_token),
        ("the attacker's phone session", &foothold.mobile_access),
    ] {
        assert_eq!(
            app.get_auth("/v1/me", token).await.status(),
            StatusCode::UNAUTHORIZED,
            "{what} still answers after the owner verified the address"
        );
    }
    assert_eq!(
        refresh_mobile(&app, &foothold.mobile_refresh).await,
        StatusCode::UNAUTHORIZED,
        "the attacker's refresh token still works after the owner verified the address"
    );
    let logged: Vec<(String, String)> = app
        .db
        .client()
        .await
        .query(
            "SELECT kind, details::text FROM activity_events WHERE kind = 'credentials_revoked'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "the verification is logged as ending the earlier credentials: {logged:?}"
    );
    let rotated: i64 = app
        .count(&format!(
            "SELECT count(*) FROM webhook_secrets WHERE secret <> '{}'",
            foothold.webhook_secret
        ))
        .await;
    assert_eq!(rotated, 1, "the webhook secret was rotated");
}

/// An unverified account: the attacker's view of a pre-registered address.
async fn unverified(app: &TestApp) -> TestUser {
    app.register_with(VICTIM, PASSWORD, "Squatter").await
}

#[tokio::test]
async fn unverified_squatter_creates_an_api_key() {
    let app = app_with(Vec::new()).await;
    let squatter = unverified(&app).await;
    let (status, body) = problem(create_key(&app, &squatter.access_token).await).await;
    assert_email_unverified(status, &body, "an API key");
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0);
}

#[tokio::test]
async fn unverified_squatter_reads_the_webhook_secret() {
    let app = app_with(Vec::new()).await;
    let squatter = unverified(&app).await;
    let (status, body) = problem(
        app.get_auth("/v1/me/webhook-secret", &squatter.access_token)
            .await,
    )
    .await;
    assert_email_unverified(status, &body, "the webhook secret");
    assert_eq!(app.count("SELECT count(*) FROM webhook_secrets").await, 0);
}

#[tokio::test]
async fn unverified_squatter_sets_a_webhook_url() {
    let app = app_with(Vec::new()).await;
    let squatter = unverified(&app).await;
    app.grant_credits(&squatter.id, 100).await;
    let submit = |webhook_url: Option<&str>| {
        let mut body =
            json!({"prompt": "a lighthouse at dusk", "size": "1024x1024", "quality": "low"});
        if let Some(url) = webhook_url {
            body["webhook_url"] = json!(url);
        }
        app.client
            .post(app.url("/v1/generations"))
            .bearer_auth(&squatter.access_token)
            .json(&body)
            .send()
    };
    let (status, body) =
        problem(submit(Some("https://hooks.example.com/gi2")).await.unwrap()).await;
    assert_email_unverified(status, &body, "a webhook_url");
    assert_eq!(app.count("SELECT count(*) FROM generations").await, 0);
    // Without a webhook the unverified account may still generate.
    assert_eq!(submit(None).await.unwrap().status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn unverified_squatter_starts_a_checkout() {
    let stripe = StripeFake::start().await;
    let app = app_with(stripe.env()).await;
    let squatter = unverified(&app).await;
    let res = app
        .client
        .post(app.url("/v1/billing/checkout"))
        .bearer_auth(&squatter.access_token)
        .json(&json!({
            "provider": "stripe",
            "item_id": "pack_100",
            "success_url": "http://spa.test/billing/success",
            "cancel_url": "http://spa.test/billing",
        }))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_email_unverified(status, &body, "a checkout");
    assert!(
        stripe.requests().is_empty(),
        "nothing reached the payment provider"
    );
}

async fn change_password(app: &TestApp, token: &str, body: &Value) -> Response {
    app.client
        .post(app.url("/v1/me/password"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn attacker_brute_forces_the_current_password_with_a_stolen_token() {
    let app = app_with(Vec::new()).await;
    let victim = app.register_user().await;
    let mut limited = None;
    for attempt in 0..20 {
        let res = change_password(
            &app,
            &victim.access_token,
            &json!({
                "current_password": format!("guess number {attempt:02} horse"),
                "password": "the attacker's own horse battery",
            }),
        )
        .await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((attempt, res));
            break;
        }
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (attempt, res) = limited.expect("20 wrong current passwords in a row were never throttled");
    assert!(attempt <= 5, "throttled only after {attempt} guesses");
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (_, body) = problem(res).await;
    assert_eq!(body["code"], "rate_limited");
    // Locked means locked: even the right guess waits.
    let res = change_password(
        &app,
        &victim.access_token,
        &json!({ "current_password": PASSWORD, "password": "the attacker's own horse battery" }),
    )
    .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": victim.email, "password": "the attacker's own horse battery"}),
        )
        .await;
    assert_eq!(
        login.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "same lockout as sign-in"
    );
}

#[tokio::test]
async fn attacker_sets_a_first_password_with_a_stolen_google_access_token() {
    let google = FakeProvider::google(FakeUser::new("lin@example.com").named("Lin")).await;
    let app = app_with(google.env()).await;
    let landing = sign_in(&app, &google).await;
    let (stolen, _) = access_token(&app, &landing).await;

    let res = change_password(
        &app,
        &stolen,
        &json!({ "password": "the attacker's permanent way in" }),
    )
    .await;
    let (status, body) = problem(res).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("password_setup_requires_email")),
        "a first password needs proof of the mailbox: {body}"
    );
    assert_eq!(
        json_of(&app, "/v1/me", &stolen).await["has_password"],
        false
    );
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "lin@example.com", "password": "the attacker's permanent way in"}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);

    // The owner sets one through the mailed link.
    let res = app
        .post_json(
            "/v1/auth/password/forgot",
            &json!({"email": "lin@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let token = app.mailed_token("lin@example.com", "/reset-password").await;
    let res = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({"token": token, "password": "lin's own first password"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "lin@example.com", "password": "lin's own first password"}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
}
