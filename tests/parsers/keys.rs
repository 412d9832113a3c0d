//! `key_create` and `key_rotate`: `POST /admin/keys` bodies
//! (`keys::ops::NewKey`, `ops::mint`) and `POST /admin/keys/{id}/rotate`
//! bodies (the private `routes::keys::RotateBody`), through the app.

use axum::body::Body;
use castari_gateway::config::rate::MAX_WINDOW;
use castari_gateway::keys::clock;
use castari_gateway::keys::model::Origin;
use castari_gateway::keys::ops::{self, NewKey, OpsError};
use castari_gateway::keys::token;
use http::{Method, StatusCode};
use proptest::prelude::*;
use proptest::sample::select;

use crate::gateway::{admin_request, request, with_bearer, Gateway, ADMIN_MAX_BODY, TOKEN};
use crate::support::{
    ensure, inputs, long, mutated, object, run_corpus, run_fuzz, seed, JSON_DICT,
};

/// The longest key lifetime, as documented: 100 years.
const MAX_LIFETIME_SECS: i64 = 100 * 365 * 86_400;

/// `POST /admin/keys`: the answer is the one `NewKey` and `ops::mint`
/// give (413 over 16 KiB, 422 `invalid_body` for a body that is not a
/// `NewKey`, 422 `invalid_key_request` naming the field, else 201), never
/// a key with a rate window over a year or a lifetime over 100 years, and
/// a created key works at once.
fn create_case(gateway: &Gateway, body: &[u8]) -> Result<String, String> {
    let expected = if body.len() > ADMIN_MAX_BODY {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large".to_string(),
        )
    } else {
        match serde_json::from_slice::<NewKey>(body) {
            Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body".to_string()),
            Ok(new) => {
                ensure(
                    new.rate.is_none_or(|rate| rate.window <= MAX_WINDOW),
                    || format!("a NewKey with rate {:?}", new.rate),
                )?;
                let lifetime = new.expires.as_deref().and_then(ops::parse_lifetime);
                let minted = ops::mint(&new, &["default"], 1_700_000_000, Origin::Store);
                ensure(
                    minted.is_err() || lifetime.is_none_or(|s| s <= MAX_LIFETIME_SECS),
                    || format!("minted with a lifetime of {lifetime:?} s"),
                )?;
                match minted {
                    Ok(_) => (StatusCode::CREATED, String::new()),
                    Err(OpsError::Invalid { field, .. }) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("invalid_key_request {field}"),
                    ),
                    Err(other) => return Err(format!("mint failed: {other}")),
                }
            }
        }
    };
    let answer = gateway.send(admin_request("/admin/keys", body))?;
    let (code, detail) = (answer.code(), answer.detail());
    let seen = match expected.1.split_once(' ') {
        Some((_, field)) if detail.contains(field) => format!("{code} {field}"),
        _ => code.clone(),
    };
    ensure(
        (answer.status, seen.as_str()) == (expected.0, expected.1.as_str()),
        || {
            format!(
                "{} {detail:?}, expected {} {}",
                answer.status, expected.0, expected.1
            )
        },
    )?;
    if answer.status == StatusCode::CREATED {
        let json = answer.json();
        let key = json["key"].as_str().unwrap_or_default().to_string();
        let id = json["info"]["id"].as_str().unwrap_or_default();
        ensure(token::id_of(&key) == Some(id), || {
            format!("token {key:?} does not carry id {id:?}")
        })?;
        let new: NewKey = serde_json::from_slice(body).unwrap();
        ensure(json["info"]["name"] == new.name.trim(), || {
            format!("name {:?} for {:?}", json["info"]["name"], new.name)
        })?;
        // Used at once: only keys for every agent, and not about to expire.
        let lifetime = new.expires.as_deref().and_then(ops::parse_lifetime);
        if new.agents.is_empty() && lifetime.is_none_or(|secs| secs >= 60) {
            let used = gateway.send(use_key(&key))?;
            ensure(used.status == StatusCode::OK, || {
                format!("the new key got {} {:?}", used.status, used.body)
            })?;
        }
    }
    Ok(format!("{} {code}", answer.status))
}

/// `GET /api/v1/agents` with `key`.
fn use_key(key: &str) -> http::Request<Body> {
    with_bearer(request(Method::GET, "/api/v1/agents", Body::empty()), key)
}

