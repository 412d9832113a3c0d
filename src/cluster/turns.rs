//! Turns of one session across replicas: a ticket line in Redis.
//!
//! Each turn takes a ticket (`INCR`) when it arrives, so turns are served
//! in the order they reached Redis, whichever replica they came through.
//! The turn being served holds a lease, renewed while it runs; when it is
//! done, the next ticket is served. A waiter whose client left marks its
//! ticket gone and is skipped at once; a served ticket nobody claims (its
//! replica died) is skipped after [`VACANT_GRACE_MS`], and a lease that is
//! not renewed (the holder died) expires after [`LEASE_MS`]. A waiter
//! skipped that way (it was too slow to claim its turn) takes a new ticket
//! at the end of the line rather than run beside the turn being served.

use std::time::Duration;

use redis::Script;

use super::Cluster;

/// How long a turn's lease lasts without renewal.
pub const LEASE_MS: u64 = 10_000;
/// How long a served ticket may stay unclaimed before the line moves on.
pub const VACANT_GRACE_MS: u64 = 2_000;
/// How often a waiter looks whether its turn came.
const POLL: Duration = Duration::from_millis(15);
/// Idle lines are forgotten after this.
const IDLE_MS: u64 = 3_600_000;

const TRY: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = tonumber(ARGV[1])
local idle = tonumber(ARGV[4])
local serving = tonumber(redis.call('GET', KEYS[1]) or '1')
while serving < me do
  local holder = redis.call('GET', KEYS[2])
  if holder and tonumber(holder) == serving then return 0 end
  if redis.call('HDEL', KEYS[4], serving) == 1 then
    serving = serving + 1
    redis.call('SET', KEYS[1], serving, 'PX', idle)
  else
    local since = nil
    local vacant = redis.call('GET', KEYS[3])
    if vacant then
      local s, ms = string.match(vacant, '(%d+):(%d+)')
      if tonumber(s) == serving then since = tonumber(ms) end
    end
    if since == nil then
      redis.call('SET', KEYS[3], serving .. ':' .. now, 'PX', idle)
      return 0
    end
    if now - since < tonumber(ARGV[3]) then return 0 end
    serving = serving + 1
    redis.call('SET', KEYS[1], serving, 'PX', idle)
  end
end
if serving > me then return -1 end
redis.call('SET', KEYS[2], me, 'PX', ARGV[2])
return 1
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const DONE: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '1') == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], tonumber(ARGV[1]) + 1, 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
";

fn scripts() -> &'static [Script; 3] {
    static SCRIPTS: std::sync::OnceLock<[Script; 3]> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| [Script::new(TRY), Script::new(RENEW), Script::new(DONE)])
}

/// A place in a session's line; its turn once [`Cluster::turn`] returns.
/// Dropping it ends the turn (or leaves the line).
#[derive(Debug)]
pub struct SharedTurn {
    cluster: Cluster,
    base: String,
    ticket: i64,
    held: bool,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl SharedTurn {
    fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.base)
    }
}

impl Cluster {
    /// Takes a ticket in the line of `session` on `agent` (upstream
    /// credential `credential`) and waits until it is served.
    ///
    /// # Errors
    /// Redis failed (the caller falls back to the replica's own order).
    pub async fn turn(
        &self,
        credential: &str,
        agent: &str,
        session: &str,
    ) -> Result<SharedTurn, String> {
        let base = self.key(&["turn", credential, agent, session]);
        loop {
            let mut turn = self.ticket(&base).await?;
            if turn.wait().await? {
                return Ok(turn);
            }
        }
    }

    /// Takes a ticket from a task of its own: a caller that goes away while
    /// the `INCR` is out (its answer may come after) cannot leave a ticket
    /// that nobody gives back, which the line would wait
    /// [`VACANT_GRACE_MS`] for. The task's turn is then dropped unheld, and
    /// that marks it gone.
    async fn ticket(&self, base: &str) -> Result<SharedTurn, String> {
        let (cluster, base) = (self.clone(), base.to_string());
        let taking = tokio::spawn(async move { cluster.take_ticket(&base).await });
        taking
            .await
            .map_err(|error| format!("taking a ticket failed: {error}"))?
    }

    async fn take_ticket(&self, base: &str) -> Result<SharedTurn, String> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(format!("{base}:next"), 1)
            .cmd("PEXPIRE")
            .arg(format!("{base}:next"))
            .arg(IDLE_MS)
            .ignore()
            .cmd("PEXPIRE")
            .arg(format!("{base}:serving"))
            .arg(IDLE_MS)
            .ignore();
        let mut conn = self.conn();
        let (ticket,): (i64,) = self.run(pipe.query_async(&mut conn)).await?;
        Ok(SharedTurn {
            cluster: self.clone(),
            base: base.to_string(),
            ticket,
            held: false,
            renewer: None,
        })
    }
}

impl SharedTurn {
    /// Waits until served (true), or skipped (false: take a new ticket).
    async fn wait(&mut self) -> Result<bool, String> {
        let cluster = self.cluster.clone();
        loop {
            let mut call = scripts()[0].prepare_invoke();
            call.key(self.key("serving"))
                .key(self.key("lease"))
                .key(self.key("vacant"))
                .key(self.key("gone"))
                .arg(self.ticket)
                .arg(LEASE_MS)
                .arg(VACANT_GRACE_MS)
                .arg(IDLE_MS);
            match cluster.invoke::<i64>(&call).await? {
                1 => {
                    self.held = true;
                    let lease = self.key("lease");
                    self.renewer = Some(renew(cluster.clone(), lease, self.ticket));
                    return Ok(true);
                }
                -1 => {
                    // Skipped: nothing to give back.
                    self.held = true;
                    self.ticket = -1;
                    return Ok(false);
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// Renews the lease of `ticket` while the turn runs.
fn renew(cluster: Cluster, lease: String, ticket: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = Duration::from_millis(LEASE_MS / 3);
        loop {
            tokio::time::sleep(every).await;
            let mut call = scripts()[1].prepare_invoke();
            call.key(&lease).arg(ticket).arg(LEASE_MS);
            // 0: the lease is no longer ours; an error: try again, the
            // lease lasts three renewals.
            if cluster.invoke::<i64>(&call).await == Ok(0) {
                return;
            }
        }
    })
}

impl Drop for SharedTurn {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cluster = self.cluster.clone();
        let (serving, lease, gone) = (self.key("serving"), self.key("lease"), self.key("gone"));
        let (ticket, held) = (self.ticket, self.held);
        if ticket < 0 {
            return;
        }
        runtime.spawn(async move {
            // Done, or (not held) perhaps claimed just as the waiter was
            // dropped: either way, if the line serves this ticket, move on.
            let mut call = scripts()[2].prepare_invoke();
            call.key(serving).key(lease).arg(ticket).arg(IDLE_MS);
            let _ = cluster.invoke::<i64>(&call).await;
            if !held {
                let mut conn = cluster.conn();
                let mut pipe = redis::pipe();
                pipe.hset(&gone, ticket, 1)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&gone)
                    .arg(IDLE_MS)
                    .ignore();
                let _ = cluster.run(pipe.query_async::<()>(&mut conn)).await;
            }
        });
    }
}
