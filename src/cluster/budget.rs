//! The upstream budgets in Redis: each a sorted set of send times (Redis
//! server milliseconds, so the hosts' clocks do not matter), decided by one
//! Lua script per decision.
//!
//! A replica *reserves* slots: the script finds, for each budget the lane
//! spends, the earliest time at which one more send keeps every window at
//! `max` sends — now if fewer than `max` sends count, else `span` after
//! the `(count − max)`-th oldest — and records the send there, possibly in
//! the future. Any window of `span` then holds at most `max` sends, across
//! all replicas, whichever order they ask in.
//!
//! Fair across replicas: each reservation also records how many clients
//! wait on the asking replica (its *demand*, fresh for [`DEMAND_FRESH`] or
//! one span if that is shorter; a replica whose clients wait says so again
//! at least twice as often, so a replica that died counts no more). While
//! other replicas' clients wait too, a replica takes slots free now only up
//! to its share of the window, `max × its clients ÷ all clients waiting`
//! (rounded up), counting its own sends and bookings in the log; the rest
//! stay free for the others to take, however slow their dispatchers are.
//! Booked future slots are not capped: one per client waiting, in the
//! order asked, already lines every client up in one calendar. A replica
//! whose queue empties records a demand of none at once, so its share goes
//! back to the others.
//!
//! A reserved slot that is not used (its waiter left) is released; an
//! upstream 429 sets a pause every reservation honours; an upstream count
//! above the log's is followed by placeholder sends, as in
//! `shaper::budget`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Script;

use super::Cluster;

/// One budget a lane spends, as the shaper configures it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// `crud` or `invoke`.
    pub name: &'static str,
    /// Sends per window.
    pub max: u32,
    /// The upstream's window.
    pub window: Duration,
    /// Window plus the safety margin: how long a send counts.
    pub span: Duration,
}

/// How long a replica's demand counts after it last said it.
pub const DEMAND_FRESH: Duration = Duration::from_secs(2);

/// What one reservation asks for, and for whom.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// Most slots to take in all (one per waiter).
    pub n: usize,
    /// Most of them booked ahead when fewer are free now (one per client
    /// waiting here: what keeps the calendar fair).
    pub fair: usize,
    /// The asking replica's id; its slots' ids start with it and a `:`.
    pub replica: &'a str,
    /// Clients waiting on the asking replica now (its demand; 0 when none
    /// waits, which takes no slot).
    pub clients: usize,
    /// The granted slots' id prefix, unique per call.
    pub tag: &'a str,
}

/// Slots granted by one reservation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Redis time when the script ran (ms).
    pub now_ms: i64,
    /// Each slot: its id in the log and its time (ms, Redis time).
    pub slots: Vec<(String, i64)>,
    /// Reservations in the first budget later than now (this one's
    /// included): how far ahead the cluster has booked.
    pub ahead: u64,
    /// Sends of the first budget that count now.
    pub counted: u64,
}

/// The shared upstream budget of one credential: the seam between the
/// shaper and where the decision is made.
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Reserves slots in every budget of `specs` at once (the first is the
    /// lane's own): up to `ask.n` that are free now (no more than the
    /// replica's share of the window while other replicas' clients wait),
    /// and, when fewer are, booked future slots up to `ask.fair` in all.
    /// Records the replica's demand either way (see the module's text).
    fn reserve<'a>(
        &'a self,
        specs: &'a [Spec],
        ask: Ask<'a>,
    ) -> BoxFuture<'a, Result<Grant, String>>;
    /// Gives back reserved slots that were never used.
    fn release<'a>(
        &'a self,
        specs: &'a [Spec],
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// No slot of `specs` before `pause` from now (an upstream 429).
    fn pause<'a>(&'a self, specs: &'a [Spec], pause: Duration)
        -> BoxFuture<'a, Result<(), String>>;
    /// The upstream had `remaining` sends left of `spec` when it counted a
    /// send made at `sent_ms`: adds the sends the log misses. Returns how
    /// many.
    fn follow<'a>(
        &'a self,
        spec: Spec,
        remaining: u32,
        sent_ms: i64,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<u32, String>>;
    /// Writes sends back (after Redis was lost: made on the local share,
    /// or forgotten by a restarted Redis); ids already there are kept.
    fn restore<'a>(
        &'a self,
        specs: &'a [Spec],
        sends: Vec<(String, i64)>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Whether the shared decision can be made now.
    fn is_up(&self) -> bool;
    /// Bumped each time the shared budget comes back after a loss.
    fn epoch(&self) -> u64;
}

