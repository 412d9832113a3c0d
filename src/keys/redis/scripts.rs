//! The Lua scripts of the Redis key backend. Each runs atomically in
//! Redis, so a decision and its write are one step for every replica.
//!
//! Money stays exact: amounts travel as plain decimal strings (`0.000171`,
//! never an exponent, never negative) and are added and compared digit by
//! digit in [`DECIMAL`]: Lua's numbers are doubles and Redis's
//! `INCRBYFLOAT` rounds.

use std::sync::OnceLock;

use redis::Script;

/// `dec_add(a, b)` and `dec_ge(a, b)` on non-negative decimal strings.
const DECIMAL: &str = r"
local function split(s)
  local i, f = string.match(s, '^(%d+)%.?(%d*)$')
  if not i then error('not a plain non-negative decimal: ' .. tostring(s)) end
  return i, f
end
local function align(a, b)
  local ai, af = split(a)
  local bi, bf = split(b)
  local n = math.max(#ai, #bi)
  local m = math.max(#af, #bf)
  ai = string.rep('0', n - #ai) .. ai
  bi = string.rep('0', n - #bi) .. bi
  af = af .. string.rep('0', m - #af)
  bf = bf .. string.rep('0', m - #bf)
  return ai .. af, bi .. bf, m
end
local function dec_add(a, b)
  local x, y, m = align(a, b)
  local out, carry = {}, 0
  for i = #x, 1, -1 do
    local s = string.byte(x, i) + string.byte(y, i) - 96 + carry
    if s >= 10 then carry = 1; s = s - 10 else carry = 0 end
    out[i] = string.char(48 + s)
  end
  local digits = table.concat(out)
  if carry == 1 then digits = '1' .. digits end
  local int = string.sub(digits, 1, #digits - m)
  local frac = string.sub(digits, #digits - m + 1)
  int = (string.gsub(int, '^0+', ''))
  if int == '' then int = '0' end
  frac = (string.gsub(frac, '0+$', ''))
  if frac == '' then return int end
  return int .. '.' .. frac
end
local function dec_ge(a, b)
  local x, y = align(a, b)
  return x >= y
end
";

/// KEYS: ids set, key hash, generation. ARGV: field, value, …
/// Returns 1, or 0 when the id is taken.
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
redis.call('SADD', KEYS[1], string.match(KEYS[2], '([^:]+)$'))
redis.call('INCR', KEYS[3])
return 1
";

/// KEYS: key hash, generation. ARGV: now. Returns the key's fields as
/// they are now, or none for no key.
const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 0 then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
  redis.call('INCR', KEYS[2])
end
return redis.call('HGETALL', KEYS[1])
";

/// KEYS: key hash, generation. ARGV: new hash, grace until. Returns the
/// key's fields as they are now, or none for no key or a revoked one.
const ROTATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return {} end
local old = redis.call('HGET', KEYS[1], 'hash')
redis.call('HSET', KEYS[1], 'prev_hash', old, 'prev_until', ARGV[2], 'hash', ARGV[1])
redis.call('INCR', KEYS[2])
return redis.call('HGETALL', KEYS[1])
";

/// KEYS: reservations hash, reservation counter, then the key's spent
/// string of each day of the period. ARGV: limit, amount, seconds the
/// reservation lives. Expiry is on Redis's clock, so replicas' clocks do
/// not matter. Returns {id, spent, reserved}; id 0 when refused.
const RESERVE: &str = r"
local spent = '0'
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then spent = dec_add(spent, v) end
end
local reserved = '0'
local now = tonumber(redis.call('TIME')[1])
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local amount, expires = string.match(held[i + 1], '^(%S+) (%-?%d+)$')
  if not expires or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], held[i])
  else
    reserved = dec_add(reserved, amount)
  end
end
if dec_ge(dec_add(spent, reserved), ARGV[1]) then return {0, spent, reserved} end
local id = redis.call('INCR', KEYS[2])
local ttl = math.max(1, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], id, ARGV[2] .. ' ' .. string.format('%d', now + ttl))
redis.call('EXPIRE', KEYS[1], ttl, 'NX')
redis.call('EXPIRE', KEYS[1], ttl, 'GT')
return {id, spent, reserved}
";

/// KEYS: days zset, reservations hash, this write's marker, then per
/// delta its day's usage hash and its key's spent string of that day.
/// ARGV: the reservation id to free (or ''), then per delta: field
/// prefix, day, requests, invocations, input tokens, output tokens, cost.
/// A write whose marker is there was applied already (a retry after a
/// lost answer): nothing is added again. Every sum is computed before the
/// first write (a bad amount fails the script with nothing written), and
/// the marker is set last. Returns 1, or 0 for a repeat.
const USAGE: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local names = {'requests', 'invocations', 'input_tokens', 'output_tokens'}
local n = (#ARGV - 1) / 7
local sums, order = {}, {}
local function add(key, field, amount)
  local slot = key .. '\n' .. field
  if not sums[slot] then
    local was
    if field == '' then was = redis.call('GET', key) else was = redis.call('HGET', key, field) end
    sums[slot] = {key, field, was or '0'}
    order[#order + 1] = slot
  end
  sums[slot][3] = dec_add(sums[slot][3], amount)
end
for d = 0, n - 1 do
  local a = 2 + d * 7
  local usage, spent = KEYS[4 + d * 2], KEYS[5 + d * 2]
  local cost = ARGV[a + 6]
  add(usage, ARGV[a] .. '\tcost', cost)
  if cost ~= '0' then add(spent, '', cost) end
  for c = 1, 4 do
    if not string.match(ARGV[a + 1 + c], '^%d+$') then error('not a count') end
  end
end
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[2], ARGV[1]) end
for d = 0, n - 1 do
  local a = 2 + d * 7
  local usage = KEYS[4 + d * 2]
  redis.call('ZADD', KEYS[1], 0, ARGV[a + 1])
  for c = 1, 4 do
    local by = ARGV[a + 1 + c]
    if by ~= '0' then redis.call('HINCRBY', usage, ARGV[a] .. '\t' .. names[c], by) end
  end
end
for _, slot in ipairs(order) do
  local key, field, value = sums[slot][1], sums[slot][2], sums[slot][3]
  if field == '' then
    redis.call('SET', key, value, 'EX', 3456000)
  else
    redis.call('HSET', key, field, value)
  end
end
redis.call('SET', KEYS[3], 1, 'EX', 3600)
return 1
";

/// KEYS: days zset. ARGV: first day. Every usage row from that day on:
/// {day, field, value, …} flattened.
const READ_USAGE: &str = r"
local days = redis.call('ZRANGE', KEYS[1], '[' .. ARGV[1], '+', 'BYLEX')
local out = {}
for _, day in ipairs(days) do
  local all = redis.call('HGETALL', ARGV[2] .. day)
  for i = 1, #all, 2 do
    out[#out + 1] = day
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
";

/// A key's own rate, shared by every replica: GCRA on Redis's clock, in
/// microseconds (exact in Lua's doubles). KEYS: the key's theoretical
/// arrival time. ARGV: emission interval, burst (interval × max).
/// Returns 0 when the request may go, else the microseconds to wait.
const RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local later = tat + interval
local over = later - now - burst
if over > 0 then return over end
redis.call('SET', KEYS[1], string.format('%d', later), 'PX', math.max(1, math.ceil((later - now) / 1000)))
return 0
";

/// The scripts, built once.
pub(super) struct Scripts {
    pub(super) insert: Script,
    pub(super) revoke: Script,
    pub(super) rotate: Script,
    pub(super) reserve: Script,
    pub(super) usage: Script,
    pub(super) read_usage: Script,
    pub(super) rate: Script,
}

/// The scripts of the backend.
pub(super) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        insert: Script::new(INSERT),
        revoke: Script::new(REVOKE),
        rotate: Script::new(ROTATE),
        reserve: Script::new(&format!("{DECIMAL}{RESERVE}")),
        usage: Script::new(&format!("{DECIMAL}{USAGE}")),
        read_usage: Script::new(READ_USAGE),
        rate: Script::new(RATE),
    })
}
