DROP TABLE billing_payment_aliases;
