package simulator

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type usageJSON struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatJSON struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Created           int64  `json:"created"`
	Model             string `json:"model"`
	SystemFingerprint string `json:"system_fingerprint"`
	Choices           []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string  `json:"role"`
			Content string  `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"message"`
		Delta *struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

func decodeJSON[T any](t testing.TB, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

const helloChat = `{"model":"my-model","messages":[{"role":"user","content":"Hello"}]` // prompt = 3+1+1+3 = 8

func TestChatCompletions(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		body       string
		wantTokens int // per choice
		wantFinish string
		wantN      int
	}{
		{"defaults", Config{}, helloChat + `}`, 16, "stop", 1},
		{"max_tokens cuts", Config{}, helloChat + `,"max_tokens":5}`, 5, "length", 1},
		{"max_tokens equal to natural length", Config{}, helloChat + `,"max_tokens":16}`, 16, "stop", 1},
		{"max_completion_tokens wins", Config{}, helloChat + `,"max_tokens":10,"max_completion_tokens":3}`, 3, "length", 1},
		{"response tokens", Config{ResponseTokens: 4}, helloChat + `,"max_tokens":50}`, 4, "stop", 1},
		{"n choices", Config{ResponseTokens: 6}, helloChat + `,"n":3}`, 6, "stop", 3},
		{"window limits room", Config{ContextWindow: 12}, helloChat + `}`, 4, "length", 1},
		{"ollama truncates", Config{ContextWindow: 10, ErrorShape: ShapeOllama}, helloChat + `,"max_tokens":5}`, 5, "length", 1},
	}
	c := cl100k(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.cfg)
			rec := do(t, s, "POST", "/v1/chat/completions", tt.body)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			r := decodeJSON[chatJSON](t, rec.Body.String())
			if !strings.HasPrefix(r.ID, "chatcmpl-") || r.Object != "chat.completion" || r.Model != "my-model" ||
				r.Created != fixedNow.Unix() || r.SystemFingerprint == "" {
				t.Errorf("bad envelope: %+v", r)
			}
			if len(r.Choices) != tt.wantN {
				t.Fatalf("%d choices, want %d", len(r.Choices), tt.wantN)
			}
			seen := map[string]bool{}
			for i, ch := range r.Choices {
				if ch.Index != i || ch.Message.Role != "assistant" || ch.Message.Refusal != nil {
					t.Errorf("choice %d: %+v", i, ch)
				}
				if n := countOf(t, c, ch.Message.Content); n != tt.wantTokens {
					t.Errorf("choice %d has %d tokens, want %d", i, n, tt.wantTokens)
				}
				if ch.FinishReason == nil || *ch.FinishReason != tt.wantFinish {
					t.Errorf("finish_reason %v, want %s", ch.FinishReason, tt.wantFinish)
				}
				seen[ch.Message.Content] = true
			}
			if len(seen) != tt.wantN {
				t.Errorf("choices are not distinct: %v", seen)
			}
			wantPrompt := 8
			if tt.cfg.ErrorShape == ShapeOllama {
				wantPrompt = min(8, tt.cfg.ContextWindow)
			}
			want := usageJSON{wantPrompt, tt.wantTokens * tt.wantN, wantPrompt + tt.wantTokens*tt.wantN}
			if r.Usage == nil || *r.Usage != want {
				t.Errorf("usage %+v, want %+v", r.Usage, want)
			}
			st := s.Stats()
			if st.PromptTokens != int64(wantPrompt) || st.CompletionTokens != int64(tt.wantTokens*tt.wantN) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

type openAIErrorJSON struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantParam        string
	}{
		{"bad json", "/v1/chat/completions", `{"model":`, 400, ""},
		{"wrong type", "/v1/chat/completions", `{"model":5,"messages":[]}`, 400, ""},
		{"missing model", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`, 400, ""},
		{"missing messages", "/v1/chat/completions", `{"model":"m"}`, 400, "messages"},
		{"missing role", "/v1/chat/completions", `{"model":"m","messages":[{"content":"hi"}]}`, 400, "messages[0].role"},
		{"bad content", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":7}]}`, 400, "messages[0].content"},
		{"n zero", "/v1/chat/completions", helloChat + `,"n":0}`, 400, "n"},
		{"max_tokens zero", "/v1/chat/completions", helloChat + `,"max_tokens":0}`, 400, "max_tokens"},
		{"missing prompt", "/v1/completions", `{"model":"m"}`, 400, "prompt"},
		{"bad prompt", "/v1/completions", `{"model":"m","prompt":{"a":1}}`, 400, "prompt"},
		{"missing input", "/v1/embeddings", `{"model":"m"}`, 400, "input"},
		{"bad encoding", "/v1/embeddings", `{"model":"m","input":"x","encoding_format":"hex"}`, 400, "encoding_format"},
		{"bad dimensions", "/v1/embeddings", `{"model":"m","input":"x","dimensions":0}`, 400, "dimensions"},
		{"tokenize nothing", "/tokenize", `{}`, 400, ""},
		{"unknown path", "/v1/nope", `{}`, 404, ""},
		{"wrong method", "/v1/chat/completions", "", 405, ""},
		{"bad fault header", "/v1/models", "", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Config{})
			method := "POST"
			if tt.body == "" {
				method = "GET"
			}
			var rec = do(t, s, method, tt.path, tt.body)
			if tt.name == "bad fault header" {
				rec = do(t, s, method, tt.path, tt.body, FaultHeader, "kind=explode")
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			env := decodeJSON[openAIErrorJSON](t, rec.Body.String())
			if env.Error == nil || env.Error.Message == "" || env.Error.Type == "" {
				t.Fatalf("not an OpenAI error envelope: %s", rec.Body)
			}
			for _, key := range []string{`"message"`, `"type"`, `"param"`, `"code"`} {
				if !strings.Contains(rec.Body.String(), key) {
					t.Errorf("envelope lacks %s: %s", key, rec.Body)
				}
			}
			gotParam := ""
			if env.Error.Param != nil {
				gotParam = *env.Error.Param
			}
			if gotParam != tt.wantParam {
				t.Errorf("param %q, want %q", gotParam, tt.wantParam)
			}
		})
	}
}

