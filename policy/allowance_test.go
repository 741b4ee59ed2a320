package policy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyai/gateway/internal/wire"
)

func TestOutputAllowance(t *testing.T) {
	tests := []struct {
		name                                        string
		requested, gatewayDefault, modelMax, window int
		want                                        int
	}{
		{"the request's own max_tokens", 300, 500, 700, 8192, 300},
		{"the request's own, even beyond the window (the context check refuses it)", 9000, 0, 0, 8192, 9000},
		{"the gateway's default_max_tokens", 0, 500, 700, 8192, 500},
		{"the model's max_output_tokens", 0, 0, 700, 8192, 700},
		{"the fallback", 0, 0, 0, 8192, DefaultOutputAllowance},
		{"clamped to a small window", 0, 0, 0, 512, 512},
		{"a default clamped to the window", 0, 4096, 0, 2048, 2048},
		{"no window", 0, 0, 0, 0, DefaultOutputAllowance},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OutputAllowance(tt.requested, tt.gatewayDefault, tt.modelMax, tt.window); got != tt.want {
				t.Errorf("OutputAllowance = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestContextLengthExceeded(t *testing.T) {
	tests := []struct {
		e         wire.Endpoint
		maxTokens int
		status    int
		param     string
		wantMsg   string
		wantCode  int
	}{
		{wire.EndpointChatCompletions, 0, 0, "messages", "your messages resulted in 9000 tokens", 413},
		{wire.EndpointChatCompletions, 100, 0, "messages", "you requested 9100 tokens (9000 in the messages, 100 in the completion)", 413},
		{wire.EndpointCompletions, 0, 400, "prompt", "resulted in 9000 tokens", 400},
		{wire.EndpointEmbeddings, 0, 413, "input", "resulted in 9000 tokens", 413},
		{wire.EndpointMessages, 50, 0, "messages", "9050 tokens", 413},
		{wire.EndpointImagesGenerations, 0, 0, "prompt", "9000", 413},
	}
	for _, tt := range tests {
		e := ContextLengthExceeded(tt.e, 8192, 9000, tt.maxTokens, tt.status, false)
		if e.Status != tt.wantCode || e.Code != "context_length_exceeded" || e.Param != tt.param || e.Type != wire.TypeInvalidRequest ||
			!strings.Contains(e.Message, tt.wantMsg) || !strings.Contains(e.Message, "maximum context length is 8192 tokens") {
			t.Errorf("%s: %+v", tt.e, e)
		}
		if tt.e.Surface() == wire.Anthropic && e.StatusFor(wire.Anthropic) != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: Anthropic status %d", tt.e, e.StatusFor(wire.Anthropic))
		}
	}
}

func TestContextLengthExceededAtLeast(t *testing.T) {
	e := ContextLengthExceeded(wire.EndpointChatCompletions, 8192, 9000, 100, 0, true)
	if !strings.Contains(e.Message, "you requested at least 9100 tokens (at least 9000 in the messages, 100 in the completion)") {
		t.Errorf("message %q", e.Message)
	}
}

func TestFitRoom(t *testing.T) {
	tests := []struct {
		e                                  wire.Endpoint
		window, prompt, maxTokens, atLeast int
		room                               int
		ok                                 bool
	}{
		{wire.EndpointChatCompletions, 8192, 8000, 500, 64, 192, true},
		{wire.EndpointChatCompletions, 8192, 8150, 500, 64, 0, false}, // too little room left
		{wire.EndpointChatCompletions, 8192, 8000, 0, 64, 0, false},   // no max_tokens to lower
		{wire.EndpointChatCompletions, 8192, 8000, 500, 0, 0, false},  // fit_max_tokens off
		{wire.EndpointEmbeddings, 8192, 8000, 500, 64, 0, false},      // no output length
		{wire.EndpointMessages, 8192, 8000, 500, 64, 192, true},
	}
	for _, tt := range tests {
		room, ok := FitRoom(tt.e, tt.window, tt.prompt, tt.maxTokens, tt.atLeast)
		if room != tt.room || ok != tt.ok {
			t.Errorf("FitRoom(%s, %d, %d, %d, %d) = %d, %v; want %d, %v", tt.e, tt.window, tt.prompt, tt.maxTokens, tt.atLeast, room, ok, tt.room, tt.ok)
		}
	}
}

func TestReservedOutput(t *testing.T) {
	tests := []struct {
		name string
		e    wire.Endpoint
		info RequestInfo
		want int
	}{
		{"one choice", wire.EndpointChatCompletions, RequestInfo{N: 1, MaxTokens: 100}, 100},
		{"n choices each get max_tokens", wire.EndpointChatCompletions, RequestInfo{N: 128, MaxTokens: 100}, 12800},
		{"n without max_tokens: the allowance per choice", wire.EndpointChatCompletions, RequestInfo{N: 3}, 3 * DefaultOutputAllowance},
		{"a prompt array: choices for each prompt", wire.EndpointCompletions, RequestInfo{N: 2, Prompts: 5, MaxTokens: 10}, 100},
		{"best_of is what the server generates", wire.EndpointCompletions, RequestInfo{N: 2, BestOf: 6, Prompts: 2, MaxTokens: 10}, 120},
		{"Anthropic messages", wire.EndpointMessages, RequestInfo{N: 1, MaxTokens: 64}, 64},
		{"embeddings generate nothing", wire.EndpointEmbeddings, RequestInfo{N: 1}, 0},
		{"images: no output tokens", wire.EndpointImagesGenerations, RequestInfo{N: 4}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReservedOutput(tt.e, &tt.info, 0, 0, 8192); got != tt.want {
				t.Errorf("ReservedOutput = %d, want %d", got, tt.want)
			}
		})
	}
}
