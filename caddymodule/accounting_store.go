package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddyai/gateway/ledger"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/store"
)

// handleAccounting is what the usage ledger, the budgets and the keys of the admin API keep per
// store, shared by every config that uses the store (so across reloads): the ledger writer and
// its goroutine, the budget store, and the admin keys last read, with the gateways to tell when
// they change. Nothing starts until a config with accounting uses the store.
type handleAccounting struct {
	start sync.Once
	ctx   context.Context
	stop  context.CancelFunc

	writer  *ledger.Writer
	budgets ledger.BudgetStore

	mu       sync.Mutex
	gateways map[*Gateway]struct{}

	loadMu  sync.Mutex
	loaded  atomic.Bool
	admin   atomic.Pointer[adminKeys] // nil until loaded
	version atomic.Int64
	// budgets are those set through the admin API, by scope id; they replace the config's
	// budgets of the same scope
	adminBudgets atomic.Pointer[map[string]ledger.Scope]
	lastTry      atomic.Int64 // unix ns of the last first-load attempt
}

// adminKeys are the keys created through the admin API, as the key table holds them, with the
// records they came from.
type adminKeys struct {
	table   *policy.KeyTable
	records []adminKeyRecord
}

// The store records of the admin API's keys: one per key, and a version counter every change
// increments so that every instance notices a change with one read.
const (
	kindAdminKey     = "gateway_key"
	kindAdminBudget  = "gateway_budget"
	kindAdminVersion = "gateway_keys_version"
	adminOwner       = "admin"
	adminVersionID   = "version"
)

// adminPollInterval is how often each instance checks the admin keys' version: a key disabled on
// one instance is refused by the others within it.
const adminPollInterval = 250 * time.Millisecond

// ledgerFlushInterval is how often the embedded ledger writes: a crash loses at most this much.
const ledgerFlushInterval = time.Second

// ledgerStopWait bounds the last write of the ledger when the store closes.
const ledgerStopWait = 5 * time.Second

// begin starts the ledger writer and the admin keys poller, once.
func (h *backendHandle) beginAccounting() {
	a := &h.acct
	a.start.Do(func() {
		a.ctx, a.stop = context.WithCancel(context.Background())
		interval := ledgerFlushInterval
		if h.redisOpts != nil {
			interval = 0 // Redis: written as soon as recorded
		}
		a.writer = ledger.NewWriter(func() (store.Counters, error) {
			objs, _, err := h.open()
			if err != nil {
				return nil, err
			}
			return objs.Counters(), nil
		}, ledger.WriterOptions{Interval: interval, OnError: func(err error) {
			h.logger.Error("writing the usage ledger; kept for the next write", zap.Error(err))
		}})
		a.budgets = &lazyBudgets{h: h}
		go func() {
			defer logPanic(h.logger, "usage ledger writer panicked")
			a.writer.Run(a.ctx, ledgerStopWait)
		}()
		go h.pollAdminKeys(a.ctx)
	})
}

// stopAccounting ends the writer (after its last write) and the poller. It is called by
// Destruct before the store closes.
func (h *backendHandle) stopAccounting() {
	a := &h.acct
	a.start.Do(func() {}) // nothing started: nothing to stop, and nothing starts any more
	if a.stop == nil {
		return
	}
	a.stop()
	select {
	case <-a.writer.Done():
	case <-time.After(ledgerStopWait + time.Second):
		h.logger.Error("the usage ledger's last write did not finish in time")
	}
}

func (h *backendHandle) ledgerWriter() *ledger.Writer {
	h.beginAccounting()
	return h.acct.writer
}

func (h *backendHandle) budgetStore() ledger.BudgetStore {
	h.beginAccounting()
	return h.acct.budgets
}

// register adds a gateway to those told of admin key changes (until its Cleanup).
func (h *backendHandle) register(g *Gateway) {
	a := &h.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gateways == nil {
		a.gateways = map[*Gateway]struct{}{}
	}
	a.gateways[g] = struct{}{}
}

func (h *backendHandle) unregister(g *Gateway) {
	a := &h.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.gateways, g)
}

func (h *backendHandle) registered() []*Gateway {
	a := &h.acct
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*Gateway, 0, len(a.gateways))
	for g := range a.gateways {
		out = append(out, g)
	}
	return out
}

// lazyBudgets opens the store on first use and then keeps budgets in it: in this process,
// starting from the ledger's rows (bolt), or in Redis.
type lazyBudgets struct {
	h    *backendHandle
	mu   sync.Mutex
	real ledger.BudgetStore
}

