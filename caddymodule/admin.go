package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/ledger"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/store"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the gateway's part of Caddy's admin API (admin.api.ai_gateway), so it sits behind
// Caddy's admin endpoint and its access controls (by default localhost:2019 only). It manages
// the keys kept in the store (created, disabled, enabled, rotated and deleted at runtime,
// beside the inline keys and the keys file) and reads the usage ledger and the budgets:
//
//	GET    /ai_gateway/keys                  every key: the admin API's (in full) and the config's (id and source)
//	POST   /ai_gateway/keys                  create a key; the answer holds its secret, shown this once
//	GET    /ai_gateway/keys/{id}             one key of the admin API
//	POST   /ai_gateway/keys/{id}/disable     refuse it (401) from now on, on every instance within a second
//	POST   /ai_gateway/keys/{id}/enable      accept it again
//	POST   /ai_gateway/keys/{id}/rotate      a new secret (shown once); the old one stops working
//	DELETE /ai_gateway/keys/{id}             remove it (its usage stays in the ledger)
//	GET    /ai_gateway/usage                 ledger rows (?from=&to= days, key=, label=, model=; format=csv or Accept: text/csv)
//	GET    /ai_gateway/budgets               every budget (config's and admin API's) with what it has used now
//	PUT    /ai_gateway/budgets               set a budget (key or label, limits); it replaces the config's of that scope
//	DELETE /ai_gateway/budgets?key=|label=   remove a budget set here (the config's applies again)
//
// Only the SHA-256 of a secret is stored. Every change is logged with what changed, never the
// secret. The module has no configuration: Caddy loads it with the admin endpoint, and it works
// on the store of the running ai_gateway handlers that have accounting.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.ai_gateway",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/ai_gateway/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// adminKeyView is a key as the admin API shows it: its config without the secret.
type adminKeyView struct {
	adminKeyRecord
	Source string `json:"source"`
	// Secret is set only in the answers of create and rotate.
	Secret string `json:"secret,omitempty"`
}

// configKeyView is a key of the config (inline or keys file), which the admin API does not change.
type configKeyView struct {
	ID       string `json:"id"`
	Source   string `json:"source"`
	Disabled bool   `json:"disabled,omitempty"`
}

func adminError(status int, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return caddy.APIError{HTTPStatus: status, Err: err, Message: err.Error()}
}

// target is the store the admin API works on, and the gateways using it.
type target struct {
	h        *backendHandle
	gateways []*Gateway
}

// targetOf finds the store of the running gateways with accounting: the one, or the one whose
// storage dir the store query parameter names when several are in use.
func targetOf(r *http.Request) (*target, error) {
	var ts []*target
	backendPool.Range(func(_, v any) bool {
		h, ok := v.(*backendHandle)
		if !ok {
			return true
		}
		if gs := h.registered(); len(gs) > 0 {
			ts = append(ts, &target{h: h, gateways: gs})
		}
		return true
	})
	want := r.URL.Query().Get("store")
	var dirs []string
	for _, t := range ts {
		if want == "" && len(ts) == 1 || want == t.h.dir {
			return t, nil
		}
		dirs = append(dirs, t.h.dir)
	}
	if len(ts) == 0 {
		return nil, adminError(http.StatusServiceUnavailable, "no ai_gateway handler with accounting is running")
	}
	return nil, adminError(http.StatusBadRequest, "several stores are in use; name one with ?store=<storage dir>: %s", strings.Join(dirs, ", "))
}

func (t *target) logger() *zap.Logger { return caddy.Log().Named("admin.api.ai_gateway") }

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	t, err := targetOf(r)
	if err != nil {
		return err
	}
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/ai_gateway/"), "/")
	parts := strings.Split(rest, "/")
	switch {
	case rest == "keys":
		switch r.Method {
		case http.MethodGet:
			return t.listKeys(w, r)
		case http.MethodPost:
			return t.createKey(w, r)
		}
	case parts[0] == "keys" && len(parts) == 2:
		switch r.Method {
		case http.MethodGet:
			return t.getKey(w, r, parts[1])
		case http.MethodDelete:
			return t.deleteKey(w, r, parts[1])
		}
	case parts[0] == "keys" && len(parts) == 3 && r.Method == http.MethodPost:
		switch parts[2] {
		case "disable", "enable", "rotate":
			return t.changeKey(w, r, parts[1], parts[2])
		}
	case rest == "usage" && r.Method == http.MethodGet:
		return t.usage(w, r)
	case rest == "budgets":
		switch r.Method {
		case http.MethodGet:
			return t.budgets(w, r)
		case http.MethodPut:
			return t.setBudget(w, r)
		case http.MethodDelete:
			return t.deleteBudget(w, r)
		}
	default:
		return adminError(http.StatusNotFound, "%s %s: not found", r.Method, r.URL.Path)
	}
	return adminError(http.StatusMethodNotAllowed, "method %s not allowed for %s", r.Method, r.URL.Path)
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(append(body, '\n'))
	return err
}

