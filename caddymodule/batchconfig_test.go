package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestBatchesCaddyfile(t *testing.T) {
	g := new(Gateway)
	in := "ai_gateway {\nmodel m {\nbatch {\nmax_concurrent 3\nrate 90/m\npriority -1\n}\n}\nbatches {\npublic_url https://ai.example.com/\nworkers 2\n}\n}"
	if err := g.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if b := g.Models[0].Batch; b == nil || *b != (BatchModelConfig{MaxConcurrent: 3, Rate: 1.5, Priority: -1}) {
		t.Errorf("model batch %+v", b)
	}
	if g.Batches == nil || g.Batches.PublicURL != "https://ai.example.com/" || g.Batches.Workers != 2 {
		t.Errorf("batches %+v", g.Batches)
	}

	bad := map[string]string{
		"unknown batch opt":     "ai_gateway {\nmodel m {\nbatch {\nburst 2\n}\n}\n}",
		"zero batch cap":        "ai_gateway {\nmodel m {\nbatch {\nmax_concurrent 0\n}\n}\n}",
		"rate without unit":     "ai_gateway {\nmodel m {\nbatch {\nrate 10\n}\n}\n}",
		"rate per day":          "ai_gateway {\nmodel m {\nbatch {\nrate 10/d\n}\n}\n}",
		"zero rate":             "ai_gateway {\nmodel m {\nbatch {\nrate 0/s\n}\n}\n}",
		"bad priority":          "ai_gateway {\nmodel m {\nbatch {\npriority high\n}\n}\n}",
		"batch argument":        "ai_gateway {\nmodel m {\nbatch on {\n}\n}\n}",
		"repeated batch rate":   "ai_gateway {\nmodel m {\nbatch {\nrate 1/s\nrate 2/s\n}\n}\n}",
		"unknown batches opt":   "ai_gateway {\nbatches {\nqueue 2\n}\n}",
		"zero workers":          "ai_gateway {\nbatches {\nworkers 0\n}\n}",
		"bad retention":         "ai_gateway {\nbatches {\nretention forever\n}\n}",
		"repeated public_url":   "ai_gateway {\nbatches {\npublic_url https://a\npublic_url https://b\n}\n}",
		"public_url two values": "ai_gateway {\nbatches {\npublic_url https://a https://b\n}\n}",
	}
	for name, input := range bad {
		t.Run(name, func(t *testing.T) {
			if err := new(Gateway).UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err == nil {
				t.Errorf("accepted: %s", input)
			}
		})
	}
}

func TestBatchesValidate(t *testing.T) {
	ok := BatchesConfig{PublicURL: "https://ai.example.com/gw", Workers: 4, Retention: caddy.Duration(26 * time.Hour),
		ResultsRetention: caddy.Duration(26 * time.Hour)}
	g := &Gateway{Batches: &ok}
	if err := g.validateBatches(); err != nil {
		t.Fatalf("valid settings refused: %v", err)
	}
	for name, change := range map[string]func(b *BatchesConfig){
		"relative public_url":      func(b *BatchesConfig) { b.PublicURL = "/gw" },
		"public_url with a query":  func(b *BatchesConfig) { b.PublicURL = "https://a.example/?x=1" },
		"ftp public_url":           func(b *BatchesConfig) { b.PublicURL = "ftp://a.example" },
		"retention under a window": func(b *BatchesConfig) { b.Retention = caddy.Duration(24 * time.Hour) },
		"short results_retention":  func(b *BatchesConfig) { b.ResultsRetention = caddy.Duration(time.Hour) },
		"negative output_expiry":   func(b *BatchesConfig) { b.OutputExpiry = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			b := ok
			change(&b)
			if err := (&Gateway{Batches: &b}).validateBatches(); err == nil || !strings.HasPrefix(err.Error(), "batches: ") {
				t.Errorf("accepted or unnamed: %v", err)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"10/s": 10, "600/m": 10, "3600/h": 1, "0.5/s": 0.5} {
		if got, ok := parseRate(in); !ok || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "10", "/s", "-1/s", "0/s", "1/d", "x/s", "Inf/s", "NaN/s"} {
		if got, ok := parseRate(in); ok {
			t.Errorf("parseRate(%q) = %v, accepted", in, got)
		}
	}
}