func (l *lazyBudgets) get() (ledger.BudgetStore, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.real != nil {
		return l.real, nil
	}
	objs, _, err := l.h.open()
	if err != nil {
		return nil, err
	}
	if l.h.redisOpts != nil {
		l.h.mu.Lock()
		client := l.h.client
		l.h.mu.Unlock()
		prefix := l.h.prefix
		if prefix == "" {
			prefix = store.DefaultRedisPrefix
		}
		rb := ledger.NewRedisBudgets(client, prefix)
		go func() {
			defer logPanic(l.h.logger, "budget liveness renewer panicked")
			rb.Run(l.h.acct.ctx)
		}()
		l.real = rb
		return rb, nil
	}
	counters := objs.Counters()
	l.real = ledger.NewMemoryBudgets(func(ctx context.Context, row string) (ledger.Amount, error) {
		rows, err := counters.Scan(ctx, row, row+"\x00", 1)
		if err != nil || len(rows) == 0 || rows[0].Name != row {
			return ledger.Amount{}, err
		}
		return ledger.Amount{Tokens: rows[0].Fields["tokens"], Micros: ledger.Micros(rows[0].Fields["cost"])}, nil
	})
	return l.real, nil
}

func (l *lazyBudgets) Reserve(ctx context.Context, checks []ledger.Check, cost ledger.Amount) (int, ledger.Amount, error) {
	s, err := l.get()
	if err != nil {
		return 0, ledger.Amount{}, err
	}
	return s.Reserve(ctx, checks, cost)
}

func (l *lazyBudgets) Settle(ctx context.Context, checks []ledger.Check, reserved, actual ledger.Amount) ([]ledger.Amount, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Settle(ctx, checks, reserved, actual)
}

func (l *lazyBudgets) Used(ctx context.Context, checks []ledger.Check) ([]ledger.Amount, error) {
	s, err := l.get()
	if err != nil {
		return nil, err
	}
	return s.Used(ctx, checks)
}

// pollAdminKeys re-reads the admin keys when their version changes (another instance changed
// them) and keeps every registered gateway's key table in step.
func (h *backendHandle) pollAdminKeys(ctx context.Context) {
	defer logPanic(h.logger, "admin keys poller panicked")
	t := time.NewTicker(adminPollInterval)
	defer t.Stop()
	var trouble string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !h.acct.loaded.Load() {
			continue // no request and no admin call has needed them yet
		}
		msg := ""
		if err := h.refreshAdminKeys(ctx, false); err != nil {
			msg = err.Error()
			if msg != trouble {
				h.logger.Error("reading the admin API's keys; keeping the last good set", zap.Error(err))
			}
		}
		trouble = msg
		for _, g := range h.registered() {
			g.syncKeys()
		}
	}
}

// refreshAdminKeys reads the admin keys if their version changed since the last read (always
// when force).
func (h *backendHandle) refreshAdminKeys(ctx context.Context, force bool) error {
	a := &h.acct
	a.loadMu.Lock()
	defer a.loadMu.Unlock()
	objs, _, err := h.open()
	if err != nil {
		return err
	}
	v, err := readAdminVersion(ctx, objs)
	if err != nil {
		return err
	}
	if !force && a.loaded.Load() && v == a.version.Load() {
		return nil
	}
	recs, err := listAdminKeys(ctx, objs)
	if err != nil {
		return err
	}
	cfgs := make([]policy.KeyConfig, len(recs))
	for i, r := range recs {
		cfgs[i] = r.KeyConfig
	}
	keys, err := policy.NewKeys(cfgs, nil)
	if err != nil {
		return err
	}
	table, err := policy.NewKeyTable(keys)
	if err != nil {
		return err
	}
	budgets, err := listAdminBudgets(ctx, objs)
	if err != nil {
		return err
	}
	scopes := make(map[string]ledger.Scope, len(budgets))
	for _, b := range budgets {
		s := b.scope()
		scopes[s.ID] = s
	}
	a.admin.Store(&adminKeys{table: table, records: recs})
	a.adminBudgets.Store(&scopes)
	a.version.Store(v)
	a.loaded.Store(true)
	return nil
}

func readAdminVersion(ctx context.Context, objs store.Objects) (int64, error) {
	rec, err := objs.Get(ctx, kindAdminVersion, adminOwner, adminVersionID)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(rec.Data), 10, 64)
}

// bumpAdminVersion tells every instance that the admin keys changed.
func bumpAdminVersion(ctx context.Context, objs store.Objects) error {
	_, err := objs.Update(ctx, kindAdminVersion, adminOwner, adminVersionID, func(old []byte) ([]byte, error) {
		n, _ := strconv.ParseInt(string(old), 10, 64)
		return strconv.AppendInt(nil, n+1, 10), nil
	})
	if errors.Is(err, store.ErrNotFound) {
		err = objs.Put(ctx, store.Record{Kind: kindAdminVersion, Owner: adminOwner, ID: adminVersionID, Data: []byte("1")})
	}
	return err
}

