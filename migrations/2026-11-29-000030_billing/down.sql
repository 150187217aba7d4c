DROP TABLE webhook_events;
DROP TABLE billing_transactions;
DROP TABLE subscriptions;
DROP TABLE billing_customers;
