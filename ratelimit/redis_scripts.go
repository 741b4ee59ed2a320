package ratelimit

// The scripts mirror level.refill, level.adjust and decide exactly. Times are
// in milliseconds; per-minute buckets tick every 1 ms over 60000 ticks, per-day
// buckets every 1000 ms over 86400 ticks. Numbers stay below 2^53, and are
// written with %.0f because Lua's default number format keeps 14 digits.
//
// Bucket hash fields: w1 t1 (rpm), w2 t2 (tpm), w3 t3 (rpd), w4 t4 (tpd).
// Concurrency: a sorted set of reservation id scored by lease expiry.

// scriptCommon is shared by both scripts: it sets now and defines refill
// and the bucket writer.
const scriptCommon = `
local now
if ARGV[1] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local unit = {1, 1, 1000, 1000}
local pu = {60000, 60000, 86400, 86400}
local F = {'w1', 't1', 'w2', 't2', 'w3', 't3', 'w4', 't4'}

local function load(key, lim)
  local v = redis.call('HMGET', key, unpack(F))
  local s = {}
  for d = 1, 4 do
    local c = lim[d]
    local w = tonumber(v[2*d-1]) or 0
    local t = tonumber(v[2*d]) or now
    if c <= 0 then w = 0 end
    if w > 0 then
      local e = math.floor((now - t) / unit[d])
      if e > 0 then
        if e * c >= w then
          w = 0
        else
          w = w - e * c
          t = t + e * unit[d]
        end
      end
    end
    if w <= 0 then
      w = 0
      t = now
    end
    s[2*d-1] = w
    s[2*d] = t
  end
  return s
end

local function store(key, s, lim)
  local ttl = 0
  local args = {}
  for d = 1, 4 do
    local w, t, c = s[2*d-1], s[2*d], lim[d]
    if w > 0 and c > 0 then
      local r = t + math.ceil(w / c) * unit[d] - now
      if r > ttl then ttl = r end
    end
    args[#args+1] = F[2*d-1]
    args[#args+1] = string.format('%.0f', w)
    args[#args+1] = F[2*d]
    args[#args+1] = string.format('%.0f', t)
  end
  if ttl <= 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, unpack(args))
    redis.call('PEXPIRE', key, string.format('%.0f', ttl + 1000))
  end
end
`

// reserveScript checks and takes all buckets of all scopes at once.
//
// KEYS: per scope, the bucket hash then the concurrency set.
// ARGV: now (empty = server time), take ('1' or '0'), requests, tokens,
// lease ms, reservation id, then per scope rpm tpm rpd tpd max_concurrent.
// Reply: taken (1/0), now, then per scope w1 t1 w2 t2 w3 t3 w4 t4 inflight,
// the states before taking.
const reserveScript = scriptCommon + `
local take = ARGV[2] == '1'
local creq = tonumber(ARGV[3])
local ctok = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local id = ARGV[6]
local ns = #KEYS / 2
local ok = true
local out = {0, now}
local states = {}
local lims = {}
for i = 1, ns do
  local b = 6 + (i - 1) * 5
  local lim = {tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3]), tonumber(ARGV[b+4])}
  local s = load(KEYS[2*i-1], lim)
  for d = 1, 4 do
    local c = lim[d]
    local n = ctok
    if d == 1 or d == 3 then n = creq end
    if c > 0 and n > 0 then
      if n > c or s[2*d-1] + n * pu[d] > c * pu[d] then ok = false end
    end
    out[#out+1] = s[2*d-1]
    out[#out+1] = s[2*d]
  end
  local mc = tonumber(ARGV[b+5])
  local cnt = 0
  if mc > 0 then
    if take then redis.call('ZREMRANGEBYSCORE', KEYS[2*i], '-inf', now) end
    cnt = redis.call('ZCOUNT', KEYS[2*i], '(' .. string.format('%.0f', now), '+inf')
    if cnt >= mc then ok = false end
  end
  out[#out+1] = cnt
  states[i] = s
  lims[i] = lim
end
if ok and take then
  for i = 1, ns do
    local s, lim = states[i], lims[i]
    for d = 1, 4 do
      local n = ctok
      if d == 1 or d == 3 then n = creq end
      if lim[d] > 0 and n > 0 then s[2*d-1] = s[2*d-1] + n * pu[d] end
    end
    store(KEYS[2*i-1], s, lim)
    if tonumber(ARGV[6 + (i - 1) * 5 + 5]) > 0 then
      redis.call('ZADD', KEYS[2*i], string.format('%.0f', now + lease), id)
      redis.call('PEXPIRE', KEYS[2*i], string.format('%.0f', lease))
    end
  end
  out[1] = 1
end
return out
`

// settleScript adds delta tokens to the token buckets and frees the slots.
//
// KEYS: as reserveScript. ARGV: now (empty = server time), delta tokens,
// reservation id, then per scope rpm tpm rpd tpd max_concurrent.
const settleScript = scriptCommon + `
local delta = tonumber(ARGV[2])
local id = ARGV[3]
local ns = #KEYS / 2
for i = 1, ns do
  local b = 3 + (i - 1) * 5
  local lim = {tonumber(ARGV[b+1]), tonumber(ARGV[b+2]), tonumber(ARGV[b+3]), tonumber(ARGV[b+4])}
  local s = load(KEYS[2*i-1], lim)
  if delta ~= 0 then
    for _, d in ipairs({2, 4}) do
      local c = lim[d]
      if c > 0 then
        local w = s[2*d-1] + delta * pu[d]
        if w > 2 * c * pu[d] then w = 2 * c * pu[d] end
        if w <= 0 then
          w = 0
          s[2*d] = now
        end
        s[2*d-1] = w
      end
    end
  end
  store(KEYS[2*i-1], s, lim)
  if tonumber(ARGV[b+5]) > 0 and id ~= '' then
    redis.call('ZREM', KEYS[2*i], id)
  end
end
return 1
`