func TestChatStream(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		includeUsage bool
		n, tokens    int
	}{
		{"plain", helloChat + `,"stream":true,"max_tokens":5}`, false, 1, 5},
		{"include usage", helloChat + `,"stream":true,"max_tokens":5,"stream_options":{"include_usage":true}}`, true, 1, 5},
		{"two choices", helloChat + `,"stream":true,"max_tokens":3,"n":2}`, false, 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Config{})
			rec := do(t, s, "POST", "/v1/chat/completions", tt.body)
			if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			if !rec.Flushed {
				t.Error("stream was never flushed")
			}
			body := rec.Body.String()
			if !strings.HasSuffix(body, "data: [DONE]\n\n") {
				t.Fatalf("stream does not end with [DONE]: %q", body)
			}
			data := sseData(t, body)
			data = data[:len(data)-1]
			wantFrames := tt.n + tt.n*tt.tokens + tt.n
			if tt.includeUsage {
				wantFrames++
			}
			if len(data) != wantFrames {
				t.Fatalf("%d frames, want %d", len(data), wantFrames)
			}
			text := make([]string, tt.n)
			for i, d := range data {
				if tt.includeUsage && !strings.Contains(d, `"usage":`) {
					t.Errorf("frame %d lacks usage: %s", i, d)
				}
				if !tt.includeUsage && strings.Contains(d, `"usage"`) {
					t.Errorf("frame %d has usage: %s", i, d)
				}
				ch := decodeJSON[chatJSON](t, d)
				if ch.Object != "chat.completion.chunk" || ch.Model != "my-model" {
					t.Errorf("frame %d envelope: %s", i, d)
				}
				switch {
				case i < tt.n:
					if dl := ch.Choices[0].Delta; dl == nil || dl.Role == nil || *dl.Role != "assistant" || dl.Content == nil || *dl.Content != "" {
						t.Errorf("first frame delta: %s", d)
					}
				case i < tt.n+tt.n*tt.tokens:
					c := ch.Choices[0]
					text[c.Index] += *c.Delta.Content
					if c.FinishReason != nil {
						t.Errorf("token frame with finish_reason: %s", d)
					}
				case i < wantFrames-boolInt(tt.includeUsage):
					if c := ch.Choices[0]; c.FinishReason == nil || *c.FinishReason != "length" || c.Delta.Content != nil {
						t.Errorf("finish frame: %s", d)
					}
				default:
					want := usageJSON{8, tt.n * tt.tokens, 8 + tt.n*tt.tokens}
					if len(ch.Choices) != 0 || ch.Usage == nil || *ch.Usage != want {
						t.Errorf("usage frame: %s", d)
					}
					if !strings.Contains(d, `"choices":[]`) {
						t.Errorf("usage frame choices not empty array: %s", d)
					}
				}
			}
			for c := range tt.n {
				if text[c] != completionText(c, tt.tokens) {
					t.Errorf("choice %d text %q", c, text[c])
				}
			}
			if got := s.Stats().CompletionTokens; got != int64(tt.n*tt.tokens) {
				t.Errorf("completion tokens in stats %d", got)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestCompletions(t *testing.T) {
	c := cl100k(t)
	tests := []struct {
		name       string
		body       string
		wantChoice int
		wantPrompt int
	}{
		{"string", `{"model":"m","prompt":"Once upon a time","max_tokens":4}`, 1, countOf(t, c, "Once upon a time")},
		{"array", `{"model":"m","prompt":["Once upon a time","In a galaxy"],"max_tokens":4}`, 2,
			countOf(t, c, "Once upon a time") + countOf(t, c, "In a galaxy")},
		{"tokens", `{"model":"m","prompt":[1,2,3,4,5],"max_tokens":4}`, 1, 5},
		{"token arrays", `{"model":"m","prompt":[[1,2],[3]],"max_tokens":4,"n":2}`, 4, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, Config{})
			rec := do(t, s, "POST", "/v1/completions", tt.body)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			r := decodeJSON[chatJSON](t, rec.Body.String())
			if r.Object != "text_completion" || !strings.HasPrefix(r.ID, "cmpl-") || len(r.Choices) != tt.wantChoice {
				t.Fatalf("bad response: %s", rec.Body)
			}
			for i, ch := range r.Choices {
				if ch.Index != i || countOf(t, c, ch.Text) != 4 || *ch.FinishReason != "length" {
					t.Errorf("choice %d: %+v", i, ch)
				}
			}
			want := usageJSON{tt.wantPrompt, 4 * tt.wantChoice, tt.wantPrompt + 4*tt.wantChoice}
			if *r.Usage != want {
				t.Errorf("usage %+v, want %+v", *r.Usage, want)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		s := newServer(t, Config{})
		rec := do(t, s, "POST", "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`)
		data := sseData(t, rec.Body.String())
		if len(data) != 3+1+1+1 || data[len(data)-1] != "[DONE]" {
			t.Fatalf("frames: %q", data)
		}
		var text string
		for _, d := range data[:3] {
			text += decodeJSON[chatJSON](t, d).Choices[0].Text
		}
		if text != completionText(0, 3) {
			t.Errorf("text %q", text)
		}
		if u := decodeJSON[chatJSON](t, data[4]).Usage; u == nil || *u != (usageJSON{1, 3, 4}) {
			t.Errorf("usage frame %s", data[4])
		}
	})
}

type embeddingsJSON struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func TestEmbeddings(t *testing.T) {
	s := newServer(t, Config{})
	c := cl100k(t)
	vectors := func(body string) ([][]float32, embeddingsJSON) {
		t.Helper()
		rec := do(t, s, "POST", "/v1/embeddings", body)
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		r := decodeJSON[embeddingsJSON](t, rec.Body.String())
		var out [][]float32
		for i, d := range r.Data {
			if d.Index != i || d.Object != "embedding" {
				t.Errorf("item %d: %+v", i, d)
			}
			var v []float32
			if d.Embedding[0] == '"' {
				raw, err := base64.StdEncoding.DecodeString(decodeJSON[string](t, string(d.Embedding)))
				if err != nil {
					t.Fatal(err)
				}
				for j := 0; j+4 <= len(raw); j += 4 {
					v = append(v, math.Float32frombits(binary.LittleEndian.Uint32(raw[j:])))
				}
			} else {
				v = decodeJSON[[]float32](t, string(d.Embedding))
			}
			out = append(out, v)
		}
		return out, r
	}
	vs, r := vectors(`{"model":"emb","input":["alpha beta","gamma"]}`)
	if r.Object != "list" || r.Model != "emb" || len(vs) != 2 || len(vs[0]) != 16 {
		t.Fatalf("bad response %+v", r)
	}
	if want := countOf(t, c, "alpha beta") + countOf(t, c, "gamma"); r.Usage.PromptTokens != want || r.Usage.TotalTokens != want {
		t.Errorf("usage %+v, want %d", r.Usage, want)
	}
	var norm float64
	for _, f := range vs[0] {
		norm += float64(f) * float64(f)
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("norm² %g, want 1", norm)
	}
	if equalVec(vs[0], vs[1]) {
		t.Error("different inputs gave the same vector")
	}
	again, _ := vectors(`{"model":"emb","input":"alpha beta"}`)
	if !equalVec(again[0], vs[0]) {
		t.Error("same input gave a different vector")
	}
	b64, _ := vectors(`{"model":"emb","input":"alpha beta","encoding_format":"base64"}`)
	if !equalVec(b64[0], vs[0]) {
		t.Errorf("base64 vector %v differs from float vector %v", b64[0], vs[0])
	}
	dims, _ := vectors(`{"model":"emb","input":"x","dimensions":8}`)
	if len(dims[0]) != 8 {
		t.Errorf("dimensions 8 gave %d", len(dims[0]))
	}
	_, tok := vectors(`{"model":"emb","input":[[1,2,3],[4]]}`)
	if tok.Usage.PromptTokens != 4 || len(tok.Data) != 2 {
		t.Errorf("token arrays: %+v", tok)
	}
}

func equalVec(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestModels(t *testing.T) {
	s := newServer(t, Config{Models: []string{"alpha", "beta"}, ContextWindow: 4096})
	rec := do(t, s, "GET", "/v1/models", "")
	list := decodeJSON[struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
			Created             int64
			MaxModelLen         int `json:"max_model_len"`
		} `json:"data"`
	}](t, rec.Body.String())
	if rec.Code != 200 || list.Object != "list" || len(list.Data) != 2 || list.Data[1].ID != "beta" ||
		list.Data[0].Object != "model" || list.Data[0].Created != fixedNow.Unix() || list.Data[0].MaxModelLen != 4096 {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	rec = do(t, s, "GET", "/v1/models/beta", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"beta"`) {
		t.Errorf("get: %d %s", rec.Code, rec.Body)
	}
	rec = do(t, s, "GET", "/v1/models/gamma", "")
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"code":"model_not_found"`) {
		t.Errorf("unknown: %d %s", rec.Code, rec.Body)
	}
}

func TestMessages(t *testing.T) {
	c := cl100k(t)
	body := `{"model":"claude-sim","max_tokens":%s,"system":"Be terse.","messages":[{"role":"user","content":"Hi"}]%s}`
	wantPrompt := 3 + (3 + countOf(t, c, "user") + countOf(t, c, "Hi")) + countOf(t, c, "Be terse.") + 3
	t.Run("json", func(t *testing.T) {
		for _, tt := range []struct {
			max    string
			tokens int
			stop   string
		}{{"100", 16, "end_turn"}, {"4", 4, "max_tokens"}} {
			s := newServer(t, Config{})
			rec := do(t, s, "POST", "/v1/messages", sprintf(body, tt.max, ""))
			r := decodeJSON[struct {
				ID, Type, Role, Model string
				Content               []struct{ Type, Text string }
				StopReason            string  `json:"stop_reason"`
				StopSequence          *string `json:"stop_sequence"`
				Usage                 struct {
					InputTokens  int `json:"input_tokens"`
					OutputTokens int `json:"output_tokens"`
				}
			}](t, rec.Body.String())
			if rec.Code != 200 || !strings.HasPrefix(r.ID, "msg_") || r.Type != "message" || r.Role != "assistant" ||
				r.Model != "claude-sim" || len(r.Content) != 1 || r.Content[0].Type != "text" || r.StopSequence != nil {
				t.Fatalf("bad message: %s", rec.Body)
			}
			if countOf(t, c, r.Content[0].Text) != tt.tokens || r.StopReason != tt.stop ||
				r.Usage.InputTokens != wantPrompt || r.Usage.OutputTokens != tt.tokens {
				t.Errorf("max %s: %s", tt.max, rec.Body)
			}
			if rec.Header().Get("request-id") == "" {
				t.Error("no request-id header")
			}
		}
	})
	t.Run("stream", func(t *testing.T) {
		s := newServer(t, Config{})
		rec := do(t, s, "POST", "/v1/messages", sprintf(body, "3", `,"stream":true`))
		var events []string
		for _, frame := range strings.Split(strings.TrimSuffix(rec.Body.String(), "\n\n"), "\n\n") {
			name, data, ok := strings.Cut(frame, "\n")
			if !ok || !strings.HasPrefix(name, "event: ") || !strings.HasPrefix(data, "data: ") {
				t.Fatalf("bad frame %q", frame)
			}
			name = strings.TrimPrefix(name, "event: ")
			typ := decodeJSON[struct{ Type string }](t, strings.TrimPrefix(data, "data: ")).Type
			if typ != name {
				t.Errorf("event %s carries type %s", name, typ)
			}
			events = append(events, name)
		}
		want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
		if got := strings.Join(events, " "); got != want {
			t.Errorf("events:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("errors", func(t *testing.T) {
		s := newServer(t, Config{ErrorShape: ShapeTGI})
		for _, tt := range []struct{ body, want string }{
			{`{"model":"m","messages":[{"role":"user","content":"Hi"}]}`, "max_tokens: Field required"},
			{`{"model":"m","max_tokens":5}`, "messages: Field required"},
			{`{"max_tokens":5,"messages":[]}`, "model: Field required"},
			{`{`, "invalid JSON body"},
		} {
			rec := do(t, s, "POST", "/v1/messages", tt.body)
			r := decodeJSON[struct {
				Type  string
				Error struct{ Type, Message string }
			}](t, rec.Body.String())
			if rec.Code != 400 || r.Type != "error" || r.Error.Type != "invalid_request_error" || !strings.Contains(r.Error.Message, tt.want) {
				t.Errorf("%s: %d %s", tt.body, rec.Code, rec.Body)
			}
		}
	})
}

func sprintf(format string, args ...string) string {
	for _, a := range args {
		format = strings.Replace(format, "%s", a, 1)
	}
	return format
}

func TestTokenize(t *testing.T) {
	c := cl100k(t)
	s := newServer(t, Config{ContextWindow: 2048})
	type tokJSON struct {
		Count       int    `json:"count"`
		MaxModelLen int    `json:"max_model_len"`
		Tokens      []uint `json:"tokens"`
	}
	rec := do(t, s, "POST", "/tokenize", `{"model":"m","prompt":"Hello, tokenizer world!"}`)
	r := decodeJSON[tokJSON](t, rec.Body.String())
	ids, _, _ := c.Encode("Hello, tokenizer world!")
	if r.Count != len(ids) || r.MaxModelLen != 2048 || len(r.Tokens) != r.Count || r.Tokens[0] != ids[0] {
		t.Errorf("prompt: %s", rec.Body)
	}
	msgs := `[{"role":"system","content":"Be brief."},{"role":"user","name":"bob","content":[{"type":"text","text":"Why?"}]}]`
	rec = do(t, s, "POST", "/tokenize", `{"messages":`+msgs+`}`)
	r = decodeJSON[tokJSON](t, rec.Body.String())
	want, e := s.chatPromptTokens(decodeJSON[[]chatMessage](t, msgs))
	if e != nil || r.Count != want || len(r.Tokens) != want {
		t.Errorf("messages: count %d, tokens %d, want %d (%s)", r.Count, len(r.Tokens), want, rec.Body)
	}
	if got, _, _ := c.Encode("assistant"); len(got) != 1 || got[0] != tokAssistant {
		t.Errorf("assistant encodes as %v", got)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	s := newServer(t, Config{Models: []string{"served"}})
	if rec := do(t, s, "GET", "/health", ""); rec.Code != 200 || rec.Body.String() != "{}" {
		t.Errorf("health: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s, "GET", "/health", "", FaultHeader, "kind=loading;shape=llamacpp"); rec.Code != 503 ||
		rec.Body.String() != `{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}` {
		t.Errorf("loading health: %d %s", rec.Code, rec.Body)
	}
	loading := newServer(t, Config{Fault: "kind=loading"})
	if rec := do(t, loading, "GET", "/health", ""); rec.Code != 503 {
		t.Errorf("health with default loading fault: %d", rec.Code)
	}
	if rec := do(t, loading, "GET", "/metrics", ""); rec.Code != 200 {
		t.Errorf("metrics must ignore faults: %d", rec.Code)
	}

	// Scrape /metrics from inside the TTFT wait and the stall of a request.
	var scraped []string
	s.sleep = func(ctx context.Context, _ time.Duration) error {
		scraped = append(scraped, do(t, s, "GET", "/metrics", "").Body.String())
		return ctx.Err()
	}
	do(t, s, "POST", "/v1/chat/completions", helloChat+`}`)
	do(t, s, "POST", "/v1/chat/completions", helloChat+`}`, FaultHeader, "kind=stall;delay=1s")
	if len(scraped) != 3 {
		t.Fatalf("%d scrapes", len(scraped))
	}
	for i, want := range [][]string{
		{`vllm:num_requests_running{model_name="served"} 1.0`, `vllm:num_requests_waiting{model_name="served"} 0.0`,
			`vllm:kv_cache_usage_perc{model_name="served"} 0.015625`, "# TYPE vllm:num_requests_running gauge"},
		{`vllm:num_requests_running{model_name="served"} 0.0`, `vllm:num_requests_waiting{model_name="served"} 1.0`},
		{`vllm:num_requests_running{model_name="served"} 1.0`, `vllm:prompt_tokens_total{model_name="served"} 16.0`},
	} {
		for _, w := range want {
			if !strings.Contains(scraped[i], w) {
				t.Errorf("scrape %d lacks %q:\n%s", i, w, scraped[i])
			}
		}
	}
	final := do(t, s, "GET", "/metrics", "").Body.String()
	if !strings.Contains(final, `vllm:prompt_tokens_total{model_name="served"} 16.0`) ||
		!strings.Contains(final, `vllm:generation_tokens_total{model_name="served"} 32.0`) {
		t.Errorf("final scrape:\n%s", final)
	}
}

func TestStatsAndHook(t *testing.T) {
	s := newServer(t, Config{})
	var mu sync.Mutex
	var bodies []string
	s.OnRequest(func(r *http.Request, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		bodies = append(bodies, r.URL.Path+" "+string(body))
	})
	do(t, s, "POST", "/v1/chat/completions", helloChat+`,"max_tokens":2}`)
	do(t, s, "POST", "/v1/chat/completions", helloChat+`,"max_tokens":2}`)
	do(t, s, "GET", "/v1/models", "")
	do(t, s, "GET", "/v1/models/x", "")
	do(t, s, "GET", "/nope", "")
	st := s.Stats()
	want := map[string]int64{"/v1/chat/completions": 2, "/v1/models": 1, "/v1/models/{id}": 1, "unknown": 1}
	if len(st.Requests) != len(want) {
		t.Errorf("requests %v, want %v", st.Requests, want)
	}
	for k, v := range want {
		if st.Requests[k] != v {
			t.Errorf("requests[%s] = %d, want %d", k, st.Requests[k], v)
		}
	}
	if st.PromptTokens != 16 || st.CompletionTokens != 4 || st.InFlight != 0 || st.Running != 0 || st.Cancelled != 0 {
		t.Errorf("stats %+v", st)
	}
	if len(bodies) != 4 || bodies[0] != "/v1/chat/completions "+helloChat+`,"max_tokens":2}` || bodies[2] != "/v1/models " {
		t.Errorf("hook saw %q", bodies)
	}
	s.OnRequest(nil)
	do(t, s, "GET", "/v1/models", "")
	if len(bodies) != 4 {
		t.Error("hook still called after removal")
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{ErrorShape: "xml"},
		{Fault: "kind=boom"},
		{Fault: "status=200"},
		{TTFT: -1},
		{TokensPerSecond: -1},
		{ResponseTokens: -1},
		{ContextWindow: -1},
		{Models: []string{""}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.ResponseTokens != 16 || s.shape != ShapeOpenAI || s.cfg.Models[0] != "sim-model" {
		t.Errorf("defaults: %+v", s.cfg)
	}
}