const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local fresh = tonumber(ARGV[#ARGV-3])
local replica = ARGV[#ARGV-2]
local clients = tonumber(ARGV[#ARGV-1])
local fair = tonumber(ARGV[#ARGV])
local out = {now}
for i = 1, m do
  redis.call('ZREMRANGEBYSCORE', KEYS[2*i-1], '-inf', now - tonumber(ARGV[3+2*i]))
end
local max1 = tonumber(ARGV[4])
local span1 = tonumber(ARGV[5])
-- Demand: clients waiting per replica (a hash, its total under '*'),
-- each replica's last call (a sorted set); silent for `fresh` (at most a
-- span), it counts no more.
if span1 < fresh then fresh = span1 end
local demand, seen = KEYS[2*m+1], KEYS[2*m+2]
for _, r in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', now - fresh - 1)) do
  local c = tonumber(redis.call('HGET', demand, r) or '0')
  -- Not `-c`: Lua writes minus zero as '-0', which HINCRBY refuses.
  if c ~= 0 then redis.call('HINCRBY', demand, '*', 0 - c) end
  redis.call('HDEL', demand, r)
  redis.call('ZREM', seen, r)
end
local before = tonumber(redis.call('HGET', demand, replica) or '0')
redis.call('HSET', demand, replica, clients)
local total = redis.call('HINCRBY', demand, '*', clients - before)
redis.call('ZADD', seen, now, replica)
redis.call('PEXPIRE', demand, span1 + 1000)
redis.call('PEXPIRE', seen, span1 + 1000)
local share = max1
if total > clients then share = math.ceil(max1 * clients / total) end
-- This replica's sends and bookings in the lane's log, counted when first
-- needed: only while a slot is free now, so the log holds under max.
local mine = nil
local function count_mine()
  local n, prefix = 0, replica .. ':'
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(id, 1, #prefix) == prefix then n = n + 1 end
  end
  return n
end
for j = 1, n do
  local at = now
  for i = 1, m do
    local max = tonumber(ARGV[2+2*i])
    local span = tonumber(ARGV[3+2*i])
    local pause = tonumber(redis.call('GET', KEYS[2*i]) or '0')
    if pause > at then at = pause end
    local count = redis.call('ZCARD', KEYS[2*i-1])
    if count >= max then
      local e = redis.call('ZRANGE', KEYS[2*i-1], count - max, count - max, 'WITHSCORES')
      local free = tonumber(e[2]) + span
      if free > at then at = free end
    end
  end
  if at > now and j > fair then break end
  if at <= now and share < max1 then
    mine = mine or count_mine()
    if mine >= share then break end
    mine = mine + 1
  end
  for i = 1, m do
    redis.call('ZADD', KEYS[2*i-1], at, ARGV[3] .. j)
    local top = redis.call('ZRANGE', KEYS[2*i-1], -1, -1, 'WITHSCORES')
    local last = math.max(tonumber(top[2]), now)
    redis.call('PEXPIRE', KEYS[2*i-1], last - now + tonumber(ARGV[3+2*i]) + 1000)
  end
  out[#out+1] = at
end
out[#out+1] = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
out[#out+1] = redis.call('ZCOUNT', KEYS[1], '-inf', now)
return out
";

const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current < now + ms then
    redis.call('SET', KEYS[i], now + ms, 'PX', ms)
  end
end
return now + ms
";

const FOLLOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sent = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
if sent + span <= now then return 0 end
local counted = tonumber(ARGV[4]) - tonumber(ARGV[5])
local ours = redis.call('ZCOUNT', KEYS[1], '(' .. (sent - window), sent + span - window)
local missing = counted - ours
if missing <= 0 then return 0 end
for j = 1, missing do redis.call('ZADD', KEYS[1], sent, ARGV[6] .. j) end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(top[2]), now) - now + span + 1000)
return missing
";

const RELEASE: &str = r"
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], unpack(ARGV)) end
return 1
";

/// The shared budget of one upstream credential, in Redis.
#[derive(Debug)]
pub struct RedisBudget {
    cluster: Cluster,
    credential: String,
}

impl RedisBudget {
    /// The budgets of the upstream credential named `credential`.
    pub fn new(cluster: &Cluster, credential: &str) -> Self {
        Self {
            cluster: cluster.clone(),
            credential: credential.to_string(),
        }
    }

    fn log_key(&self, spec: &Spec) -> String {
        self.cluster.key(&["budget", &self.credential, spec.name])
    }

    /// The replicas' demand of `spec`'s budget: `demand` (clients waiting
    /// per replica) or `asked` (when each last asked).
    fn demand_key(&self, spec: &Spec, what: &str) -> String {
        self.cluster.key(&[what, &self.credential, spec.name])
    }

    fn pause_key(&self, spec: &Spec) -> String {
        self.cluster.key(&["pause", &self.credential, spec.name])
    }

    fn ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }
}

fn scripts() -> &'static [Script; 4] {
    static SCRIPTS: std::sync::OnceLock<[Script; 4]> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        [
            Script::new(RESERVE),
            Script::new(PAUSE),
            Script::new(FOLLOW),
            Script::new(RELEASE),
        ]
    })
}

impl SharedBudget for RedisBudget {
    fn reserve<'a>(
        &'a self,
        specs: &'a [Spec],
        ask: Ask<'a>,
    ) -> BoxFuture<'a, Result<Grant, String>> {
        Box::pin(async move {
            let Some(own) = specs.first() else {
                return Err("a reservation names no budget".to_string());
            };
            let mut call = scripts()[0].prepare_invoke();
            call.arg(specs.len()).arg(ask.n).arg(ask.tag);
            for spec in specs {
                call.key(self.log_key(spec)).key(self.pause_key(spec));
                call.arg(spec.max).arg(Self::ms(spec.span));
            }
            call.key(self.demand_key(own, "demand"));
            call.key(self.demand_key(own, "asked"));
            call.arg(Self::ms(DEMAND_FRESH))
                .arg(ask.replica)
                .arg(ask.clients)
                .arg(ask.fair);
            let out: Vec<i64> = self.cluster.invoke(&call).await?;
            // now, the slots granted, ahead, counted.
            let [now_ms, granted @ .., ahead, counted] = out.as_slice() else {
                return Err(format!("reserve script answered {} values", out.len()));
            };
            let slots = (1..)
                .zip(granted)
                .map(|(j, at)| (format!("{}{j}", ask.tag), *at))
                .collect();
            Ok(Grant {
                now_ms: *now_ms,
                slots,
                ahead: u64::try_from(*ahead).unwrap_or(0),
                counted: u64::try_from(*counted).unwrap_or(0),
            })
        })
    }

    fn release<'a>(
        &'a self,
        specs: &'a [Spec],
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut call = scripts()[3].prepare_invoke();
            for spec in specs {
                call.key(self.log_key(spec));
            }
            for id in &ids {
                call.arg(id);
            }
            self.cluster.invoke::<i64>(&call).await.map(drop)
        })
    }

    fn pause<'a>(
        &'a self,
        specs: &'a [Spec],
        pause: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut call = scripts()[1].prepare_invoke();
            for spec in specs {
                call.key(self.pause_key(spec));
            }
            call.arg(Self::ms(pause).max(1));
            self.cluster.invoke::<i64>(&call).await.map(drop)
        })
    }

    fn follow<'a>(
        &'a self,
        spec: Spec,
        remaining: u32,
        sent_ms: i64,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<u32, String>> {
        Box::pin(async move {
            let mut call = scripts()[2].prepare_invoke();
            call.key(self.log_key(&spec));
            call.arg(sent_ms)
                .arg(Self::ms(spec.window))
                .arg(Self::ms(spec.span))
                .arg(spec.max)
                .arg(remaining)
                .arg(tag);
            let added: i64 = self.cluster.invoke(&call).await?;
            Ok(u32::try_from(added).unwrap_or(0))
        })
    }

    fn restore<'a>(
        &'a self,
        specs: &'a [Spec],
        sends: Vec<(String, i64)>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if sends.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for spec in specs {
                let key = self.log_key(spec);
                let mut zadd = redis::cmd("ZADD");
                zadd.arg(&key).arg("NX");
                for (id, at) in &sends {
                    zadd.arg(*at).arg(id);
                }
                pipe.add_command(zadd).ignore();
                // Longer only (a later booking may hold it), or set when
                // ZADD just created the key.
                for flag in ["GT", "NX"] {
                    pipe.cmd("PEXPIRE")
                        .arg(&key)
                        .arg(Self::ms(spec.span) + 1000)
                        .arg(flag)
                        .ignore();
                }
            }
            let mut conn = self.cluster.conn();
            self.cluster.run(pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn is_up(&self) -> bool {
        self.cluster.is_up()
    }

    fn epoch(&self) -> u64 {
        self.cluster.epoch()
    }
}
