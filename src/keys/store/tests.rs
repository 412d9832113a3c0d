use std::sync::{Arc, Barrier};

use super::*;
use crate::keys::model::Period;

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

fn budget(text: &str) -> Budget {
    text.parse().unwrap()
}

/// 2026-11-22T12:00:00Z.
const NOON: i64 = 1_795_305_600 + 12 * 3_600;

fn record(id: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        id: id.to_string(),
        name: format!("{id}-name"),
        role: Role::Invoke,
        agents: Vec::new(),
        rate: None,
        budget: None,
        upstream: "default".to_string(),
        created_at,
        expires_at: None,
        revoked_at: None,
        hash: [id.len() as u8; 32],
        previous: None,
        origin: Origin::Store,
    }
}

fn delta(key: &str, day: &str, agent: &str, class: &str, cost: &str) -> UsageDelta {
    UsageDelta {
        key_id: key.to_string(),
        day: day.to_string(),
        agent: agent.to_string(),
        class: class.to_string(),
        requests: 1,
        invocations: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: dec(cost),
    }
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("keys.db")).unwrap();
    (dir, store)
}

#[test]
fn keys_round_trip_with_every_field() {
    let (_dir, store) = temp_store();
    let full = KeyRecord {
        id: "k1".into(),
        name: "ci-bot".into(),
        role: Role::Deploy,
        agents: vec!["demo-*".into(), "prod".into(), "odd,glob".into()],
        rate: Some("30/min".parse().unwrap()),
        budget: Some(budget("2.50/day")),
        upstream: "team".into(),
        created_at: 100,
        expires_at: Some(10_000),
        revoked_at: Some(500),
        hash: [7; 32],
        previous: Some(([9; 32], 2_000)),
        origin: Origin::Config,
    };
    let minimal = record("k0", 100);
    store.insert_key(&full).unwrap();
    store.insert_key(&minimal).unwrap();
    let late = record("a-late", 200);
    store.insert_key(&late).unwrap();

    let expected = KeyRecord {
        origin: Origin::Store,
        ..full.clone()
    };
    assert_eq!(store.key("k1").unwrap(), Some(expected.clone()));
    assert_eq!(store.key("nope").unwrap(), None);
    // created_at, then id.
    assert_eq!(store.keys().unwrap(), vec![minimal, expected, late]);
    assert_eq!(store.generation().unwrap(), 3);
}

#[test]
fn a_duplicate_id_is_refused_and_changes_nothing() {
    let (_dir, store) = temp_store();
    store.insert_key(&record("k1", 1)).unwrap();
    let mut other = record("k1", 2);
    other.name = "other".into();
    let error = store.insert_key(&other).unwrap_err();
    assert!(
        matches!(&error, StoreError::Duplicate(id) if id == "k1"),
        "{error}"
    );
    assert_eq!(error.to_string(), "a key with id \"k1\" already exists");
    assert_eq!(store.key("k1").unwrap().unwrap().name, "k1-name");
    assert_eq!(store.generation().unwrap(), 1);
}

#[test]
fn revoke_and_rotate_change_the_key_and_bump_the_generation() {
    let (_dir, store) = temp_store();
    assert_eq!(store.generation().unwrap(), 0);
    store.insert_key(&record("k1", 1)).unwrap();
    store.insert_key(&record("k2", 1)).unwrap();
    assert_eq!(store.generation().unwrap(), 2);

    assert!(store.rotate("k1", &[0xaa; 32], 5_000).unwrap());
    let k1 = store.key("k1").unwrap().unwrap();
    assert_eq!(k1.hash, [0xaa; 32]);
    assert_eq!(k1.previous, Some(([2; 32], 5_000)));
    assert_eq!(store.generation().unwrap(), 3);
    // A second rotation: the current hash becomes the previous one.
    assert!(store.rotate("k1", &[0xbb; 32], 6_000).unwrap());
    let k1 = store.key("k1").unwrap().unwrap();
    assert_eq!(
        (k1.hash, k1.previous),
        ([0xbb; 32], Some(([0xaa; 32], 6_000)))
    );
    assert_eq!(store.generation().unwrap(), 4);

    assert!(store.revoke("k2", 700).unwrap());
    assert_eq!(store.key("k2").unwrap().unwrap().revoked_at, Some(700));
    assert_eq!(store.generation().unwrap(), 5);
    // Revoking again keeps the first time and the generation.
    assert!(store.revoke("k2", 800).unwrap());
    assert_eq!(store.key("k2").unwrap().unwrap().revoked_at, Some(700));
    assert_eq!(store.generation().unwrap(), 5);
    // A revoked key is not rotated.
    assert!(!store.rotate("k2", &[0xcc; 32], 9_000).unwrap());
    let k2 = store.key("k2").unwrap().unwrap();
    assert_eq!((k2.hash, k2.previous), ([2; 32], None));
    // Unknown keys.
    assert!(!store.revoke("nope", 1).unwrap());
    assert!(!store.rotate("nope", &[1; 32], 1).unwrap());
    assert_eq!(store.generation().unwrap(), 5);
}

