package caddymodule_test

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

const (
	secretTeamA = "sk-test-team-a-1"
	secretTeamB = "sk-test-team-a-2"
)

// accountingSetup runs a gateway with accounting, two keys labelled team=ml and one other, a
// priced model with the cache on, and Caddy's admin endpoint on a port of its own.
type accountingSetup struct {
	port, admin int
	dir         string
	upstream    *recordingUpstream
}

func accountingCaddyfile(port, admin int, dir, upstream, budgets string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	grace_period 1s
	log {
		level ERROR
	}
}
:%d {
	ai_gateway {
		key %s {
			id team-a-1
			label team ml
		}
		key %s {
			id team-a-2
			label team ml
		}
		key %s {
			id all
		}
		model demo-llama {
			alias llama
			upstream %s
			price {
				input 0.5
				cached_input 0.25
				output 1.5
			}
		}
		cache {
			ttl 10m
		}
		storage {
			dir %s
		}
		accounting {
			currency EUR%s
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, admin, port, policy.FormatHash(policy.HashSecret(secretTeamA)), policy.FormatHash(policy.HashSecret(secretTeamB)),
		policy.FormatHash(policy.HashSecret(secretAll)), upstream, dir, budgets)
}

func startAccounting(t *testing.T, budgets string) *accountingSetup {
	t.Helper()
	s := &accountingSetup{port: freePort(t), admin: freePort(t), dir: t.TempDir(), upstream: newUpstream(t, simulator.Config{})}
	startCaddy(t, accountingCaddyfile(s.port, s.admin, s.dir, s.upstream.addr(), budgets))
	return s
}

func (s *accountingSetup) client(secret string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url(s.port, "/v1/")), option.WithAPIKey(secret), option.WithMaxRetries(0))
}

// adminDo calls Caddy's admin API.
func (s *accountingSetup) adminDo(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url(s.admin, path), strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, b := doRequest(t, req)
	return resp.StatusCode, b
}

// selfUsage reads GET /v1/usage with a key.
func (s *accountingSetup) selfUsage(t *testing.T, secret string) gjson.Result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url(s.port, "/v1/usage"), nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, b := doRequest(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("/v1/usage: %d %s", resp.StatusCode, b)
	}
	return gjson.ParseBytes(b)
}

