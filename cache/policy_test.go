package cache

import (
	"testing"
	"time"

	"github.com/caddyai/gateway/internal/wire"
)

func TestCacheable(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"Hi"}]`
	tests := []struct {
		name   string
		e      wire.Endpoint
		body   string
		when   string
		ok     bool
		reason string
	}{
		{"temperature 0", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0}`, WhenDeterministic, true, ""},
		{"temperature 0.0", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0.0}`, "", true, ""},
		{"seed", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"seed":42,"temperature":0.7}`, WhenDeterministic, true, ""},
		{"seed null", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"seed":null}`, WhenDeterministic, false, ReasonTemperature},
		{"no temperature", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `}`, WhenDeterministic, false, ReasonTemperature},
		{"temperature 0.7", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0.7}`, WhenDeterministic, false, ReasonTemperature},
		{"temperature as string", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":"0"}`, WhenDeterministic, false, ReasonTemperature},
		{"n 1", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"n":1}`, WhenDeterministic, true, ""},
		{"n null", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"n":null}`, WhenDeterministic, true, ""},
		{"n 2", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"n":2}`, WhenDeterministic, false, ReasonN},
		{"tools", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"tools":[{"type":"function","function":{"name":"f"}}]}`, WhenDeterministic, false, ReasonTools},
		{"empty tools", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"tools":[]}`, WhenDeterministic, true, ""},
		{"legacy functions", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"functions":[{"name":"f"}]}`, WhenDeterministic, false, ReasonTools},
		{"tools always", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":0,"tools":[{"type":"function","function":{"name":"f"}}]}`, WhenAlways, true, ""},
		{"sampled always", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":1.2}`, WhenAlways, true, ""},
		{"unknown when is strict", wire.EndpointChatCompletions, `{"model":"m",` + msgs + `,"temperature":1}`, "sometimes", false, ReasonTemperature},
		{"completions seed", wire.EndpointCompletions, `{"model":"m","prompt":"x","seed":1}`, WhenDeterministic, true, ""},
		{"completions sampled", wire.EndpointCompletions, `{"model":"m","prompt":"x"}`, WhenDeterministic, false, ReasonTemperature},
		{"embeddings", wire.EndpointEmbeddings, `{"model":"m","input":"x"}`, WhenDeterministic, true, ""},
		{"anthropic temperature 0", wire.EndpointMessages, `{"model":"m","max_tokens":10,` + msgs + `,"temperature":0}`, WhenDeterministic, true, ""},
		{"anthropic default temperature", wire.EndpointMessages, `{"model":"m","max_tokens":10,` + msgs + `}`, WhenDeterministic, false, ReasonTemperature},
		{"anthropic has no seed", wire.EndpointMessages, `{"model":"m","max_tokens":10,` + msgs + `,"seed":1}`, WhenDeterministic, false, ReasonTemperature},
		{"anthropic tools", wire.EndpointMessages, `{"model":"m","max_tokens":10,` + msgs + `,"temperature":0,"tools":[{"name":"f","input_schema":{}}]}`, WhenDeterministic, false, ReasonTools},
		{"count tokens", wire.EndpointMessagesCountTokens, `{"model":"m",` + msgs + `}`, WhenAlways, false, ReasonEndpoint},
		{"images", wire.EndpointImagesGenerations, `{"prompt":"x"}`, WhenAlways, false, ReasonEndpoint},
		{"models", wire.EndpointModels, ``, WhenAlways, false, ReasonEndpoint},
		{"not JSON", wire.EndpointChatCompletions, `{"model":`, WhenAlways, false, ReasonBody},
		{"array body", wire.EndpointEmbeddings, `[1]`, WhenAlways, false, ReasonBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := Cacheable(tt.e, []byte(tt.body), tt.when)
			if ok != tt.ok || reason != tt.reason {
				t.Fatalf("Cacheable = %v, %q; want %v, %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	p := Policy{}.WithDefaults()
	if p.TTL != time.Hour || p.Scope != ScopeKey || p.When != WhenDeterministic {
		t.Fatalf("defaults = %+v", p)
	}
	if err := (Policy{}).Validate(); err != nil {
		t.Fatalf("zero policy: %v", err)
	}
	for _, bad := range []Policy{{Scope: "tenant"}, {When: "never"}, {TTL: -time.Second}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", bad)
		}
	}
	key, global := Policy{Scope: ScopeKey}, Policy{Scope: ScopeGlobal}
	if key.ScopeID("a") == key.ScopeID("b") {
		t.Fatal("key scope shares entries between key ids")
	}
	if global.ScopeID("a") != global.ScopeID("b") {
		t.Fatal("global scope does not share entries")
	}
	if key.ScopeID("g") == global.ScopeID("x") || key.ScopeID("") == global.ScopeID("") {
		t.Fatal("a key id collides with the global scope")
	}
}

func TestPolicyOverride(t *testing.T) {
	gateway := Policy{TTL: time.Hour, Scope: ScopeGlobal, When: WhenAlways}
	tests := []struct {
		name  string
		model Policy
		want  Policy
	}{
		{"nothing of its own", Policy{}, gateway},
		{"its own ttl only", Policy{TTL: time.Minute}, Policy{TTL: time.Minute, Scope: ScopeGlobal, When: WhenAlways}},
		{"its own scope only", Policy{Scope: ScopeKey}, Policy{TTL: time.Hour, Scope: ScopeKey, When: WhenAlways}},
		{"its own when only", Policy{When: WhenDeterministic}, Policy{TTL: time.Hour, Scope: ScopeGlobal, When: WhenDeterministic}},
		{"everything of its own", Policy{TTL: time.Second, Scope: ScopeKey, When: WhenDeterministic}, Policy{TTL: time.Second, Scope: ScopeKey, When: WhenDeterministic}},
	}
	for _, tt := range tests {
		if got := gateway.Override(tt.model); got != tt.want {
			t.Errorf("%s: Override = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