#[test]
fn data_version_changes_only_on_other_connections_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    let v0 = a.data_version().unwrap();
    // A's own reads and writes leave A's data_version alone.
    a.keys().unwrap();
    a.generation().unwrap();
    a.insert_key(&record("mine", 1)).unwrap();
    assert_eq!(a.data_version().unwrap(), v0);

    b.insert_key(&record("theirs", 1)).unwrap();
    let v1 = a.data_version().unwrap();
    assert_ne!(v1, v0);
    assert_eq!(a.generation().unwrap(), 2);
    a.keys().unwrap();
    assert_eq!(a.data_version().unwrap(), v1);

    b.add_usage(&[delta("k", "2026-11-22", "", "crud", "1")])
        .unwrap();
    assert_ne!(a.data_version().unwrap(), v1);
}

#[test]
fn add_usage_sums_money_exactly() {
    let (_dir, store) = temp_store();
    let batch: Vec<UsageDelta> = (0..100)
        .map(|_| UsageDelta {
            invocations: 1,
            input_tokens: 12,
            output_tokens: 34,
            ..delta("k1", "2026-11-22", "demo", "invoke", "0.000171")
        })
        .collect();
    for _ in 0..100 {
        store.add_usage(&batch).unwrap();
    }
    store.add_usage(&[]).unwrap();
    let rows = store.usage(None, "2026-11-01").unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.cost_usd, dec("1.71"));
    assert_eq!(row.cost_usd.to_string(), "1.710000");
    assert_eq!(
        (
            row.requests,
            row.invocations,
            row.input_tokens,
            row.output_tokens
        ),
        (10_000, 10_000, 120_000, 340_000)
    );

    store
        .add_usage(&[
            delta("k2", "2026-11-22", "", "crud", "0.1"),
            delta("k2", "2026-11-22", "", "crud", "0.2"),
            delta(
                "k3",
                "2026-11-22",
                "",
                "crud",
                "0.1000000000000000000000000001",
            ),
            delta(
                "k3",
                "2026-11-22",
                "",
                "crud",
                "0.0000000000000000000000000002",
            ),
        ])
        .unwrap();
    let k2 = store.usage(Some("k2"), "2026-11-22").unwrap();
    assert_eq!(k2[0].cost_usd, dec("0.3"));
    assert_eq!(k2[0].cost_usd.to_string(), "0.3");
    assert_eq!(k2[0].requests, 2);
    let k3 = store.usage(Some("k3"), "2026-11-22").unwrap();
    assert_eq!(k3[0].cost_usd, dec("0.1000000000000000000000000003"));
    let month = budget("20/month");
    assert_eq!(store.spent("k2", &month, NOON).unwrap(), dec("0.3"));
}

#[test]
fn counters_saturate_instead_of_overflowing() {
    let (_dir, store) = temp_store();
    let huge = UsageDelta {
        requests: u64::MAX,
        input_tokens: i64::MAX as u64 - 1,
        ..delta("k", "2026-11-22", "", "crud", "0")
    };
    store.add_usage(&[huge.clone(), huge]).unwrap();
    let row = &store.usage(None, "").unwrap()[0];
    assert_eq!(row.requests, i64::MAX as u64);
    assert_eq!(row.input_tokens, i64::MAX as u64);
}

#[test]
fn usage_filters_by_key_and_day_in_order() {
    let (_dir, store) = temp_store();
    store
        .add_usage(&[
            delta("b", "2026-11-22", "x", "crud", "1"),
            delta("a", "2026-11-22", "y", "invoke", "2"),
            delta("a", "2026-11-22", "x", "invoke", "3"),
            delta("a", "2026-11-20", "x", "crud", "4"),
            delta("a", "2026-10-31", "x", "crud", "5"),
        ])
        .unwrap();
    let keys_days = |rows: Vec<UsageRow>| {
        rows.into_iter()
            .map(|r| format!("{} {} {} {}", r.day, r.key_id, r.agent, r.class))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys_days(store.usage(None, "2026-11-01").unwrap()),
        [
            "2026-11-20 a x crud",
            "2026-11-22 a x invoke",
            "2026-11-22 a y invoke",
            "2026-11-22 b x crud",
        ]
    );
    assert_eq!(
        keys_days(store.usage(Some("a"), "2026-11-21").unwrap()),
        ["2026-11-22 a x invoke", "2026-11-22 a y invoke"]
    );
    assert_eq!(store.usage(None, "").unwrap().len(), 5);
    assert!(store.usage(Some("c"), "").unwrap().is_empty());

    assert_eq!(store.spent("a", &budget("9/day"), NOON).unwrap(), dec("5"));
    assert_eq!(
        store.spent("a", &budget("9/month"), NOON).unwrap(),
        dec("9")
    );
    assert_eq!(
        store.spent("c", &budget("9/month"), NOON).unwrap(),
        Decimal::ZERO
    );
}

