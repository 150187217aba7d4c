-- Stripe API versions from 2025-03-31 no longer name a charge's invoice. Their
-- `invoice_payment.paid` event says which payment (intent or charge) paid which invoice; kept
-- here, in whichever order the events come, so a refunded renewal finds the payment it takes
-- back. Ids only, no personal data.
CREATE TABLE billing_payment_aliases (
    provider text NOT NULL,
    alias text NOT NULL,
    payment_reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, alias)
);
