//! Authentication: passwords, tokens, sessions, request extractors, abuse controls.

pub mod activity;
pub mod client;
pub mod cookie;
pub mod extract;
pub mod lockout;
pub mod new_device;
pub mod oauth;
pub mod password;
pub mod rate_limit;
pub mod recheck;
pub mod sessions;
pub mod tokens;

pub use client::ClientInfo;
pub use extract::{Auth, Credential, SessionAuth};
pub use recheck::{LiveAuth, Standing};
