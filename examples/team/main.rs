//! The team workload for `bench/team.sh`: one process plays a small team
//! sharing one Castari account, against one base URL (the simulator
//! directly, nginx, or the gateway), for a bounded time, and prints one JSON
//! object of results on stdout.
//!
//! Time runs 10x faster than real life, like the simulator's limits in
//! `bench/team.sh` (100/6s CRUD, 10/6s invocations): a period of 0.2 s here
//! is 2 s of a real team. The mix, all at once:
//!
//! - **4 dashboards**: every `--dash-interval-ms` (200 ms by default, the
//!   real 2 s) one page load: `GET /agents` and `GET /agents/{slug}` for each
//!   deployer agent, all at once; the next load starts when this one is done
//!   and the period has passed.
//! - **2 deployers**, owning the 3 deployer agents between them: in a loop
//!   `PATCH /agents/{slug}` (a new description; its answer gives the sandbox
//!   before the deploy), `POST .../deploy`, `GET /agents/{slug}` every
//!   150 ms until `active` (believed at once, as the CLI does; at most
//!   20 s), then `POST .../invoke`; 0.5 s pause, next agent. A cycle
//!   *completes* when the deploy, the wait for `active` and the invocation
//!   all succeed. A poll after the deploy's answer that shows `active` with
//!   the old `sandbox_id` is a *pre-action status*.
//! - **3 chat bots**, one agent each: sessions of 3 turns
//!   (`{"prompt": "turn N", "session_id": ...}`), the turns of one session
//!   sent concurrently (10 ms apart, without waiting for answers, marked
//!   `X-Team-Session` / `X-Team-Turn` for the simulator's log); 0.5 s pause,
//!   next session.
//! - **1 usage reporter**: `GET /usage?days=7` every second.
//!
//! Every client has its own connections and its own
//! `Authorization: Bearer team-<class>-<n>` token (what a gateway or a proxy
//! sees as distinct clients), unless `--shared-key` gives them all the
//! account's key (the team without a proxy: everyone holds the real key).
//! Nothing is retried: a 429 is a 429, a connection error or the 30 s client
//! timeout counts as a 5xx. Before the clock starts, an unmeasured setup
//! creates and deploys the 6 agents through the same target.
//!
//! After `--duration` seconds no request starts; answers still arriving
//! within 5 s are kept, the rest are cut and counted as `unfinished`.
//! `--sim` is the simulator behind the target: its request log and stats
//! give the upstream's side (sends per window, budget use, turn order).
//!
//! ```text
//! cargo run --release --example team -- --target http://127.0.0.1:8787 \
//!     --sim http://127.0.0.1:8788 [--duration 60] [--dash-interval-ms 200] \
//!     [--invoke-latency-ms 300] [--shared-key KEY] [--label NAME]
//! ```

mod http;
mod report;
mod roles;
mod upstream;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::{Caller, Class, Recorder};
use crate::report::Mix;
use crate::roles::{Agents, Tally};
use crate::upstream::SimLog;