func (t *target) objects() (store.Backend, error) {
	objs, _, err := t.h.open()
	if err != nil {
		return nil, adminError(http.StatusServiceUnavailable, "opening the store: %v", err)
	}
	return objs, nil
}

// changed makes every instance pick up a change of the admin keys: this one at once, the others
// at their next poll.
func (t *target) changed(ctx context.Context, objs store.Objects) error {
	if err := bumpAdminVersion(ctx, objs); err != nil {
		return adminError(http.StatusServiceUnavailable, "recording the change: %v", err)
	}
	if err := t.h.refreshAdminKeys(ctx, true); err != nil {
		return adminError(http.StatusServiceUnavailable, "reading the keys back: %v", err)
	}
	for _, g := range t.h.registered() {
		g.syncKeys()
	}
	return nil
}

func (t *target) listKeys(w http.ResponseWriter, r *http.Request) error {
	objs, err := t.objects()
	if err != nil {
		return err
	}
	recs, err := listAdminKeys(r.Context(), objs)
	if err != nil {
		return adminError(http.StatusServiceUnavailable, "listing keys: %v", err)
	}
	out := struct {
		Object string `json:"object"`
		Data   []any  `json:"data"`
	}{Object: "list", Data: []any{}}
	admin := map[string]bool{}
	for _, rec := range recs {
		admin[rec.ID] = true
		out.Data = append(out.Data, adminKeyView{adminKeyRecord: rec, Source: "admin"})
	}
	seen := map[string]bool{}
	for _, g := range t.gateways {
		for _, id := range g.configKeyIDs() {
			if admin[id] || seen[id] {
				continue
			}
			seen[id] = true
			var k *policy.Key
			if table := g.keys.Load(); table != nil {
				k = table.ByID(id)
			}
			out.Data = append(out.Data, configKeyView{ID: id, Source: "config", Disabled: k != nil && k.Disabled})
		}
	}
	return writeAdminJSON(w, http.StatusOK, out)
}

