//! The seam between billing and a payment provider (Stripe, Creem).

use crate::{accounts::User, billing::catalog::Item, error::ApiError, state::AppState};

/// A hosted checkout to open for `user`.
pub struct CheckoutRequest<'a> {
    pub user: &'a User,
    pub item: Item<'a>,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// `stripe` or `creem`.
    fn name(&self) -> &'static str;
    /// Creates the provider's hosted checkout; returns the URL to send the user to.
    async fn checkout(
        &self,
        state: &AppState,
        request: CheckoutRequest<'_>,
    ) -> Result<String, ApiError>;
    /// A link to the provider's customer portal for `user`.
    async fn portal(&self, state: &AppState, user: &User) -> Result<String, ApiError>;
    /// Cancels a subscription at the provider (account deletion).
    async fn cancel_subscription(
        &self,
        state: &AppState,
        provider_subscription_id: &str,
    ) -> Result<(), ApiError>;
}
