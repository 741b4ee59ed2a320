package simulator

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func openAIClient(url string, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(url + "/v1/"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0),
	}, opts...)...)
}

func TestOpenAISDK(t *testing.T) {
	s := newServer(t, Config{Models: []string{"sim-a", "sim-b"}})
	ts := httptest.NewServer(s)
	defer ts.Close()
	client := openAIClient(ts.URL)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:     "sim-a",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hello")},
		MaxTokens: openai.Int(6),
	}

	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if resp.Choices[0].Message.Content != completionText(0, 6) || resp.Choices[0].FinishReason != "length" ||
		resp.Usage.CompletionTokens != 6 || resp.Model != "sim-a" {
		t.Errorf("chat response: %s", resp.RawJSON())
	}
	prompt := resp.Usage.PromptTokens

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if acc.Choices[0].Message.Content != completionText(0, 6) || acc.Usage.PromptTokens != prompt ||
		acc.Usage.CompletionTokens != 6 || chunks != 1+6+1+1 {
		t.Errorf("accumulated %d chunks: %+v", chunks, acc.ChatCompletion)
	}

	stream = client.Chat.Completions.NewStreaming(ctx, params, option.WithHeader(FaultHeader, "kind=midstream_error;after=3"))
	for stream.Next() {
	}
	if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "error") {
		t.Errorf("midstream error not surfaced: %v", err)
	}

	comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model: "sim-b", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"a", "b"}}, MaxTokens: openai.Int(2),
	})
	if err != nil || len(comp.Choices) != 2 || comp.Usage.CompletionTokens != 4 {
		t.Errorf("completions: %v %+v", err, comp)
	}

	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "sim-b", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hello")},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64,
	})
	if err != nil || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 16 {
		t.Errorf("embeddings: %v %+v", err, emb)
	}

	page, err := client.Models.List(ctx)
	if err != nil || len(page.Data) != 2 || page.Data[1].ID != "sim-b" {
		t.Errorf("models: %v %+v", err, page)
	}
	if m, err := client.Models.Get(ctx, "sim-a"); err != nil || m.ID != "sim-a" {
		t.Errorf("model: %v %+v", err, m)
	}
}

func TestOpenAISDKTypedErrors(t *testing.T) {
	tests := []struct {
		shape, fault string
		wantStatus   int
		wantCode     string
		wantMessage  string
	}{
		{ShapeOpenAI, "kind=context", 400, "context_length_exceeded", "maximum context length"},
		{ShapeOpenAI, "kind=overloaded", 503, "", "overloaded"},
		{ShapeOpenAI, "status=401", 401, "invalid_api_key", "Unauthorized"},
		{ShapeVLLM, "kind=context", 400, "400", "maximum context length"},
		{ShapeVLLM, "kind=overloaded", 503, "503", "overloaded"},
		{ShapeLlamaCpp, "kind=loading", 503, "503", "Loading model"},
		{ShapeLlamaCpp, "kind=context", 400, "400", "context size"},
		{ShapeOllama, "kind=overloaded", 503, "", "server busy"},
	}
	for _, tt := range tests {
		t.Run(tt.shape+"/"+tt.fault, func(t *testing.T) {
			s := newServer(t, Config{ErrorShape: tt.shape})
			ts := httptest.NewServer(s)
			defer ts.Close()
			client := openAIClient(ts.URL, option.WithHeader(FaultHeader, tt.fault))
			_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
			})
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %T %v is not an *openai.Error", err, err)
			}
			if apiErr.StatusCode != tt.wantStatus || apiErr.Code != tt.wantCode || !strings.Contains(apiErr.Message, tt.wantMessage) {
				t.Errorf("got status %d code %q message %q", apiErr.StatusCode, apiErr.Code, apiErr.Message)
			}
		})
	}
}

func TestAnthropicSDK(t *testing.T) {
	s := newServer(t, Config{})
	ts := httptest.NewServer(s)
	defer ts.Close()
	client := anthropic.NewClient(aoption.WithBaseURL(ts.URL), aoption.WithAPIKey("sk-ant-test"), aoption.WithMaxRetries(0))
	ctx := context.Background()
	params := anthropic.MessageNewParams{
		Model:     "claude-sim",
		MaxTokens: 5,
		System:    []anthropic.TextBlockParam{{Text: "Be terse."}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hi"))},
	}
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if len(msg.Content) != 1 || msg.Content[0].Text != completionText(0, 5) || msg.StopReason != anthropic.StopReasonMaxTokens ||
		msg.Usage.OutputTokens != 5 || msg.Usage.InputTokens == 0 {
		t.Errorf("message: %s", msg.RawJSON())
	}

	stream := client.Messages.NewStreaming(ctx, params)
	acc := anthropic.Message{}
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Content) != 1 || acc.Content[0].Text != completionText(0, 5) || acc.StopReason != anthropic.StopReasonMaxTokens ||
		acc.Usage.OutputTokens != 5 || acc.Usage.InputTokens != msg.Usage.InputTokens {
		t.Errorf("accumulated: %+v", acc)
	}

	stream = client.Messages.NewStreaming(ctx, params, aoption.WithHeader(FaultHeader, "kind=midstream_error;after=4"))
	for stream.Next() {
	}
	if stream.Err() == nil {
		t.Error("midstream error not surfaced")
	}

	for _, tt := range []struct {
		fault  string
		status int
		typ    string
	}{
		{"kind=overloaded", 529, "overloaded_error"},
		{"status=429", 429, "rate_limit_error"},
		{"kind=context", 400, "invalid_request_error"},
	} {
		_, err := client.Messages.New(ctx, params, aoption.WithHeader(FaultHeader, tt.fault))
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("%s: error %T %v", tt.fault, err, err)
		}
		if apiErr.StatusCode != tt.status || string(apiErr.Type()) != tt.typ || apiErr.RequestID == "" {
			t.Errorf("%s: status %d type %q request id %q", tt.fault, apiErr.StatusCode, apiErr.Type(), apiErr.RequestID)
		}
	}
}
