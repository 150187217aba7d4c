//! Attacks: see `security.rs`.
