//! The privacy policy, promise by promise (issue #6, point 7): each test is named after one
//! promise and proves it through HTTP, reading the real database or listing the real bucket
//! where only that can show that something is (or is not) kept.
//!
//! What the policy says, sentence by sentence, and the test that proves it:
//!
//! 1. > We store the account information you give us — your email address, your name and
//!    > your password — or, when you sign in with Google or GitHub, the email address, name
//!    > and account identity that provider shares with us. You can see it in your account.
//!
//!    [`account_info_and_third_party_login`]
//! 2. > We keep what you create with — your prompts, your reference images and the parameters
//!    > of each generation — in your account, for you alone.
//!
//!    [`creation_data_stored_per_user`]
//! 3. > When you buy credits we record the transaction (amount, currency, the payment
//!    > provider's reference). Your card details go to Stripe or Creem and never to us.
//!
//!    [`transactions_stored_without_card_details`]
//! 4. > For your security we record the IP address, browser and device of each sign-in, and
//!    > show them to you.
//!
//!    [`ip_browser_and_device_recorded_for_security`]
//! 5. > Without your consent we set only the cookies the service cannot work without: the
//!    > sign-in cookie. We set no analytics or advertising cookies.
//!
//!    [`only_necessary_cookies_without_consent`]
//! 6. > The images we generate for you are delivered to your account, and only you can
//!    > reach them.
//!
//!    [`generated_images_delivered_to_the_account`]
//! 7. > Payment notifications are accepted only when the payment provider's signature
//!    > proves they come from it.
//!
//!    [`payments_verified_by_signature`]
//! 8. > We email you about your account (such as confirming your address), your payments
//!    > (receipts) and your balance (when it runs low).
//!
//!    [`account_receipt_and_balance_mails`]
//! 9. > We collect product analytics only with your consent, and never with your IP address
//!    > or email address.
//!
//!    [`analytics_only_with_consent`]
//! 10. > We keep your data while your account is active. When you delete your account we
//!     > erase your data and your files; payment records stay only as the law requires,
//!     > without your personal data.
//!
//!     [`data_kept_while_active_and_deleted_on_request`]
//! 11. > You can access, correct, export and delete your data, and withdraw your consent, at
//!     > any time, yourself.
//!
//!     [`access_update_delete_withdraw_consent_export`]

use std::time::Duration;

use gptimage2::config::StorageConfig;
use gptimage2_tests::{
    AppOptions, ReceivedMail, TestApp, TestUser,
    creem_fake::{self, CreemFake, Customer},
    eventually,
    oauth_fake::{FakeProvider, FakeUser},
    spawn_app_with,
    stripe_fake::{StripeFake, event, now, refunded_charge, sign_with},
    users::{PASSWORD, refresh_cookie, token_in},
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    account_deletion::{self, delete_me, rows_as_text, rows_mentioning},
    analytics, billing_creem, billing_stripe, exports, generations,
    oauth::{self, json_of},
    reference_images, storage, support_and_mails,
};

const SPA: &str = "http://spa.test";

fn unique_email(who: &str) -> String {
    format!("{who}-{}@example.com", Uuid::new_v4().simple())
}

async fn status_of(app: &TestApp, path: &str, token: &str) -> StatusCode {
    app.get_auth(path, token).await.status()
}

/// Submits a generation for `user` and waits for it to succeed.
async fn generated(app: &TestApp, user: &TestUser, body: Value) -> Value {
    let res = generations::submit(app, &user.access_token, body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    generations::wait_for(app, user, &id, "succeeded").await
}

/// Every object key in the app's bucket, listed on the S3 server itself.
async fn bucket_keys(app: &TestApp) -> Vec<String> {
    let StorageConfig::S3(s3) = &app.state.config.storage else {
        panic!("the app does not use the S3 store");
    };
    let mut pages = storage::raw_s3_client()
        .list_objects_v2()
        .bucket(&s3.bucket)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("the bucket can be listed");
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
    }
    keys
}

/// Runs of 13–19 digits standing on their own (optionally in groups of 4–6 digits split by a
/// space or dash) with a card network's leading digit and a valid Luhn check digit: what a
/// stored card number (PAN) looks like. Ids, hashes, UUIDs, dates and timestamps are not.
fn card_numbers_in(text: &str) -> Vec<String> {
    fn luhn(digits: &str) -> bool {
        let sum: u32 = digits
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 {
                    if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                } else {
                    d
                }
            })
            .sum();
        sum.is_multiple_of(10)
    }
    fn card_like(digits: &str) -> bool {
        let prefix: u32 = digits[..4].parse().unwrap();
        (13..=19).contains(&digits.len())
            && (matches!(digits.as_bytes()[0], b'3'..=b'6') || (2221..=2720).contains(&prefix))
            && luhn(digits)
    }
    let chars: Vec<char> = text.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_alone = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if !chars[i].is_ascii_digit() || !starts_alone {
            i += 1;
            continue;
        }
        // Digit groups separated by one space or dash.
        let mut groups: Vec<String> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            groups.push(chars[start..j].iter().collect());
            let separated = j + 1 < chars.len()
                && matches!(chars[j], ' ' | '-')
                && chars[j + 1].is_ascii_digit();
            if !separated {
                break;
            }
            j += 1;
        }
        let ends_alone = j == chars.len() || !chars[j].is_ascii_alphanumeric();
        if ends_alone {
            for from in 0..groups.len() {
                for to in from + 1..=groups.len() {
                    let window = &groups[from..to];
                    let grouped =
                        window.len() == 1 || window.iter().all(|g| (4..=6).contains(&g.len()));
                    let digits = window.concat();
                    if grouped && digits.len() >= 13 && card_like(&digits) {
                        found.push(digits);
                    }
                }
            }
        }
        i = j.max(i + 1);
    }
    found
}

