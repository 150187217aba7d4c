//! Spends per second through the ledger API (hold + capture, one transaction each), from
//! `CONCURRENCY` tasks against PostgreSQL. Run by `bench/ledger_spends.sh`, which prints it
//! beside pgbench on the same database.
//!
//! Usage: ledger_bench <database-url> <seconds> <concurrency> <users>

use std::time::{Duration, Instant};

use diesel_async::RunQueryDsl;
use gptimage2::credits::{GrantSource, ledger};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, seconds, concurrency, users] = args.as_slice() else {
        anyhow::bail!("usage: ledger_bench <database-url> <seconds> <concurrency> <users>");
    };
    let (seconds, concurrency, users): (u64, usize, usize) =
        (seconds.parse()?, concurrency.parse()?, users.parse()?);
    gptimage2::db::migrate::run_pending(url).await?;
    let pool = gptimage2::db::build_pool(url, concurrency + 2)?;
    let mut conn = pool.get().await?;
    let mut ids = Vec::new();
    for i in 0..users {
        let id = uuid::Uuid::now_v7();
        diesel::sql_query(format!(
            "INSERT INTO users (id, email, email_normalized, name) VALUES ('{id}', 'bench{i}-{id}@example.com', 'bench{i}-{id}@example.com', 'Bench')"
        ))
        .execute(&mut conn)
        .await?;
        ledger::grant(
            &mut conn,
            ledger::NewGrant {
                user_id: id,
                amount: 1_000_000_000,
                source: GrantSource::Admin,
                expires_at: None,
                reference: None,
                description: "bench",
            },
        )
        .await?;
        ids.push(id);
    }
    drop(conn);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = (0..concurrency).map(|n| {
        let pool = pool.clone();
        let user = ids[n % ids.len()];
        tokio::spawn(async move {
            let mut done = 0u64;
            let mut conn = pool.get().await?;
            while Instant::now() < deadline {
                let hold = ledger::hold(
                    &mut conn,
                    ledger::NewHold {
                        user_id: user,
                        amount: 3,
                        reference: None,
                        api_key_id: None,
                        description: "bench",
                    },
                )
                .await?;
                ledger::capture(&mut conn, hold, 2).await?;
                done += 1;
            }
            anyhow::Ok(done)
        })
    });
    // Spawn them all before awaiting any: awaiting the lazy iterator would run them one by one.
    let tasks: Vec<_> = tasks.collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut conn = pool.get().await?;
    let problems = ledger::check_invariants(&mut conn).await?;
    anyhow::ensure!(problems.is_empty(), "invariants broken: {problems:?}");
    println!("{:.1}", total as f64 / elapsed);
    Ok(())
}
