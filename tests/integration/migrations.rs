//! Migrations: reversible (up, down, up), safe when several processes start together, and
//! the schema follows the project's conventions.

use gptimage2::db::migrate;
use gptimage2_tests::db::empty_database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_up_down_up() {
    let db = empty_database().await;
    let applied = migrate::run_pending(&db.url).await.unwrap();
    assert!(!applied.is_empty());
    let client = db.client().await;
    let before = tables(&client).await;
    assert!(before.contains(&"jobs".to_string()) && before.contains(&"outbox_mails".to_string()));
    migrate::revert_all(&db.url).await.unwrap();
    assert!(
        tables(&client).await.is_empty(),
        "down migrations remove everything"
    );
    migrate::run_pending(&db.url).await.unwrap();
    assert_eq!(tables(&client).await, before);
    assert!(
        migrate::run_pending(&db.url).await.unwrap().is_empty(),
        "nothing pending the second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_are_serialised() {
    let db = empty_database().await;
    let runs = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { migrate::run_pending(&url).await })
    });
    let mut applied_total = 0;
    for run in runs {
        applied_total += run.await.unwrap().expect("no migrator fails").len();
    }
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(
        applied_total, on_disk,
        "each migration applied exactly once"
    );
}

#[tokio::test]
async fn the_schema_diesel_knows_matches_the_migrations() {
    // Every table and column in schema.rs exists with the same nullability.
    let db = gptimage2_tests::fresh_database().await;
    let client = db.client().await;
    let schema = include_str!("../../api/src/db/schema.rs");
    let mut table = String::new();
    let mut checked = 0;
    for line in schema.lines().map(str::trim) {
        if let Some(rest) = line.strip_suffix(") {") {
            table = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            continue;
        }
        if let Some((column, ty)) = line.split_once(" -> ")
            && column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let row = client
                .query_opt(
                    "SELECT is_nullable::text FROM information_schema.columns WHERE table_name::text = $1 AND column_name::text = $2",
                    &[&table, &column],
                )
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{table}.{column} is in schema.rs but not in the database"));
            let nullable: String = row.get(0);
            assert_eq!(
                nullable == "YES",
                ty.starts_with("Nullable<"),
                "{table}.{column} nullability differs"
            );
            checked += 1;
        }
    }
    assert!(checked > 10);
}

async fn tables(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename <> '__diesel_schema_migrations' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

#[tokio::test]
async fn every_reference_to_a_user_cascades() {
    // Erasing a user must take every row that refers to them (or fail loudly in review).
    let db = gptimage2_tests::fresh_database().await;
    let rows = db
        .client()
        .await
        .query(
            "SELECT conrelid::regclass::text, confdeltype::text FROM pg_constraint
             WHERE contype = 'f' AND confrelid = 'users'::regclass",
            &[],
        )
        .await
        .unwrap();
    assert!(
        rows.len() >= 7,
        "sessions, tokens, activity, consents, identities, keys... refer to users"
    );
    for row in rows {
        let (table, action): (String, String) = (row.get(0), row.get(1));
        // Payment records outlive the account (bookkeeping law), anonymised.
        let expected = if table == "billing_transactions" {
            "n"
        } else {
            "c"
        };
        assert_eq!(
            action, expected,
            "{table}.user_id must be ON DELETE CASCADE (billing_transactions: SET NULL)"
        );
    }
}