#[test]
fn reservations_hold_the_budget_until_settled_released_or_expired() {
    let (_dir, store) = temp_store();
    let limit = budget("1/day");
    store
        .add_usage(&[delta("k", "2026-11-22", "", "invoke", "0.4")])
        .unwrap();
    let Reserve::Granted(first) = store
        .reserve("k", &limit, dec("0.5"), NOON, NOON + 60)
        .unwrap()
    else {
        panic!("0.4 spent is below 1");
    };
    // Another key's reservations do not count.
    assert!(matches!(
        store
            .reserve("other", &limit, dec("5"), NOON, NOON + 60)
            .unwrap(),
        Reserve::Granted(_)
    ));
    // 0.4 + 0.5 < 1: granted.
    let Reserve::Granted(second) = store
        .reserve("k", &limit, dec("0.2"), NOON, NOON + 10)
        .unwrap()
    else {
        panic!("0.9 is below 1");
    };
    assert_ne!(first, second);
    // 0.4 + 0.7 >= 1: refused.
    assert_eq!(
        store
            .reserve("k", &limit, dec("0.01"), NOON, NOON + 60)
            .unwrap(),
        Reserve::Refused {
            spent: dec("0.4"),
            reserved: dec("0.7"),
            limit: dec("1"),
        }
    );
    // Once `second` expired, it is purged and no longer counts.
    let later = NOON + 10;
    let Reserve::Granted(third) = store
        .reserve("k", &limit, dec("0.05"), later, later + 60)
        .unwrap()
    else {
        panic!("0.4 + 0.5 is below 1");
    };
    let count: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM reservations WHERE id = ?1",
            [second],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 0);

    // Settling moves the cost into the ledger and frees the reservation.
    store
        .settle(first, &delta("k", "2026-11-22", "", "invoke", "0.35"))
        .unwrap();
    assert_eq!(store.spent("k", &limit, later).unwrap(), dec("0.75"));
    // Settling again (the reservation is gone) still records the usage.
    store
        .settle(first, &delta("k", "2026-11-22", "", "invoke", "0.2"))
        .unwrap();
    // 0.95 spent + 0.05 reserved reaches the limit exactly: refused.
    assert_eq!(
        store
            .reserve("k", &limit, dec("1"), later, later + 60)
            .unwrap(),
        Reserve::Refused {
            spent: dec("0.95"),
            reserved: dec("0.05"),
            limit: dec("1"),
        }
    );
    store.release(third).unwrap();
    store.release(third).unwrap();
    assert!(matches!(
        store
            .reserve("k", &limit, dec("1"), later, later + 60)
            .unwrap(),
        Reserve::Granted(_)
    ));
    // A refusal stores no reservation.
    let refused = store
        .reserve("k", &limit, dec("1"), later, later + 60)
        .unwrap();
    assert!(matches!(refused, Reserve::Refused { .. }));
    let live: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM reservations WHERE key_id = 'k'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 1);
    // The next day starts from zero spent.
    let tomorrow = NOON + 86_400;
    assert_eq!(store.spent("k", &limit, tomorrow).unwrap(), Decimal::ZERO);
    assert!(matches!(
        store
            .reserve("k", &limit, dec("1"), tomorrow, tomorrow + 60)
            .unwrap(),
        Reserve::Granted(_)
    ));
}

#[test]
fn reservations_are_atomic_across_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    Store::open(&path)
        .unwrap()
        .add_usage(&[delta("k", "2026-11-22", "", "invoke", "0.5")])
        .unwrap();
    let limit = Budget {
        usd: dec("1"),
        period: Period::Day,
    };
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                barrier.wait();
                store
                    .reserve("k", &limit, dec("0.3"), NOON, NOON + 60)
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<Reserve> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o, Reserve::Granted(_)))
        .count();
    assert_eq!(granted, 2, "{outcomes:?}");
    for outcome in &outcomes {
        if let Reserve::Refused {
            spent,
            reserved,
            limit,
        } = outcome
        {
            assert_eq!(
                (*spent, *reserved, *limit),
                (dec("0.5"), dec("0.6"), dec("1"))
            );
        }
    }
}

