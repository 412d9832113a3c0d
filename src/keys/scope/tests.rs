use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn globs(list: &[&str]) -> AgentGlobs {
    let list: Vec<String> = list.iter().map(|g| g.to_string()).collect();
    AgentGlobs::parse(&list).unwrap()
}

/// `scope method path outcomes`. Scope `*` is every agent, `d` is
/// `demo-*` and `prod-x`. Path `.` is no segment at all. Outcomes, one per
/// role (read invoke deploy admin): `+` allowed, `R` role_forbids_route,
/// `S` route_requires_admin, `G` agent_not_allowed, `W` route_requires_unscoped_key.
const TABLE: &str = "
    * GET     agents                        ++++
    * GET     agents/demo-1/secrets         ++++
    * HEAD    buckets/b1/files              ++++
    * OPTIONS agents/demo-1/invoke          ++++
    * GET     usage/daily                   ++++
    * GET     files/file_1/download         ++++
    * GET     invocations/inv_1             ++++
    * GET     auth/me                       ++++
    * HEAD    auth/me                       ++++
    * GET     no/such/route                 ++++
    * GET     agents/demo-1/                ++++
    * GET     .                             ++++
    * POST    agents/demo-1/invoke          R+R+
    * POST    agents/demo-1/stream          R+R+
    * DELETE  agents/demo-1/sessions/s_1    R+R+
    * POST    agents                        RR++
    * PATCH   agents/demo-1                 RR++
    * DELETE  agents/demo-1                 RR++
    * POST    agents/demo-1/deploy          RR++
    * POST    agents/demo-1/redeploy        RR++
    * POST    agents/demo-1/upload-code     RR++
    * POST    agents/demo-1/stop            RR++
    * DELETE  agents/demo-1/sandbox         RR++
    * POST    agents/demo-1/secrets         RR++
    * DELETE  agents/demo-1/secrets/MY_KEY  RR++
    * POST    agents/demo-1/mounts          RR++
    * PATCH   agents/demo-1/mounts/m_1      RR++
    * DELETE  agents/demo-1/mounts/m_1      RR++
    * POST    agents/demo-1/files/sync      RR++
    * POST    agents/demo-1/files           RR++
    * DELETE  agents/demo-1/files/file_1    RR++
    * POST    files                         RR++
    * POST    files/upload-url              RR++
    * POST    files/confirm-upload          RR++
    * PATCH   files/file_1                  RR++
    * DELETE  files/file_1                  RR++
    * POST    buckets                       RR++
    * PATCH   buckets/b1                    RR++
    * DELETE  buckets/b1                    RR++
    * POST    buckets/b1/credentials        RR++
    * DELETE  buckets/b1/credentials        RR++
    * POST    buckets/b1/test               RR++
    * POST    buckets/b1/upload-url         RR++
    * POST    buckets/b1/download-url       RR++
    * PUT     agents/demo-1                 RRR+
    * POST    agents/demo-1                 RRR+
    * PATCH   agents/demo-1/secrets/K       RRR+
    * POST    agents/demo-1/sessions        RRR+
    * DELETE  agents/demo-1/sessions        RRR+
    * POST    agents/demo-1/invoke/         RRR+
    * POST    agents//invoke                RRR+
    * POST    agents/demo-1/files/sync/     RRR+
    * DELETE  agents                        RRR+
    * POST    files/file_1                  RRR+
    * POST    files/                        RRR+
    * POST    usage                         RRR+
    * POST    invocations/inv_1             RRR+
    * POST    no/such/route                 RRR+
    * DELETE  .                             RRR+
    * GET     api-keys                      SSS+
    * POST    api-keys                      SSS+
    * DELETE  api-keys/ak_1                 SSS+
    * GET     api-keys/                     SSS+
    * GET     /api-keys                     SSS+
    * DELETE  auth/api-key                  SSS+
    * POST    auth/api-key                  SSS+
    * GET     auth/api-key                  SSS+
    * POST    auth/login                    SSS+
    * GET     auth                          SSS+
    * POST    auth/me                       SSS+
    * OPTIONS auth/me                       SSS+
    * GET     auth/me/                      SSS+
    * GET     auth//me                      SSS+
    * POST    sandbox/sbx/access            SSS+
    * HEAD    sandbox/sbx/access            SSS+
    * POST    //sandbox/sbx/access          SSS+
    * GET     sandbox                       SSS+
    d GET     agents/other                  GGGG
    d GET     agents/other/secrets          GGGG
    d GET     agents/other/invocations      GGGG
    d GET     //agents/other/secrets        GGGG
    d GET     agents//other                 GGGG
    d GET     agents/                       GGGG
    d GET     agents/prod-xy                GGGG
    d GET     agents/demo-1/sessions        ++++
    d GET     agents/prod-x                 ++++
    d GET     agents                        ++++
    d GET     /agents                       WWWW
    d GET     invocations                   WWWW
    d GET     invocations/inv_1             WWWW
    d GET     /invocations                  WWWW
    d GET     files                         ++++
    d GET     buckets/b1                    ++++
    d GET     usage                         ++++
    d GET     auth/me                       ++++
    d GET     no/such                       ++++
    d POST    agents/demo-2/invoke          R+R+
    d POST    agents/other/invoke           RGRG
    d POST    agents                        RR++
    d POST    agents/other/deploy           RRGG
    d POST    files                         RR++
    d DELETE  buckets/b1                    RR++
    d DELETE  agents/other                  RRGG
    d DELETE  agents/prod-x                 RR++
    d DELETE  agents                        RRRW
    d GET     api-keys                      SSSW
    d POST    auth/api-key                  SSSW
    d POST    sandbox/s/access              SSSW
