//! Google and GitHub sign-in through HTTP against local fake providers that speak the real
//! protocol: account creation, linking by verified email, state and PKCE protection, the
//! redirect allow-list, and linked identities.

use std::collections::HashMap;

use gptimage2_tests::{
    AppOptions, TestApp,
    oauth_fake::{FakeProvider, FakeUser, state_cookie},
    spawn_app_with,
    users::{PASSWORD, refresh_cookie, refresh_set_cookie},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use url::Url;

const SPA: &str = "http://spa.test";

async fn app_with(providers: &[&FakeProvider], extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(String, String)> = providers.iter().flat_map(|p| p.env()).collect();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await
}

async fn start(app: &TestApp, provider: &str, redirect_to: Option<&str>) -> Response {
    let path = format!("/v1/auth/oauth/{provider}/authorize");
    let url = match redirect_to {
        Some(r) => Url::parse_with_params(&app.url(&path), &[("redirect_to", r)]).unwrap(),
        None => Url::parse(&app.url(&path)).unwrap(),
    };
    app.client.get(url).send().await.unwrap()
}

fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Where the provider sends the browser back, and the `gi2_oauth_state` cookie `authorize`
/// set in that browser: the callback finishes only the sign-in its browser started.
struct Callback {
    url: String,
    cookie: String,
}

/// Starts a sign-in and lets the fake provider authorize it: the API's callback.
async fn authorized_callback(app: &TestApp, fake: &FakeProvider, redirect_to: &str) -> Callback {
    let res = start(app, fake.kind.as_str(), Some(redirect_to)).await;
    assert_eq!(res.status(), StatusCode::FOUND, "authorize");
    let cookie = state_cookie(&res).expect("authorize sets the gi2_oauth_state cookie");
    Callback {
        url: fake.authorize(&location(&res)).await,
        cookie,
    }
}

/// The browser that started the sign-in arrives at the callback, with its cookie.
async fn finish(app: &TestApp, callback: &Callback) -> Response {
    app.client
        .get(&callback.url)
        .header("cookie", &callback.cookie)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, url: &str) -> Response {
    app.client.get(url).send().await.unwrap()
}

/// A whole sign-in: the API's final response (a redirect to the SPA).
pub(crate) async fn sign_in(app: &TestApp, fake: &FakeProvider) -> Response {
    let callback = authorized_callback(app, fake, &format!("{SPA}/welcome")).await;
    finish(app, &callback).await
}

/// What the SPA does on landing: trade the cookie for an access token.
pub(crate) async fn access_token(app: &TestApp, landing: &Response) -> (String, Value) {
    let cookie = refresh_cookie(landing).expect("the refresh cookie is set");
    let res = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("cookie", format!("gi2_refresh={cookie}"))
        .header("origin", SPA)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "refresh with the OAuth cookie"
    );
    let body: Value = res.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_string(), body)
}

pub(crate) async fn json_of(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.get_auth(path, token).await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    res.json().await.unwrap()
}

async fn activity_kinds(app: &TestApp, token: &str) -> Vec<Value> {
    json_of(app, "/v1/me/activity?limit=100", token).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

async fn problem(res: Response) -> (StatusCode, Value) {
    let status = res.status();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn google_sign_in_creates_a_verified_account_without_password() {
    let google = FakeProvider::google(FakeUser::new("Lin@Example.com").named("Lin Fake")).await;
    let app = app_with(&[&google], &[]).await;

    let res = start(&app, "google", Some(&format!("{SPA}/welcome?from=menu"))).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let to_provider = location(&res);
    assert!(to_provider.starts_with(&google.authorize_url()));
    let q = query_of(&to_provider);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], google.client_id);
    assert_eq!(q["redirect_uri"], app.url("/v1/auth/oauth/google/callback"));
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["state"].len() >= 43);
    assert_eq!(
        app.count("SELECT count(*) FROM oauth_states").await,
        1,
        "pending, stored hashed"
    );

    let callback = Callback {
        cookie: state_cookie(&res).expect("the state cookie is set"),
        url: google.authorize(&to_provider).await,
    };
    let landing = finish(&app, &callback).await;
    assert_eq!(landing.status(), StatusCode::FOUND);
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?from=menu&signed_in=1")
    );
    assert_eq!(landing.headers()["cache-control"], "no-store");
    let set_cookie = refresh_set_cookie(&landing).unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Path=/v1/auth"));

    let (token, refreshed) = access_token(&app, &landing).await;
    assert_eq!(refreshed["user"]["email"], "Lin@Example.com");
    let me = json_of(&app, "/v1/me", &token).await;
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["has_password"], false);
    assert_eq!(me["name"], "Lin Fake");
    assert!(
        me["avatar_url"]
            .as_str()
            .unwrap()
            .starts_with("https://lh3.googleusercontent.com/")
    );

    let identities = json_of(&app, "/v1/me/identities", &token).await;
    let data = identities["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["provider"], "google");
    assert_eq!(data[0]["email"], "Lin@Example.com");
    assert!(identities["next_cursor"].is_null());

    let events = activity_kinds(&app, &token).await;
    let signed_up = events.iter().find(|e| e["kind"] == "signed_up").unwrap();
    assert_eq!(signed_up["details"]["method"], "google");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "signed_in" && e["details"]["method"] == "google")
    );
    assert_eq!(app.count("SELECT count(*) FROM oauth_states").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM consents").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE terms_version = '2026-11-01' AND password_hash IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM sessions WHERE auth_method = 'google'")
            .await,
        1
    );
}

