//! The clients of the mix (dashboards, deployers, chat bots, the usage
//! reporter) and the unmeasured setup that creates and deploys their agents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;
use tokio::time::{sleep, sleep_until, Instant, MissedTickBehavior};

use crate::http::{Answer, Caller};

/// Deployers poll their agent this often after a deploy.
const POLL_EVERY: Duration = Duration::from_millis(150);
/// A deploy not seen `active` within this long fails the cycle.
const POLL_LIMIT: Duration = Duration::from_secs(20);
/// Pause between two deploy cycles of one deployer, and between two chat
/// sessions of one bot (5 s at real scale).
const CYCLE_PAUSE: Duration = Duration::from_millis(500);
/// The turns of one session leave this far apart, without waiting for
/// answers, so the order in which they reach the target is known.
const TURN_STAGGER: Duration = Duration::from_millis(10);
/// Turns per chat session.
pub(crate) const TURNS: u64 = 3;
/// The usage reporter's period.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Setup gives up after this long.
const SETUP_LIMIT: Duration = Duration::from_secs(60);

/// The agents of the run.
pub(crate) struct Agents {
    pub(crate) deployer: Vec<String>,
    pub(crate) bot: Vec<String>,
}

impl Agents {
    pub(crate) fn new(per_role: usize) -> Self {
        Self {
            deployer: (1..=per_role).map(|i| format!("team-deploy-{i}")).collect(),
            bot: (1..=per_role).map(|i| format!("team-chat-{i}")).collect(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.deployer.iter().chain(&self.bot)
    }
}

/// Counters the clients keep as they go (shared, so a client cut at the end
/// of the run loses nothing).
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) cycles_started: AtomicU64,
    pub(crate) cycles_completed: AtomicU64,
    pub(crate) cycles_failed: AtomicU64,
    pub(crate) deploys_answered: AtomicU64,
    /// Polls after a deploy's answer that showed `active` with the sandbox
    /// from before the deploy.
    pub(crate) pre_action: AtomicU64,
    pub(crate) deploys_never_active: AtomicU64,
    pub(crate) deployer_not_active: AtomicU64,
    pub(crate) bot_not_active: AtomicU64,
    pub(crate) sessions: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Sleeps `pause`, or until `end` if that comes first.
async fn nap(pause: Duration, end: Instant) {
    sleep_until((Instant::now() + pause).min(end)).await;
}

/// Creates and deploys every agent through the target and waits until all
/// are `active`. Retries (this part is not measured); bounded in time.
pub(crate) async fn setup(caller: &Caller, agents: &Agents) -> Result<(), String> {
    let give_up = Instant::now() + SETUP_LIMIT;
    for slug in agents.all() {
        let body = json!({
            "name": slug,
            "slug": slug,
            "description": "team benchmark agent",
            "source_type": "git",
            "git_repo_url": "https://github.com/castari/demo",
        });
        let path = "/api/v1/agents".to_string();
        insist(caller, Method::POST, &path, Some(&body), give_up).await?;
        let path = format!("/api/v1/agents/{slug}/deploy");
        insist(caller, Method::POST, &path, None, give_up).await?;
    }
    for slug in agents.all() {
        let path = format!("/api/v1/agents/{slug}");
        loop {
            let answer = insist(caller, Method::GET, &path, None, give_up).await?;
            if answer.field("status") == Some("active") {
                break;
            }
            if Instant::now() >= give_up {
                return Err(format!("{slug} not active after {SETUP_LIMIT:?}"));
            }
            sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Repeats a setup call until it answers 2xx (429, 5xx and connection
/// errors are waited out), or fails with the status.
async fn insist(
    caller: &Caller,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    give_up: Instant,
) -> Result<Answer, String> {
    loop {
        let answer = caller.call(method.clone(), path, body, &[]).await;
        if answer.ok() {
            return Ok(answer);
        }
        let transient = answer.status == 0 || answer.status == 429 || answer.status >= 500;
        if !transient || Instant::now() >= give_up {
            return Err(format!("setup: {method} {path} answered {}", answer.status));
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// A dashboard: every `interval`, one page load of the agent list and
/// every deployer agent, all at once. The next load starts when this one
/// is done and the period has passed.
pub(crate) async fn dashboard(
    caller: Caller,
    agents: Arc<Agents>,
    interval: Duration,
    end: Instant,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            return;
        }
        let paths = std::iter::once("/api/v1/agents".to_string()).chain(
            agents
                .deployer
                .iter()
                .map(|s| format!("/api/v1/agents/{s}")),
        );
        join_all(paths.map(|path| {
            let caller = &caller;
            async move { caller.call(Method::GET, &path, None, &[]).await }
        }))
        .await;
    }
}

/// How one deploy cycle ended.
enum Cycle {
    Completed,
    Failed,
    /// The run ended first.
    Cut,
}

/// A deployer: over and over, for each of its agents in turn, PATCH it,
/// deploy it, poll it until `active` (as the CLI does: the first `active`
/// is believed), then invoke it once.
pub(crate) async fn deployer(caller: Caller, slugs: Vec<String>, tally: Arc<Tally>, end: Instant) {
    let mut n = 0usize;
    while Instant::now() < end && !slugs.is_empty() {
        let slug = &slugs[n % slugs.len()];
        n += 1;
        bump(&tally.cycles_started);
        match deploy_cycle(&caller, slug, n, &tally, end).await {
            Cycle::Completed => bump(&tally.cycles_completed),
            Cycle::Failed => bump(&tally.cycles_failed),
            Cycle::Cut => {}
        }
        nap(CYCLE_PAUSE, end).await;
    }
}

async fn deploy_cycle(caller: &Caller, slug: &str, n: usize, tally: &Tally, end: Instant) -> Cycle {
    let path = format!("/api/v1/agents/{slug}");
    let body = json!({ "description": format!("revision {n}") });
    let patched = caller.call(Method::PATCH, &path, Some(&body), &[]).await;
    if !patched.ok() {
        return Cycle::Failed;
    }
    // The PATCH answer is the agent as it is now: its sandbox is the one
    // the deploy replaces.
    let old_sandbox = patched.field("sandbox_id").map(str::to_string);
    if Instant::now() >= end {
        return Cycle::Cut;
    }
    let deploy = format!("{path}/deploy");
    if !caller.call(Method::POST, &deploy, None, &[]).await.ok() {
        return Cycle::Failed;
    }
    bump(&tally.deploys_answered);
    let give_up = Instant::now() + POLL_LIMIT;
    loop {
        if Instant::now() >= end {
            return Cycle::Cut;
        }
        if Instant::now() >= give_up {
            bump(&tally.deploys_never_active);
            return Cycle::Failed;
        }
        nap(POLL_EVERY, end).await;
        let agent = caller.call(Method::GET, &path, None, &[]).await;
        if !agent.ok() {
            continue;
        }
        match agent.field("status") {
            Some("active") => {
                if agent.field("sandbox_id").map(str::to_string) == old_sandbox {
                    bump(&tally.pre_action);
                }
                break;
            }
            Some("error") => return Cycle::Failed,
            _ => {}
        }
    }
    if Instant::now() >= end {
        return Cycle::Cut;
    }
    let invoke = format!("{path}/invoke");
    let body = json!({ "prompt": format!("smoke test after deploy {n}") });
    let answer = caller.call(Method::POST, &invoke, Some(&body), &[]).await;
    if answer.ok() {
        Cycle::Completed
    } else {
        if answer.not_active() {
            bump(&tally.deployer_not_active);
        }
        Cycle::Failed
    }
}

/// A chat bot: sessions of [`TURNS`] turns on its agent. The turns of one
/// session are sent concurrently ([`TURN_STAGGER`] apart, without waiting
/// for answers), each marked with `X-Team-Session` / `X-Team-Turn` so the
/// simulator's log shows the order they reached it in.
pub(crate) async fn bot(
    caller: Caller,
    index: usize,
    slug: String,
    tally: Arc<Tally>,
    end: Instant,
) {
    let path = format!("/api/v1/agents/{slug}/invoke");
    let mut k = 0u64;
    while Instant::now() < end {
        k += 1;
        let session = format!("bot{index}-s{k}");
        let turns = (1..=TURNS).map(|turn| {
            let (caller, path, session) = (&caller, &path, &session);
            async move {
                sleep(TURN_STAGGER * (turn as u32 - 1)).await;
                let body = json!({ "prompt": format!("turn {turn}"), "session_id": session });
                let marks = [
                    ("x-team-session", session.clone()),
                    ("x-team-turn", turn.to_string()),
                ];
                caller.call(Method::POST, path, Some(&body), &marks).await
            }
        });
        let answers = join_all(turns).await;
        bump(&tally.sessions);
        for answer in &answers {
            if answer.not_active() {
                bump(&tally.bot_not_active);
            }
        }
        nap(CYCLE_PAUSE, end).await;
    }
}

/// The usage reporter: `GET /usage?days=7` every [`REPORT_EVERY`].
pub(crate) async fn reporter(caller: Caller, end: Instant) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            return;
        }
        caller
            .call(Method::GET, "/api/v1/usage?days=7", None, &[])
            .await;
    }
}