/// A mail has a plain-text part and an HTML part, both with content.
fn assert_text_and_html(mail: &ReceivedMail) {
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(
        mail.header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")),
        "{subject}: not multipart/alternative"
    );
    let text = mail.part("text/plain").expect("a text/plain part");
    let html = mail.html_body().expect("a text/html part");
    assert!(
        !text.trim().is_empty() && !text.contains("<html"),
        "{subject}: {text}"
    );
    assert!(
        html.contains("<html") && html.contains("</html>"),
        "{subject}: {html}"
    );
}

// ---- 1 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_info_and_third_party_login() {
    let google_person = FakeUser::new(&unique_email("Gus.Google")).named("Gus Google");
    let github_person = FakeUser::new(&unique_email("hedy")).named("Hedy Hub");
    let google = FakeProvider::google(google_person.clone()).await;
    let github = FakeProvider::github(github_person.clone()).await;
    let app = spawn_app_with(AppOptions {
        env: [google.env(), github.env()].concat(),
        ..Default::default()
    })
    .await;

    // Email and password: what the person typed is what is kept, and shown back.
    let email = unique_email("Pia.Password");
    let user = app.register_with(&email, PASSWORD, "Pia Password").await;
    let me = json_of(&app, "/v1/me", &user.access_token).await;
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["name"], "Pia Password");
    assert_eq!(me["has_password"], true);
    assert!(me["avatar_url"].is_null());
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT email, name, avatar_url, password_hash FROM users WHERE id = $1::text::uuid",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), email);
    assert_eq!(row.get::<_, String>(1), "Pia Password");
    assert_eq!(row.get::<_, Option<String>>(2), None);
    let hash: String = row.get(3);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let plain = rows_mentioning(&app, &[PASSWORD.to_lowercase()]).await;
    assert!(
        plain.is_empty(),
        "the password is kept only as a hash: {plain:#?}"
    );
    let identities = json_of(&app, "/v1/me/identities", &user.access_token).await;
    assert_eq!(identities["data"], json!([]));

    // Google and GitHub: the address, name and account the provider shared, nothing else.
    for (fake, person) in [(&google, &google_person), (&github, &github_person)] {
        let provider = fake.kind.as_str();
        let landing = oauth::sign_in(&app, fake).await;
        let (token, _) = oauth::access_token(&app, &landing).await;
        let me = json_of(&app, "/v1/me", &token).await;
        assert_ne!(me["id"], user.id.as_str(), "{provider}: a new account");
        assert_eq!(me["email"], person.email.as_str(), "{provider}");
        assert_eq!(me["name"], person.name.as_str(), "{provider}");
        assert_eq!(me["email_verified"], true, "{provider}");
        assert_eq!(me["has_password"], false, "{provider}");
        let shown = json_of(&app, "/v1/me/identities", &token).await;
        let shown = shown["data"].as_array().unwrap();
        assert_eq!(shown.len(), 1, "{provider}: {shown:?}");
        assert_eq!(shown[0]["provider"], provider);
        assert_eq!(shown[0]["email"], person.email.as_str());

        let row = app
            .db
            .client()
            .await
            .query_one(
                "SELECT i.provider, i.subject, i.email, u.email, u.name, u.password_hash IS NULL
                 FROM identities i JOIN users u ON u.id = i.user_id WHERE u.id = $1::text::uuid",
                &[&me["id"].as_str().unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), provider);
        assert_eq!(row.get::<_, String>(1), person.subject, "{provider}");
        assert_eq!(
            row.get::<_, Option<String>>(2).as_deref(),
            Some(person.email.as_str())
        );
        assert_eq!(row.get::<_, String>(3), person.email);
        assert_eq!(row.get::<_, String>(4), person.name);
        assert!(row.get::<_, bool>(5), "{provider}: no password invented");
    }
    assert_eq!(app.count("SELECT count(*) FROM users").await, 3);
    assert_eq!(app.count("SELECT count(*) FROM identities").await, 2);
}

