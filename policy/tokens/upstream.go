package tokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"github.com/caddyai/gateway/internal/wire"
)

// RemoteCounter is a Counter that asks another process, and so can fail. A ChatCounter counts
// each text with CountContext, memoised like any counter's; a text whose count fails is
// counted with Estimate instead (never fewer tokens than an exact BPE count) and not memoised.
type RemoteCounter interface {
	Counter
	// CountContext returns the tokens of text, or an error (ctx's own when it ended).
	CountContext(ctx context.Context, text string) (int, error)
}

// The flavours of /tokenize an Upstream speaks.
const (
	// FlavourVLLM: POST /tokenize {"model","prompt","add_special_tokens":false} -> {"count",...}.
	FlavourVLLM = "vllm"
	// FlavourTGI: POST /tokenize {"inputs"} -> [{"id","text","start","stop"},...]. TGI adds the
	// tokenizer's special tokens (a BOS for Llama), so each text may count one token more.
	FlavourTGI = "tgi"
	// FlavourLlamaCpp: POST /tokenize {"content","add_special":false} -> {"tokens":[...]}.
	FlavourLlamaCpp = "llamacpp"
)

// Reasons an Upstream counts a text with Estimate, as UpstreamOptions.OnFallback reports them.
const (
	FallbackError       = "error"       // the server answered with an error, or garbage
	FallbackTimeout     = "timeout"     // no answer within the timeout
	FallbackUnavailable = "unavailable" // no server to ask, or a recent failure (backoff)
)

// Defaults of UpstreamOptions.
const (
	DefaultUpstreamTimeout = time.Second
	DefaultUpstreamBackoff = 2 * time.Second
	// maxTokenizeAnswer bounds the answer read from /tokenize (a token list of a 4 MiB text).
	maxTokenizeAnswer = 32 << 20
)

// UpstreamOptions configures an Upstream.
type UpstreamOptions struct {
	// Name is the counter's name, which memo keys include: one per vocabulary, so one per
	// model (for example "upstream:llama-3-8b"). Required.
	Name string
	// Flavour is the /tokenize dialect: vllm (default), tgi or llamacpp.
	Flavour string
	// Model is the model name sent in vLLM's request.
	Model string
	// Endpoint returns the base URL (http://host:port) of a server to ask, "" when none is
	// available. Required.
	Endpoint func() string
	// Client does the requests. Default: http.DefaultClient.
	Client *http.Client
	// Header is sent with every request (the upstream credential).
	Header http.Header
	// Timeout bounds one request. Default: 1s.
	Timeout time.Duration
	// Backoff is how long after a failure texts are estimated without asking, so a dead or
	// blackholed server costs one timeout, not one per text. Default: 2s.
	Backoff time.Duration
	// OnFallback, when set, is called for each text counted with Estimate instead (reason is
	// one of the Fallback constants). It must be quick and safe for concurrent use.
	OnFallback func(reason string)
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Upstream counts texts with the model server's own tokenizer, through its /tokenize
// endpoint: exact counts for any model without shipping its tokenizer file. It is safe for
// concurrent use.
type Upstream struct {
	opts      UpstreamOptions
	downUntil atomic.Int64 // unix nanoseconds until which no request is made
}

// NewUpstream returns an Upstream counter.
func NewUpstream(opts UpstreamOptions) (*Upstream, error) {
	switch opts.Flavour {
	case "":
		opts.Flavour = FlavourVLLM
	case FlavourVLLM, FlavourTGI, FlavourLlamaCpp:
	default:
		return nil, fmt.Errorf("creating upstream counter: unknown flavour %q (want vllm, tgi or llamacpp)", opts.Flavour)
	}
	if opts.Name == "" || opts.Endpoint == nil {
		return nil, errors.New("creating upstream counter: a name and an endpoint are required")
	}
	if opts.Client == nil {
		opts.Client = http.DefaultClient
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultUpstreamTimeout
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultUpstreamBackoff
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Upstream{opts: opts}, nil
}

// Name returns the counter's name.
func (u *Upstream) Name() string { return u.opts.Name }

// Count returns the server's count of text, or its Estimate when the server cannot say.
func (u *Upstream) Count(text string) int {
	n, err := u.CountContext(context.Background(), text)
	if err != nil {
		return Estimate().Count(text)
	}
	return n
}

// errBackoff is the error of a text not sent because the server failed a moment ago.
var errBackoff = errors.New("the tokenizer endpoint failed recently")

// CountContext asks the server for the tokens of text. Failures other than ctx's own are
// reported to OnFallback and start the backoff.
func (u *Upstream) CountContext(ctx context.Context, text string) (int, error) {
	if text == "" {
		return 0, nil
	}
	now := u.opts.Now()
	if now.UnixNano() < u.downUntil.Load() {
		u.fallback(FallbackUnavailable)
		return 0, errBackoff
	}
	base := u.opts.Endpoint()
	if base == "" {
		u.fallback(FallbackUnavailable)
		return 0, errors.New("no upstream to ask for a token count")
	}
	n, err := u.ask(ctx, base, text)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		u.downUntil.Store(now.Add(u.opts.Backoff).UnixNano())
		reason := FallbackError
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			reason = FallbackTimeout
		}
		u.fallback(reason)
		return 0, err
	}
	return n, nil
}