// configKeyIDs lists the ids of the gateway's inline and keys-file keys, sorted.
func (g *Gateway) configKeyIDs() []string {
	var ids []string
	table := g.keys.Load()
	if table == nil {
		return nil // still provisioning
	}
	admin := g.backend.acct.admin.Load()
	for _, id := range table.IDs() {
		if admin == nil || admin.table.ByID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

func (t *target) getKey(w http.ResponseWriter, r *http.Request, id string) error {
	objs, err := t.objects()
	if err != nil {
		return err
	}
	rec, err := getAdminKey(r.Context(), objs, id)
	if err != nil {
		return err
	}
	return writeAdminJSON(w, http.StatusOK, adminKeyView{adminKeyRecord: rec, Source: "admin"})
}

func getAdminKey(ctx context.Context, objs store.Objects, id string) (adminKeyRecord, error) {
	var rec adminKeyRecord
	raw, err := objs.Get(ctx, kindAdminKey, adminOwner, id)
	if errors.Is(err, store.ErrNotFound) {
		return rec, adminError(http.StatusNotFound, "no key %q was created through the admin API", id)
	}
	if err != nil {
		return rec, adminError(http.StatusServiceUnavailable, "reading key %q: %v", id, err)
	}
	if err := json.Unmarshal(raw.Data, &rec); err != nil {
		return rec, adminError(http.StatusInternalServerError, "reading key %q: %v", id, err)
	}
	return rec, nil
}

// newSecret returns a new key secret: sk-gw- and 32 random bytes in base64url.
func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "sk-gw-" + base64.RawURLEncoding.EncodeToString(b[:])
}

func newKeyID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return "key_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// maxAdminBody bounds the body of a key creation.
const maxAdminBody = 64 << 10

func (t *target) createKey(w http.ResponseWriter, r *http.Request) error {
	var kc policy.KeyConfig
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kc); err != nil && !errors.Is(err, io.EOF) {
		return adminError(http.StatusBadRequest, "reading the key: %v", err)
	}
	if kc.Secret != "" {
		return adminError(http.StatusBadRequest, "secret: the gateway makes the secret; leave it out")
	}
	if kc.ID == "" {
		kc.ID = newKeyID()
	}
	secret := newSecret()
	kc.Secret = policy.FormatHash(policy.HashSecret(secret))
	keys, err := policy.NewKeys([]policy.KeyConfig{kc}, nil)
	if err == nil {
		_, err = policy.NewKeyTable(keys) // checks the model patterns
	}
	if err != nil {
		return adminError(http.StatusBadRequest, "%v", err)
	}
	for _, g := range t.gateways {
		if slices.Contains(g.configKeyIDs(), kc.ID) {
			return adminError(http.StatusConflict, "key %q exists in the config", kc.ID)
		}
	}
	objs, err := t.objects()
	if err != nil {
		return err
	}
	if _, err := objs.Get(r.Context(), kindAdminKey, adminOwner, kc.ID); err == nil {
		return adminError(http.StatusConflict, "key %q exists", kc.ID)
	}
	rec := adminKeyRecord{KeyConfig: kc, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := objs.Put(r.Context(), store.Record{Kind: kindAdminKey, Owner: adminOwner, ID: kc.ID, Data: data}); err != nil {
		return adminError(http.StatusServiceUnavailable, "storing the key: %v", err)
	}
	if err := t.changed(r.Context(), objs); err != nil {
		return err
	}
	t.logger().Info("key created", zap.String("key_id", kc.ID), zap.Strings("models", kc.Models), zap.Any("labels", kc.Labels),
		zap.Bool("disabled", kc.Disabled), zap.Bool("no_batches", kc.NoBatches), zap.Time("expires_at", kc.ExpiresAt),
		zap.Any("limits", kc.Limits), zap.String("remote", r.RemoteAddr))
	return writeAdminJSON(w, http.StatusCreated, adminKeyView{adminKeyRecord: rec, Source: "admin", Secret: secret})
}

func (t *target) changeKey(w http.ResponseWriter, r *http.Request, id, action string) error {
	objs, err := t.objects()
	if err != nil {
		return err
	}
	if _, err := getAdminKey(r.Context(), objs, id); err != nil {
		return err
	}
	secret := ""
	if action == "rotate" {
		secret = newSecret()
	}
	var rec adminKeyRecord
	_, err = objs.Update(r.Context(), kindAdminKey, adminOwner, id, func(old []byte) ([]byte, error) {
		if err := json.Unmarshal(old, &rec); err != nil {
			return nil, err
		}
		switch action {
		case "disable":
			rec.Disabled = true
		case "enable":
			rec.Disabled = false
		case "rotate":
			rec.Secret = policy.FormatHash(policy.HashSecret(secret))
			rec.RotatedAt = time.Now().UTC().Truncate(time.Second)
		}
		return json.Marshal(rec)
	})
	if err != nil {
		return adminError(http.StatusServiceUnavailable, "updating key %q: %v", id, err)
	}
	if err := t.changed(r.Context(), objs); err != nil {
		return err
	}
	msg := map[string]string{"disable": "key disabled", "enable": "key enabled", "rotate": "key rotated"}[action]
	t.logger().Info(msg, zap.String("key_id", id), zap.String("remote", r.RemoteAddr))
	return writeAdminJSON(w, http.StatusOK, adminKeyView{adminKeyRecord: rec, Source: "admin", Secret: secret})
}

func (t *target) deleteKey(w http.ResponseWriter, r *http.Request, id string) error {
	objs, err := t.objects()
	if err != nil {
		return err
	}
	if err := objs.Delete(r.Context(), kindAdminKey, adminOwner, id); errors.Is(err, store.ErrNotFound) {
		return adminError(http.StatusNotFound, "no key %q was created through the admin API", id)
	} else if err != nil {
		return adminError(http.StatusServiceUnavailable, "deleting key %q: %v", id, err)
	}
	if err := t.changed(r.Context(), objs); err != nil {
		return err
	}
	t.logger().Info("key deleted", zap.String("key_id", id), zap.String("remote", r.RemoteAddr))
	return writeAdminJSON(w, http.StatusOK, map[string]any{"id": id, "object": "key", "deleted": true})
}

// usageCSVHeader is the first line of the usage CSV.
var usageCSVHeader = []string{"day", "key_id", "label", "model", "requests", "cache_hits", "prompt_tokens", "completion_tokens",
	"cached_tokens", "reasoning_tokens", "cost"}

func (t *target) usage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	from, to, werr := usageRange(q, time.Now())
	if werr != nil {
		return adminError(http.StatusBadRequest, "%s", werr.Message)
	}
	objs, err := t.objects()
	if err != nil {
		return err
	}
	f := ledger.Filter{From: from, To: to, KeyID: q.Get("key"), Label: q.Get("label"), Model: q.Get("model")}
	rows, err := ledger.Query(r.Context(), objs.Counters(), f)
	if err != nil {
		return adminError(http.StatusServiceUnavailable, "reading the usage ledger: %v", err)
	}
	currency := t.gateways[0].acct.currency
	if q.Get("format") == "csv" || strings.Contains(r.Header.Get("Accept"), "text/csv") {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="usage-`+from+`-`+to+`.csv"`)
		cw := csv.NewWriter(w)
		_ = cw.Write(usageCSVHeader)
		for _, row := range rows {
			_ = cw.Write([]string{row.Day, row.KeyID, row.Label, row.Model, strconv.FormatInt(row.Usage.Requests, 10),
				strconv.FormatInt(row.Usage.CacheHits, 10), strconv.FormatInt(row.Usage.PromptTokens, 10), strconv.FormatInt(row.Usage.CompletionTokens, 10),
				strconv.FormatInt(row.Usage.CachedTokens, 10), strconv.FormatInt(row.Usage.ReasoningTokens, 10), row.Usage.CostMicros.String()})
		}
		cw.Flush()
		return cw.Error()
	}
	if rows == nil {
		rows = []ledger.Row{}
	}
	return writeAdminJSON(w, http.StatusOK, map[string]any{"object": "list", "currency": currency, "from": from, "to": to,
		"total": ledger.Total(rows), "data": rows})
}

func (t *target) budgets(w http.ResponseWriter, r *http.Request) error {
	if err := t.h.refreshAdminKeys(r.Context(), false); err != nil {
		return adminError(http.StatusServiceUnavailable, "reading budgets: %v", err)
	}
	type sourced struct {
		budgetStatus
		Source string `json:"source"`
	}
	out := []sourced{}
	var admin map[string]ledger.Scope
	if p := t.h.acct.adminBudgets.Load(); p != nil {
		admin = *p
	}
	seen := map[string]bool{}
	g := t.gateways[0]
	add := func(scopes []ledger.Scope, source string) error {
		sts, err := g.acct.budget.Status(r.Context(), scopes)
		if err != nil {
			return adminError(http.StatusServiceUnavailable, "reading budgets: %v", err)
		}
		for _, s := range sts {
			out = append(out, sourced{budgetStatusOf(s), source})
		}
		return nil
	}
	var scopes []ledger.Scope
	for id, s := range admin {
		seen[id] = true
		scopes = append(scopes, s)
	}
	if err := add(scopes, "admin"); err != nil {
		return err
	}
	scopes = nil
	for _, g := range t.gateways {
		for id, s := range g.acct.budgets {
			if !seen[id] {
				seen[id] = true
				scopes = append(scopes, s)
			}
		}
	}
	if err := add(scopes, "config"); err != nil {
		return err
	}
	slices.SortFunc(out, func(a, b sourced) int { return strings.Compare(a.Scope+a.Period, b.Scope+b.Period) })
	return writeAdminJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}

// setBudget stores a budget set through the admin API.
func (t *target) setBudget(w http.ResponseWriter, r *http.Request) error {
	var b BudgetConfig
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return adminError(http.StatusBadRequest, "reading the budget: %v", err)
	}
	if err := b.validate(); err != nil {
		return adminError(http.StatusBadRequest, "%v", err)
	}
	objs, err := t.objects()
	if err != nil {
		return err
	}
	id := b.scope().ID
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := objs.Put(r.Context(), store.Record{Kind: kindAdminBudget, Owner: adminOwner, ID: id, Data: data}); err != nil {
		return adminError(http.StatusServiceUnavailable, "storing the budget: %v", err)
	}
	if err := t.changed(r.Context(), objs); err != nil {
		return err
	}
	t.logger().Info("budget set", zap.String("scope", id), zap.Int64("daily_tokens", b.DailyTokens), zap.Stringer("daily_spend", b.DailySpend),
		zap.Int64("monthly_tokens", b.MonthlyTokens), zap.Stringer("monthly_spend", b.MonthlySpend), zap.Float64("warn_at", b.WarnAt),
		zap.String("remote", r.RemoteAddr))
	return writeAdminJSON(w, http.StatusOK, b)
}

// deleteBudget removes a budget set through the admin API.
func (t *target) deleteBudget(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	id := ""
	switch {
	case q.Get("key") != "" && q.Get("label") == "":
		id = "key:" + q.Get("key")
	case q.Get("label") != "" && q.Get("key") == "":
		id = "label:" + q.Get("label")
	default:
		return adminError(http.StatusBadRequest, "name the budget with ?key=<id> or ?label=<name>=<value>")
	}
	objs, err := t.objects()
	if err != nil {
		return err
	}
	if err := objs.Delete(r.Context(), kindAdminBudget, adminOwner, id); errors.Is(err, store.ErrNotFound) {
		return adminError(http.StatusNotFound, "no budget of %s was set through the admin API", id)
	} else if err != nil {
		return adminError(http.StatusServiceUnavailable, "deleting the budget: %v", err)
	}
	if err := t.changed(r.Context(), objs); err != nil {
		return err
	}
	t.logger().Info("budget deleted", zap.String("scope", id), zap.String("remote", r.RemoteAddr))
	return writeAdminJSON(w, http.StatusOK, map[string]any{"scope": id, "deleted": true})
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