// ---- 2 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_data_stored_per_user() {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        ..Default::default()
    })
    .await;
    let alice = app.register_user().await;
    let bob = app.register_user().await;
    for user in [&alice, &bob] {
        app.grant_credits(&user.id, 50).await;
    }
    let reference = reference_images::upload_ok(
        &app,
        &alice.access_token,
        "sketch.png",
        reference_images::png(40, 30),
    )
    .await;
    let reference_id = reference["id"].as_str().unwrap().to_string();
    let prompt = "a lighthouse drawn from my own sketch";
    let done = generated(
        &app,
        &alice,
        json!({
            "prompt": prompt, "size": "1024x1536", "quality": "low", "n": 1,
            "background": "opaque", "output_format": "jpeg", "output_compression": 70,
            "reference_image_ids": [reference_id],
        }),
    )
    .await;
    let id = done["id"].as_str().unwrap().to_string();
    let generation_path = format!("/v1/generations/{id}");
    let reference_path = format!("/v1/reference-images/{reference_id}");

    // Kept, and shown to her: the prompt, every parameter, the reference image.
    let kept = json_of(&app, &generation_path, &alice.access_token).await;
    assert_eq!(kept["prompt"], prompt);
    let params = &kept["params"];
    assert_eq!(params["size"], "1024x1536");
    assert_eq!(params["quality"], "low");
    assert_eq!(params["n"], 1);
    assert_eq!(params["background"], "opaque");
    assert_eq!(params["output_format"], "jpeg");
    assert_eq!(params["output_compression"], 70);
    assert_eq!(params["reference_image_ids"], json!([reference_id]));
    let shown = json_of(&app, &reference_path, &alice.access_token).await;
    assert_eq!(
        (shown["width"].as_i64(), shown["height"].as_i64()),
        (Some(40), Some(30))
    );
    let listed = json_of(&app, "/v1/generations", &alice.access_token).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let listed = json_of(&app, "/v1/reference-images", &alice.access_token).await;
    assert_eq!(listed["data"][0]["id"], reference_id.as_str());

    // Stored against her account.
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT user_id::text, prompt, params FROM generations WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), alice.id);
    assert_eq!(row.get::<_, String>(1), prompt);
    assert_eq!(
        row.get::<_, Value>(2)["reference_image_ids"],
        json!([reference_id])
    );
    let row = client
        .query_one(
            "SELECT user_id::text, object_key FROM reference_images WHERE id = $1::text::uuid",
            &[&reference_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), alice.id);
    assert!(
        row.get::<_, String>(1)
            .starts_with(&format!("users/{}/", alice.id))
    );

    // Bob: a 404 for each, nothing of hers in his lists, and no use of her image.
    for path in [
        generation_path.clone(),
        format!("{generation_path}/events"),
        reference_path.clone(),
    ] {
        assert_eq!(
            status_of(&app, &path, &bob.access_token).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for path in [&generation_path, &reference_path] {
        let res = app
            .client
            .delete(app.url(path))
            .bearer_auth(&bob.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "DELETE {path}");
    }
    let res = app
        .client
        .post(app.url(&format!("{generation_path}/cancel")))
        .bearer_auth(&bob.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for list in ["/v1/generations", "/v1/reference-images"] {
        let theirs = json_of(&app, list, &bob.access_token).await;
        assert_eq!(theirs["data"], json!([]), "{list}");
    }
    let res = generations::submit(
        &app,
        &bob.access_token,
        json!({"prompt": "borrowing", "size": "1024x1024", "quality": "low", "reference_image_ids": [reference_id]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "reference_image_ids",
        "{problem}"
    );

    // Still hers.
    for path in [&generation_path, &reference_path] {
        assert_eq!(
            status_of(&app, path, &alice.access_token).await,
            StatusCode::OK,
            "{path}"
        );
    }
}

// ---- 3 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stored_without_card_details() {
    // The detector finds card numbers as they are written, and only those.
    assert_eq!(
        card_numbers_in("paid with 4242 4242 4242 4242."),
        vec!["4242424242424242".to_string()]
    );
    assert_eq!(
        card_numbers_in(r#"{"number":"5555555555554444"}"#),
        vec!["5555555555554444".to_string()]
    );
    assert!(
        card_numbers_in(
            "0198c0de-4242-7424-8242-424242424242 2026-11-01 10:00:00+00 1767225600000 \\x34323432"
        )
        .is_empty()
    );

    let stripe = StripeFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: stripe.env(),
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let purchase = billing_stripe::paid_pack_event(&app, &stripe, &user).await;
    billing_stripe::deliver(&app, &stripe, &purchase).await;
    let session = &purchase["data"]["object"];
    let payment_intent = session["payment_intent"].as_str().unwrap();
    let customer = session["customer"].as_str().unwrap();
    // Stripe's charge for that payment carries the card's brand, last digits, expiry and
    // fingerprint; it reaches the webhook too.
    let charge = refunded_charge(payment_intent, None, customer, 500, &[]);
    let card = charge["payment_method_details"]["card"].clone();
    assert_eq!(card["last4"], "4242");
    billing_stripe::deliver(
        &app,
        &stripe,
        &event("charge.succeeded", charge, None, now()),
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events").await,
        2,
        "both events were received"
    );

    // The transaction: amount, currency, provider and the provider's reference.
    let list = billing_stripe::transactions(&app, &user).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let t = &list[0];
    assert_eq!(t["kind"], "purchase");
    assert_eq!(t["provider"], "stripe");
    assert_eq!(t["amount_cents"], 500);
    assert_eq!(t["currency"], "usd");
    assert_eq!(t["provider_reference"], payment_intent);
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT amount_cents, currency, provider, provider_reference FROM billing_transactions
             WHERE user_id = $1::text::uuid",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 500);
    assert_eq!(row.get::<_, String>(1), "usd");
    assert_eq!(row.get::<_, String>(2), "stripe");
    assert_eq!(row.get::<_, String>(3), payment_intent);
    let shown = t.to_string();
    assert!(
        !shown.contains("4242") && !shown.contains("last4"),
        "{shown}"
    );

    // No card detail in any column of any table.
    let rows = rows_as_text(&app).await;
    assert!(
        rows.iter()
            .any(|(table, row)| table == "billing_transactions" && row.contains(payment_intent)),
        "the scan sees the payment"
    );
    let fingerprint = card["fingerprint"].as_str().unwrap().to_lowercase();
    let card_fields = [
        "last4",
        "exp_month",
        "exp_year",
        "cvc",
        "payment_method_details",
        fingerprint.as_str(),
        "4242424242424242",
    ];
    for (table, row) in &rows {
        let lower = row.to_lowercase();
        for field in card_fields {
            assert!(
                !lower.contains(field),
                "{table} keeps card data ({field}): {row}"
            );
        }
        let numbers = card_numbers_in(row);
        assert!(
            numbers.is_empty(),
            "{table} keeps a card number {numbers:?}: {row}"
        );
    }
}

// ---- 4 ---------------------------------------------------------------------------------

#[tokio::test]
async fn ip_browser_and_device_recorded_for_security() {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        env: vec![("GI2_TRUST_FORWARDED_FOR".into(), "true".into())],
        ..Default::default()
    })
    .await;
    // (address, user agent)
    let laptop = (
        "203.0.113.10",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
    );
    let phone = ("198.51.100.23", "GptImage2/2.3 (iPhone; iOS 18.1)");
    let phone_elsewhere = ("192.0.2.44", "GptImage2/2.3 (iPhone; iOS 18.1)");
    let stranger = ("192.0.2.99", "curl/8.5.0");
    let post = |from: (&'static str, &'static str), path: &'static str, body: Value| {
        app.client
            .post(app.url(path))
            .header("x-forwarded-for", from.0)
            .header("user-agent", from.1)
            .json(&body)
            .send()
    };
    let email = unique_email("ira");
    let res = post(
        laptop,
        "/v1/auth/register",
        json!({"email": email, "password": PASSWORD, "name": "Ira"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = post(
        phone,
        "/v1/auth/login",
        json!({"email": email, "password": PASSWORD, "client": "mobile"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let refresh = res.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = post(
        phone_elsewhere,
        "/v1/auth/refresh",
        json!({"refresh_token": refresh}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = post(
        stranger,
        "/v1/auth/login",
        json!({"email": email, "password": "a wrong guess"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Each device, with the address and browser it signed in from, shown to the user.
    let sessions = json_of(&app, "/v1/me/sessions", &token).await["data"].clone();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let web = sessions.iter().find(|s| s["client"] == "web").unwrap();
    assert_eq!(
        (web["ip"].as_str(), web["user_agent"].as_str()),
        (Some(laptop.0), Some(laptop.1))
    );
    assert_eq!(web["current"], true);
    let mobile = sessions.iter().find(|s| s["client"] == "mobile").unwrap();
    assert_eq!(
        (
            mobile["ip"].as_str(),
            mobile["user_agent"].as_str(),
            mobile["last_ip"].as_str()
        ),
        (Some(phone.0), Some(phone.1), Some(phone_elsewhere.0))
    );
    assert_eq!(mobile["auth_method"], "password");

    // The security log: the sign-up, the sign-in and the failed attempt, each with both.
    let activity = json_of(&app, "/v1/me/activity?limit=100", &token).await["data"].clone();
    let activity = activity.as_array().unwrap();
    for (kind, (ip, agent)) in [
        ("signed_up", laptop),
        ("signed_in", phone),
        ("sign_in_failed", stranger),
    ] {
        let found = activity.iter().find(|e| e["kind"] == kind);
        let found = found.unwrap_or_else(|| panic!("no {kind} in {activity:?}"));
        assert_eq!(
            (found["ip"].as_str(), found["user_agent"].as_str()),
            (Some(ip), Some(agent)),
            "{kind}"
        );
    }

    // Recorded in the database as shown.
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT ip, user_agent, last_ip, last_user_agent FROM sessions WHERE client = 'mobile'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (0..4)
            .map(|i| row.get::<_, Option<String>>(i))
            .collect::<Vec<_>>(),
        [phone.0, phone.1, phone_elsewhere.0, phone_elsewhere.1].map(|s| Some(s.to_string()))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM activity_events WHERE kind = 'sign_in_failed' AND ip = '192.0.2.99' AND user_agent = 'curl/8.5.0'"
        )
        .await,
        1
    );

    // Shown to that user only.
    let other = app.register_user().await;
    for path in ["/v1/me/sessions", "/v1/me/activity?limit=100"] {
        let theirs = json_of(&app, path, &other.access_token).await.to_string();
        for ip in [laptop.0, phone.0, phone_elsewhere.0, stranger.0] {
            assert!(!theirs.contains(ip), "{path} of another user shows {ip}");
        }
    }
}

// ---- 5 ---------------------------------------------------------------------------------

/// One response's `Set-Cookie` headers, and whether it is a sign-in step that must set (or
/// clear) the refresh cookie.
struct Cookies {
    what: String,
    set: Vec<String>,
    refresh: bool,
}

fn cookies_of(what: &str, res: &Response, refresh: bool) -> Cookies {
    Cookies {
        what: what.to_string(),
        set: res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect(),
        refresh,
    }
}

/// Every public page: the documented GETs without security or path parameters, and the docs.
async fn public_pages(app: &TestApp, log: &mut Vec<Cookies>, when: &str) {
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut paths = vec!["/openapi.json".to_string(), "/docs".into(), "/docs/".into()];
    for (path, operations) in spec["paths"].as_object().unwrap() {
        let public_get = operations
            .get("get")
            .is_some_and(|op| op["security"].as_array().is_none_or(Vec::is_empty));
        if public_get && !path.contains('{') {
            paths.push(path.clone());
        }
    }
    for page in [
        "/v1/legal/privacy-policy",
        "/v1/pricing",
        "/v1/billing/catalog",
        "/healthz",
    ] {
        assert!(
            paths.iter().any(|p| p == page),
            "{page} missing from {paths:?}"
        );
    }
    for path in paths {
        let res = app.get(&path).await;
        assert!(
            res.status().is_success() || res.status().is_redirection(),
            "{path}: {}",
            res.status()
        );
        log.push(cookies_of(&format!("{when}: GET {path}"), &res, false));
    }
}

/// The signed-in pages a user visits.
async fn account_pages(app: &TestApp, token: &str, log: &mut Vec<Cookies>, when: &str) {
    for path in [
        "/v1/me",
        "/v1/me/consents",
        "/v1/me/sessions",
        "/v1/credits",
        "/v1/generations",
    ] {
        let res = app.get_auth(path, token).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        log.push(cookies_of(&format!("{when}: GET {path}"), &res, false));
    }
}

async fn login(app: &TestApp, email: &str, log: &mut Vec<Cookies>, when: &str) -> String {
    let res = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    log.push(cookies_of(&format!("{when}: login"), &res, true));
    refresh_cookie(&res).expect("a refresh cookie")
}

async fn refresh(app: &TestApp, cookie: &str, log: &mut Vec<Cookies>, when: &str) -> String {
    let res = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("cookie", format!("gi2_refresh={cookie}"))
        .header("origin", SPA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    log.push(cookies_of(&format!("{when}: refresh"), &res, true));
    res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_necessary_cookies_without_consent() {
    let google = FakeProvider::google(FakeUser::new(&unique_email("crumb"))).await;
    let mut env = google.env();
    env.push(("GI2_COOKIE_SECURE".into(), "true".into()));
    let app = spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await;
    let mut log = Vec::new();

    // Without an account, and without consent.
    public_pages(&app, &mut log, "anonymous").await;
    let email = unique_email("crumb");
    let res = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": email, "password": PASSWORD, "name": "Crumb"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    log.push(cookies_of("register", &res, true));
    let user_id = res.json::<Value>().await.unwrap()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let verify = app.mailed_token(&email, "/verify-email").await;
    let res = app
        .post_json("/v1/auth/verify-email", &json!({"token": verify}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    log.push(cookies_of("verify-email", &res, false));
    let cookie = login(&app, &email, &mut log, "no consent").await;
    let token = refresh(&app, &cookie, &mut log, "no consent").await;
    account_pages(&app, &token, &mut log, "no consent").await;
    public_pages(&app, &mut log, "signed in, no consent").await;
    let res = app
        .post_json("/v1/auth/password/forgot", &json!({"email": email}))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    log.push(cookies_of("password/forgot", &res, false));
    let res = oauth::sign_in(&app, &google).await;
    assert!(
        refresh_cookie(&res).is_some(),
        "the Google sign-in lands signed in"
    );
    log.push(cookies_of("Google sign-in callback", &res, true));

    // With consent to analytics and marketing: still nothing but the sign-in cookie.
    let res = app
        .client
        .put(app.url("/v1/me/consents"))
        .bearer_auth(&token)
        .json(&json!({"analytics": true, "marketing": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    log.push(cookies_of("consent granted", &res, false));
    app.grant_credits(&user_id, 10).await;
    let res = generations::submit(
        &app,
        &token,
        json!({"prompt": "a cookie jar", "size": "1024x1024", "quality": "low"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    log.push(cookies_of("consent: generation", &res, false));
    let cookie = login(&app, &email, &mut log, "consent").await;
    let token = refresh(&app, &cookie, &mut log, "consent").await;
    account_pages(&app, &token, &mut log, "consent").await;
    public_pages(&app, &mut log, "signed in, consent").await;
    let res = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    log.push(cookies_of("logout (clears it)", &res, true));

    for Cookies { what, set, refresh } in &log {
        // The other strictly necessary cookie: it binds a Google/GitHub sign-in to the
        // browser that started it, lives ten minutes, and the callback clears it.
        let (oauth_state, set): (Vec<&String>, Vec<&String>) =
            set.iter().partition(|c| c.starts_with("gi2_oauth_state="));
        for cookie in &oauth_state {
            assert_eq!(*what, "Google sign-in callback", "{cookie}");
            let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
            for needed in [
                "gi2_oauth_state=",
                "HttpOnly",
                "Secure",
                "SameSite=Lax",
                "Path=/v1/auth/oauth/google/callback",
                "Max-Age=0",
            ] {
                assert!(
                    attributes.contains(&needed),
                    "{what}: {needed} missing in {cookie}"
                );
            }
        }
        let expected = usize::from(*refresh);
        assert_eq!(set.len(), expected, "{what}: {set:?}");
        for cookie in set {
            assert!(cookie.starts_with("gi2_refresh="), "{what}: {cookie}");
            let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
            for needed in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth"] {
                assert!(
                    attributes.contains(&needed),
                    "{what}: {needed} missing in {cookie}"
                );
            }
            assert!(
                !attributes
                    .iter()
                    .any(|a| a.to_ascii_lowercase().starts_with("domain=")),
                "{what}: {cookie}"
            );
        }
    }
    assert!(log.len() > 40, "{} responses checked", log.len());
}

// ---- 6 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_images_delivered_to_the_account() {
    let app = spawn_app_with(AppOptions {
        smtp: false,
        ..Default::default()
    })
    .await;
    let owner = app.register_user().await;
    let other = app.register_user().await;
    for user in [&owner, &other] {
        app.grant_credits(&user.id, 20).await;
    }
    let done = generated(
        &app,
        &owner,
        json!({"prompt": "two owls at dawn", "size": "1024x1024", "quality": "low", "n": 2, "output_format": "png"}),
    )
    .await;
    let id = done["id"].as_str().unwrap().to_string();
    let theirs = generated(
        &app,
        &other,
        json!({"prompt": "a neighbour's cat", "size": "1024x1024", "quality": "low", "n": 1}),
    )
    .await;
    let (_, other_key) = app.issue_api_key(&other.access_token, "ci").await;

    // Delivered to her account.
    let listed = json_of(&app, "/v1/generations", &owner.access_token).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["data"][0]["images"].as_array().unwrap().len(), 2);
    let images = done["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        let image_id = image["id"].as_str().unwrap();
        let signed = reqwest::get(image["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(signed.status(), StatusCode::OK);
        let bytes = signed.bytes().await.unwrap();
        assert_eq!(bytes.len() as i64, image["bytes"].as_i64().unwrap());
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (1024, 1024));

        let content = format!("/v1/images/{image_id}/content");
        let res = app.get_auth(&content, &owner.access_token).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let fresh = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(
            reqwest::get(&fresh).await.unwrap().bytes().await.unwrap(),
            bytes
        );

        // Nobody else: another user, their API key, or no one at all.
        assert_eq!(
            status_of(&app, &content, &other.access_token).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&app, &content, &other_key).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.get(&content).await.status(), StatusCode::UNAUTHORIZED);
    }
    let others_list = json_of(&app, "/v1/generations", &other.access_token).await;
    assert!(
        others_list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["id"] != id.as_str()),
        "{others_list}"
    );

    // In the bucket under her account; unreadable without a signature, and a signature for
    // one image does not open another.
    let keys = bucket_keys(&app).await;
    let prefix = format!("users/{}/generations/{id}/", owner.id);
    let hers: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
    assert_eq!(hers.len(), 2, "{keys:?}");
    let other_object = keys
        .iter()
        .find(|k| {
            k.starts_with(&format!(
                "users/{}/generations/{}/",
                other.id,
                theirs["id"].as_str().unwrap()
            ))
        })
        .expect("the other user's image is stored")
        .clone();
    let signed = url::Url::parse(images[0]["url"].as_str().unwrap()).unwrap();
    let mut unsigned = signed.clone();
    unsigned.set_query(None);
    let res = app.client.get(unsigned.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "unsigned {unsigned}");
    let own_key = hers
        .iter()
        .find(|k| signed.path().ends_with(k.as_str()))
        .expect("the signed link names one of her objects");
    let mut swapped = signed.clone();
    swapped.set_path(&signed.path().replace(own_key.as_str(), &other_object));
    assert_ne!(swapped, signed);
    let res = app.client.get(swapped.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "swapped {swapped}");
}

// ---- 7 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_verified_by_signature() {
    let stripe = StripeFake::start().await;
    let creem = CreemFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: [stripe.env(), creem.app_env()].concat(),
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let stripe_event = billing_stripe::paid_pack_event(&app, &stripe, &user).await;
    let creem_event = billing_creem::pack_event(&user, &Customer::new(&user.email));
    let stripe_body = serde_json::to_string(&stripe_event).unwrap();
    let creem_body = serde_json::to_vec(&creem_event).unwrap();
    let stripe_tampered = stripe_body.replace("\"amount_total\":500", "\"amount_total\":50000");
    let creem_tampered = String::from_utf8(creem_body.clone())
        .unwrap()
        .replace("\"amount\":500", "\"amount\":50000")
        .into_bytes();
    assert_ne!(stripe_tampered, stripe_body);
    assert_ne!(creem_tampered, creem_body);

    let stripe_attempts = [
        ("no signature", stripe_body.clone(), None),
        (
            "another secret",
            stripe_body.clone(),
            Some(sign_with("whsec_not_ours", &stripe_body, now())),
        ),
        (
            "an old signature",
            stripe_body.clone(),
            Some(stripe.sign(&stripe_body, now() - 3600)),
        ),
        (
            "a changed body",
            stripe_tampered,
            Some(stripe.sign(&stripe_body, now())),
        ),
        (
            "garbage",
            stripe_body.clone(),
            Some("t=1,v1=00".to_string()),
        ),
    ];
    for (what, body, signature) in stripe_attempts {
        let res = billing_stripe::post_webhook(&app, &body, signature).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "Stripe, {what}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "invalid_signature",
            "Stripe, {what}"
        );
    }
    let creem_signature = creem.sign(&creem_body);
    let creem_attempts = [
        ("no signature", creem_body.clone(), None),
        (
            "another secret",
            creem_body.clone(),
            Some(creem_fake::sign("whsec_not_ours", &creem_body)),
        ),
        (
            "a changed body",
            creem_tampered,
            Some(creem_signature.clone()),
        ),
        ("garbage", creem_body.clone(), Some("not-hex".to_string())),
    ];
    for (what, body, signature) in creem_attempts {
        let res = creem_fake::post_webhook(&app, body, signature.as_deref()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "Creem, {what}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "invalid_signature",
            "Creem, {what}"
        );
    }

    // Nothing changed.
    assert_eq!(billing_stripe::balance(&app, &user).await, 0);
    assert!(billing_stripe::transactions(&app, &user).await.is_empty());
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM credit_grants").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM billing_transactions").await,
        0
    );

    // The genuine notifications, each delivered twice, are applied once.
    for _ in 0..2 {
        billing_stripe::deliver(&app, &stripe, &stripe_event).await;
        billing_creem::deliver_ok(&creem, &app, &creem_event).await;
    }
    assert_eq!(billing_stripe::balance(&app, &user).await, 200);
    let list = billing_stripe::transactions(&app, &user).await;
    let mut providers: Vec<&str> = list
        .iter()
        .map(|t| t["provider"].as_str().unwrap())
        .collect();
    providers.sort_unstable();
    assert_eq!(providers, ["creem", "stripe"]);
    assert_eq!(app.count("SELECT count(*) FROM webhook_events").await, 2);
    app.assert_ledger_invariants().await;
}

// ---- 8 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_receipt_and_balance_mails() {
    let stripe = StripeFake::start().await;
    let mut env = stripe.env();
    // Any spending from the 100 credits bought below counts as running low.
    env.push(("GI2_LOW_BALANCE_THRESHOLD".into(), "100".into()));
    let app = spawn_app_with(AppOptions {
        env,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;

    // About the account: confirming the address, with a working link.
    let confirm = support_and_mails::delivered(&app, &user.email, "Confirm your email").await;
    let confirm = confirm[0].clone();
    let token = token_in(&confirm.text_body(), "/verify-email").expect("a confirmation link");
    assert!(confirm.html_body().unwrap().contains(&token));
    let res = app
        .post_json("/v1/auth/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let me = json_of(&app, "/v1/me", &user.access_token).await;
    assert_eq!(me["email_verified"], true);

    // About a payment: the receipt.
    let purchase = billing_stripe::paid_pack_event(&app, &stripe, &user).await;
    billing_stripe::deliver(&app, &stripe, &purchase).await;
    let reference = purchase["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap();
    let receipt = support_and_mails::delivered(&app, &user.email, "receipt").await;
    let receipt = receipt[0].clone();
    for part in [receipt.text_body(), receipt.html_body().unwrap()] {
        assert!(
            part.contains("5.00 USD") && part.contains(reference),
            "{part}"
        );
    }

    // About the balance: spending takes it below the threshold.
    let res = generations::submit(
        &app,
        &user.access_token,
        json!({"prompt": "a small spend", "size": "1024x1024", "quality": "low"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let cost = res.json::<Value>().await.unwrap()["cost_credits"]
        .as_i64()
        .unwrap();
    let low = support_and_mails::delivered(&app, &user.email, "running low").await;
    let low = low[0].clone();
    let left = format!("You have {} credits left", 100 - cost);
    for part in [low.text_body(), low.html_body().unwrap()] {
        assert!(part.contains(&left), "{part}");
    }

    for mail in [&confirm, &receipt, &low] {
        assert_eq!(mail.to, vec![user.email.clone()]);
        assert_text_and_html(mail);
    }
}

// ---- 9 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_only_with_consent() {
    let app = spawn_app_with(AppOptions {
        workers: false,
        smtp: false,
        env: vec![("GI2_TRUST_FORWARDED_FOR".into(), "true".into())],
        ..Default::default()
    })
    .await;
    let (ip, agent) = ("203.0.113.77", "PrivacyPolicyTest/1.0 (Analytics)");
    let user = app.register_user().await;
    app.grant_credits(&user.id, 100).await;
    let sign_in = || async {
        let res = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", ip)
            .header("user-agent", agent)
            .json(&json!({"email": user.email, "password": PASSWORD, "client": "mobile"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    };

    // Before consent: nothing, the sign-up included.
    let consents = json_of(&app, "/v1/me/consents", &user.access_token).await;
    assert_eq!(consents["analytics"], false, "off unless granted");
    analytics::submit(&app, &user).await;
    sign_in().await;
    assert!(analytics::events(&app).await.is_empty());

    // After granting: the product events, without the person.
    analytics::set_analytics(&app, &user, true).await;
    analytics::submit(&app, &user).await;
    sign_in().await;
    let recorded = analytics::events(&app).await;
    let names: Vec<&str> = recorded.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(names, ["generation_submitted", "signed_in"]);
    for (_, _, row) in &recorded {
        for private in [
            user.id.as_str(),
            &user.email,
            &user.name,
            ip,
            "127.0.0.1",
            agent,
            "red fox",
        ] {
            assert!(!row.contains(private), "{private} in {row}");
        }
    }

    // After withdrawing: nothing more.
    analytics::set_analytics(&app, &user, false).await;
    analytics::submit(&app, &user).await;
    sign_in().await;
    assert_eq!(analytics::events(&app).await.len(), 2);
}

// ---- 10 --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_kept_while_active_and_deleted_on_request() {
    let stripe = StripeFake::start().await;
    let app = spawn_app_with(AppOptions {
        env: stripe.env(),
        ..Default::default()
    })
    .await;
    let bystander = app.register_user().await;
    reference_images::upload_ok(
        &app,
        &bystander.access_token,
        "mine.png",
        reference_images::png(20, 20),
    )
    .await;

    let unique = Uuid::new_v4().simple().to_string();
    let name = format!("Dora Delete {unique}");
    let user = app
        .register_with(&unique_email("dora"), PASSWORD, &name)
        .await;
    // Buying needs a verified address.
    app.mark_verified(&user.id).await;
    // A bit of everything: a purchase, a reference image, a generation, a consent, a
    // support request and an export.
    let purchase = billing_stripe::paid_pack_event(&app, &stripe, &user).await;
    billing_stripe::deliver(&app, &stripe, &purchase).await;
    let customer = purchase["data"]["object"]["customer"]
        .as_str()
        .unwrap()
        .to_string();
    let reference = reference_images::upload_ok(
        &app,
        &user.access_token,
        "me.png",
        reference_images::png(32, 24),
    )
    .await;
    let prompt = format!("my secret garden {unique}");
    let generation = generated(
        &app,
        &user,
        json!({"prompt": prompt, "size": "1024x1024", "quality": "low",
               "reference_image_ids": [reference["id"]]}),
    )
    .await;
    analytics::set_analytics(&app, &user, true).await;
    let res = app
        .client
        .post(app.url("/v1/support/requests"))
        .bearer_auth(&user.access_token)
        .json(&json!({"subject": "Hello", "message": format!("It is me, {name}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let export = exports::post_export(&app, &user)
        .await
        .json::<Value>()
        .await
        .unwrap();
    exports::wait_succeeded(&app, &user, export["id"].as_str().unwrap()).await;

    // Kept while the account is active.
    let mut needles = account_deletion::needles(&user);
    needles.extend([
        name.to_lowercase(),
        prompt.to_lowercase(),
        customer.to_lowercase(),
    ]);
    assert!(!rows_mentioning(&app, &needles).await.is_empty());
    let keys = bucket_keys(&app).await;
    let mine: Vec<&String> = keys.iter().filter(|k| k.contains(&user.id)).collect();
    for kind in ["/generations/", "/references/", "/exports/"] {
        assert!(
            mine.iter().any(|k| k.contains(kind)),
            "no {kind} object in {mine:?}"
        );
    }
    let path = format!("/v1/generations/{}", generation["id"].as_str().unwrap());
    assert_eq!(
        status_of(&app, &path, &user.access_token).await,
        StatusCode::OK
    );

    // Deleted on request.
    let res = delete_me(&app, &user.access_token, json!({"password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    eventually("the erasure to finish", Duration::from_secs(60), || async {
        let done = app.count("SELECT count(*) FROM jobs WHERE kind = 'delete_account' AND status = 'succeeded'",
        )
        .await;
        let confirmation = app.count("SELECT count(*) FROM outbox_mails WHERE template = 'account_deleted'",
        )
        .await;
        let busy = app.count("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') AND run_at <= now() + interval '1 minute'",
        )
        .await;
        (done == 1 && confirmation == 0 && busy == 0).then_some(())
    })
    .await;
    let left = rows_mentioning(&app, &needles).await;
    assert!(left.is_empty(), "rows still about the user: {left:#?}");
    let keys = bucket_keys(&app).await;
    let left: Vec<&String> = keys.iter().filter(|k| k.contains(&user.id)).collect();
    assert!(left.is_empty(), "objects left in the bucket: {left:?}");
    assert!(
        keys.iter().any(|k| k.contains(&bystander.id)),
        "someone else's files stay: {keys:?}"
    );
    assert_eq!(
        status_of(&app, "/v1/me", &bystander.access_token).await,
        StatusCode::OK
    );

    // The payment stays for the books, without the person.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM billing_transactions WHERE user_id IS NULL AND amount_cents = 500"
        )
        .await,
        1
    );
}

// ---- 11 --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_update_delete_withdraw_consent_export() {
    let app = spawn_app_with(AppOptions::default()).await;
    let user = app.register_user().await;
    app.grant_credits(&user.id, 50).await;
    let reference = reference_images::upload_ok(
        &app,
        &user.access_token,
        "me.png",
        reference_images::png(30, 20),
    )
    .await;
    let generation = generated(
        &app,
        &user,
        json!({"prompt": "a portrait in blue", "size": "1024x1024", "quality": "low",
               "reference_image_ids": [reference["id"]]}),
    )
    .await;

    // Access: everything about them, through the API.
    let me = json_of(&app, "/v1/me", &user.access_token).await;
    assert_eq!(
        (me["email"].as_str(), me["name"].as_str()),
        (Some(user.email.as_str()), Some("Test User"))
    );
    for path in [
        "/v1/me/sessions",
        "/v1/me/activity",
        "/v1/me/identities",
        "/v1/credits/ledger",
        "/v1/billing/transactions",
        "/v1/generations",
        "/v1/reference-images",
    ] {
        json_of(&app, path, &user.access_token).await;
    }
    let listed = json_of(&app, "/v1/generations", &user.access_token).await;
    assert_eq!(listed["data"][0]["prompt"], "a portrait in blue");

    // Correct.
    let res = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(&user.access_token)
        .json(&json!({"name": "Corrected Name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let me = json_of(&app, "/v1/me", &user.access_token).await;
    assert_eq!(me["name"], "Corrected Name");

    // Grant, then withdraw consent just as easily.
    analytics::set_analytics(&app, &user, true).await;
    let res = app
        .client
        .put(app.url("/v1/me/consents"))
        .bearer_auth(&user.access_token)
        .json(&json!({"analytics": false, "marketing": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let consents = json_of(&app, "/v1/me/consents", &user.access_token).await;
    assert_eq!(
        (
            consents["analytics"].as_bool(),
            consents["marketing"].as_bool()
        ),
        (Some(false), Some(false))
    );
    assert_eq!(
        consents["history"].as_array().unwrap().len(),
        3,
        "{consents}"
    );

    // Export, and check every file against the manifest.
    let res = exports::post_export(&app, &user).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = exports::wait_succeeded(&app, &user, &id).await;
    let download = reqwest::get(done["download_url"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let files = exports::unzip(&download.bytes().await.unwrap());
    let manifest = exports::json_file(&files, "manifest.json");
    let listed = manifest["files"].as_array().unwrap();
    assert_eq!(
        listed.len(),
        files.len() - 1,
        "every file but the manifest is listed"
    );
    for entry in listed {
        let path = entry["path"].as_str().unwrap();
        let data = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} listed, absent"));
        assert_eq!(entry["sha256"], hex::encode(Sha256::digest(data)), "{path}");
        assert_eq!(entry["bytes"].as_u64(), Some(data.len() as u64), "{path}");
    }
    assert_eq!(
        exports::json_file(&files, "profile.json")["name"],
        "Corrected Name"
    );
    let consents = exports::json_file(&files, "consents.json");
    assert_eq!(
        consents.as_array().unwrap().last().unwrap()["analytics"],
        false
    );
    let generations = exports::json_file(&files, "generations.json");
    assert_eq!(generations[0]["id"], generation["id"]);
    assert_eq!(generations[0]["prompt"], "a portrait in blue");
    let gid = generation["id"].as_str().unwrap();
    assert!(
        files
            .keys()
            .any(|f| f.starts_with(&format!("images/generations/{gid}/"))),
        "{:?}",
        files.keys()
    );
    let rid = reference["id"].as_str().unwrap();
    assert!(
        files
            .keys()
            .any(|f| f.starts_with(&format!("images/references/{rid}"))),
        "{:?}",
        files.keys()
    );

    // Delete.
    let res = delete_me(&app, &user.access_token, json!({"password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status_of(&app, "/v1/me", &user.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    eventually("the account erased", Duration::from_secs(60), || async {
        let left = app
            .count(&format!(
                "SELECT count(*) FROM users WHERE id = '{}'",
                user.id
            ))
            .await;
        (left == 0).then_some(())
    })
    .await;
}