func (u *Upstream) fallback(reason string) {
	if u.opts.OnFallback != nil {
		u.opts.OnFallback(reason)
	}
}

// ask makes one /tokenize request.
func (u *Upstream) ask(ctx context.Context, base, text string) (int, error) {
	body := make([]byte, 0, len(text)+64)
	switch u.opts.Flavour {
	case FlavourTGI:
		body = append(body, `{"inputs":`...)
		body = wire.AppendString(body, text)
	case FlavourLlamaCpp:
		body = append(body, `{"content":`...)
		body = wire.AppendString(body, text)
		body = append(body, `,"add_special":false`...)
	default:
		body = append(body, `{"model":`...)
		body = wire.AppendString(body, u.opts.Model)
		body = append(body, `,"prompt":`...)
		body = wire.AppendString(body, text)
		body = append(body, `,"add_special_tokens":false`...)
	}
	body = append(body, '}')
	ctx, cancel := context.WithTimeout(ctx, u.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/tokenize", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range u.opts.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := u.opts.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenizeAnswer+1))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("tokenize: status %d", resp.StatusCode)
	}
	if len(answer) > maxTokenizeAnswer {
		return 0, errors.New("tokenize: answer too large")
	}
	n, ok := ParseTokenizeAnswer(answer)
	if !ok {
		return 0, errors.New("tokenize: an answer of none of the known shapes")
	}
	return n, nil
}

// ParseTokenizeAnswer reads the count from a /tokenize answer of vLLM ({"count": n}), TGI (an
// array of tokens) or llama.cpp server ({"tokens": [...]}).
func ParseTokenizeAnswer(b []byte) (int, bool) {
	if !gjson.ValidBytes(b) {
		return 0, false
	}
	root := gjson.ParseBytes(b)
	switch {
	case root.IsArray():
		return int(root.Get("#").Int()), true
	case !root.IsObject():
		return 0, false
	}
	if c := root.Get("count"); c.Type == gjson.Number && c.Int() >= 0 {
		return int(c.Int()), true
	}
	if t := root.Get("tokens"); t.IsArray() {
		return int(t.Get("#").Int()), true
	}
	return 0, false
}

// countRemote counts text into t with a remote counter, memoised; a failed count adds the
// text's Estimate, not memoised, and a count stopped by t's context stops the walk.
func (c *ChatCounter) countRemote(t *tally, rc RemoteCounter, text string) error {
	var key uint64
	if c.Memo != nil {
		key = c.Memo.Key(rc.Name(), text)
		if n, ok := c.Memo.Get(key); ok {
			return c.fixedInto(t, n)
		}
	}
	n, err := rc.CountContext(t.ctx, text)
	if err != nil {
		if t.ctx.Err() != nil {
			t.err = t.ctx.Err()
			return errStopped
		}
		t.estimated++
		return c.fixedInto(t, Estimate().Count(text))
	}
	if c.Memo != nil {
		c.Memo.Put(key, n)
	}
	return c.fixedInto(t, n)
}