";

#[test]
fn route_table() {
    let roles = [Role::Read, Role::Invoke, Role::Deploy, Role::Admin];
    let scoped = globs(&["demo-*", "prod-x"]);
    for line in TABLE.lines().filter(|line| !line.trim().is_empty()) {
        let [scope, method, path, outcomes] = line.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("bad table line {line:?}");
        };
        let agents = if scope == "d" {
            &scoped
        } else {
            &AgentGlobs::all()
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let segments: Vec<&str> = match path {
            "." => Vec::new(),
            _ => path.split('/').collect(),
        };
        for (role, outcome) in roles.into_iter().zip(outcomes.chars()) {
            let got = match authorize(role, agents, &method, &segments) {
                Ok(()) => '+',
                Err(Denial::Role { role: r, .. }) if r == role => 'R',
                Err(Denial::Sensitive) => 'S',
                Err(Denial::Agent { .. }) => 'G',
                Err(Denial::AccountWide) => 'W',
                Err(other) => panic!("{other:?}"),
            };
            assert_eq!(got, outcome, "{scope} {role} {method} {path}");
        }
    }
}

#[test]
fn agent_denial_names_the_slug() {
    let scoped = globs(&["demo-*"]);
    let got = authorize(
        Role::Admin,
        &scoped,
        &Method::GET,
        &["", "agents", "other", "x"],
    );
    assert_eq!(
        got,
        Err(Denial::Agent {
            slug: "other".into(),
            allowed: scoped.clone(),
        })
    );
}

