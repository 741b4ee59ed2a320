package policy

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// fuzzRewriters are the configurations FuzzRewrite applies, together covering every rule.
func fuzzRewriters(f *testing.F) []*Rewriter {
	f.Helper()
	cfgs := []RewriteConfig{
		{
			Defaults:       map[string]string{"temperature": "0.7", "max_tokens": "256", "stop": `["\n"]`, "top_k": "20", "repetition_penalty": "1.05"},
			Clamps:         []Clamp{{Param: "temperature", Min: 0.1, Max: 1}, {Param: "max_tokens", Min: 1, Max: 1000}, {Param: "n", Min: 1, Max: 2}},
			ClampMode:      ClampClamp,
			StripParams:    []string{"user", "seed", "tools", "stream_options"},
			DenyParams:     []string{"logit_bias"},
			SystemPrompt:   "Gateway \"policy\"\n",
			MaxTokensField: "max_completion_tokens",
		},
		{
			Clamps:           []Clamp{{Param: "top_p", Min: 0, Max: 0.9}},
			SystemPrompt:     "replace",
			SystemPromptMode: SystemPromptReplace,
			MaxTokensField:   "max_tokens",
		},
	}
	var out []*Rewriter
	for _, c := range cfgs {
		rw, err := CompileRewrite(c, RewriteConfig{})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, rw)
	}
	// A model that replaces some gateway-wide rules and lifts others.
	rw, err := CompileRewrite(cfgs[0], RewriteConfig{
		Defaults:       map[string]string{"temperature": Off, "top_k": Off, "max_completion_tokens": "128", "seed": "7"},
		Clamps:         []Clamp{{Param: "temperature", Off: true}, {Param: "max_completion_tokens", Min: 1, Max: 500}, {Param: "top_p", Min: 0.1, Max: 0.5}},
		AllowParams:    []string{"logit_bias", "seed", "tools"},
		StripParams:    []string{"logit_bias"},
		DenyParams:     []string{"top_k"},
		SystemPrompt:   Off,
		MaxTokensField: Off,
	})
	if err != nil {
		f.Fatal(err)
	}
	return append(out, rw)
}

func FuzzRewrite(f *testing.F) {
	fuzzSeeds(f)
	rws := fuzzRewriters(f)
	cp, err := CompileContentPolicy(benchRules)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ep uint8, body []byte) {
		e := fuzzEndpoint(ep)
		info, verr := Validate(e, body)
		if verr != nil {
			return
		}
		if cerr := cp.Check(e, body); cerr != nil && cerr.Code != CodeContentPolicy {
			t.Fatalf("content check: %+v", cerr)
		}
		orig := string(body)
		for i, rw := range rws {
			in := info
			out, werr := rw.Apply(e, body, &in)
			if string(body) != orig {
				t.Fatalf("rewriter %d modified its input", i)
			}
			if werr != nil {
				if werr.Status != http.StatusBadRequest {
					t.Fatalf("rewriter %d: %+v", i, werr)
				}
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("rewriter %d: output is not valid JSON: %q", i, out)
			}
			again, verr := Validate(e, out)
			if verr != nil {
				t.Fatalf("rewriter %d: output rejected: %v\nin:  %s\nout: %s", i, verr, body, out)
			}
			if again.Model != in.Model || again.Stream != in.Stream || again.N != in.N || again.MaxTokens != in.MaxTokens ||
				again.HasTools != in.HasTools || again.Seed != in.Seed || again.IncludeUsage != in.IncludeUsage ||
				again.StreamOptions != in.StreamOptions ||
				(again.Temperature == nil) != (in.Temperature == nil) || again.Temperature != nil && *again.Temperature != *in.Temperature {
				t.Fatalf("rewriter %d: info %+v, output reads %+v\nout: %s", i, in, again, out)
			}
			if in.MaxTokens > 0 {
				if _, err := SetMaxTokens(e, out, &in, 1); err != nil && e != wire.EndpointMessagesCountTokens && e != wire.EndpointEmbeddings && e != wire.EndpointImagesGenerations {
					t.Fatalf("set max tokens: %v", err)
				}
			}
		}
	})
}
