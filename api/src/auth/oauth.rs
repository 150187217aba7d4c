//! Google and GitHub sign-in: the OAuth 2.0 authorization-code flow with PKCE (S256).
//!
//! Every endpoint comes from configuration, so tests point them at local fakes. Errors here
//! are for the log: they name the step and the provider's status or error code, never a
//! code, token or secret.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::header::ACCEPT;
use serde::{Deserialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use url::Url;

use crate::config::{OAuthConfig, OAuthProviderConfig};

/// How long an authorization may take between our redirect and the provider's callback.
pub const STATE_TTL: Duration = Duration::from_secs(600);
/// Every call to a provider gives up after this.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Provider answers are small; anything bigger is not a provider answer.
const MAX_BODY_BYTES: usize = 256 * 1024;

// The URL path segment, and as stored in `identities.provider` and `sessions.auth_method`.
crate::wire_enum! {
    /// A sign-in provider.
    #[schema(as = OAuthProvider)]
    pub enum Provider {
        Google = "google",
        Github = "github",
    }
}

impl Provider {
    pub fn label(self) -> &'static str {
        match self {
            Self::Google => "Google",
            Self::Github => "GitHub",
        }
    }

    /// Just enough to identify the user and read a verified email.
    pub fn scope(self) -> &'static str {
        match self {
            Self::Google => "openid email profile",
            Self::Github => "read:user user:email",
        }
    }

    pub fn config(self, oauth: &OAuthConfig) -> Option<&OAuthProviderConfig> {
        match self {
            Self::Google => oauth.google.as_ref(),
            Self::Github => oauth.github.as_ref(),
        }
    }
}