// adminKeyRecord is a key of the admin API as stored: the key's config (its secret the hash
// only) and when it was created and last rotated.
type adminKeyRecord struct {
	policy.KeyConfig
	CreatedAt time.Time `json:"created_at"`
	RotatedAt time.Time `json:"rotated_at,omitzero"`
}

func listAdminKeys(ctx context.Context, objs store.Objects) ([]adminKeyRecord, error) {
	var out []adminKeyRecord
	for after := ""; ; {
		page, err := objs.List(ctx, kindAdminKey, adminOwner, store.ListOptions{After: after, Limit: store.MaxListLimit, Order: store.OrderAsc})
		if err != nil {
			return nil, err
		}
		for _, r := range page.Records {
			after = r.ID
			var k adminKeyRecord
			if err := json.Unmarshal(r.Data, &k); err != nil {
				return nil, err
			}
			out = append(out, k)
		}
		if !page.HasMore {
			return out, nil
		}
	}
}

// lookupKey authenticates a secret. With accounting on, the admin API's keys are read on the
// first unknown secret if they have not been read yet (the first request after a start).
func (g *Gateway) lookupKey(secret string) (*policy.Key, policy.Status) {
	if g.acct != nil && !g.backend.acct.loaded.Load() {
		g.loadAdmin()
	}
	return g.keys.Load().Lookup(secret, g.now())
}

// loadAdmin reads the admin API's keys and budgets for the first time (the first request after
// a start), at most once a second while the store cannot be read.
func (g *Gateway) loadAdmin() {
	a := &g.backend.acct
	now := time.Now().UnixNano()
	if last := a.lastTry.Load(); now-last < int64(time.Second) || !a.lastTry.CompareAndSwap(last, now) {
		return
	}
	if err := g.backend.refreshAdminKeys(g.ctx, false); err != nil {
		g.logger.Error("reading the admin API's keys and budgets", zap.Error(err))
		return
	}
	g.syncKeys()
}

// gatewayKeys is what a gateway's key table is built from: its inline keys, the keys file's and
// the admin API's. The table in use is rebuilt when either of the last two changes.
type gatewayKeys struct {
	mu         sync.Mutex
	file       *policy.KeyTable
	built      *policy.KeyTable // the table last built and stored
	builtAdmin *adminKeys
	trouble    string
}

// mergeAdminKeys builds the table of the inline, file and admin keys, remembering the file's.
func (g *Gateway) mergeAdminKeys(file *policy.KeyTable) (*policy.KeyTable, error) {
	gk := g.keySources
	gk.mu.Lock()
	defer gk.mu.Unlock()
	admin := g.backend.acct.admin.Load()
	t, err := g.buildKeys(file, admin)
	if err != nil {
		return nil, err
	}
	gk.file, gk.built, gk.builtAdmin = file, t, admin
	return t, nil
}

func (g *Gateway) buildKeys(file *policy.KeyTable, admin *adminKeys) (*policy.KeyTable, error) {
	t := g.inline
	var err error
	if file != nil {
		if t, err = t.Merge(file); err != nil {
			return nil, err
		}
	}
	if admin != nil {
		if t, err = t.Merge(admin.table); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// syncKeys rebuilds the key table if the admin keys changed or the table in use is not the one
// last built (a keys file reload raced an admin change).
func (g *Gateway) syncKeys() {
	if g.acct == nil {
		return
	}
	gk := g.keySources
	gk.mu.Lock()
	defer gk.mu.Unlock()
	admin := g.backend.acct.admin.Load()
	if gk.built != nil && g.keys.Load() == gk.built && admin == gk.builtAdmin || g.keys.Load() == nil {
		return // unchanged, or still provisioning (Provision syncs once its table is in place)
	}
	t, err := g.buildKeys(gk.file, admin)
	if err != nil {
		if err.Error() != gk.trouble {
			g.logger.Error("admin API keys not applied; keeping the last good key set", zap.Error(err))
		}
		gk.trouble = err.Error()
		return
	}
	gk.trouble = ""
	g.keys.Store(t)
	gk.built, gk.builtAdmin = t, admin
}

// listAdminBudgets reads the budgets set through the admin API.
func listAdminBudgets(ctx context.Context, objs store.Objects) ([]BudgetConfig, error) {
	var out []BudgetConfig
	for after := ""; ; {
		page, err := objs.List(ctx, kindAdminBudget, adminOwner, store.ListOptions{After: after, Limit: store.MaxListLimit, Order: store.OrderAsc})
		if err != nil {
			return nil, err
		}
		for _, r := range page.Records {
			after = r.ID
			var b BudgetConfig
			if err := json.Unmarshal(r.Data, &b); err != nil {
				return nil, err
			}
			out = append(out, b)
		}
		if !page.HasMore {
			return out, nil
		}
	}
}