#[tokio::test]
async fn github_links_to_the_verified_password_account_with_that_email() {
    let github = FakeProvider::github(FakeUser::new("placeholder@example.com")).await;
    let app = app_with(&[&github], &[]).await;
    let user = app
        .register_with("grace@example.com", PASSWORD, "Grace")
        .await;
    let verify = app.mailed_token(&user.email, "/verify-email").await;
    let res = app
        .post_json("/v1/auth/verify-email", &json!({"token": verify}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The provider's (primary, verified) address differs only in case.
    github.set_user(FakeUser::new("GRACE@example.com").named("Grace Hopper"));

    let landing = sign_in(&app, &github).await;
    assert_eq!(location(&landing), format!("{SPA}/welcome?signed_in=1"));
    let (token, _) = access_token(&app, &landing).await;
    let me = json_of(&app, "/v1/me", &token).await;
    assert_eq!(me["id"], user.id.as_str(), "the existing account");
    assert_eq!(
        me["has_password"], true,
        "a verified account keeps its password"
    );
    assert_eq!(me["name"], "Grace", "the profile is not overwritten");
    let identities = json_of(&app, "/v1/me/identities", &token).await;
    assert_eq!(identities["data"][0]["provider"], "github");
    assert_eq!(identities["data"][0]["email"], "GRACE@example.com");
    let events = activity_kinds(&app, &token).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "identity_linked" && e["details"]["provider"] == "github")
    );

    // Again: the identity itself finds the account.
    let landing = sign_in(&app, &github).await;
    let (token, _) = access_token(&app, &landing).await;
    assert_eq!(
        json_of(&app, "/v1/me", &token).await["id"],
        user.id.as_str()
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM identities").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM activity_events WHERE kind = 'identity_linked'")
            .await,
        1
    );
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": user.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK, "the password still works");

    // A disabled account cannot sign in this way either.
    app.db
        .client()
        .await
        .execute("UPDATE users SET disabled_at = now()", &[])
        .await
        .unwrap();
    let sessions = app.count("SELECT count(*) FROM sessions").await;
    let landing = sign_in(&app, &github).await;
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=account_disabled")
    );
    assert!(refresh_cookie(&landing).is_none());
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, sessions);
}

#[tokio::test]
async fn linking_to_an_unverified_account_removes_the_unproven_password() {
    let google = FakeProvider::google(FakeUser::new("victim@example.com")).await;
    let app = app_with(&[&google], &[]).await;
    // Someone registered the victim's address first and never verified it.
    let squatter = app
        .register_with("victim@example.com", PASSWORD, "Squatter")
        .await;

    let landing = sign_in(&app, &google).await;
    let (token, _) = access_token(&app, &landing).await;
    let me = json_of(&app, "/v1/me", &token).await;
    assert_eq!(me["id"], squatter.id.as_str());
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["has_password"], false);
    assert_eq!(
        app.get_auth("/v1/me", &squatter.access_token)
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "the squatter's session is over"
    );
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "victim@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::UNAUTHORIZED);
    let events = activity_kinds(&app, &token).await;
    let linked = events
        .iter()
        .find(|e| e["kind"] == "identity_linked")
        .unwrap();
    assert_eq!(linked["details"]["password_removed"], true);
}