// TestAccountingLedger: live requests (JSON and streamed), a cache hit and requests of another
// key land in the ledger as their clients were told; each key sees only its own usage at
// /v1/usage; the admin API's JSON and CSV agree; costs follow the prices exactly.
func TestAccountingLedger(t *testing.T) {
	s := startAccounting(t, "")
	ctx := context.Background()
	c := s.client(secretTeamA)
	var prompt, completion, cached, requests int64
	for i := range 5 {
		r, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("hello number %d", i))}})
		if err != nil {
			t.Fatal(err)
		}
		prompt, completion, requests = prompt+r.Usage.PromptTokens, completion+r.Usage.CompletionTokens, requests+1
	}
	for i := range 3 {
		st := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "llama",
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("stream %d", i))}})
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		prompt, completion, requests = prompt+acc.Usage.PromptTokens, completion+acc.Usage.CompletionTokens, requests+1
	}
	det := openai.ChatCompletionNewParams{Model: "llama", Temperature: openai.Float(0),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("cache me")}}
	for range 2 { // a miss, then a hit
		r, err := c.Chat.Completions.New(ctx, det)
		if err != nil {
			t.Fatal(err)
		}
		prompt, completion, requests = prompt+r.Usage.PromptTokens, completion+r.Usage.CompletionTokens, requests+1
		cached += r.Usage.PromptTokensDetails.CachedTokens
	}
	ca, cw := s.client(secretAll), s.client("sk-wrong")
	if _, err := ca.Chat.Completions.New(ctx, det); err != nil { // another key: a miss of its own
		t.Fatal(err)
	}
	if _, err := cw.Chat.Completions.New(ctx, det); err == nil { // refused: not counted
		t.Fatal("wrong key accepted")
	}

	var u gjson.Result
	waitFor(t, "the ledger to be written", 5*time.Second, func() bool {
		u = s.selfUsage(t, secretTeamA)
		return u.Get("total.requests").Int() == requests
	})
	tot := u.Get("total")
	if tot.Get("prompt_tokens").Int() != prompt || tot.Get("completion_tokens").Int() != completion ||
		tot.Get("cache_hits").Int() != 1 || tot.Get("cached_tokens").Int() != cached || cached == 0 {
		t.Fatalf("usage %s; clients were told prompt %d completion %d cached %d", tot.Raw, prompt, completion, cached)
	}
	// cost: every request but the hit at 0.5 input / 1.5 output per million (the hit is free)
	hitPrompt := cached
	if u.Get("key_id").String() != "team-a-1" || u.Get("currency").String() != "EUR" || len(u.Get("data").Array()) != 1 ||
		u.Get("data.0.model").String() != "demo-llama" {
		t.Fatalf("usage view: %s", u.Raw)
	}
	cost := tot.Get("cost_micros").Int()
	if tot.Get("cost").String() != fmt.Sprintf("%d.%06d", cost/1e6, cost%1e6) {
		t.Fatalf("cost %s and cost_micros %d differ", tot.Get("cost"), cost)
	}
	if max := ((prompt-hitPrompt)*500_000 + completion*1_500_000) / 1_000_000; cost <= 0 || cost > max+int64(requests) {
		t.Fatalf("cost %d micros, at most %d", cost, max)
	}
	other := s.selfUsage(t, secretAll)
	if other.Get("total.requests").Int() != 1 || strings.Contains(other.Raw, "team-a-1") {
		t.Fatalf("another key's view: %s", other.Raw)
	}

	// the admin API: JSON and CSV agree, per key and per label
	code, body := s.adminDo(t, "GET", "/ai_gateway/usage?label=team=ml", "")
	if code != 200 || gjson.GetBytes(body, "total.requests").Int() != requests || gjson.GetBytes(body, "data.0.label").String() != "team=ml" {
		t.Fatalf("label usage: %d %s", code, body)
	}
	code, body = s.adminDo(t, "GET", "/ai_gateway/usage", "")
	if code != 200 || gjson.GetBytes(body, "total.requests").Int() != requests+1 {
		t.Fatalf("usage: %d %s", code, body)
	}
	jsonTotal := gjson.GetBytes(body, "total")
	code, csvBody := s.adminDo(t, "GET", "/ai_gateway/usage?format=csv", "")
	recs, err := csv.NewReader(strings.NewReader(string(csvBody))).ReadAll()
	if code != 200 || err != nil || len(recs) != 3 || recs[0][0] != "day" {
		t.Fatalf("csv: %d %v %q", code, err, csvBody)
	}
	var csvReq, csvPrompt int64
	var csvCost float64
	for _, r := range recs[1:] {
		n, _ := strconv.ParseInt(r[4], 10, 64)
		p, _ := strconv.ParseInt(r[6], 10, 64)
		c, _ := strconv.ParseFloat(r[10], 64)
		csvReq, csvPrompt, csvCost = csvReq+n, csvPrompt+p, csvCost+c
	}
	jsonCost := jsonTotal.Get("cost_micros").Int()
	if csvReq != jsonTotal.Get("requests").Int() || csvPrompt != jsonTotal.Get("prompt_tokens").Int() ||
		fmt.Sprintf("%.6f", csvCost) != fmt.Sprintf("%.6f", float64(jsonCost)/1e6) {
		t.Fatalf("csv totals %d %d %f, json %s", csvReq, csvPrompt, csvCost, jsonTotal.Raw)
	}
	// the cost metric adds up what the ledger holds, every key's
	if m := scrapeMetric(t, url(s.admin, "/metrics"), "caddy_ai_gateway_cost_total", map[string]string{"model": "demo-llama", "currency": "EUR"}); fmt.Sprintf("%.6f", m) != fmt.Sprintf("%.6f", float64(jsonCost)/1e6) {
		t.Fatalf("cost metric %f, the ledger %d micros", m, jsonCost)
	}
	if code, body := s.adminDo(t, "GET", "/ai_gateway/usage?from=yesterday", ""); code != 400 {
		t.Fatalf("bad from: %d %s", code, body)
	}
}

