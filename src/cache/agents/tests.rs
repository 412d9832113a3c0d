use super::*;

fn agent(slug: &str, status: &str, updated: &str, sandbox: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "slug": slug, "status": status, "updated_at": updated, "sandbox_id": sandbox,
        "name": "A",
    })
    .to_string()
    .into_bytes()
}

/// A read whose request left just now.
fn read(watch: &AgentWatch, p: &Arc<str>, body: Vec<u8>) -> Observed {
    watch.observe(p, &body, Some(Instant::now()))
}

fn setup() -> (AgentWatch, Arc<str>) {
    (
        AgentWatch::new(Duration::from_secs(600)),
        Arc::from("default"),
    )
}

#[test]
fn an_async_deploy_lands_after_deploying_then_a_settled_read() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    assert!(!watch.moving(&p, "a"));
    watch.acted(&p, "a", Action::Deploy);
    assert!(watch.moving(&p, "a") && watch.any_moving(&p));
    watch.answered(&p, "a", &agent("a", "deploying", "t2", Some("s2")));
    assert!(watch.moving(&p, "a"));
    let seen = read(&watch, &p, agent("a", "deploying", "t2", Some("s2")));
    assert!(seen.landed.is_empty() && watch.moving(&p, "a"));
    let seen = read(&watch, &p, agent("a", "active", "t3", Some("s2")));
    assert_eq!(seen.landed, ["a"]);
    assert_eq!(seen.one.map(|a| a.status).as_deref(), Some("active"));
    assert!(!watch.moving(&p, "a") && !watch.any_moving(&p));
}

#[test]
fn a_deploy_is_not_landed_by_reads_of_the_old_version() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    watch.acted(&p, "a", Action::Deploy);
    // The upstream has not started the deploy yet: the same version.
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    assert!(watch.moving(&p, "a"), "no evidence yet");
    // A new sandbox proves it: the deploy landed without a visible transition.
    read(&watch, &p, agent("a", "active", "t2", Some("s2")));
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn a_sync_deploy_lands_with_its_own_answer() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "stopped", "t1", None));
    watch.acted(&p, "a", Action::Deploy);
    watch.answered(&p, "a", &agent("a", "active", "t2", Some("s2")));
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn with_nothing_seen_before_a_read_must_agree_with_the_answer() {
    let (watch, p) = setup();
    watch.acted(&p, "a", Action::Deploy);
    watch.answered(&p, "a", &agent("a", "active", "t2", Some("s2")));
    assert!(watch.moving(&p, "a"), "no earlier version to compare with");
    read(&watch, &p, agent("a", "active", "t2", Some("s2")));
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn a_plain_action_lands_with_one_fresh_read() {
    let (watch, p) = setup();
    watch.acted(&p, "a", Action::Plain);
    watch.answered(&p, "a", &agent("a", "stopped", "t2", None));
    assert!(watch.moving(&p, "a"), "its own answer is not a read");
    let seen = read(&watch, &p, agent("a", "stopped", "t2", None));
    assert_eq!(seen.landed, ["a"]);
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn a_read_sent_before_the_action_is_no_evidence() {
    let (watch, p) = setup();
    let early = Instant::now();
    watch.acted(&p, "a", Action::Plain);
    watch.observe(&p, &agent("a", "active", "t1", Some("s1")), Some(early));
    assert!(watch.moving(&p, "a"));
    watch.observe(&p, &agent("a", "active", "t1", Some("s1")), None);
    assert!(
        watch.moving(&p, "a"),
        "a read with no send time proves nothing"
    );
}

#[test]
fn a_list_read_lands_its_agents_and_other_credentials_are_apart() {
    let (watch, p) = setup();
    watch.acted(&p, "a", Action::Plain);
    assert!(!watch.any_moving(&Arc::from("other")));
    let list = serde_json::json!({"agents": [
        {"slug": "a", "status": "active", "updated_at": "t1"},
        {"slug": "b", "status": "deploying", "updated_at": "t1"},
    ], "meta": {}});
    let seen = watch.observe(&p, list.to_string().as_bytes(), Some(Instant::now()));
    assert_eq!(seen.landed, ["a"]);
    assert!(seen.one.is_none());
    assert!(watch.moving(&p, "b"), "deploying is motion by itself");
    watch.forget(&p, "b");
    assert!(!watch.any_moving(&p));
}

#[test]
fn without_evidence_an_action_stops_counting_at_the_bound() {
    let watch = AgentWatch::new(Duration::ZERO);
    let p: Arc<str> = Arc::from("default");
    watch.acted(&p, "a", Action::Deploy);
    assert!(!watch.moving(&p, "a"));
    assert!(watch.snapshot().is_empty());
    watch.set_settle(Duration::from_secs(60));
    watch.acted(&p, "a", Action::Deploy);
    let shown = watch.snapshot();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].waiting_for, Some("deploying or a new version"));
}

#[test]
fn a_patch_during_a_deploy_does_not_land_it() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    watch.acted(&p, "a", Action::Deploy);
    // A PATCH before the deploy is seen to land: its answer carries a new
    // updated_at and the old sandbox, the deploy not started yet.
    watch.acted(&p, "a", Action::Plain);
    watch.answered(&p, "a", &agent("a", "active", "t2", Some("s1")));
    assert!(watch.moving(&p, "a"), "the PATCH's answer is no deploy");
    let seen = read(&watch, &p, agent("a", "active", "t2", Some("s1")));
    assert!(seen.landed.is_empty() && watch.moving(&p, "a"));
    // The deploy shows: a transition, then a settled read.
    read(&watch, &p, agent("a", "deploying", "t3", Some("s1")));
    let seen = read(&watch, &p, agent("a", "active", "t4", Some("s2")));
    assert_eq!(seen.landed, ["a"]);
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn a_new_sandbox_lands_a_deploy_even_after_a_patch() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    watch.acted(&p, "a", Action::Deploy);
    watch.acted(&p, "a", Action::Plain);
    read(&watch, &p, agent("a", "active", "t3", Some("s2")));
    assert!(!watch.moving(&p, "a"));
}

#[test]
fn a_stop_during_a_deploy_does_not_land_it_either() {
    let (watch, p) = setup();
    read(&watch, &p, agent("a", "active", "t1", Some("s1")));
    watch.acted(&p, "a", Action::Deploy);
    // A stop's answer names no sandbox: no evidence of the deploy.
    watch.acted(&p, "a", Action::Plain);
    watch.answered(&p, "a", &agent("a", "stopped", "t2", None));
    assert!(watch.moving(&p, "a"));
    let seen = read(&watch, &p, agent("a", "stopped", "t2", None));
    assert!(seen.landed.is_empty() && watch.moving(&p, "a"));
}
