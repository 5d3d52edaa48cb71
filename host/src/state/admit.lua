-- One call's admission, atomically: every rate bucket (GCRA) and quota
-- counter it draws from is read, the call is decided, and only if every
-- enforced demand has room is it taken from all of them (and from each
-- shadow demand that has room). The same decisions as state::gcra and
-- state::quota_fits in the gateway, on the Redis server's clock.
--
-- ARGV[1]            number of rate buckets, R
-- ARGV[2]            1 if the last key is a list to read along (the chain
--                    history), so the call needs one round trip, not two
-- ARGV[3]            1 if the key after the counters is a number to read
--                    along (the operator controls' generation)
-- then per bucket    interval_us, burst, enforce (0/1)      KEYS[1..R]
-- then per counter   limit, cost, ttl_ms, enforce (0/1)     KEYS[R+1..R+Q]
--
-- Returns {admitted (0/1), then per demand: conforms (0/1), remaining,
-- wait_us; then, if asked, the generation (0 if unset); then, with a
-- list, its items, oldest first}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rates = tonumber(ARGV[1])
local list = ARGV[2] == '1'
local generation = ARGV[3] == '1'
local out = {0}
local admitted = 1
local tats = {}

for i = 1, rates do
  local a = 4 + (i - 1) * 3
  local interval = tonumber(ARGV[a])
  local burst = tonumber(ARGV[a + 1])
  local enforce = ARGV[a + 2] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if now >= allow_at then
    tats[i] = new_tat
    out[#out + 1] = 1
    out[#out + 1] = math.floor((now - allow_at) / interval)
    out[#out + 1] = new_tat - now
  else
    tats[i] = false
    if enforce then admitted = 0 end
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = allow_at - now
  end
end

local base = 4 + rates * 3
local quotas = (#ARGV - base + 1) / 4
local fits = {}
for j = 1, quotas do
  local a = base + (j - 1) * 4
  local limit = tonumber(ARGV[a])
  local cost = tonumber(ARGV[a + 1])
  local enforce = ARGV[a + 3] == '1'
  local used = tonumber(redis.call('GET', KEYS[rates + j]) or '0')
  local ok
  if cost == 0 then ok = used < limit else ok = used + cost <= limit end
  fits[j] = ok
  if not ok and enforce then admitted = 0 end
  local after = used
  if ok then after = used + cost end
  local left = limit - after
  if left < 0 then left = 0 end
  if ok then out[#out + 1] = 1 else out[#out + 1] = 0 end
  out[#out + 1] = left
  out[#out + 1] = 0
end

if admitted == 1 then
  for i = 1, rates do
    if tats[i] then
      -- A bucket is forgotten once it would be full anyway. Numbers go
      -- back as integer text: Lua's default formatting keeps 14 digits.
      local ttl = math.ceil((tats[i] - now) / 1000) + 1
      redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', ttl)
    end
  end
  for j = 1, quotas do
    local a = base + (j - 1) * 4
    local cost = tonumber(ARGV[a + 1])
    if fits[j] and cost > 0 then
      redis.call('INCRBY', KEYS[rates + j], cost)
      redis.call('PEXPIRE', KEYS[rates + j], ARGV[a + 2], 'NX')
    end
  end
end

out[1] = admitted
if generation then
  out[#out + 1] = tonumber(redis.call('GET', KEYS[rates + quotas + 1]) or '0')
end
if list then
  for _, item in ipairs(redis.call('LRANGE', KEYS[#KEYS], 0, -1)) do
    out[#out + 1] = item
  end
end
return out
