package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// limitBodies are bodies of every dialect for the limit and lower bound
// tests, with the dialect each is counted as.
func limitBodies() []struct {
	d    wire.Dialect
	body string
} {
	long := realisticText(40 << 10)
	return []struct {
		d    wire.Dialect
		body string
	}{
		{wire.DialectChat, `{"messages":[{"role":"user","content":"hi"}]}`},
		{wire.DialectChat, string(conversation(20, ""))},
		{wire.DialectChat, string(chatBody(long))},
		{wire.DialectChat, `{"messages":[{"role":"user","name":"a","content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"` + strings.Repeat("cd ", 3000) + `"}]}],"tools":[{"type":"function","function":{"name":"f"}}]}`},
		{wire.DialectMessages, `{"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"` + strings.Repeat("hello ", 2000) + `"},{"type":"tool_result","content":"15C"}]}],"tools":[{"name":"get"}]}`},
		{wire.DialectCompletion, `{"prompt":["` + strings.Repeat("x y ", 5000) + `",[1,2,3]],"suffix":"end"}`},
		{wire.DialectEmbedding, `{"input":["a","b c",[4,5]]}`},
	}
}

// limitCounters are the counters the limit tests run: the package's own and
// one from outside (lenCounter, counted text by text).
func limitCounters(tb testing.TB) []Counter {
	return append(boundCounters(tb), &lenCounter{})
}

func TestCountLimit(t *testing.T) {
	ctx := context.Background()
	for _, c := range limitCounters(t) {
		for _, memo := range []*Memo{nil, NewMemo(1000)} {
			cc := &ChatCounter{Counter: c, Memo: memo}
			for i, tt := range limitBodies() {
				body := []byte(tt.body)
				want, err := cc.Count(tt.d, body)
				if err != nil {
					t.Fatal(err)
				}
				for _, limit := range []int{-1, 0, 1, want / 3, want - 1, want, want + 1, 1 << 40} {
					n, exceeded, err := cc.CountLimit(ctx, tt.d, body, limit)
					switch {
					case err != nil:
						t.Fatalf("%s body %d limit %d: %v", c.Name(), i, limit, err)
					case want <= limit && (exceeded || n != want):
						t.Errorf("%s body %d limit %d: CountLimit = %d, %v; want %d, false", c.Name(), i, limit, n, exceeded, want)
					case want > limit && (!exceeded || n <= limit || n > want):
						t.Errorf("%s body %d limit %d: CountLimit = %d, %v; want (%d, %d], true", c.Name(), i, limit, n, exceeded, limit, want)
					}
				}
			}
		}
	}
}

// TestCountLimitStopsEarly checks that a body far over the limit is not
// counted in full: a 1 MiB prompt with a limit of 100 costs a few texts of
// BPE, not the whole prompt.
func TestCountLimitStopsEarly(t *testing.T) {
	lc := &countingCounter{Counter: cl100k()}
	cc := NewChatCounter(lc, nil)
	text := realisticText(1 << 20)
	body := chatBody(text)
	n, exceeded, err := cc.CountLimit(context.Background(), wire.DialectChat, body, 1000)
	if err != nil || !exceeded || n <= 1000 {
		t.Fatalf("CountLimit = %d, %v, %v; want > 1000, true", n, exceeded, err)
	}
	// The lower bound is 1 MiB / 128 > 1000: no text reaches the counter.
	if lc.bytes != 0 {
		t.Errorf("counted %d bytes, want 0 (the lower bound refuses)", lc.bytes)
	}
	n, exceeded, err = cc.CountLimit(context.Background(), wire.DialectChat, body, 100_000)
	if err != nil || !exceeded || n <= 100_000 {
		t.Fatalf("CountLimit = %d, %v, %v; want > 100000, true", n, exceeded, err)
	}
	if lc.pieces >= 300_000 {
		t.Errorf("counted %d pieces for a limit of 100000 tokens", lc.pieces)
	}
}

// countingCounter wraps a package counter and records what it is given.
type countingCounter struct {
	Counter
	bytes, pieces int
}

func (c *countingCounter) countTo(t *tally, text string) bool {
	c.bytes += len(text)
	before := t.n
	ok := c.Counter.(limitCounter).countTo(t, text)
	c.pieces += t.n - before
	return ok
}

func (c *countingCounter) maxTokenBytes() tokenBytes {
	return c.Counter.(interface{ maxTokenBytes() tokenBytes }).maxTokenBytes()
}

func TestCountLimitCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cc := NewChatCounter(cl100k(), nil)
	_, exceeded, err := cc.CountLimit(ctx, wire.DialectChat, chatBody("hello"), 1000)
	if !errors.Is(err, context.Canceled) || exceeded {
		t.Errorf("CountLimit = %v, %v; want context.Canceled", exceeded, err)
	}
	if _, _, err := cc.CountLimit(ctx, wire.DialectChat, []byte(`{"messages":1}`), 10); !errors.Is(err, ErrMalformed) {
		t.Errorf("malformed body: %v, want ErrMalformed", err)
	}
}

