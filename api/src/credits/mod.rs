//! Credits: the ledger (grants, holds, captures, releases, expiry, claw-backs) and its views.

pub mod ledger;
pub mod low_balance;

pub use ledger::{CreditError, GrantSource, Summary};
