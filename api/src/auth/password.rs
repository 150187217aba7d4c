//! Passwords: rules a person can read in the error, and argon2id hashing off the async threads.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::config::AuthConfig;

pub const MIN_LENGTH: usize = 10;
pub const MAX_LENGTH: usize = 128;

/// The most common leaked passwords (and their obvious variants are caught by the rules below).
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "qwertyuiop123",
    "password123",
    "password1234",
    "passwordpassword",
    "iloveyou123",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "qwerty12345",
    "qwerty123456",
    "abcdefghij",
    "abc1234567",
    "letmein123",
    "welcome123",
    "administrator",
    "football123",
    "baseball123",
    "monkey12345",
    "dragon12345",
    "sunshine123",
    "princess123",
    "trustno1234",
    "superman123",
    "whatever123",
    "starwars123",
    "zaq12wsxcde",
    "asdfghjkl1",
    "asdfghjkl123",
    "0987654321",
    "1111111111",
    "changeme123",
    "passw0rd123",
    "p@ssw0rd123",
    "p@ssword123",
    "computer123",
    "internet123",
    "michael1234",
    "jennifer123",
    "iloveyou1234",
    "qazwsxedcrfv",
    "1234qwerasdf",
    "q1w2e3r4t5y6",
    "gptimage2gptimage2",
    "gptimage2123",
];

/// Every rule the password breaks, as messages for the `password` field.
pub fn problems(password: &str, email: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let length = password.chars().count();
    if length < MIN_LENGTH {
        out.push(format!("must be at least {MIN_LENGTH} characters"));
    }
    if length > MAX_LENGTH {
        out.push(format!("must be at most {MAX_LENGTH} characters"));
    }
    let lower = password.to_lowercase();
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if length >= MIN_LENGTH && distinct.len() < 5 {
        out.push("must use at least 5 different characters".into());
    }
    if COMMON.contains(&lower.as_str()) || is_sequence(&lower) {
        out.push("is one of the most commonly used passwords; choose another".into());
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    let name = name.trim().to_lowercase();
    if (local.len() >= 4 && lower.contains(&local)) || (name.len() >= 4 && lower.contains(&name)) {
        out.push("must not contain your email address or name".into());
    }
    out
}

/// "1234567890", "abcdefghij", "9876543210": runs of consecutive characters.
fn is_sequence(password: &str) -> bool {
    let bytes = password.as_bytes();
    bytes.len() >= 2
        && (bytes.windows(2).all(|w| w[1] == w[0].wrapping_add(1))
            || bytes.windows(2).all(|w| w[1] == w[0].wrapping_sub(1)))
}

fn argon2(config: &AuthConfig) -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
        None,
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string; runs on the blocking pool (tens of milliseconds of CPU).
pub async fn hash(config: &AuthConfig, password: &str) -> anyhow::Result<String> {
    let argon = argon2(config)?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hash: {e}"))
    })
    .await?
}

/// Checks `password` against `stored`; with no stored hash a dummy hash is checked, so an
/// unknown account takes as long to refuse as a wrong password.
pub async fn verify(
    config: &AuthConfig,
    password: &str,
    stored: Option<&str>,
) -> anyhow::Result<bool> {
    let argon = argon2(config)?;
    let password = password.to_owned();
    let (stored, real) = match stored {
        Some(hash) => (hash.to_owned(), true),
        None => (dummy_hash(config).await?, false),
    };
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        // The parameters in the stored hash are used, so older hashes keep verifying.
        Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok() && real)
    })
    .await?
}

async fn dummy_hash(config: &AuthConfig) -> anyhow::Result<String> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| hash(config, "not the password of anyone at all"))
        .await
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_explain_themselves() {
        assert!(problems("correct horse battery", "ada@example.com", "Ada").is_empty());
        assert_eq!(
            problems("short", "a@b.c", "A"),
            vec!["must be at least 10 characters"]
        );
        assert!(problems("aaaaaaaaaaaa", "a@b.c", "A")[0].contains("5 different"));
        assert!(
            problems("1234567890", "a@b.c", "A")
                .iter()
                .any(|p| p.contains("commonly used"))
        );
        assert!(
            problems("Password123", "a@b.c", "A")
                .iter()
                .any(|p| p.contains("commonly used"))
        );
        assert!(
            problems("lovelace-rules-42", "lovelace@example.com", "Ada")
                .iter()
                .any(|p| p.contains("email"))
        );
        assert!(
            problems(&"x1y2z3".repeat(30), "a@b.c", "A")
                .iter()
                .any(|p| p.contains("at most"))
        );
    }

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let config = crate::config::Config::from_vars(Default::default())
            .unwrap()
            .auth;
        let stored = hash(&config, "correct horse battery").await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(
            verify(&config, "correct horse battery", Some(&stored))
                .await
                .unwrap()
        );
        assert!(
            !verify(&config, "wrong horse battery", Some(&stored))
                .await
                .unwrap()
        );
        assert!(
            !verify(&config, "not the password of anyone at all", None)
                .await
                .unwrap()
        );
    }
}
