-- Mixed traffic for bench/soak.sh: cached reads over many distinct keys
-- (so the cache fills and evicts), agent reads, secret writes (which
-- invalidate), 404s, file lists and a few invocations. The key comes from
-- the environment (SOAK_KEY).
local auth = "Bearer " .. (os.getenv("SOAK_KEY") or "")
wrk.headers["Authorization"] = auth
-- wrk.format uses these instead of wrk.headers when given: repeat the key.
local json = { ["Content-Type"] = "application/json", ["Authorization"] = auth }
local slugs = { "soak-a", "soak-b", "soak-c" }
local n = 0

request = function()
    n = n + 1
    local r = n % 100
    local slug = slugs[(n % 3) + 1]
    if r < 50 then
        return wrk.format("GET", "/api/v1/agents?limit=20&offset=" .. (n % 20000))
    elseif r < 70 then
        return wrk.format("GET", "/api/v1/agents/" .. slug)
    elseif r < 80 then
        return wrk.format("GET", "/api/v1/usage?days=" .. (n % 90 + 1))
    elseif r < 88 then
        return wrk.format("GET", "/api/v1/agents/" .. slug .. "/secrets")
    elseif r < 94 then
        return wrk.format("POST", "/api/v1/agents/" .. slug .. "/secrets", json,
            '{"key":"K' .. (n % 50) .. '","value":"v"}')
    elseif r < 97 then
        return wrk.format("GET", "/api/v1/files?limit=50&offset=" .. (n % 2000))
    elseif r < 99 then
        return wrk.format("GET", "/api/v1/agents/nope-" .. n)
    else
        return wrk.format("POST", "/api/v1/agents/" .. slug .. "/invoke", json, '{"prompt":"soak"}')
    end
end