#[tokio::test]
async fn unverified_provider_email_never_links_or_creates() {
    let google = FakeProvider::google(FakeUser::new("placeholder@example.com")).await;
    let app = app_with(&[&google], &[]).await;
    let user = app.register_user().await;
    google.set_user(FakeUser::new(&user.email).unverified());

    let landing = sign_in(&app, &google).await;
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=email_not_verified")
    );
    assert!(refresh_cookie(&landing).is_none());
    assert_eq!(app.count("SELECT count(*) FROM identities").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 1);
    let events = activity_kinds(&app, &user.access_token).await;
    assert!(events.iter().all(|e| e["kind"] != "identity_linked"));

    // Nor does it create an account for a new address.
    google.set_user(FakeUser::new("new-person@example.com").unverified());
    let landing = sign_in(&app, &google).await;
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=email_not_verified")
    );
    assert_eq!(app.count("SELECT count(*) FROM users").await, 1);
}

#[tokio::test]
async fn state_is_single_use_and_must_be_known() {
    let google = FakeProvider::google(FakeUser::new("state@example.com")).await;
    let github = FakeProvider::github(FakeUser::new("state@example.com")).await;
    let app = app_with(&[&google, &github], &[]).await;

    let (status, body) = problem(
        get(
            &app,
            &app.url("/v1/auth/oauth/google/callback?code=abc&state=forged"),
        )
        .await,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    );
    let (status, body) =
        problem(get(&app, &app.url("/v1/auth/oauth/google/callback?code=abc")).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["errors"][0]["field"], "state");
    let (status, body) =
        problem(get(&app, &app.url("/v1/auth/oauth/google/callback?state=abc")).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["errors"][0]["field"], "code");

    // The real callback works once; replayed, it is refused.
    let callback = authorized_callback(&app, &google, SPA).await;
    let landing = finish(&app, &callback).await;
    assert_eq!(location(&landing), format!("{SPA}/?signed_in=1"));
    let (status, body) = problem(finish(&app, &callback).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    );

    // Ten minutes late.
    let callback = authorized_callback(&app, &google, SPA).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE oauth_states SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let (status, body) = problem(finish(&app, &callback).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    );

    // A Google state is no good at GitHub's callback.
    let callback = authorized_callback(&app, &google, SPA).await;
    let at_github = Callback {
        url: callback.url.replace("/google/callback", "/github/callback"),
        cookie: callback.cookie,
    };
    let (status, body) = problem(finish(&app, &at_github).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_oauth_state",
    );
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 1);
}

#[tokio::test]
async fn pkce_mismatch_fails_at_the_provider_and_creates_no_session() {
    let google = FakeProvider::google(FakeUser::new("pkce@example.com")).await;
    let app = app_with(&[&google], &[]).await;
    // Two sign-ins; an attacker splices the code of one into the other's callback, so the
    // API redeems code A with verifier B.
    let a = query_of(&authorized_callback(&app, &google, SPA).await.url);
    let b = authorized_callback(&app, &google, SPA).await;
    let spliced = Callback {
        url: Url::parse_with_params(
            &app.url("/v1/auth/oauth/google/callback"),
            &[("code", &a["code"]), ("state", &query_of(&b.url)["state"])],
        )
        .unwrap()
        .into(),
        cookie: b.cookie,
    };
    let landing = finish(&app, &spliced).await;
    assert_eq!(landing.status(), StatusCode::FOUND);
    assert_eq!(location(&landing), format!("{SPA}/?error=provider_error"));
    assert!(refresh_cookie(&landing).is_none());
    assert_eq!(
        google.rejections(),
        vec!["code_verifier does not match the code_challenge".to_string()]
    );
    assert_eq!(app.count("SELECT count(*) FROM sessions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM identities").await, 0);
}

#[tokio::test]
async fn declines_and_provider_failures_return_to_the_spa_with_an_error() {
    let github = FakeProvider::github(FakeUser::new("decline@example.com")).await;
    let app = app_with(&[&github], &[]).await;
    let res = start(&app, "github", Some(SPA)).await;
    let declined = Callback {
        cookie: state_cookie(&res).unwrap(),
        url: github.deny(&location(&res)),
    };
    let landing = finish(&app, &declined).await;
    assert_eq!(landing.status(), StatusCode::FOUND);
    assert_eq!(location(&landing), format!("{SPA}/?error=access_denied"));

    github.set_token_outage(true);
    let landing = sign_in(&app, &github).await;
    assert_eq!(
        location(&landing),
        format!("{SPA}/welcome?error=provider_error")
    );
    assert!(refresh_cookie(&landing).is_none());
    assert_eq!(app.count("SELECT count(*) FROM users").await, 0);

    github.set_token_outage(false);
    let landing = sign_in(&app, &github).await;
    assert_eq!(location(&landing), format!("{SPA}/welcome?signed_in=1"));
}