/// The client for provider calls: bounded in time, and following no redirects (a token
/// endpoint that redirects would carry the code somewhere else).
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        // GitHub refuses API calls without a User-Agent.
        .user_agent(concat!("gptimage2/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A fresh PKCE verifier: 43 URL-safe characters (256 random bits), as RFC 7636 asks.
pub fn pkce_verifier() -> String {
    super::tokens::random_token("")
}

/// `BASE64URL(SHA256(verifier))`, the S256 challenge.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether the browser's `gi2_oauth_state` cookie is the nonce whose hash was stored with the
/// sign-in's state; compared in constant time.
pub fn browser_nonce_matches(cookie: Option<&str>, stored_hash: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    cookie.is_some_and(|nonce| {
        bool::from(
            super::tokens::hash_token(nonce)
                .as_slice()
                .ct_eq(stored_hash),
        )
    })
}

/// Where the provider sends the browser back to: this API's callback route. Must be
/// registered with the provider exactly as built here.
pub fn callback_url(public_url: &Url, provider: Provider) -> String {
    format!(
        "{}/v1/auth/oauth/{}/callback",
        public_url.as_str().trim_end_matches('/'),
        provider.as_str()
    )
}

/// The provider's authorization page with our request in the query.
pub fn authorize_url(
    config: &OAuthProviderConfig,
    provider: Provider,
    redirect_uri: &str,
    state: &str,
    code_challenge: &str,
) -> Url {
    let mut url = config.authorize_url.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", provider.scope())
        .append_pair("state", state)
        .append_pair("code_challenge", code_challenge)
        .append_pair("code_challenge_method", "S256");
    url
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct ProviderUser {
    /// The provider's stable id (OIDC `sub`, GitHub's numeric id).
    pub subject: String,
    pub email: Option<String>,
    /// Only a verified email may link to or create an account.
    pub email_verified: bool,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Redeems the authorization code (proving PKCE) and reads the user's profile.
pub async fn fetch_user(
    http: &reqwest::Client,
    provider: Provider,
    config: &OAuthProviderConfig,
    code: &str,
    code_verifier: &str,
    redirect_uri: &str,
) -> anyhow::Result<ProviderUser> {
    let access_token = exchange_code(http, config, code, code_verifier, redirect_uri).await?;
    match provider {
        Provider::Google => google_user(http, config, &access_token).await,
        Provider::Github => github_user(http, config, &access_token).await,
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    error: Option<String>,
}

async fn exchange_code(
    http: &reqwest::Client,
    config: &OAuthProviderConfig,
    code: &str,
    code_verifier: &str,
    redirect_uri: &str,
) -> anyhow::Result<String> {
    let res = http
        .post(config.token_url.clone())
        // GitHub answers form-encoded unless asked for JSON.
        .header(ACCEPT, "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", config.client_id.as_str()),
            ("client_secret", config.client_secret.expose()),
            ("code_verifier", code_verifier),
        ])
        .send()
        .await
        .context("token request")?;
    let status = res.status();
    let body: TokenResponse = match read_json(res).await {
        Ok(body) => body,
        Err(_) if !status.is_success() => bail!("token endpoint answered {status}"),
        Err(err) => return Err(err.context("token response")),
    };
    // GitHub reports a bad code with 200 and an `error` field.
    if let Some(error) = body.error {
        bail!(
            "token endpoint refused the code ({status}): {}",
            printable(&error)
        );
    }
    if !status.is_success() {
        bail!("token endpoint answered {status}");
    }
    if let Some(kind) = &body.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        bail!("token endpoint issued a {} token", printable(kind));
    }
    body.access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow!("token response has no access_token"))
}

#[derive(Deserialize)]
struct GoogleUserinfo {
    sub: String,
    email: Option<String>,
    /// A boolean, though some Google endpoints have sent it as a string.
    #[serde(default)]
    email_verified: serde_json::Value,
    name: Option<String>,
    picture: Option<String>,
}

async fn google_user(
    http: &reqwest::Client,
    config: &OAuthProviderConfig,
    access_token: &str,
) -> anyhow::Result<ProviderUser> {
    let info: GoogleUserinfo = get_json(http, config.api_url.clone(), access_token)
        .await
        .context("userinfo")?;
    if info.sub.is_empty() {
        bail!("userinfo has an empty sub");
    }
    let email_verified = matches!(&info.email_verified, serde_json::Value::Bool(true))
        || matches!(&info.email_verified, serde_json::Value::String(s) if s == "true");
    Ok(ProviderUser {
        subject: info.sub,
        email: info.email,
        email_verified,
        name: info.name,
        avatar_url: info.picture,
    })
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

async fn github_user(
    http: &reqwest::Client,
    config: &OAuthProviderConfig,
    access_token: &str,
) -> anyhow::Result<ProviderUser> {
    let base = config.api_url.as_str().trim_end_matches('/');
    let user: GithubUser = get_json(http, api_path(base, "/user")?, access_token)
        .await
        .context("GitHub /user")?;
    // `/user`'s `email` is the public one, unverified and often null; the emails list says
    // which address is primary and verified.
    let emails: Vec<GithubEmail> = get_json(http, api_path(base, "/user/emails")?, access_token)
        .await
        .context("GitHub /user/emails")?;
    let primary = emails.into_iter().find(|e| e.primary);
    Ok(ProviderUser {
        subject: user.id.to_string(),
        email_verified: primary.as_ref().is_some_and(|e| e.verified),
        email: primary.map(|e| e.email),
        name: user
            .name
            .filter(|n| !n.trim().is_empty())
            .or(Some(user.login)),
        avatar_url: user.avatar_url,
    })
}

fn api_path(base: &str, path: &str) -> anyhow::Result<Url> {
    Url::parse(&format!("{base}{path}")).context("GitHub API URL")
}

async fn get_json<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: Url,
    access_token: &str,
) -> anyhow::Result<T> {
    let res = http
        .get(url)
        .bearer_auth(access_token)
        .header(ACCEPT, "application/json")
        .send()
        .await?;
    let status = res.status();
    if !status.is_success() {
        bail!("answered {status}");
    }
    read_json(res).await
}

/// The body as JSON, refusing more than [`MAX_BODY_BYTES`].
async fn read_json<T: DeserializeOwned>(mut res: reqwest::Response) -> anyhow::Result<T> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            bail!("response larger than {MAX_BODY_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).context("not the expected JSON")
}

/// A provider-chosen string made safe for one log line.
fn printable(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = pkce_verifier();
        assert!(verifier.len() >= 43 && verifier.len() <= 128);
    }

    #[test]
    fn only_the_initiating_browsers_nonce_matches() {
        let stored = super::super::tokens::hash_token("nonce-a");
        assert!(browser_nonce_matches(Some("nonce-a"), &stored));
        assert!(!browser_nonce_matches(Some("nonce-b"), &stored));
        assert!(!browser_nonce_matches(Some(""), &stored));
        assert!(!browser_nonce_matches(None, &stored));
        assert!(!browser_nonce_matches(Some("nonce-a"), &[]));
    }

    #[test]
    fn callback_url_has_one_slash() {
        for base in ["https://api.example.com", "https://api.example.com/"] {
            assert_eq!(
                callback_url(&Url::parse(base).unwrap(), Provider::Github),
                "https://api.example.com/v1/auth/oauth/github/callback"
            );
        }
        assert_eq!(
            callback_url(
                &Url::parse("https://example.com/api/").unwrap(),
                Provider::Google
            ),
            "https://example.com/api/v1/auth/oauth/google/callback"
        );
    }
}
