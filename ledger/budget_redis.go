package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisBudgets keeps budgets in Redis, shared by every instance:
//
//	<p>bud:<row>       hash   t, m: tokens and micros spent; rt:<inst>, rm:<inst>: held by instance
//	<p>live:<inst>     string set while the instance runs (PX liveTTL, renewed by Run)
//
// A reservation adds to the instance's own rt/rm fields in one script that first sums the
// spend and every live instance's reservations; the fields of an instance whose live key is
// gone (it was killed) are dropped, so a dead instance's reservations come back within liveTTL.
// A budget hash expires 35 days after its period ends.
type RedisBudgets struct {
	client redis.UniversalClient
	prefix string
	inst   string
}

// liveTTL is how long an instance's reservations outlive its last sign of life.
const liveTTL = 15 * time.Second

// DefaultBudgetPrefix is the key prefix of RedisBudgets when none is given.
const DefaultBudgetPrefix = "aigw:budget:"

// NewRedisBudgets returns budgets in Redis. It does no I/O.
func NewRedisBudgets(client redis.UniversalClient, prefix string) *RedisBudgets {
	if prefix == "" {
		prefix = DefaultBudgetPrefix
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &RedisBudgets{client: client, prefix: prefix, inst: hex.EncodeToString(b[:])}
}

// Run renews the instance's live key until ctx ends.
func (s *RedisBudgets) Run(ctx context.Context) {
	t := time.NewTicker(liveTTL / 3)
	defer t.Stop()
	for {
		_ = s.client.Set(ctx, s.prefix+"live:"+s.inst, 1, liveTTL).Err()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reserveScript: KEYS are the budget hashes; ARGV: inst, live prefix, cost tokens, cost micros,
// liveTTL ms, then per key: limit tokens, limit micros, expire-at ms.
var reserveScript = redis.NewScript(`
local inst, live = ARGV[1], ARGV[2]
local ct, cm = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', live .. inst, 1, 'PX', ARGV[5])
for i, k in ipairs(KEYS) do
  local lt, lm = tonumber(ARGV[3+3*i]), tonumber(ARGV[4+3*i])
  local h = redis.call('HGETALL', k)
  local st, sm, rt, rm = 0, 0, 0, 0
  for j = 1, #h, 2 do
    local f, v = h[j], tonumber(h[j+1])
    if f == 't' then st = v
    elseif f == 'm' then sm = v
    else
      local kind, who = string.sub(f, 1, 2), string.sub(f, 4)
      if who ~= inst and redis.call('EXISTS', live .. who) == 0 then
        redis.call('HDEL', k, f)
      elseif kind == 'rt' then rt = rt + v
      elseif kind == 'rm' then rm = rm + v end
    end
  end
  if (lt > 0 and st + rt + ct > lt) or (lm > 0 and sm + rm + cm > lm) then
    return {i, st + rt, sm + rm}
  end
end
for i, k in ipairs(KEYS) do
  redis.call('HINCRBY', k, 'rt:' .. inst, ct)
  redis.call('HINCRBY', k, 'rm:' .. inst, cm)
  redis.call('PEXPIREAT', k, ARGV[5+3*i])
end
return {0, 0, 0}
`)

// settleScript: KEYS are the budget hashes; ARGV: inst, reserved tokens, reserved micros,
// actual tokens, actual micros. Returns the spend after, per key (tokens, micros).
var settleScript = redis.NewScript(`
local inst = ARGV[1]
local out = {}
for i, k in ipairs(KEYS) do
  for _, d in ipairs({{'rt:', ARGV[2]}, {'rm:', ARGV[3]}}) do
    local f = d[1] .. inst
    local v = tonumber(redis.call('HGET', k, f) or '0') - tonumber(d[2])
    if v > 0 then redis.call('HSET', k, f, v) else redis.call('HDEL', k, f) end
  end
  out[#out+1] = redis.call('HINCRBY', k, 't', ARGV[4])
  out[#out+1] = redis.call('HINCRBY', k, 'm', ARGV[5])
end
return out
`)

// usedScript returns per key the spend plus the live reservations (tokens, micros).
var usedScript = redis.NewScript(`
local live = ARGV[1]
local out = {}
for i, k in ipairs(KEYS) do
  local h = redis.call('HGETALL', k)
  local t, m = 0, 0
  for j = 1, #h, 2 do
    local f, v = h[j], tonumber(h[j+1])
    if f == 't' then t = t + v
    elseif f == 'm' then m = m + v
    elseif redis.call('EXISTS', live .. string.sub(f, 4)) == 1 then
      if string.sub(f, 1, 2) == 'rt' then t = t + v else m = m + v end
    end
  end
  out[#out+1] = t
  out[#out+1] = m
end
return out
`)

func (s *RedisBudgets) keys(checks []Check) []string {
	ks := make([]string, len(checks))
	for i, c := range checks {
		ks[i] = s.prefix + "bud:" + c.Row
	}
	return ks
}

// budgetRetention is how long a budget's hash outlives its period.
const budgetRetention = 35 * 24 * time.Hour

// Reserve implements BudgetStore.
func (s *RedisBudgets) Reserve(ctx context.Context, checks []Check, cost Amount) (int, Amount, error) {
	args := []any{s.inst, s.prefix + "live:", cost.Tokens, int64(cost.Micros), liveTTL.Milliseconds()}
	for _, c := range checks {
		args = append(args, c.Limit.Tokens, int64(c.Limit.Spend), c.Ends.Add(budgetRetention).UnixMilli())
	}
	res, err := reserveScript.Run(ctx, s.client, s.keys(checks), args...).Int64Slice()
	if err != nil {
		return 0, Amount{}, fmt.Errorf("redis: %w", err)
	}
	if len(res) != 3 {
		return 0, Amount{}, fmt.Errorf("redis: unexpected reply %v", res)
	}
	if res[0] == 0 {
		return -1, Amount{}, nil
	}
	return int(res[0]) - 1, Amount{Tokens: res[1], Micros: Micros(res[2])}, nil
}

// Settle implements BudgetStore.
func (s *RedisBudgets) Settle(ctx context.Context, checks []Check, reserved, actual Amount) ([]Amount, error) {
	res, err := settleScript.Run(ctx, s.client, s.keys(checks), s.inst, reserved.Tokens, int64(reserved.Micros),
		actual.Tokens, int64(actual.Micros)).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return pairs(res, len(checks))
}

// Used implements BudgetStore.
func (s *RedisBudgets) Used(ctx context.Context, checks []Check) ([]Amount, error) {
	res, err := usedScript.Run(ctx, s.client, s.keys(checks), s.prefix+"live:").Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return pairs(res, len(checks))
}

func pairs(res []int64, n int) ([]Amount, error) {
	if len(res) != 2*n {
		return nil, fmt.Errorf("redis: unexpected reply of %s values", strconv.Itoa(len(res)))
	}
	out := make([]Amount, n)
	for i := range out {
		out[i] = Amount{Tokens: res[2*i], Micros: Micros(res[2*i+1])}
	}
	return out, nil
}

var _ BudgetStore = (*RedisBudgets)(nil)
