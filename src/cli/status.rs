//! `castari-gateway status`: the operator page's picture in a terminal,
//! for people on SSH: lanes with "used / limit", the queue, the cache,
//! the upstream and the keys' spending. `--json` prints the gateway's
//! `/admin/snapshot` as it is; `--watch` redraws (or, with `--json`,
//! prints one line) every `--interval-ms`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use castari_gateway::view::model::Snapshot;
use clap::Args;

/// Arguments of `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The gateway's base URL. Default: the configured listen address (env
    /// CASTARI_GATEWAY_LISTEN), 0.0.0.0 mapped to loopback.
    #[arg(long, value_name = "URL")]
    url: Option<url::Url>,
    /// Redraw until interrupted.
    #[arg(long)]
    watch: bool,
    /// Time between redraws with --watch.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    interval_ms: u64,
    /// Print the snapshot as JSON (one line per redraw with --watch).
    #[arg(long)]
    json: bool,
    /// The admin key (needed in keys mode and off loopback), read from this
    /// file. Default: env CASTARI_GATEWAY_ADMIN_KEY.
    #[arg(long, value_name = "FILE")]
    admin_key_file: Option<PathBuf>,
}

/// Exit 0 after printing, 1 when the gateway cannot be read.
pub(crate) async fn run(args: StatusArgs) -> i32 {
    let base = match &args.url {
        Some(url) => url.as_str().trim_end_matches('/').to_string(),
        None => super::healthcheck::default_base(),
    };
    let key = match admin_key(&args) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("status: {error}");
            return super::EXIT_CONFIG;
        }
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("status: {error}");
            return super::EXIT_FAILURE;
        }
    };
    let url = format!("{base}/admin/snapshot");
    loop {
        let text = match fetch(&client, &url, key.as_deref()).await {
            Ok(text) => text,
            Err(error) => {
                eprintln!("status: {error}");
                if !args.watch {
                    return super::EXIT_FAILURE;
                }
                tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
                continue;
            }
        };
        if args.json {
            println!("{}", text.trim_end());
        } else {
            match serde_json::from_str::<Snapshot>(&text) {
                Ok(snapshot) => {
                    if args.watch {
                        // Clear the screen and go home: redraw in place.
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", render(&snapshot, &base));
                }
                Err(error) => {
                    eprintln!("status: {url} answered something else than a snapshot: {error}");
                    return super::EXIT_FAILURE;
                }
            }
        }
        if !args.watch {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms.max(100))).await;
    }
}

fn admin_key(args: &StatusArgs) -> Result<Option<String>, String> {
    if let Some(path) = &args.admin_key_file {
        let key = std::fs::read_to_string(path)
            .map_err(|e| format!("--admin-key-file {}: {e}", path.display()))?;
        return Ok(Some(key.trim().to_string()));
    }
    Ok(std::env::var(castari_gateway::config::ENV_ADMIN_KEY)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty()))
}

async fn fetch(client: &reqwest::Client, url: &str, key: Option<&str>) -> Result<String, String> {
    let mut request = client.get(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", e.without_url()))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("{url}: {}", e.without_url()))?;
    if status.is_success() {
        return Ok(text);
    }
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
        " (set CASTARI_GATEWAY_ADMIN_KEY or pass --admin-key-file)"
    } else {
        ""
    };
    Err(format!("{url} answered {status}: {detail}{hint}"))
}