// TestAccountingBudgets: a label budget shared by two keys refuses with insufficient_quota once
// spent, in each surface's envelope, as the SDKs read it; another key goes on.
func TestAccountingBudgets(t *testing.T) {
	s := startAccounting(t, `
			budget label team=ml {
				daily_tokens 300
			}
			budget key all {
				monthly_spend 0.000001
			}`)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "llama", MaxTokens: openai.Int(20),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	var refused *openai.Error
	used := int64(0)
	for i := 0; i < 40 && refused == nil; i++ {
		c := s.client([]string{secretTeamA, secretTeamB}[i%2])
		r, err := c.Chat.Completions.New(ctx, params)
		switch {
		case errors.As(err, &refused):
		case err != nil:
			t.Fatal(err)
		default:
			used += r.Usage.TotalTokens
		}
	}
	if refused == nil || refused.StatusCode != 429 || refused.Code != "insufficient_quota" || refused.Type != "insufficient_quota" ||
		refused.Response.Header.Get("X-Should-Retry") != "false" || refused.Response.Header.Get("Retry-After") != "" {
		t.Fatalf("refusal: %v", refused)
	}
	if used > 300 || used < 200 {
		t.Fatalf("used %d of 300 tokens before the refusal", used)
	}
	ac := anthropic.NewClient(aoption.WithBaseURL(url(s.port, "/")), aoption.WithAPIKey(secretTeamB), aoption.WithMaxRetries(0))
	_, err := ac.Messages.New(ctx, anthropic.MessageNewParams{Model: "llama", MaxTokens: 20,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}})
	var aerr *anthropic.Error
	if !errors.As(err, &aerr) || aerr.StatusCode != 429 || !strings.Contains(aerr.RawJSON(), `"rate_limit_error"`) ||
		!strings.Contains(aerr.RawJSON(), "budget of label:team=ml") {
		t.Fatalf("anthropic refusal: %v", err)
	}
	// the spend budget of "all": the first request fits in no micro-unit of spend but may cost
	// at most its reservation; the second is refused
	c := s.client(secretAll)
	if _, err := c.Chat.Completions.New(ctx, params); err == nil {
		t.Fatal("a request that may cost more than the budget was admitted")
	} else if !errors.As(err, &refused) || !strings.Contains(refused.Message, "spend budget of key:all") {
		t.Fatalf("spend refusal: %v", err)
	}
	u := s.selfUsage(t, secretTeamA)
	if b := u.Get("budgets.0"); b.Get("scope").String() != "label:team=ml" || b.Get("period").String() != "daily" ||
		b.Get("tokens_limit").Int() != 300 || b.Get("tokens_remaining").Int() != 300-b.Get("tokens_used").Int() {
		t.Fatalf("budgets in /v1/usage: %s", u.Get("budgets").Raw)
	}
	if code, body := s.adminDo(t, "GET", "/ai_gateway/budgets", ""); code != 200 || len(gjson.GetBytes(body, "data").Array()) != 2 {
		t.Fatalf("admin budgets: %d %s", code, body)
	}
	// a budget set through the admin API replaces the config's at once; deleting it restores it
	if code, body := s.adminDo(t, "PUT", "/ai_gateway/budgets", `{"key":"all","daily_tokens":100000,"monthly_spend":"1.5"}`); code != 200 {
		t.Fatalf("set budget: %d %s", code, body)
	}
	if _, err := c.Chat.Completions.New(ctx, params); err != nil {
		t.Fatalf("after raising the budget: %v", err)
	}
	code, body := s.adminDo(t, "GET", "/ai_gateway/budgets", "")
	if code != 200 || !strings.Contains(string(body), `"scope":"key:all","period":"daily","tokens_limit":100000`) ||
		!strings.Contains(string(body), `"spend_limit":"1.500000"`) || !strings.Contains(string(body), `"source":"admin"`) {
		t.Fatalf("admin budgets: %d %s", code, body)
	}
	for _, bad := range []string{`{"key":"all"}`, `{"key":"all","label":"a=b","daily_tokens":1}`, `{"label":"nolabel","daily_tokens":1}`, `{"key":"all","daily_spend":"0.0000001"}`} {
		if code, body := s.adminDo(t, "PUT", "/ai_gateway/budgets", bad); code != 400 {
			t.Errorf("set %s: %d %s", bad, code, body)
		}
	}
	if code, body := s.adminDo(t, "DELETE", "/ai_gateway/budgets?key=all", ""); code != 200 {
		t.Fatalf("delete budget: %d %s", code, body)
	}
	if _, err := c.Chat.Completions.New(ctx, params); !errors.As(err, &refused) || refused.Code != "insufficient_quota" {
		t.Fatalf("after deleting the admin budget: %v", err)
	}
}