#[tokio::test]
async fn redirect_to_must_be_on_the_web_apps_origin() {
    let google = FakeProvider::google(FakeUser::new("redirect@example.com")).await;
    let app = app_with(&[&google], &[]).await;
    for bad in [
        None,
        Some("http://evil.test/steal"),
        Some("/relative"),
        Some("https://spa.test/"),
        Some("http://spa.test.evil.test/"),
        Some("http://spa.test@evil.test/"),
        Some("javascript:alert(1)"),
    ] {
        let (status, body) = problem(start(&app, "google", bad).await).await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(body["errors"][0]["field"], "redirect_to", "{bad:?}");
    }
    assert_eq!(app.count("SELECT count(*) FROM oauth_states").await, 0);
    let ok = start(&app, "google", Some("http://spa.test/after#x")).await;
    assert_eq!(ok.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn authorize_is_rate_limited_per_ip() {
    let google = FakeProvider::google(FakeUser::new("limit@example.com")).await;
    let app = app_with(&[&google], &[("GI2_AUTH_RATE_PER_MINUTE", "2")]).await;
    for _ in 0..2 {
        assert_eq!(
            start(&app, "google", Some(SPA)).await.status(),
            StatusCode::FOUND
        );
    }
    let limited = start(&app, "google", Some(SPA)).await;
    assert!(limited.headers().contains_key("retry-after"));
    let (status, body) = problem(limited).await;
    assert_problem(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn unconfigured_or_unknown_providers_are_404() {
    let app = app_with(&[], &[]).await;
    let (status, body) = problem(start(&app, "google", Some(SPA)).await).await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "provider_not_configured",
    );
    let (status, body) = problem(
        get(
            &app,
            &app.url("/v1/auth/oauth/github/callback?code=a&state=b"),
        )
        .await,
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "provider_not_configured",
    );
    let (status, body) = problem(start(&app, "facebook", Some(SPA)).await).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn unlinking_keeps_a_way_to_sign_in() {
    let google = FakeProvider::google(FakeUser::new("unlink@example.com")).await;
    let app = app_with(&[&google], &[]).await;
    let landing = sign_in(&app, &google).await;
    let (token, _) = access_token(&app, &landing).await;
    let unlink = |provider: &'static str, token: &str| {
        app.client
            .delete(app.url(&format!("/v1/me/identities/{provider}")))
            .bearer_auth(token)
            .send()
    };

    let (status, body) = problem(unlink("google", &token).await.unwrap()).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "last_sign_in_method");
    // Account security needs a signed-in session: an API key may list, not unlink.
    let (_, key) = app.issue_api_key(&token, "ci").await;
    assert_eq!(
        json_of(&app, "/v1/me/identities", &key).await["data"][0]["provider"],
        "google"
    );
    let res = app
        .client
        .delete(app.url("/v1/me/identities/google"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (status, body) = problem(unlink("github", &token).await.unwrap()).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _) = problem(unlink("facebook", &token).await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An OAuth-only account sets its first password through the mailed link, not with an
    // access token alone (issue #13: a stolen token must not become a password).
    let res = app
        .client
        .post(app.url("/v1/me/password"))
        .bearer_auth(&token)
        .json(&json!({"password": "a brand new horse battery"}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(res).await;
    assert_problem(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "password_setup_requires_email",
    );
    let res = app
        .post_json(
            "/v1/auth/password/forgot",
            &json!({"email": "unlink@example.com"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let reset = app
        .mailed_token("unlink@example.com", "/reset-password")
        .await;
    let res = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({"token": reset, "password": "a brand new horse battery"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The reset ended every session: sign in with the new password.
    let (token, _) = app
        .login_mobile("unlink@example.com", "a brand new horse battery")
        .await;
    assert_eq!(
        unlink("google", &token).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let identities = json_of(&app, "/v1/me/identities", &token).await;
    assert_eq!(identities["data"].as_array().unwrap().len(), 0);
    let events = activity_kinds(&app, &token).await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "identity_unlinked" && e["details"]["provider"] == "google")
    );
    let login = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "unlink@example.com", "password": "a brand new horse battery"}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
}
