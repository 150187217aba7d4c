//! Attacks on the service, each performed through HTTP as an attacker would and named after
//! what the attacker tries. Every test here failed on the main it was written against and
//! passes once the cause was fixed (issue #13).

mod account_takeover;
mod generation_abuse;
mod idempotency_abuse;
mod limits_and_ops;
mod login_csrf_and_mail;
mod money;
