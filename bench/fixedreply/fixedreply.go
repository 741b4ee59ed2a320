// Package fixedreply is the cheapest honest upstream for the benchmarks: an OpenAI-compatible
// chat completions server on HTTP/1.1 keep-alive that answers every request with precomputed
// bytes (a chat.completion for JSON, 20 content chunks and [DONE] for "stream": true, in one
// write), so that the proxies in front of it, not the model server, use the CPU. It reads and
// parses each request (request line, headers, Content-Length or chunked body) like any server
// must, and honours stream_options.include_usage: the usage chunk is sent only when asked for,
// as vLLM does, so a proxy that asks for it pays for the extra chunk.
package fixedreply

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Chunks is the number of content chunks of a streamed reply (one token each).
const Chunks = 20

// Usage of every reply: the prompt_tokens are nominal; completion_tokens match the 20 chunks.
const (
	PromptTokens     = 240
	CompletionTokens = Chunks
)

// Replies are the precomputed responses, status line to the end of the body.
type Replies struct {
	JSON, Stream, StreamUsage, NotFound []byte
}

// NewReplies precomputes the responses for model.
func NewReplies(model string) *Replies {
	usage := fmt.Sprintf(`{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, PromptTokens, CompletionTokens, PromptTokens+CompletionTokens)
	words := make([]string, Chunks)
	for i := range words {
		words[i] = "word" + strconv.Itoa(i) + " "
	}
	text := strings.Join(words, "")
	body := `{"id":"chatcmpl-fixed","object":"chat.completion","created":1700000000,"model":"` + model +
		`","system_fingerprint":"fp_fixed","choices":[{"index":0,"message":{"role":"assistant","content":"` + text +
		`","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":` + usage + "}"
	r := &Replies{
		JSON: []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body),
	}
	chunk := func(choices, extra string) string {
		return `{"id":"chatcmpl-fixed","object":"chat.completion.chunk","created":1700000000,"model":"` + model +
			`","system_fingerprint":"fp_fixed","choices":` + choices + extra + "}"
	}
	events := []string{chunk(`[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]`, "")}
	for _, w := range words {
		events = append(events, chunk(`[{"index":0,"delta":{"content":"`+w+`"},"logprobs":null,"finish_reason":null}]`, ""))
	}
	events = append(events, chunk(`[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`, ""))
	stream := func(events []string) []byte {
		var b bytes.Buffer
		b.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, e := range append(events, "[DONE]") {
			ev := "data: " + e + "\n\n"
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(ev), ev)
		}
		b.WriteString("0\r\n\r\n")
		return b.Bytes()
	}
	r.Stream = stream(events)
	r.StreamUsage = stream(append(events, chunk("[]", `,"usage":`+usage)))
	nf := `{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":"not_found"}}`
	r.NotFound = []byte("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(nf)) + "\r\n\r\n" + nf)
	return r
}

// Serve accepts connections on ln until it is closed, answering each request with r.
func Serve(ln net.Listener, r *Replies) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(c, r)
		}()
	}
}

var (
	hdrLength   = []byte("content-length")
	hdrEncoding = []byte("transfer-encoding")
	hdrConn     = []byte("connection")
	chatPath    = []byte(" /v1/chat/completions ")
	streamTrue  = [][]byte{[]byte(`"stream":true`), []byte(`"stream": true`)}
	usageTrue   = [][]byte{[]byte(`"include_usage":true`), []byte(`"include_usage": true`)}
)

// maxBody bounds a request body.
const maxBody = 8 << 20

func serveConn(c net.Conn, r *Replies) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	var body []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		chat := bytes.HasPrefix(line, []byte("POST ")) && bytes.Contains(line, chatPath)
		length, chunked, closing := 0, false, false
		for {
			h, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			h = bytes.TrimRight(h, "\r\n")
			if len(h) == 0 {
				break
			}
			name, value, ok := bytes.Cut(h, []byte(":"))
			if !ok {
				return
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, hdrLength):
				if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > maxBody {
					return
				}
			case bytes.EqualFold(name, hdrEncoding):
				chunked = bytes.EqualFold(value, []byte("chunked"))
			case bytes.EqualFold(name, hdrConn):
				closing = bytes.EqualFold(value, []byte("close"))
			}
		}
		if body, err = readBody(br, body[:0], length, chunked); err != nil {
			return
		}
		reply := r.NotFound
		if chat {
			reply = r.JSON
			if containsAny(body, streamTrue) {
				reply = r.Stream
				if containsAny(body, usageTrue) {
					reply = r.StreamUsage
				}
			}
		}
		if _, err := c.Write(reply); err != nil || closing {
			return
		}
	}
}

func containsAny(b []byte, subs [][]byte) bool {
	for _, s := range subs {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

// readBody appends the request body to dst: length bytes, or the chunks of a chunked body.
func readBody(br *bufio.Reader, dst []byte, length int, chunked bool) ([]byte, error) {
	if !chunked {
		return readN(br, dst, length)
	}
	for {
		l, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		l = bytes.TrimRight(l, "\r\n")
		if i := bytes.IndexByte(l, ';'); i >= 0 {
			l = l[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(l)), 16, 31)
		if err != nil || len(dst)+int(n) > maxBody {
			return nil, errors.New("bad chunk")
		}
		if n == 0 {
			// trailers up to the empty line
			for {
				t, err := br.ReadSlice('\n')
				if err != nil {
					return nil, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return dst, nil
				}
			}
		}
		if dst, err = readN(br, dst, int(n)); err != nil {
			return nil, err
		}
		if _, err := br.Discard(2); err != nil {
			return nil, err
		}
	}
}

func readN(br *bufio.Reader, dst []byte, n int) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	_, err := io.ReadFull(br, dst[start:])
	return dst, err
}
