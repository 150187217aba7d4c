//! Local stand-ins for Google's and GitHub's OAuth endpoints, speaking the real protocol on a
//! wiremock server: an authorization endpoint that redirects back with a code, a token
//! endpoint that checks the client, the single-use code, the redirect URI and the PKCE
//! verifier, and the profile endpoints behind the issued access token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;
use sha2::{Digest, Sha256};
use url::Url;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Google,
    Github,
}

impl Kind {
    /// The path segment of the API's routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Github => "github",
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Self::Google => "openid email profile",
            Self::Github => "read:user user:email",
        }
    }

    fn authorize_path(self) -> &'static str {
        match self {
            Self::Google => "/o/oauth2/v2/auth",
            Self::Github => "/login/oauth/authorize",
        }
    }

    fn token_path(self) -> &'static str {
        match self {
            Self::Google => "/token",
            Self::Github => "/login/oauth/access_token",
        }
    }
}

/// Who signs in at the provider.
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// The provider's stable id; numeric, as both providers' are.
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

impl FakeUser {
    /// A user with a fresh subject and a verified `email`.
    pub fn new(email: &str) -> Self {
        Self {
            subject: (uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000).to_string(),
            email: email.to_string(),
            email_verified: true,
            name: "Fake User".into(),
        }
    }

    pub fn unverified(mut self) -> Self {
        self.email_verified = false;
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

struct Grant {
    challenge: String,
    redirect_uri: String,
    user: FakeUser,
}

struct Shared {
    kind: Kind,
    client_id: String,
    client_secret: String,
    /// Who the next authorization signs in as.
    user: FakeUser,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, FakeUser>,
    /// Why each refused token request was refused.
    rejections: Vec<String>,
    /// Answer token requests with 503, as during an outage.
    token_outage: bool,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> MutexGuard<'_, Shared> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub struct FakeProvider {
    pub kind: Kind,
    pub server: MockServer,
    pub client_id: String,
    pub client_secret: String,
    state: State,
}

impl FakeProvider {
    pub async fn google(user: FakeUser) -> Self {
        Self::start(Kind::Google, user).await
    }

    pub async fn github(user: FakeUser) -> Self {
        Self::start(Kind::Github, user).await
    }

    async fn start(kind: Kind, user: FakeUser) -> Self {
        let server = MockServer::start().await;
        let client_id = format!("{}-client-{}", kind.as_str(), uuid::Uuid::new_v4().simple());
        let client_secret = random();
        let state: State = Arc::new(Mutex::new(Shared {
            kind,
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            user,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            rejections: Vec::new(),
            token_outage: false,
        }));
        Mock::given(method("GET"))
            .and(path(kind.authorize_path()))
            .respond_with(AuthorizeEndpoint(state.clone()))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(kind.token_path()))
            .respond_with(TokenEndpoint(state.clone()))
            .mount(&server)
            .await;
        let profile_paths: &[&str] = match kind {
            Kind::Google => &["/v1/userinfo"],
            Kind::Github => &["/api/user", "/api/user/emails"],
        };
        for p in profile_paths {
            Mock::given(method("GET"))
                .and(path(*p))
                .respond_with(ProfileEndpoint(state.clone()))
                .mount(&server)
                .await;
        }
        Self {
            kind,
            server,
            client_id,
            client_secret,
            state,
        }
    }

    pub fn authorize_url(&self) -> String {
        format!("{}{}", self.server.uri(), self.kind.authorize_path())
    }

    /// The `GI2_*` variables that point the app at this provider.
    pub fn env(&self) -> Vec<(String, String)> {
        let prefix = match self.kind {
            Kind::Google => "GI2_GOOGLE",
            Kind::Github => "GI2_GITHUB",
        };
        let api = match self.kind {
            Kind::Google => format!("{}/v1/userinfo", self.server.uri()),
            Kind::Github => format!("{}/api", self.server.uri()),
        };
        vec![
            (format!("{prefix}_CLIENT_ID"), self.client_id.clone()),
            (
                format!("{prefix}_CLIENT_SECRET"),
                self.client_secret.clone(),
            ),
            (format!("{prefix}_AUTHORIZE_URL"), self.authorize_url()),
            (
                format!("{prefix}_TOKEN_URL"),
                format!("{}{}", self.server.uri(), self.kind.token_path()),
            ),
            (format!("{prefix}_API_URL"), api),
        ]
    }

    /// Who the next authorization signs in as.
    pub fn set_user(&self, user: FakeUser) {
        lock(&self.state).user = user;
    }

    /// Makes the token endpoint answer 503 (or recover).
    pub fn set_token_outage(&self, outage: bool) {
        lock(&self.state).token_outage = outage;
    }

    /// Why the token endpoint refused requests so far.
    pub fn rejections(&self) -> Vec<String> {
        lock(&self.state).rejections.clone()
    }

    /// Acts as the user's browser at the provider: follows `location` (where the API sent
    /// the browser) to the authorization endpoint, which checks the request and redirects
    /// back; returns that callback URL (with `code` and `state`).
    pub async fn authorize(&self, location: &str) -> String {
        assert!(
            location.starts_with(&self.authorize_url()),
            "the API sent the browser to {location}, not to {}",
            self.authorize_url()
        );
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let res = browser
            .get(location)
            .send()
            .await
            .expect("provider reached");
        let status = res.status();
        let callback = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match callback {
            Some(callback) if status == 302 => callback,
            _ => panic!(
                "the provider refused the authorization request ({status}): {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }

    /// The callback URL when the user clicks "Cancel" at the provider.
    pub fn deny(&self, location: &str) -> String {
        let url = Url::parse(location).expect("authorize URL");
        let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
        let mut back = Url::parse(&query["redirect_uri"]).expect("redirect_uri");
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &query["state"]);
        back.into()
    }
}

struct AuthorizeEndpoint(State);

impl Respond for AuthorizeEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut shared = lock(&self.0);
        let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        let problem = if get("response_type") != "code" {
            Some("response_type must be code")
        } else if get("client_id") != shared.client_id {
            Some("unknown client_id")
        } else if Url::parse(get("redirect_uri")).is_err() {
            Some("redirect_uri must be an absolute URL")
        } else if get("scope") != shared.kind.scope() {
            Some("unexpected scope")
        } else if get("state").is_empty() {
            Some("state is required")
        } else if get("code_challenge_method") != "S256" {
            Some("code_challenge_method must be S256")
        } else if get("code_challenge").len() != 43 {
            Some("code_challenge must be a base64url SHA-256")
        } else {
            None
        };
        if let Some(problem) = problem {
            // Real providers show the user an error page rather than redirecting.
            return ResponseTemplate::new(400).set_body_string(problem);
        }
        let code = random();
        let user = shared.user.clone();
        shared.codes.insert(
            code.clone(),
            Grant {
                challenge: get("code_challenge").to_string(),
                redirect_uri: get("redirect_uri").to_string(),
                user,
            },
        );
        let mut back = Url::parse(get("redirect_uri")).expect("checked above");
        back.query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", get("state"));
        ResponseTemplate::new(302).insert_header("location", back.as_str())
    }
}

struct TokenEndpoint(State);

impl TokenEndpoint {
    /// How each provider reports a refused request.
    fn refuse(kind: Kind, status: u16, error: &str) -> ResponseTemplate {
        match kind {
            // GitHub answers 200 with an error document.
            Kind::Github => ResponseTemplate::new(200),
            Kind::Google => ResponseTemplate::new(status),
        }
        .set_body_json(
            json!({ "error": error, "error_description": "refused by the fake provider" }),
        )
    }
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut shared = lock(&self.0);
        let kind = shared.kind;
        if shared.token_outage {
            return ResponseTemplate::new(503).set_body_string("unavailable");
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != shared.client_id || get("client_secret") != shared.client_secret {
            shared
                .rejections
                .push("client authentication failed".into());
            return Self::refuse(kind, 401, "invalid_client");
        }
        if get("grant_type") != "authorization_code" {
            shared
                .rejections
                .push("grant_type must be authorization_code".into());
            return Self::refuse(kind, 400, "unsupported_grant_type");
        }
        // A code works once, whatever the outcome.
        let Some(grant) = shared.codes.remove(get("code")) else {
            shared.rejections.push("unknown or used code".into());
            return Self::refuse(kind, 400, "invalid_grant");
        };
        if get("redirect_uri") != grant.redirect_uri {
            shared.rejections.push("redirect_uri differs".into());
            return Self::refuse(kind, 400, "invalid_grant");
        }
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes()));
        if challenge != grant.challenge {
            shared
                .rejections
                .push("code_verifier does not match the code_challenge".into());
            return Self::refuse(kind, 400, "invalid_grant");
        }
        let token = random();
        shared.tokens.insert(token.clone(), grant.user);
        let scope = kind.scope();
        let wants_json = request
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        if kind == Kind::Github && !wants_json {
            return ResponseTemplate::new(200).set_body_raw(
                format!(
                    "access_token={token}&scope={}&token_type=bearer",
                    scope.replace(' ', ",")
                ),
                "application/x-www-form-urlencoded",
            );
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": scope,
        }))
    }
}