// TestAccountingAdminKeys: a key created through the admin API works at once, is refused once
// disabled, works again once enabled, only with its new secret once rotated, survives a config
// reload, and is gone once deleted; its secret is never shown again.
func TestAccountingAdminKeys(t *testing.T) {
	s := startAccounting(t, "")
	ctx := context.Background()
	code, body := s.adminDo(t, "POST", "/ai_gateway/keys", `{"id":"ci-bot","labels":{"team":"ml"},"models":["llama"],"rpm":100}`)
	secret := gjson.GetBytes(body, "secret").String()
	if code != 201 || !strings.HasPrefix(secret, "sk-gw-") || gjson.GetBytes(body, "id").String() != "ci-bot" {
		t.Fatalf("create: %d %s", code, body)
	}
	chat := func(secret string) int {
		c := s.client(secret)
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		var apierr *openai.Error
		if errors.As(err, &apierr) {
			return apierr.StatusCode
		}
		if err != nil {
			t.Fatal(err)
		}
		return 200
	}
	if got := chat(secret); got != 200 {
		t.Fatalf("new key: %d", got)
	}
	for _, bad := range []string{`{"id":"all"}`, `{"id":"ci-bot"}`, `{"secret":"x"}`, `{"nope":1}`, `{"id":"x","rpm":-1}`, `{"id":"y","models":["["]}`} {
		if code, body := s.adminDo(t, "POST", "/ai_gateway/keys", bad); code < 400 || code > 409 {
			t.Errorf("create %s: %d %s", bad, code, body)
		}
	}
	if code, _ := s.adminDo(t, "POST", "/ai_gateway/keys/ci-bot/disable", ""); code != 200 {
		t.Fatal("disable", code)
	}
	if got := chat(secret); got != 401 {
		t.Fatalf("disabled key: %d", got)
	}
	s.adminDo(t, "POST", "/ai_gateway/keys/ci-bot/enable", "")
	if got := chat(secret); got != 200 {
		t.Fatalf("enabled key: %d", got)
	}
	code, body = s.adminDo(t, "POST", "/ai_gateway/keys/ci-bot/rotate", "")
	rotated := gjson.GetBytes(body, "secret").String()
	if code != 200 || rotated == "" || rotated == secret {
		t.Fatalf("rotate: %d %s", code, body)
	}
	if chat(secret) != 401 || chat(rotated) != 200 {
		t.Fatal("rotation: the old secret still works or the new one does not")
	}
	// a reload keeps the key (it lives in the store, not the config)
	loadCaddy(t, accountingCaddyfile(s.port, s.admin, s.dir, s.upstream.addr(), ""))
	if got := chat(rotated); got != 200 {
		t.Fatalf("after a reload: %d", got)
	}
	code, body = s.adminDo(t, "GET", "/ai_gateway/keys", "")
	if code != 200 || strings.Contains(string(body), rotated) || strings.Contains(string(body), "sk-gw-") ||
		!strings.Contains(string(body), `"id":"all","source":"config"`) || !strings.Contains(string(body), `"id":"ci-bot"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	waitFor(t, "the ledger to be written", 5*time.Second, func() bool { return s.selfUsage(t, rotated).Get("total.requests").Int() == 4 })
	if code, _ := s.adminDo(t, "DELETE", "/ai_gateway/keys/ci-bot", ""); code != 200 {
		t.Fatal("delete", code)
	}
	if got := chat(rotated); got != 401 {
		t.Fatalf("deleted key: %d", got)
	}
	if code, _ := s.adminDo(t, "GET", "/ai_gateway/keys/ci-bot", ""); code != 404 {
		t.Fatal("deleted key still listed", code)
	}
	if code, _ := s.adminDo(t, "POST", "/ai_gateway/keys/nope/rotate", ""); code != 404 {
		t.Fatal("rotating an unknown key", code)
	}
}

// TestAccountingBatchLines: the lines of a batch go through the same exit as live requests and
// are in the ledger with the tokens the batch reports.
func TestAccountingBatchLines(t *testing.T) {
	s := startAccounting(t, "")
	c := filesClient(s.port, secretTeamA)
	f := uploadBatch(t, c, "in.jsonl", chatLines("demo-llama", 3))
	b := waitBatch(t, c, newBatch(t, c, f.ID).ID)
	if b.Status != openai.BatchStatusCompleted || b.Usage.TotalTokens == 0 {
		t.Fatalf("batch: %s", b.RawJSON())
	}
	var u gjson.Result
	waitFor(t, "the ledger to be written", 5*time.Second, func() bool {
		u = s.selfUsage(t, secretTeamA).Get("total")
		return u.Get("requests").Int() == 3
	})
	if u.Get("prompt_tokens").Int()+u.Get("completion_tokens").Int() != b.Usage.TotalTokens || u.Get("cost_micros").Int() == 0 {
		t.Fatalf("ledger %s, batch usage %s", u.Raw, b.Usage.RawJSON())
	}
}