#[test]
fn parses_globs_and_names_the_bad_one() {
    assert!(globs(&[]).is_all() && AgentGlobs::all().is_all());
    assert!(!globs(&["demo-*", "prod-x", "a?c", "v1.2_x"]).is_all());
    for bad in ["", "Demo-*", "a/b", "a b", "ü", "demo[1]"] {
        let list = vec!["ok-*".to_string(), bad.to_string()];
        let err = AgentGlobs::parse(&list).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn glob_matching() {
    let cases = "
        demo-* demo- y   demo-* demo-1 y   demo-* demo-a.b y   demo-* demo n
        demo-* xdemo-1 n   demo-* Demo-1 n   prod-x prod-x y   prod-x prod-xy n
        prod-x prod- n   a?c abc y   a?c aüc y   a?c ac n   a?c abbc n
        v1.2 v1.2 y   v1.2 v1x2 n   * anything y   *-prod eu-prod y
        *-prod eu-prod-2 n   a*b*c axxbyyc y   a*b*c axxbyy n   **x x y
    ";
    let words: Vec<&str> = cases.split_whitespace().collect();
    for case in words.chunks(3) {
        let &[glob, slug, expected] = case else {
            panic!("{case:?}")
        };
        assert_eq!(
            globs(&[glob]).allows(slug),
            expected == "y",
            "{glob} vs {slug}"
        );
    }
    assert!(globs(&["*"]).allows(""));
    let two = globs(&["demo-*", "prod-x"]);
    assert!(two.allows("prod-x") && two.allows("demo-9") && !two.allows("prod-y"));
    assert!(AgentGlobs::all().allows("whatever"));
}

#[test]
fn pathological_glob_finishes_fast() {
    let start = Instant::now();
    let glob = globs(&["*a*a*a*a*a*a*b"]);
    let slug = "a".repeat(50);
    assert!(!glob.allows(&slug));
    assert!(glob.allows(&format!("{slug}b")));
    let long = globs(&["*a*a*a*a*a*a*a*a*a*a*a*a*b"]);
    assert!(!long.allows(&"a".repeat(5000)));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn denial_codes_and_details() {
    let read = Denial::Role {
        role: Role::Read,
        would_allow: Role::Invoke,
    };
    assert_eq!(
        read.detail(&Method::POST),
        "This key's role (read) does not allow POST on this route; a key with role invoke or \
         admin would (code: role_forbids_route)"
    );
    let admin_only = Denial::Role {
        role: Role::Deploy,
        would_allow: Role::Admin,
    };
    assert!(admin_only
        .detail(&Method::PUT)
        .contains("(deploy) does not allow PUT on this route; only a key with role admin would"));
    let agent = Denial::Agent {
        slug: "other".into(),
        allowed: globs(&["demo-*", "prod-x"]),
    };
    let detail = agent.detail(&Method::GET);
    assert!(
        detail.contains("only the agents matching demo-*, prod-x, not \"other\""),
        "{detail}"
    );
    let codes = [
        (read, "role_forbids_route"),
        (agent, "agent_not_allowed"),
        (Denial::Sensitive, "route_requires_admin"),
        (Denial::AccountWide, "route_requires_unscoped_key"),
        (Denial::CreateSlug, "agent_slug_not_allowed"),
    ];
    for (denial, code) in codes {
        assert_eq!(denial.code(), code);
        let detail = denial.detail(&Method::POST);
        assert!(detail.ends_with(&format!(" (code: {code})")), "{detail}");
        let forbidden = denial.forbidden(&Method::POST);
        assert_eq!((forbidden.code(), forbidden.detail()), (code, detail));
    }
}

#[test]
fn a_role_denial_names_the_least_role_that_would_allow_it() {
    let all = AgentGlobs::all();
    let cases: [(Role, Method, &[&str], Role); 5] = [
        (
            Role::Read,
            Method::POST,
            &["agents", "a", "invoke"],
            Role::Invoke,
        ),
        (
            Role::Deploy,
            Method::POST,
            &["agents", "a", "stream"],
            Role::Invoke,
        ),
        (
            Role::Read,
            Method::POST,
            &["agents", "a", "deploy"],
            Role::Deploy,
        ),
        (Role::Invoke, Method::DELETE, &["agents", "a"], Role::Deploy),
        (Role::Deploy, Method::PUT, &["agents", "a"], Role::Admin),
    ];
    for (role, method, path, would_allow) in cases {
        assert_eq!(
            authorize(role, &all, &method, path),
            Err(Denial::Role { role, would_allow }),
            "{role} {method} {path:?}"
        );
    }
}

#[test]
fn create_needs_an_allowed_slug() {
    let scoped = globs(&["demo-*"]);
    assert_eq!(check_create(&AgentGlobs::all(), b"not json"), Ok(()));
    let ok = [
        r#"{"name":"x","slug":"demo-1","source_type":"git"}"#,
        " {\"slug\":\"demo-2\"}\n",
    ];
    for body in ok {
        assert_eq!(check_create(&scoped, body.as_bytes()), Ok(()), "{body}");
    }
    let refused = [
        r#"{"name":"x","slug":"other-secret-name"}"#,
        r#"{"name":"x"}"#,
        r#"{"slug":1}"#,
        r#"{"slug":null}"#,
        r#"{"slug":["demo-1"]}"#,
        r#"{"slug":"demo-1","slug":"other"}"#,
        r#"{"slug":"demo-1"} trailing"#,
        r#"["demo-1"]"#,
        r#""demo-1""#,
        "",
        "not json",
    ];
    for body in refused {
        let denial = check_create(&scoped, body.as_bytes()).unwrap_err();
        assert_eq!(denial, Denial::CreateSlug, "{body}");
        let detail = denial.detail(&Method::POST);
        assert!(!detail.contains("other-secret-name"));
        assert!(body.is_empty() || !detail.contains(body), "{detail}");
    }
}

fn filter(agents: &AgentGlobs, body: &Value) -> Value {
    let out = filter_agent_list(agents, body.to_string().as_bytes()).unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn filters_the_agent_list() {
    let scoped = globs(&["demo-*"]);
    let body = json!({
        "agents": [
            {"slug": "demo-2", "name": "two", "status": "active"},
            {"slug": "other", "name": "secret"},
            {"slug": "demo-1", "name": "one"},
            {"name": "no slug"},
            "not an object",
        ],
        "meta": {"total": 10, "limit": 20, "offset": 0},
        "extra": true,
    });
    let expected = json!({
        "agents": [
            {"slug": "demo-2", "name": "two", "status": "active"},
            {"slug": "demo-1", "name": "one"},
        ],
        "meta": {"total": 7, "limit": 20, "offset": 0},
        "extra": true,
    });
    assert_eq!(filter(&scoped, &body), expected);
    // meta.total saturates, is left alone when not a number or nothing went.
    let others = json!([{"slug": "a"}, {"slug": "b"}]);
    let out = filter(&scoped, &json!({"agents": others, "meta": {"total": 1}}));
    assert_eq!(out["meta"]["total"], 0);
    let out = filter(&scoped, &json!({"agents": others, "meta": {"total": "5"}}));
    assert_eq!(out["meta"]["total"], "5");
    assert_eq!(
        filter(&scoped, &json!({"agents": others})),
        json!({"agents": []})
    );
    let kept = json!({"agents": [{"slug": "demo-1"}], "meta": {"total": 40}});
    assert_eq!(filter(&scoped, &kept), kept);
}

#[test]
fn agent_list_of_the_wrong_shape_is_refused() {
    let scoped = globs(&["demo-*"]);
    let bad = [
        "not json",
        "",
        "[]",
        "\"agents\"",
        "{\"meta\":{}}",
        "{\"agents\":{}}",
    ];
    for body in bad {
        assert_eq!(filter_agent_list(&scoped, body.as_bytes()), None, "{body}");
    }
    let raw = b"not json, passed as is";
    let out = filter_agent_list(&AgentGlobs::all(), raw);
    assert_eq!(out.as_deref(), Some(&raw[..]));
}