/// The body of `POST /admin/keys/{id}/rotate` as documented: optional
/// `grace_secs`, nothing else (a copy of the private `RotateBody`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RotateModel {
    grace_secs: Option<u64>,
}

/// `POST /admin/keys/{id}/rotate`: an empty body or a `RotateModel`
/// rotates (200, a new token for the same id), more than 16 KiB is 413,
/// anything else 422 `invalid_body`.
fn rotate_case(gateway: &Gateway, id: &str, body: &[u8]) -> Result<String, String> {
    let expected = if body.is_empty() {
        StatusCode::OK
    } else if body.len() > ADMIN_MAX_BODY {
        StatusCode::PAYLOAD_TOO_LARGE
    } else if serde_json::from_slice::<RotateModel>(body).is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let answer = gateway.send(admin_request(&format!("/admin/keys/{id}/rotate"), body))?;
    ensure(answer.status == expected, || {
        format!("{} {:?}, expected {expected}", answer.status, answer.body)
    })?;
    if answer.status == StatusCode::OK {
        let key = answer.json()["key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure(token::id_of(&key) == Some(id), || {
            format!("rotated token {key:?} is not for {id}")
        })?;
    } else if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
        ensure(answer.code() == "invalid_body", || {
            format!("code {:?}", answer.code())
        })?;
    }
    Ok(format!("{} {}", answer.status, answer.code()))
}

/// A keys-mode gateway and the id of a key in its store.
fn rotating_gateway() -> (Gateway, String) {
    let gateway = Gateway::new(true);
    let created = gateway
        .send(admin_request(
            "/admin/keys",
            br#"{"name":"rotated","role":"read"}"#,
        ))
        .unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.json()["info"]["id"].as_str().unwrap().to_string();
    (gateway, id)
}

/// Members of `POST /admin/keys/{id}/rotate` bodies.
const ROTATE_MEMBERS: &[&str] = &[
    r#""grace_secs":60"#,
    r#""grace_secs":0"#,
    r#""grace_secs":null"#,
    r#""grace_secs":18446744073709551615"#,
    r#""grace_secs":18446744073709551616"#,
    r#""grace_secs":-1"#,
    r#""grace_secs":1.0"#,
    r#""grace_secs":"5""#,
    r#""other":1"#,
];

