package ratelimit

// The scripts mirror level.refill, level.adjust and decide exactly. Times are
// in milliseconds; per-minute buckets tick every 1 ms over 60000 ticks, per-day
// buckets every 1000 ms over 86400 ticks. Numbers stay below 2^53, and are
// given to Redis as numbers (which it writes as integers: %.17g up to Redis 7.0,
// integers as integers since), never through Lua's own number format, which keeps 14 digits.
//
// Bucket: one string of eight little-endian doubles, w1 t1 (rpm), w2 t2 (tpm), w3 t3 (rpd),
// w4 t4 (tpd), with a TTL of the time its fullest level takes to drain plus a second; a
// level whose w is 0 is empty, and its t is then not read. One GET and one SET with PX move a
// scope's state, where a hash of eight fields took an HMGET, an HSET and a PEXPIRE and a
// number format per field: redis-server's CPU per reserve and settle fell from 45 to 33-35 µs
// (README Performance, (g)). The key names the layout (b2:), so
// that an instance of the hash layout (b:) never reads this one; during a rolling upgrade from
// it the two versions count apart.
// Concurrency: a sorted set of reservation id scored by lease expiry.
// Reservation record: a string holding the lease expiry of a live
// reservation, or '0' once it was settled or released (a tombstone, so that a
// settlement applies once and a reserve executed after its release takes
// nothing). Every key also carries a Redis TTL of one lease so that it
// vanishes by itself.

// scriptNow sets now from ARGV[1], or from the server's TIME when it is empty.
const scriptNow = `
local now
if ARGV[1] == '' then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
`

// scriptCommon is shared by the reserve and settle scripts: it sets now and
// defines refill and the bucket writer.
const scriptCommon = scriptNow + `
local unit = {1, 1, 1000, 1000}
local pu = {60000, 60000, 86400, 86400}

-- load reads a scope's bucket and refills its levels to now: s[2d-1] is level d's w, s[2d]
-- its t. A level without a limit (lim[d] <= 0) is empty.
local function load(key, lim)
  local v = redis.call('GET', key)
  local s
  if v then
    s = {struct.unpack('<dddddddd', v)}
  else
    s = {0, now, 0, now, 0, now, 0, now}
  end
  for d = 1, 4 do
    local c = lim[d]
    local w = s[2*d-1]
    local t = s[2*d]
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

-- store writes the bucket with a TTL of its fullest level's drain time, or deletes it when no
-- level holds usage.
local function store(key, s, lim)
  local ttl = 0
  for d = 1, 4 do
    local w, c = s[2*d-1], lim[d]
    if w > 0 and c > 0 then
      local r = s[2*d] + math.ceil(w / c) * unit[d] - now
      if r > ttl then ttl = r end
    else
      s[2*d-1] = 0
    end
  end
  if ttl <= 0 then
    redis.call('DEL', key)
  else
    redis.call('SET', key, struct.pack('<dddddddd', s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]), 'PX', ttl + 1000)
  end
end
`

// reserveScript checks and takes all buckets of all scopes at once.
//
// KEYS: per scope, the bucket then the concurrency set; when taking,
// the reservation record last.
// ARGV: now (empty = server time), take ('1' or '0'), requests, tokens,
// lease ms, reservation id, then per scope rpm tpm rpd tpd max_concurrent.
// Reply: taken (1/0), now, then per scope w1 t1 w2 t2 w3 t3 w4 t4 inflight,
// the states before taking. A reservation id seen before (a retried or
// released reserve) is an error reply that takes nothing.
const reserveScript = scriptCommon + `
local take = ARGV[2] == '1'
local creq = tonumber(ARGV[3])
local ctok = tonumber(ARGV[4])
local lease = tonumber(ARGV[5])
local id = ARGV[6]
local ns = math.floor(#KEYS / 2)
local rec = KEYS[2*ns+1]
if take and redis.call('EXISTS', rec) == 1 then
  return redis.error_reply('AIGWSEEN reservation id already used')
end
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
      redis.call('ZADD', KEYS[2*i], now + lease, id)
      redis.call('PEXPIRE', KEYS[2*i], lease)
    end
  end
  redis.call('SET', rec, now + lease, 'PX', lease)
  out[1] = 1
end
return out
`

// settleScript adds delta tokens to the token buckets and frees the slots of
// a live reservation, once: it leaves a tombstone, and does nothing for a
// reservation that is settled already, expired or was never taken.
//
// KEYS: per scope, the bucket then the concurrency set, then the
// reservation record. ARGV: now (empty = server time), delta tokens,
// reservation id, lease ms, then per scope rpm tpm rpd tpd max_concurrent.
// Reply: 1 when applied, 0 when there was nothing to apply.
const settleScript = scriptCommon + `
local delta = tonumber(ARGV[2])
local id = ARGV[3]
local lease = tonumber(ARGV[4])
local ns = math.floor(#KEYS / 2)
local rec = KEYS[2*ns+1]
local exp = tonumber(redis.call('SET', rec, '0', 'PX', lease, 'GET')) -- the tombstone, and what it replaced
if exp == nil or exp <= now then
  return 0
end
for i = 1, ns do
  local b = 4 + (i - 1) * 5
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
  if tonumber(ARGV[b+5]) > 0 then
    redis.call('ZREM', KEYS[2*i], id)
  end
end
return 1
`

// renewScript extends the lease of a live reservation: its record and its
// slots. A slot already gone (expired) is not re-added.
//
// KEYS: the reservation record, then the concurrency sets of the scopes with
// max_concurrent. ARGV: now (empty = server time), lease ms, reservation id.
// Reply: 1 when renewed, 0 when the reservation is gone (settled, expired,
// or lost with a Redis restart).
const renewScript = scriptNow + `
local lease = tonumber(ARGV[2])
local id = ARGV[3]
local exp = tonumber(redis.call('GET', KEYS[1]))
if exp == nil or exp <= now then
  return 0
end
local upto = string.format('%.0f', now + lease)
local ttl = string.format('%.0f', lease)
redis.call('SET', KEYS[1], upto, 'PX', ttl)
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', upto, id)
  if redis.call('PTTL', KEYS[i]) < lease then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
`
