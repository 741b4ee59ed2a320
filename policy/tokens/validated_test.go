package tokens

import (
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

// TestValidatedCounts: a counter told its bodies are valid JSON counts them as one that checks,
// and a body that is not valid JSON after all neither panics nor hangs.
func TestValidatedCounts(t *testing.T) {
	c := mustCounter(t, "cl100k_base")
	checked, trusted := NewChatCounter(c, nil), &ChatCounter{Counter: c, Validated: true}
	body := conversation(6, " and the last word")
	want, err := checked.CountChat(body)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := trusted.CountChat(body); err != nil || got != want {
		t.Fatalf("validated count %d, %v; want %d", got, err, want)
	}
	if lo, err := trusted.LowerBound(wire.DialectChat, body); err != nil || lo > want {
		t.Fatalf("validated lower bound %d, %v; count %d", lo, err, want)
	}
	for _, bad := range []string{`{"messages":[{"role":"user","content":"hi"`, `{"messages":[{"role":}]}`, `{`, `{"messages":"x`} {
		if _, err := checked.CountChat([]byte(bad)); err == nil {
			t.Errorf("%q: the checking counter took it", bad)
		}
		_, _ = trusted.CountChat([]byte(bad)) // any count or error, no panic
	}
}

// BenchmarkCountConversationValidated is BenchmarkCountConversationAllMemoised with a counter
// told the body is valid JSON, as the gateway's is.
func BenchmarkCountConversationValidated(b *testing.B) {
	c := &ChatCounter{Counter: mustCounter(b, "o200k_base"), Memo: NewMemo(1 << 16), Validated: true}
	body := conversation(20, "")
	if _, err := c.CountChat(body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.CountChat(body); err != nil {
			b.Fatal(err)
		}
	}
}