/// `POST /admin/keys` bodies: each field absent, good, or bad.
fn new_key() -> BoxedStrategy<Vec<u8>> {
    /// `name`: absent `absent` times in ten, else mostly a good value.
    fn field(
        name: &'static str,
        absent: u32,
        good: &'static [&'static str],
        bad: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        let member = move |v: &str| format!(r#""{name}":{v}"#);
        prop_oneof![
            absent * 4 => Just(String::new()),
            (10 - absent) * 3 => select(good).prop_map(member),
            10 - absent => select(bad).prop_map(member),
        ]
        .boxed()
    }
    let fields = [
        field(
            "name",
            1,
            &[r#""ci""#, r#"" bot ""#, r#""é""#],
            &[r#""""#, r#""a\u0007b""#, "5"],
        ),
        field(
            "role",
            1,
            &[r#""read""#, r#""invoke""#, r#""admin""#],
            &[r#""root""#, "null"],
        ),
        field(
            "agents",
            5,
            &["[]", r#"["demo-*"]"#, r#"["?x","a*b*c"]"#],
            &[r#"[""]"#, r#"["Demo"]"#],
        ),
        field(
            "rate",
            5,
            &[r#""30/min""#, r#"" 7 / 2h ""#, r#""1/8760h""#],
            &[
                r#""0/min""#,
                r#""4294967296/s""#,
                r#""1/8761h""#,
                r#""1/6000000h""#,
            ],
        ),
        field(
            "budget_usd",
            5,
            &[r#""20/month""#, r#""$2.50/d""#],
            &[r#""-1/day""#, r#""1e3/day""#, r#""5/week""#],
        ),
        field(
            "expires",
            5,
            &[r#""30d""#, r#""12h""#, r#""1w""#, r#""36500d""#],
            &[
                r#""0d""#,
                r#""5y""#,
                r#""36501d""#,
                r#""9999999999999999w""#,
                r#""9223372036854775807s""#,
            ],
        ),
        field("upstream", 7, &[r#""default""#, "null"], &[r#""other""#]),
        field("admin", 9, &["true"], &["true"]),
    ];
    fields
        .prop_map(|fields| {
            let present: Vec<String> = fields.into_iter().filter(|f| !f.is_empty()).collect();
            format!("{{{}}}", present.join(",")).into_bytes()
        })
        .boxed()
}

/// Long bodies, made here rather than committed.
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    let mut at_the_limit = br#"{"name":"ci","role":"read","agents":["a"]}"#.to_vec();
    at_the_limit.resize(ADMIN_MAX_BODY, b' ');
    vec![
        long("nested_arrays", "[".repeat(100_000)),
        long("at_the_limit", at_the_limit),
        long("over_the_limit", vec![b' '; ADMIN_MAX_BODY + 1]),
    ]
}

#[test]
fn key_create_corpus() {
    let gateway = Gateway::new(true);
    run_corpus("key_create", inputs("key_create", long_inputs()), |body| {
        create_case(&gateway, body)
    });
}

#[test]
fn key_create_fuzz() {
    let gateway = Gateway::new(true);
    run_fuzz(
        "key_create",
        256,
        mutated("key_create", JSON_DICT, new_key()),
        |body| create_case(&gateway, body),
    );
}

#[test]
fn key_rotate_corpus() {
    let (gateway, id) = rotating_gateway();
    run_corpus("key_rotate", inputs("key_rotate", long_inputs()), |body| {
        rotate_case(&gateway, &id, body)
    });
}

#[test]
fn key_rotate_fuzz() {
    let (gateway, id) = rotating_gateway();
    run_fuzz(
        "key_rotate",
        256,
        mutated("key_rotate", JSON_DICT, object(ROTATE_MEMBERS, 3)),
        |body| rotate_case(&gateway, &id, body),
    );
}

/// `POST /admin/keys` with `body`, expecting `status` and `code`: the
/// detail, for the caller to check.
fn create(gateway: &Gateway, body: &[u8], status: StatusCode, code: &str) -> String {
    let answer = gateway.send(admin_request("/admin/keys", body)).unwrap();
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.code(), code, "{answer:?}");
    answer.detail()
}

/// Fixed: an `expires` whose seconds overflow `now + lifetime` panicked in
/// `ops::mint` (a 500). Now a lifetime over 100 years is 422
/// `invalid_key_request` naming `expires`; 100 years is a key.
#[test]
fn regression_key_expires_over_100_years() {
    let gateway = Gateway::new(true);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for name in ["expires_overflow_add", "expires_over_100_years"] {
        let body = seed("key_create", name);
        let detail = create(&gateway, &body, unprocessable, "invalid_key_request");
        assert!(detail.contains("expires"), "{name}: {detail}");
        let new: NewKey = serde_json::from_slice(&body).unwrap();
        let refused = ops::mint(&new, &["default"], clock::now_unix(), Origin::Store);
        assert!(
            matches!(
                refused,
                Err(OpsError::Invalid {
                    field: "expires",
                    ..
                })
            ),
            "{name}: {:?}",
            refused.err()
        );
    }
    let body = seed("key_create", "expires_100_years");
    create(&gateway, &body, StatusCode::CREATED, "");
}

/// Fixed: a key `rate` window over 584 years made governor panic when the
/// key ring built the key's limiter (a 500, and every later request). Now
/// a window over a year (8760h) is not a rate: 422 `invalid_body` naming
/// the field and quoting it, nothing stored, and the keys keep working; a year is a key.
#[test]
fn regression_key_rate_window_over_a_year() {
    let gateway = Gateway::new(true);
    for (name, rate) in [
        ("rate_window_584_years", "1/6000000h"),
        ("rate_window_over_a_year", "1/8761h"),
    ] {
        let body = seed("key_create", name);
        let detail = create(
            &gateway,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
        assert!(
            detail.contains(&format!("(rate: \"{rate}\"")) && detail.contains("8760h"),
            "names the field and quotes the value: {detail}"
        );
        let answer = gateway.send(use_key(TOKEN)).unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    let listed = gateway
        .send(with_bearer(
            request(Method::GET, "/admin/keys", Body::empty()),
            TOKEN,
        ))
        .unwrap();
    assert_eq!(listed.json()["keys"].as_array().map(Vec::len), Some(1));
    let body = seed("key_create", "rate_window_one_year");
    let answer = gateway.send(admin_request("/admin/keys", &body)).unwrap();
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    let key = answer.json()["key"].as_str().unwrap().to_string();
    let used = gateway.send(use_key(&key)).unwrap();
    assert_eq!(used.status, StatusCode::OK, "{used:?}");
}