func TestLowerBound(t *testing.T) {
	for _, c := range limitCounters(t) {
		cc := NewChatCounter(c, nil)
		for i, tt := range limitBodies() {
			body := []byte(tt.body)
			n, err := cc.Count(tt.d, body)
			if err != nil {
				t.Fatal(err)
			}
			lb, err := cc.LowerBound(tt.d, body)
			if err != nil {
				t.Fatal(err)
			}
			if lb > n || lb < 0 {
				t.Errorf("%s body %d: LowerBound %d, Count %d", c.Name(), i, lb, n)
			}
		}
	}
	// The framing is exact: 3 per message + 3 for the primer, and a
	// counter without known token lengths counts no text.
	cc := NewChatCounter(&lenCounter{}, nil)
	if lb, _ := cc.LowerBound(wire.DialectChat, []byte(`{"messages":[{"role":"user","content":"hi","name":"x"},{"role":"user","content":[{"type":"image_url"}]}]}`)); lb != 3+1+3+85+3 {
		t.Errorf("LowerBound = %d, want %d", lb, 3+1+3+85+3)
	}
	if _, err := cc.LowerBound(wire.DialectChat, []byte(`{"messages":[{"role":2}]}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("LowerBound error = %v, want ErrMalformed", err)
	}
	if _, err := cc.LowerBound(wire.DialectImage, []byte(`{}`)); err == nil {
		t.Error("LowerBound of an image body succeeded")
	}
}

// TestLowerBoundStrength checks the bound is of use: for cl100k_base a
// prompt of letters counts at least one token per 42 letters.
func TestLowerBoundStrength(t *testing.T) {
	text := strings.Repeat("abcdefghij ", 40000)
	for _, tt := range []struct {
		c    Counter
		want int
	}{{cl100k(), 400000 / 42}, {o200k(), 400000 / 26}, {Estimate(), len(text)}} {
		lb, err := NewChatCounter(tt.c, nil).LowerBound(wire.DialectChat, chatBody(text))
		if err != nil {
			t.Fatal(err)
		}
		if lb < tt.want {
			t.Errorf("%s: LowerBound = %d, want at least %d", tt.c.Name(), lb, tt.want)
		}
	}
}

// TestTokenBytes checks the per-class bounds read from the vocabularies.
func TestTokenBytes(t *testing.T) {
	for _, tt := range []struct {
		c    interface{ maxTokenBytes() tokenBytes }
		want tokenBytes
	}{
		{cl100k(), tokenBytes{all: 128, letters: 42, digits: 3, wide: 48}},
		{o200k(), tokenBytes{all: 128, letters: 26, digits: 3, wide: 61}},
	} {
		if got := tt.c.maxTokenBytes(); got != tt.want {
			t.Errorf("maxTokenBytes = %+v, want %+v", got, tt.want)
		}
	}
	for _, name := range []string{"tiny-bytelevel", "tiny-spm", "tiny-metaspace"} {
		h := mustCounter(t, "hf testdata/"+name+".json").(*hfCounter)
		if b := h.maxTokenBytes(); b.all == 0 {
			t.Errorf("%s: no bound: %+v", name, b)
		}
	}
}

// FuzzCountLimit checks CountLimit against Count on arbitrary bodies: equal
// when not exceeded, and exceeded only when Count passes the limit; and
// LowerBound never above Count.
func FuzzCountLimit(f *testing.F) {
	for _, s := range boundSeeds {
		f.Add([]byte(s), 5, uint8(0))
		f.Add([]byte(s), 50, uint8(4))
	}
	f.Add([]byte(`{"prompt":"hello world","suffix":"x"}`), 1, uint8(2))
	counters := boundCounters(f)
	dialects := []wire.Dialect{wire.DialectChat, wire.DialectMessages, wire.DialectCompletion, wire.DialectEmbedding}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, body []byte, limit int, which uint8) {
		d := dialects[int(which)%len(dialects)]
		for _, c := range counters {
			cc := NewChatCounter(c, nil)
			want, err := cc.Count(d, body)
			n, exceeded, lerr := cc.CountLimit(ctx, d, body, limit)
			if (err == nil) != (lerr == nil) {
				t.Fatalf("%s: Count error %v, CountLimit error %v", c.Name(), err, lerr)
			}
			if err != nil {
				continue
			}
			if exceeded && (want <= limit || n <= limit || n > want) || !exceeded && n != want {
				t.Fatalf("%s: CountLimit(%d) = %d, %v; Count = %d", c.Name(), limit, n, exceeded, want)
			}
			if lb, err := cc.LowerBound(d, body); err != nil || lb > want {
				t.Fatalf("%s: LowerBound = %d, %v; Count = %d", c.Name(), lb, err, want)
			}
		}
	})
}

func TestStatsOf(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want textStats
	}{
		{"", textStats{}},
		{"ab1 é你", textStats{valid: 9, letters: 2, digits: 1, wide: 5}},
		{"a\xffb\xe4\xbd", textStats{valid: 2, letters: 2}},
		{strings.Repeat("x9", 1<<20), textStats{valid: 2 << 20, letters: 1 << 20, digits: 1 << 20}},
	} {
		if got := statsOf(tt.s); got != tt.want {
			t.Errorf("statsOf(%q) = %+v, want %+v", trunc(tt.s), got, tt.want)
		}
	}
}
