//! Users: the account row, its public view, and the input types that validate themselves.

pub mod consents;
pub mod deletion;
pub mod export;
pub mod ownership;
pub mod users;

pub use users::{User, UserView};