#[test]
fn concurrent_first_opens_create_the_schema_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let store = Store::open(&path).unwrap();
                store.insert_key(&record(&format!("k{i}"), i)).unwrap();
                for _ in 0..20 {
                    store
                        .add_usage(&[delta("k", "2026-11-22", "", "crud", "0.01")])
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.keys().unwrap().len(), 8);
    assert_eq!(store.generation().unwrap(), 8);
    let row = &store.usage(Some("k"), "").unwrap()[0];
    assert_eq!((row.requests, row.cost_usd), (160, dec("1.6")));
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let mut key = record("k1", 5);
    key.budget = Some(budget("20/month"));
    key.rate = Some("5/1500ms".parse().unwrap());
    let reservation;
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path);
        store.insert_key(&key).unwrap();
        store.rotate("k1", &[3; 32], 99).unwrap();
        store
            .add_usage(&[delta("k1", "2026-11-22", "a", "invoke", "1.25")])
            .unwrap();
        let Reserve::Granted(id) = store
            .reserve("k1", &budget("20/month"), dec("2"), NOON, NOON + 600)
            .unwrap()
        else {
            panic!("nothing spent yet");
        };
        reservation = id;
    }
    let store = Store::open(&path).unwrap();
    let expected = KeyRecord {
        hash: [3; 32],
        previous: Some(([2; 32], 99)),
        ..key
    };
    assert_eq!(store.keys().unwrap(), vec![expected]);
    assert_eq!(store.generation().unwrap(), 2);
    assert_eq!(store.usage(None, "").unwrap()[0].cost_usd, dec("1.25"));
    assert_eq!(
        store
            .reserve("k1", &budget("3.25/month"), dec("1"), NOON, NOON + 60)
            .unwrap(),
        Reserve::Refused {
            spent: dec("1.25"),
            reserved: dec("2"),
            limit: dec("3.25"),
        }
    );
    store.release(reservation).unwrap();
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let version: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

#[test]
fn dec_add_is_exact_and_refuses_non_decimals() {
    let (_dir, store) = temp_store();
    let sum = |a: &str, b: &str| -> rusqlite::Result<Option<String>> {
        store
            .conn
            .query_row(&format!("SELECT dec_add({a}, {b})"), [], |r| r.get(0))
    };
    assert_eq!(sum("'0.1'", "'0.2'").unwrap().as_deref(), Some("0.3"));
    assert_eq!(sum("'1.50'", "2").unwrap().as_deref(), Some("3.50"));
    assert_eq!(sum("NULL", "'1'").unwrap(), None);
    assert!(sum("'abc'", "'1'").is_err());
    assert!(sum("0.5", "'1'").is_err());
    assert!(sum("'79228162514264337593543950335'", "'1'").is_err());
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let (_dir, store) = temp_store();
    store.insert_key(&record("k1", 1)).unwrap();
    store
        .add_usage(&[delta("k", "2026-11-22", "", "crud", "1")])
        .unwrap();
    let raw = Connection::open(store.path()).unwrap();
    for (sql, table) in [
        ("UPDATE keys SET role = 'root'", "keys"),
        ("UPDATE keys SET role = 'read', budget = '-1/day'", "keys"),
        ("UPDATE keys SET budget = NULL, rate = 'fast'", "keys"),
        ("UPDATE keys SET rate = NULL, agents = 'a,b'", "keys"),
    ] {
        raw.execute(sql, []).unwrap();
        let error = store.keys().unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { table: t, .. } if *t == table),
            "{sql}: {error}"
        );
        assert!(matches!(store.key("k1"), Err(StoreError::Corrupt { .. })));
    }
    raw.execute("UPDATE keys SET agents = '[]'", []).unwrap();
    store.keys().unwrap();

    raw.execute("UPDATE usage SET cost = '1e5'", []).unwrap();
    assert!(matches!(
        store.usage(None, ""),
        Err(StoreError::Corrupt { table: "usage", .. })
    ));
    assert!(matches!(
        store.spent("k", &budget("1/day"), NOON),
        Err(StoreError::Corrupt { table: "usage", .. })
    ));
    raw.execute("UPDATE usage SET cost = '1', requests = -3", [])
        .unwrap();
    assert!(matches!(
        store.usage(None, ""),
        Err(StoreError::Corrupt { table: "usage", .. })
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 2)
        .unwrap();
    let error = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                table: "schema",
                ..
            }
        ),
        "{error}"
    );
    let missing = Store::open(&dir.path().join("no/such/dir/keys.db")).unwrap_err();
    assert!(matches!(missing, StoreError::Sqlite { .. }), "{missing}");
    assert!(missing.to_string().contains("no/such/dir"), "{missing}");
}
