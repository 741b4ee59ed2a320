package simulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
	"time"
)

// TestJSONAnswersArePaced: a non-streamed answer takes as long as its stream would (TTFT, then
// one interval per further token), on every generation endpoint; embeddings wait TTFT.
func TestJSONAnswersArePaced(t *testing.T) {
	s := newServer(t, Config{TTFT: 100 * time.Millisecond, TokensPerSecond: 20, ResponseTokens: 16})
	var waited time.Duration
	s.sleep = func(ctx context.Context, d time.Duration) error {
		waited += d
		return ctx.Err()
	}
	tests := []struct {
		name, path, body string
		want             time.Duration
	}{
		{"chat, 16 tokens", "/v1/chat/completions", helloChat + `}`, 100*time.Millisecond + 15*50*time.Millisecond},
		{"chat, max_tokens 1", "/v1/chat/completions", helloChat + `,"max_tokens":1}`, 100 * time.Millisecond},
		{"completions, 4 tokens", "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":4}`, 100*time.Millisecond + 3*50*time.Millisecond},
		{"messages, 16 tokens", "/v1/messages", `{"model":"m","max_tokens":32,"messages":[{"role":"user","content":"hi"}]}`, 100*time.Millisecond + 15*50*time.Millisecond},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":"hi"}`, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			waited = 0
			rec := do(t, s, "POST", tt.path, tt.body)
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if waited != tt.want {
				t.Errorf("waited %s, want %s", waited, tt.want)
			}
		})
	}
}

func TestImagesGenerations(t *testing.T) {
	s := newServer(t, Config{})
	schemas := compileSchemas(t, "ImagesResponse", "ErrorResponse")
	t.Run("b64_json", func(t *testing.T) {
		rec := do(t, s, "POST", "/v1/images/generations", `{"model":"m","prompt":"a red fox","n":2,"size":"256x128","response_format":"b64_json"}`)
		if rec.Code != 200 {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
		validate(t, schemas["ImagesResponse"], rec.Body.String())
		var resp struct {
			Data []struct {
				B64 string `json:"b64_json"`
			}
			Usage struct {
				Input  int `json:"input_tokens"`
				Output int `json:"output_tokens"`
			}
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.Data) != 2 {
			t.Fatalf("%v %s", err, rec.Body)
		}
		raw, err := base64.StdEncoding.DecodeString(resp.Data[0].B64)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil || img.Bounds().Dx() != 256 || img.Bounds().Dy() != 128 {
			t.Fatalf("not a 256x128 PNG: %v %v", err, img.Bounds())
		}
		if resp.Data[0].B64 == resp.Data[1].B64 {
			t.Error("two images of one request are the same")
		}
		if resp.Usage.Input != s.count("a red fox") || resp.Usage.Output != 2*(4*2) {
			t.Errorf("usage %+v", resp.Usage)
		}
		again := do(t, s, "POST", "/v1/images/generations", `{"model":"m","prompt":"a red fox","n":2,"size":"256x128","response_format":"b64_json"}`)
		if !bytes.Equal(again.Body.Bytes(), rec.Body.Bytes()) {
			t.Error("the same request gave another answer")
		}
	})
	t.Run("url", func(t *testing.T) {
		rec := do(t, s, "POST", "/v1/images/generations", `{"model":"m","prompt":"a red fox","size":"64x64"}`)
		validate(t, schemas["ImagesResponse"], rec.Body.String())
		if !strings.Contains(rec.Body.String(), `"url":"data:image/png;base64,iVBOR`) {
			t.Errorf("no data URL of a PNG: %.200s", rec.Body)
		}
	})
	for _, bad := range []string{
		`{"model":"m"}`,
		`{"model":"m","prompt":"x","n":0}`,
		`{"model":"m","prompt":"x","n":11}`,
		`{"model":"m","prompt":"x","size":"huge"}`,
		`{"model":"m","prompt":"x","size":"4096x4096"}`,
		`{"model":"m","prompt":"x","response_format":"gif"}`,
		`{"model":"m","prompt":`,
	} {
		rec := do(t, s, "POST", "/v1/images/generations", bad)
		if rec.Code != 400 {
			t.Errorf("%s: %d %s", bad, rec.Code, rec.Body)
		}
		validate(t, schemas["ErrorResponse"], rec.Body.String())
	}
}

// TestTokenizeShapes: /tokenize answers in the shape of the server whose request it gets, with
// the same count in every shape.
func TestTokenizeShapes(t *testing.T) {
	s := newServer(t, Config{ContextWindow: 4096})
	text := "The quick brown fox jumps over the lazy dog. Ünïcödé too!"
	want := s.count(text)
	var vllm struct{ Count int }
	if err := json.Unmarshal(do(t, s, "POST", "/tokenize", `{"model":"m","prompt":`+jsonString(text)+`,"add_special_tokens":false}`).Body.Bytes(), &vllm); err != nil || vllm.Count != want {
		t.Errorf("vllm: %v %d, want %d", err, vllm.Count, want)
	}
	var tgi []struct {
		ID    int    `json:"id"`
		Text  string `json:"text"`
		Start int    `json:"start"`
		Stop  int    `json:"stop"`
	}
	rec := do(t, s, "POST", "/tokenize", `{"inputs":`+jsonString(text)+`}`)
	if err := json.Unmarshal(rec.Body.Bytes(), &tgi); err != nil || len(tgi) != want {
		t.Fatalf("tgi: %v %d tokens, want %d: %s", err, len(tgi), want, rec.Body)
	}
	if tgi[0].Start != 0 || tgi[len(tgi)-1].Stop != len(text) || tgi[1].Start != tgi[0].Stop {
		t.Errorf("tgi offsets: %+v", tgi)
	}
	var llama struct{ Tokens []int }
	if err := json.Unmarshal(do(t, s, "POST", "/tokenize", `{"content":`+jsonString(text)+`,"add_special":false}`).Body.Bytes(), &llama); err != nil || len(llama.Tokens) != want {
		t.Errorf("llama.cpp: %v %d, want %d", err, len(llama.Tokens), want)
	}
	if body := do(t, s, "POST", "/tokenize", `{"inputs":""}`).Body.String(); body != "[]" {
		t.Errorf("empty tgi: %s", body)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
