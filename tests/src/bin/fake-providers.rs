//! The test fakes of the outside services (Stripe, Creem, Google, GitHub) as one process, for
//! runs of the real binary outside the Rust tests (`scripts/fuzz`): prints the `GI2_*`
//! variables that point the app at them, one `NAME=value` a line, then `ready`, and serves
//! until killed.

use std::io::Write;

use gptimage2_tests::{
    creem_fake::CreemFake,
    oauth_fake::{FakeProvider, FakeUser},
    stripe_fake::StripeFake,
};

#[tokio::main]
async fn main() {
    let stripe = StripeFake::start().await;
    let creem = CreemFake::start().await;
    let google = FakeProvider::google(FakeUser::new("fuzz-google@example.com")).await;
    let github = FakeProvider::github(FakeUser::new("fuzz-github@example.com")).await;
    let mut out = std::io::stdout().lock();
    for (name, value) in stripe
        .env()
        .into_iter()
        .chain(creem.app_env())
        .chain(google.env())
        .chain(github.env())
    {
        writeln!(out, "{name}={value}").expect("stdout");
    }
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    drop(out);
    std::future::pending::<()>().await;
}
