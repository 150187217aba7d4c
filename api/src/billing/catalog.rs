//! What can be bought: monthly plans and one-off credit packs, with each provider's ids.
//! Loaded from `GI2_BILLING_CATALOG` (a JSON file) or the built-in default.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[schema(example = "starter")]
    pub id: String,
    #[schema(example = "Starter")]
    pub name: String,
    /// Credits granted each paid month; they expire at the period's end plus a grace period.
    #[schema(example = 500)]
    pub monthly_credits: i64,
    /// Monthly price in the currency's smallest unit.
    #[schema(example = 900)]
    pub price_cents: i64,
    #[schema(example = "usd")]
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_price_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creem_product_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pack {
    #[schema(example = "pack_100")]
    pub id: String,
    #[schema(example = "100 credits")]
    pub name: String,
    /// Credits granted once paid; they do not expire.
    #[schema(example = 100)]
    pub credits: i64,
    #[schema(example = 500)]
    pub price_cents: i64,
    #[schema(example = "usd")]
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_price_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creem_product_id: Option<String>,
}

/// Plans and packs on sale.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "plans": [{
        "id": "starter", "name": "Starter", "monthly_credits": 500, "price_cents": 900,
        "currency": "usd", "stripe_price_id": "price_1Starter", "creem_product_id": "prod_starter"
    }],
    "packs": [{
        "id": "pack_100", "name": "100 credits", "credits": 100, "price_cents": 500,
        "currency": "usd", "stripe_price_id": "price_1Pack100"
    }]
}))]
pub struct Catalog {
    pub plans: Vec<Plan>,
    pub packs: Vec<Pack>,
}

/// An item of the catalog.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Plan(&'a Plan),
    Pack(&'a Pack),
}

impl Catalog {
    pub fn builtin() -> Self {
        serde_json::from_str(include_str!("default_catalog.json"))
            .expect("the built-in catalog parses")
    }

    pub fn parse(json: &str) -> Result<Self, String> {
        let catalog: Self = serde_json::from_str(json).map_err(|e| e.to_string())?;
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids: Vec<&str> = self
            .plans
            .iter()
            .map(|p| p.id.as_str())
            .chain(self.packs.iter().map(|p| p.id.as_str()))
            .collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != count {
            return Err("item ids must be unique across plans and packs".into());
        }
        let amounts_ok = self
            .plans
            .iter()
            .all(|p| p.monthly_credits > 0 && p.price_cents > 0)
            && self
                .packs
                .iter()
                .all(|p| p.credits > 0 && p.price_cents > 0);
        if !amounts_ok {
            return Err("credits and prices must be positive".into());
        }
        Ok(())
    }

    pub fn item(&self, id: &str) -> Option<Item<'_>> {
        self.plans
            .iter()
            .find(|p| p.id == id)
            .map(Item::Plan)
            .or_else(|| self.packs.iter().find(|p| p.id == id).map(Item::Pack))
    }

    pub fn plan_by_stripe_price(&self, price_id: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.stripe_price_id.as_deref() == Some(price_id))
    }

    pub fn plan_by_creem_product(&self, product_id: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.creem_product_id.as_deref() == Some(product_id))
    }

    pub fn pack_by_creem_product(&self, product_id: &str) -> Option<&Pack> {
        self.packs
            .iter()
            .find(|p| p.creem_product_id.as_deref() == Some(product_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::builtin();
        assert!(catalog.validate().is_ok());
        assert!(matches!(catalog.item("pack_100"), Some(Item::Pack(_))));
        assert!(matches!(catalog.item("pro"), Some(Item::Plan(_))));
        assert!(catalog.item("nope").is_none());
        assert!(Catalog::parse(r#"{"plans": [], "packs": [{"id":"a","name":"A","credits":0,"price_cents":1,"currency":"usd"}]}"#).is_err());
    }
}