const DASHBOARDS: usize = 4;
const DEPLOYERS: usize = 2;
const BOTS: usize = 3;
/// Agents per role (deployer agents, bot agents).
const AGENTS_PER_ROLE: usize = 3;
/// Answers arriving this long after the end are still counted.
const GRACE: Duration = Duration::from_secs(5);
/// The simulator's log is fetched this often during the run.
const LOG_FETCH_EVERY: Duration = Duration::from_secs(10);

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Args {
    target: String,
    sim: String,
    duration: Duration,
    dash_interval: Duration,
    invoke_latency_ms: u64,
    shared_key: Option<String>,
    label: String,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = std::env::args().skip(1);
        let (mut target, mut sim, mut shared_key, mut label) = (None, None, None, None);
        let (mut duration, mut dash_ms, mut invoke_latency_ms) = (60u64, 200u64, 300u64);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--target" => target = Some(value()?),
                "--sim" => sim = Some(value()?),
                "--duration" => duration = value()?.parse()?,
                "--dash-interval-ms" => dash_ms = value()?.parse()?,
                "--invoke-latency-ms" => invoke_latency_ms = value()?.parse()?,
                "--shared-key" => shared_key = Some(value()?),
                "--label" => label = Some(value()?),
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        if duration == 0 || dash_ms == 0 {
            return Err("--duration and --dash-interval-ms must be positive".into());
        }
        let target: String = target.ok_or("--target URL is required")?;
        Ok(Self {
            label: label.unwrap_or_else(|| target.clone()),
            target,
            sim: sim.ok_or("--sim URL is required")?,
            duration: Duration::from_secs(duration),
            dash_interval: Duration::from_millis(dash_ms),
            invoke_latency_ms,
            shared_key,
        })
    }

    /// The token a client sends.
    fn token(&self, name: &str) -> String {
        self.shared_key
            .clone()
            .unwrap_or_else(|| format!("team-{name}"))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts every client of the mix; they stop starting requests at `end`.
fn spawn_clients(
    args: &Args,
    agents: &Arc<Agents>,
    recorder: &Arc<Recorder>,
    tally: &Arc<Tally>,
    end: Instant,
) -> Result<Vec<JoinHandle<()>>> {
    let caller = |class: Class, i: usize| {
        let token = args.token(&format!("{}-{}", class.name(), i + 1));
        Caller::new(&args.target, &token, Some(class), i, recorder.clone())
    };
    let mut tasks = Vec::new();
    for i in 0..DASHBOARDS {
        let c = caller(Class::Dashboard, i)?;
        let agents = agents.clone();
        tasks.push(tokio::spawn(roles::dashboard(
            c,
            agents,
            args.dash_interval,
            end,
        )));
    }
    for i in 0..DEPLOYERS {
        let c = caller(Class::Deployer, i)?;
        // Agent k belongs to deployer k mod DEPLOYERS: 3 agents, 2 deployers.
        let owned = agents
            .deployer
            .iter()
            .enumerate()
            .filter(|(k, _)| k % DEPLOYERS == i)
            .map(|(_, s)| s.clone())
            .collect();
        tasks.push(tokio::spawn(roles::deployer(c, owned, tally.clone(), end)));
    }
    for (i, slug) in agents.bot.iter().enumerate().take(BOTS) {
        let c = caller(Class::Bot, i)?;
        tasks.push(tokio::spawn(roles::bot(
            c,
            i,
            slug.clone(),
            tally.clone(),
            end,
        )));
    }
    let c = caller(Class::Reporter, 0)?;
    tasks.push(tokio::spawn(roles::reporter(c, end)));
    Ok(tasks)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let recorder = Arc::new(Recorder::default());
    let tally = Arc::new(Tally::default());
    let agents = Arc::new(Agents::new(AGENTS_PER_ROLE));
    let mut log = SimLog::new(&args.sim)?;

    eprintln!(
        "[team] {}: setup (6 agents, created and deployed through the target)",
        args.label
    );
    let setup = Caller::new(
        &args.target,
        &args.token("setup"),
        None,
        0,
        recorder.clone(),
    )?;
    roles::setup(&setup, &agents).await?;
    log.merge().await?;

    eprintln!(
        "[team] {}: running the mix for {:?}",
        args.label, args.duration
    );
    let start_ms = unix_ms();
    let end = Instant::now() + args.duration;
    let tasks = spawn_clients(&args, &agents, &recorder, &tally, end)?;
    while Instant::now() < end {
        tokio::time::sleep_until((Instant::now() + LOG_FETCH_EVERY).min(end)).await;
        log.merge().await?;
    }
    let end_ms = start_ms + args.duration.as_millis() as u64;
    for mut task in tasks {
        if tokio::time::timeout_at(end + GRACE, &mut task)
            .await
            .is_err()
        {
            // Still waiting for an answer after the grace: cut. Its request
            // stays counted as unfinished.
            task.abort();
        }
    }
    log.merge().await?;
    let stats = log.stats().await?;

    let mix = Mix {
        dashboards: DASHBOARDS,
        bots: BOTS,
    };
    let records = recorder.records();
    let out = json!({
        "label": args.label,
        "duration_s": args.duration.as_secs(),
        "dash_interval_ms": args.dash_interval.as_millis() as u64,
        "invoke_latency_ms": args.invoke_latency_ms,
        "shared_key": args.shared_key.is_some(),
        "unfinished": recorder.in_flight(),
        "client": report::summarise(&records, &tally, &mix, args.duration.as_secs_f64()),
        "upstream": upstream::analyse(&log, &stats, start_ms, end_ms, args.invoke_latency_ms),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
