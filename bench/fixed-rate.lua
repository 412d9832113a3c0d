-- Paces wrk to a fixed request rate with delay().
--
-- Usage: wrk -tT -cC -d10s --latency -s fixed-rate.lua URL -- RATE T C
--
-- Each wrk thread owns a schedule of send slots spaced 1/(RATE/threads)
-- apart. Before every request a connection claims the next free slot and
-- delay() makes it wait until then. The slot times come from a monotonic
-- clock (LuaJIT ffi), so the spacing does not drift with response time.
-- wrk's timers have a resolution of 1 ms, so single requests may leave up
-- to 1 ms early, but the average rate follows the schedule. A slot that is
-- already past is served at once; if the schedule falls more than 100 ms
-- behind (the server cannot keep up) it restarts from now instead of
-- bursting to catch up. Without ffi it falls back to a fixed per-connection
-- interval (connections / RATE), which undershoots by about latency/interval.
--
-- Latencies that wrk reports are from the moment a request is written,
-- so the wait itself is never counted.

local rate = 5000          -- requests per second, all threads together
local threads = 1
local connections = 1
local interval_ms          -- between two slots of this thread
local next_slot            -- ms on the monotonic clock
local now_ms

local ok, ffi = pcall(require, "ffi")
if ok then
  ok = pcall(ffi.cdef, [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]])
end
if ok then
  local ts = ffi.new("bench_timespec")
  local CLOCK_MONOTONIC = 1
  now_ms = function()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
end

function init(args)
  if args[1] then rate = tonumber(args[1]) end
  if args[2] then threads = tonumber(args[2]) end
  if args[3] then connections = tonumber(args[3]) end
  interval_ms = 1000 * threads / rate
end

function delay()
  if not now_ms then
    -- Fallback: every connection waits connections/rate between requests.
    return math.floor(1000 * connections / rate + 0.5)
  end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 100 then
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + interval_ms
  local wait = slot - now
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end