/// The text picture of `snapshot`.
pub(crate) fn render(s: &Snapshot, base: &str) -> String {
    let mut out = String::new();
    let reload = match &s.last_reload {
        Some(r) if r.applied => format!(", reloaded {}", clock(r.at * 1000)),
        Some(r) => format!(", reload refused {}", clock(r.at * 1000)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "castari-gateway {base} · config v{}{reload} · {} mode · {}",
        s.version,
        s.mode,
        clock(s.at as i64)
    );
    let u = &s.upstream;
    let latency = match (u.latency_ms.p50, u.latency_ms.p99) {
        (Some(p50), Some(p99)) => format!("p50 {p50:.1} ms · p99 {p99:.1} ms"),
        _ => "no upstream answers yet".into(),
    };
    let _ = writeln!(
        out,
        "upstream  breaker {} · {} · {latency} · last {} answers: {} 5xx, {} × 429",
        u.breaker,
        if u.ready { "ready" } else { "not ready" },
        u.recent.answers,
        u.recent.errors,
        u.recent.throttled
    );
    let mut waiters = Vec::new();
    for credential in &s.credentials {
        if !credential.shaping {
            let _ = writeln!(out, "budget    {}: rate shaping is off", credential.name);
            continue;
        }
        for lane in &credential.lanes {
            let next = if lane.next_free_ms == 0 {
                "now".to_string()
            } else {
                format!("in {:.1} s", lane.next_free_ms as f64 / 1000.0)
            };
            let _ = writeln!(
                out,
                "budget    {:<16} {:>4} / {:<4} per {} s  {}  next free {next:<9} queue {} / {}",
                format!("{}/{}", credential.name, lane.lane),
                lane.used,
                lane.limit,
                lane.window_ms / 1000,
                bar(f64::from(lane.used) / f64::from(lane.limit.max(1)), 20),
                lane.depth,
                lane.max_depth
            );
            for waiter in &lane.waiting {
                waiters.push((credential.name.as_str(), lane.lane.as_str(), waiter));
            }
        }
        let _ = writeln!(
            out,
            "sessions  {}: {} in flight",
            credential.name, credential.sessions_active
        );
    }
    if waiters.is_empty() {
        let _ = writeln!(out, "queue     empty");
    }
    for (credential, lane, w) in waiters {
        let _ = writeln!(
            out,
            "queue     #{:<3} {credential}/{lane:<7} {:<28} agent {:<20} waited {:.1} s",
            w.position,
            w.client,
            w.agent.as_deref().unwrap_or("—"),
            w.waited_ms as f64 / 1000.0
        );
    }
    match &s.cache {
        Some(c) => {
            let ratio = c
                .hit_ratio
                .map_or("—".into(), |r| format!("{:.1} %", r * 100.0));
            let moving = if c.agents_in_motion.is_empty() {
                String::new()
            } else {
                format!(" · in motion: {}", c.agents_in_motion.join(", "))
            };
            let _ = writeln!(
                out,
                "cache     hit ratio {ratio} · {} of {} · {} entries · {} upstream reads saved{moving}",
                bytes(c.bytes),
                bytes(c.max_bytes),
                c.entries,
                c.saved
            );
        }
        None => {
            let _ = writeln!(out, "cache     off");
        }
    }
    if let Some(keys) = &s.keys {
        let mut keys: Vec<_> = keys.iter().filter(|k| !k.revoked).collect();
        // Top spenders first.
        keys.sort_by(|a, b| {
            let cost = |k: &&castari_gateway::view::model::KeyRow| {
                k.today.cost_usd.parse::<f64>().unwrap_or(0.0)
            };
            cost(b)
                .total_cmp(&cost(a))
                .then(b.today.requests.cmp(&a.today.requests))
        });
        for key in keys.iter().take(10) {
            let budget = match &key.budget {
                Some(b) => format!(
                    " · budget ${} of ${}/{} ({:.0} %) · runs out {}",
                    b.spent_usd,
                    b.limit_usd,
                    b.period,
                    b.used_ratio * 100.0,
                    b.runs_out.as_deref().unwrap_or("—")
                ),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "key       {:<28} {} req · {} inv · ${} today{budget}",
                format!("{} ({})", key.name, key.id),
                key.today.requests,
                key.today.invocations,
                key.today.cost_usd
            );
        }
    }
    if let Some(cluster) = &s.cluster {
        let _ = writeln!(
            out,
            "cluster   this replica {} · redis {} · replicas: {}",
            s.replica.as_deref().unwrap_or("?"),
            cluster.redis,
            cluster.replicas.join(", ")
        );
    }
    out
}

fn bar(ratio: f64, width: usize) -> String {
    let filled = ((ratio.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

/// `HH:MM:SS UTC` of unix milliseconds.
fn clock(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_picture_shows_lanes_queue_cache_and_keys() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "at": 1_765_000_000_123u64, "version": 3, "last_reload": null, "mode": "keys",
            "replica": null, "cluster": null,
            "upstream": {"breaker": "closed", "ready": true,
                "latency_ms": {"p50": 12.34, "p99": 40.0, "samples": 9},
                "recent": {"answers": 9, "errors": 1, "throttled": 0}},
            "credentials": [{"name": "default", "shaping": true, "sessions_active": 1, "lanes": [
                {"lane": "crud", "limit": 100, "window_ms": 60000, "used": 73, "remaining": 27,
                 "next_free_ms": 0, "depth": 0, "max_depth": 1000, "max_wait_ms": 30000, "waiting": []},
                {"lane": "invoke", "limit": 10, "window_ms": 60000, "used": 10, "remaining": 0,
                 "next_free_ms": 1500, "depth": 1, "max_depth": 100, "max_wait_ms": 30000,
                 "waiting": [{"position": 1, "client": "ci (key_a)", "agent": "bot", "waited_ms": 1200}]}]}],
            "cache": {"entries": 2, "bytes": 2048, "max_bytes": 67108864, "hits": 5, "misses": 3,
                "stale": 0, "coalesced": 1, "hit_ratio": 0.625, "saved": 6, "agents_in_motion": ["bot"]},
            "keys": [{"id": "key_a", "name": "ci", "role": "invoke", "revoked": false,
                "today": {"requests": 12, "invocations": 3, "cost_usd": "0.0123"},
                "budget": {"limit_usd": "20", "period": "month", "spent_usd": "3.1",
                    "used_ratio": 0.155, "runs_out": "2026-12-21"}}],
            "point": {"t": 0, "hit_ratio": null, "lanes": []},
            "recent": []
        }))
        .unwrap();
        let text = render(&snapshot, "http://127.0.0.1:8787");
        for expected in [
            "config v3 · keys mode",
            "p50 12.3 ms · p99 40.0 ms",
            "default/crud       73 / 100  per 60 s",
            "default/invoke     10 / 10   per 60 s",
            "next free in 1.5 s",
            "#1   default/invoke  ci (key_a)",
            "waited 1.2 s",
            "hit ratio 62.5 % · 2.0 KiB of 64.0 MiB",
            "6 upstream reads saved · in motion: bot",
            "12 req · 3 inv · $0.0123 today · budget $3.1 of $20/month (16 %) · runs out 2026-12-21",
            "sessions  default: 1 in flight",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