struct ProfileEndpoint(State);

impl Respond for ProfileEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let shared = lock(&self.0);
        let token = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(user) = token.and_then(|t| shared.tokens.get(t)) else {
            return ResponseTemplate::new(401).set_body_json(json!({ "error": "invalid_token" }));
        };
        match (shared.kind, request.url.path()) {
            (Kind::Google, _) => ResponseTemplate::new(200).set_body_json(json!({
                "sub": user.subject,
                "email": user.email,
                "email_verified": user.email_verified,
                "name": user.name,
                "picture": format!("https://lh3.googleusercontent.com/a/{}", user.subject),
            })),
            (Kind::Github, _) if !request.headers.contains_key("user-agent") => {
                ResponseTemplate::new(403).set_body_string("Request forbidden by administrative rules. Please make sure your request has a User-Agent header.")
            }
            (Kind::Github, "/api/user") => ResponseTemplate::new(200).set_body_json(json!({
                "login": format!("fake-{}", user.subject),
                "id": user.subject.parse::<u64>().expect("numeric subject"),
                "name": user.name,
                "avatar_url": format!("https://avatars.githubusercontent.com/u/{}", user.subject),
                "email": null,
            })),
            (Kind::Github, _) => ResponseTemplate::new(200).set_body_json(json!([
                // A verified secondary address first: only the primary one may count.
                { "email": format!("{}+fake@users.noreply.github.com", user.subject),
                  "primary": false, "verified": true, "visibility": null },
                { "email": user.email, "primary": true, "verified": user.email_verified,
                  "visibility": "private" },
            ])),
        }
    }
}

/// The `gi2_oauth_state` cookie that `authorize` set, as the browser sends it back on the
/// callback (`name=value`, for a `Cookie` header); `None` when it set none.
pub fn state_cookie(authorize: &reqwest::Response) -> Option<String> {
    state_set_cookie(authorize)
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .filter(|pair| pair.len() > "gi2_oauth_state=".len())
}

/// The raw `Set-Cookie` header for `gi2_oauth_state`.
pub fn state_set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("gi2_oauth_state="))
        .map(str::to_owned)
}
