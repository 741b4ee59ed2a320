package caddymodule_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/caddyai/gateway/internal/wiretest"
	"github.com/caddyai/gateway/policy"
	"github.com/caddyai/gateway/simulator"
)

// filesSetup runs a gateway with its store in a temporary directory and returns the port and the
// Caddyfile (to reload it).
func filesSetup(t *testing.T) (port int, caddyfile string) {
	t.Helper()
	up := newUpstream(t, simulator.Config{Models: []string{"demo-llama"}})
	port = freePort(t)
	caddyfile = globalOptions + fmt.Sprintf(`
:%d {
	ai_gateway {
		key %s {
			id all
		}
		key %s {
			id other
		}
		model demo-llama {
			upstream %s
		}
		storage {
			dir %s
		}
		files {
			max_bytes 64KiB
			max_lines 100
		}
	}
	reverse_proxy {
		dynamic ai_gateway
	}
}
`, port, policy.FormatHash(policy.HashSecret(secretAll)), policy.FormatHash(policy.HashSecret(secretQwen)), up.addr(), t.TempDir())
	startCaddy(t, caddyfile)
	return port, caddyfile
}

func filesClient(port int, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url(port, "/v1/")), option.WithAPIKey(key), option.WithMaxRetries(0))
}

const batchJSONL = `{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[{"role":"user","content":"hi"}]}}
{"custom_id":"r2","method":"POST","url":"/v1/chat/completions","body":{"model":"demo-llama","messages":[{"role":"user","content":"yo"}]}}
`

func uploadBatch(t *testing.T, c openai.Client, name, content string) *openai.FileObject {
	t.Helper()
	f, err := c.Files.New(context.Background(), openai.FileNewParams{
		File:    openai.File(strings.NewReader(content), name, "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		t.Fatalf("uploading %s: %v", name, err)
	}
	return f
}

// wantAPIError checks an openai-go error's status and code.
func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want *openai.Error %d, got %T %v", status, err, err)
	}
	if apiErr.StatusCode != status || (code != "" && apiErr.Code != code) {
		t.Fatalf("got %d %q (%s), want %d %q", apiErr.StatusCode, apiErr.Code, apiErr.Message, status, code)
	}
}

func TestFilesSDK(t *testing.T) {
	port, caddyfile := filesSetup(t)
	ctx := context.Background()
	c := filesClient(port, secretAll)

	f := uploadBatch(t, c, "input.jsonl", batchJSONL)
	wiretest.ValidateNullAsAbsent(t, "OpenAIFile", []byte(f.RawJSON()))
	if !strings.HasPrefix(f.ID, "file-") || f.Bytes != int64(len(batchJSONL)) || f.Filename != "input.jsonl" ||
		f.Purpose != "batch" || f.Status != "processed" || f.ExpiresAt != f.CreatedAt+30*24*3600 {
		t.Errorf("uploaded %s", f.RawJSON())
	}

	t.Run("get", func(t *testing.T) {
		got, err := c.Files.Get(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		wiretest.ValidateNullAsAbsent(t, "OpenAIFile", []byte(got.RawJSON()))
		if got.RawJSON() != f.RawJSON() {
			t.Errorf("get %s, uploaded %s", got.RawJSON(), f.RawJSON())
		}
	})

	t.Run("content", func(t *testing.T) {
		resp, err := c.Files.Content(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != batchJSONL || resp.Header.Get("Content-Type") != "application/octet-stream" ||
			resp.Header.Get("Content-Length") != fmt.Sprint(len(batchJSONL)) {
			t.Errorf("content %q, headers %v", b, resp.Header)
		}
	})

	t.Run("range", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/files/"+f.ID+"/content"), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		req.Header.Set("Accept", "application/json") // ignored
		req.Header.Set("Range", "bytes=2-11")
		resp, b := doRequest(t, req)
		if resp.StatusCode != http.StatusPartialContent || string(b) != batchJSONL[2:12] ||
			resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 2-11/%d", len(batchJSONL)) {
			t.Errorf("range: %d %q %v", resp.StatusCode, b, resp.Header)
		}
	})

	t.Run("expires_after", func(t *testing.T) {
		g, err := c.Files.New(ctx, openai.FileNewParams{
			File:         openai.File(strings.NewReader(batchJSONL), "short.jsonl", "application/jsonl"),
			Purpose:      openai.FilePurposeBatch,
			ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 7200},
		})
		if err != nil {
			t.Fatal(err)
		}
		if g.ExpiresAt != g.CreatedAt+7200 {
			t.Errorf("expires_at %d, created_at %d", g.ExpiresAt, g.CreatedAt)
		}
		_, err = c.Files.New(ctx, openai.FileNewParams{
			File:         openai.File(strings.NewReader(batchJSONL), "short.jsonl", "application/jsonl"),
			Purpose:      openai.FilePurposeBatch,
			ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 60},
		})
		wantAPIError(t, err, 400, "invalid_value")
	})

	t.Run("fine-tune has no default expiry", func(t *testing.T) {
		g, err := c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader("{}\n"), "train.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune})
		if err != nil {
			t.Fatal(err)
		}
		wiretest.ValidateNullAsAbsent(t, "OpenAIFile", []byte(g.RawJSON()))
		if !strings.Contains(g.RawJSON(), `"expires_at":null`) || g.Purpose != "fine-tune" {
			t.Errorf("fine-tune file %s", g.RawJSON())
		}
	})

	t.Run("refusals", func(t *testing.T) {
		_, err := c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader(batchJSONL), "a.jsonl", "application/jsonl"), Purpose: openai.FilePurposeAssistants})
		wantAPIError(t, err, 400, "invalid_value")
		_, err = c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader("nonsense"), "a.jsonl", "application/jsonl"), Purpose: "nonsense"})
		wantAPIError(t, err, 400, "invalid_value")
		big := strings.Repeat(`{"custom_id":"x"}`+"\n", 65<<10/18+1)
		_, err = c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader(big), "big.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
		wantAPIError(t, err, 413, "file_too_large")
		_, err = c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader(strings.Repeat("{}\n", 101)), "long.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
		wantAPIError(t, err, 400, "too_many_lines")
		_, err = c.Files.New(ctx, openai.FileNewParams{
			File: openai.File(strings.NewReader("{}\nnot json\n"), "bad.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
		wantAPIError(t, err, 400, "invalid_file")
		_, err = c.Files.Get(ctx, "file-nope")
		wantAPIError(t, err, 404, "")
	})

	t.Run("another key sees nothing", func(t *testing.T) {
		o := filesClient(port, secretQwen)
		page, err := o.Files.List(ctx, openai.FileListParams{})
		if err != nil {
			t.Fatal(err)
		}
		// an empty page names no ids: null, which the spec's required strings do not foresee
		if page.RawJSON() != `{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}` {
			t.Errorf("other key lists %s", page.RawJSON())
		}
		_, err = o.Files.Get(ctx, f.ID)
		wantAPIError(t, err, 404, "")
		_, err = o.Files.Content(ctx, f.ID)
		wantAPIError(t, err, 404, "")
		_, err = o.Files.Delete(ctx, f.ID)
		wantAPIError(t, err, 404, "")
		if _, err := c.Files.Get(ctx, f.ID); err != nil {
			t.Errorf("the owner lost the file after another key's delete: %v", err)
		}
	})

	t.Run("reload keeps the files", func(t *testing.T) {
		loadCaddy(t, caddyfile) // the same storage: the bbolt handle is reused, not opened twice
		got, err := c.Files.Get(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != f.ID {
			t.Errorf("after reload: %s", got.RawJSON())
		}
	})

	t.Run("delete", func(t *testing.T) {
		del, err := c.Files.Delete(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		wiretest.Validate(t, "DeleteFileResponse", []byte(del.RawJSON()))
		if del.ID != f.ID || !del.Deleted {
			t.Errorf("delete %s", del.RawJSON())
		}
		_, err = c.Files.Get(ctx, f.ID)
		wantAPIError(t, err, 404, "")
		_, err = c.Files.Content(ctx, f.ID)
		wantAPIError(t, err, 404, "")
		_, err = c.Files.Delete(ctx, f.ID)
		wantAPIError(t, err, 404, "")
	})
}

func TestFilesListPaging(t *testing.T) {
	port, _ := filesSetup(t)
	ctx := context.Background()
	c := filesClient(port, secretAll)
	var ids []string
	for i := range 5 {
		ids = append(ids, uploadBatch(t, c, fmt.Sprintf("f%d.jsonl", i), batchJSONL).ID)
	}
	if _, err := c.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader("{}\n"), "t.jsonl", "application/jsonl"), Purpose: openai.FilePurposeFineTune}); err != nil {
		t.Fatal(err)
	}

	page, err := c.Files.List(ctx, openai.FileListParams{Limit: openai.Int(2), Purpose: openai.String("batch")})
	if err != nil {
		t.Fatal(err)
	}
	wiretest.ValidateNullAsAbsent(t, "ListFilesResponse", []byte(page.RawJSON()))
	if len(page.Data) != 2 || !page.HasMore || page.Data[0].ID != ids[4] {
		t.Fatalf("first page %s", page.RawJSON())
	}

	var got []string
	iter := c.Files.ListAutoPaging(ctx, openai.FileListParams{Limit: openai.Int(2), Purpose: openai.String("batch"),
		Order: openai.FileListParamsOrderAsc})
	for iter.Next() {
		got = append(got, iter.Current().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("auto-paging asc: %v, want %v", got, ids)
	}

	all, err := c.Files.List(ctx, openai.FileListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Data) != 6 || all.HasMore {
		t.Errorf("default list: %d files, has_more %v", len(all.Data), all.HasMore)
	}
	for _, q := range []string{"limit=0", "limit=10001", "order=up"} {
		req, _ := http.NewRequest(http.MethodGet, url(port, "/v1/files?"+q), nil)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		resp, b := doRequest(t, req)
		if resp.StatusCode != 400 || !strings.Contains(string(b), "invalid_value") {
			t.Errorf("%s: %d %s", q, resp.StatusCode, b)
		}
	}
}

// TestFilesAnthropicBeta: the Anthropic SDK's files beta on /v1/files gets an Anthropic 404, not
// an OpenAI answer it would misread.
func TestFilesAnthropicBeta(t *testing.T) {
	port, _ := filesSetup(t)
	ctx := context.Background()
	c := anthropic.NewClient(aoption.WithBaseURL(url(port, "/")), aoption.WithAPIKey(secretAll), aoption.WithMaxRetries(0))
	_, err := c.Beta.Files.List(ctx, anthropic.BetaFileListParams{})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("want *anthropic.Error, got %T %v", err, err)
	}
	if apiErr.StatusCode != 404 || string(apiErr.Type()) != "not_found_error" {
		t.Errorf("beta list: %d %s", apiErr.StatusCode, apiErr.RawJSON())
	}
	_, err = c.Beta.Files.Upload(ctx, anthropic.BetaFileUploadParams{File: strings.NewReader("hello")})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || string(apiErr.Type()) != "not_found_error" {
		t.Errorf("beta upload: %v", err)
	}
	// a bad key still gets the Anthropic envelope
	bad := anthropic.NewClient(aoption.WithBaseURL(url(port, "/")), aoption.WithAPIKey("sk-nope"), aoption.WithMaxRetries(0))
	_, err = bad.Beta.Files.List(ctx, anthropic.BetaFileListParams{})
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || string(apiErr.Type()) != "authentication_error" {
		t.Errorf("beta list with a bad key: %v", err)
	}
}

// TestFilesUploadRaw: uploads the SDKs would not send: purpose before the file (checked before
// any byte is stored), a missing part, not multipart.
func TestFilesUploadRaw(t *testing.T) {
	port, _ := filesSetup(t)
	post := func(fields [][2]string, file string) (*http.Response, []byte) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		for _, f := range fields {
			_ = mw.WriteField(f[0], f[1])
		}
		if file != "" {
			fw, _ := mw.CreateFormFile("file", "x.jsonl")
			_, _ = fw.Write([]byte(file))
		}
		_ = mw.Close()
		req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/files"), &buf)
		req.Header.Set("Authorization", "Bearer "+secretAll)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		return doRequest(t, req)
	}
	for _, tc := range []struct {
		name   string
		fields [][2]string
		file   string
		status int
		want   string
	}{
		{"purpose first", [][2]string{{"purpose", "batch"}}, batchJSONL, 200, `"purpose":"batch"`},
		{"bad purpose first", [][2]string{{"purpose", "vision"}}, batchJSONL, 400, `"param":"purpose"`},
		{"no file", [][2]string{{"purpose", "batch"}}, "", 400, `"param":"file"`},
		{"no purpose", nil, batchJSONL, 400, `"param":"purpose"`},
		{"anchor without seconds", [][2]string{{"purpose", "batch"}, {"expires_after[anchor]", "created_at"}}, batchJSONL, 400, "expires_after.seconds"},
		{"bad anchor", [][2]string{{"purpose", "batch"}, {"expires_after[anchor]", "last_used"}, {"expires_after[seconds]", "3600"}}, batchJSONL, 400, "expires_after.anchor"},
		{"not utf-8", [][2]string{{"purpose", "batch"}}, "{\"a\":\"\xff\"}\n", 400, "invalid_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := post(tc.fields, tc.file)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
				t.Errorf("%d %s", resp.StatusCode, b)
			}
			if tc.status == 200 {
				wiretest.ValidateNullAsAbsent(t, "OpenAIFile", b)
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPost, url(port, "/v1/files"), strings.NewReader(`{"purpose":"batch"}`))
	req.Header.Set("Authorization", "Bearer "+secretAll)
	req.Header.Set("Content-Type", "application/json")
	if resp, b := doRequest(t, req); resp.StatusCode != 400 || !strings.Contains(string(b), "multipart/form-data") {
		t.Errorf("JSON upload: %d %s", resp.StatusCode, b)
	}
	// nothing refused was kept
	req, _ = http.NewRequest(http.MethodGet, url(port, "/v1/files"), nil)
	req.Header.Set("Authorization", "Bearer "+secretAll)
	if _, b := doRequest(t, req); strings.Count(string(b), `"object":"file"`) != 1 {
		t.Errorf("after the refusals: %s", b)
	}
}

// TestFilesStoreUnavailable: a store that cannot open (its directory is a file) answers 503
// with Retry-After, in the envelope, and the gateway keeps serving everything else.
func TestFilesStoreUnavailable(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startCore(t, "storage {\n\t\t\tdir "+blocker+"\n\t\t}")
	c := s.openai(secretAll)
	_, err := c.Files.List(context.Background(), openai.FileListParams{})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != "store_unavailable" ||
		apiErr.Response.Header.Get("Retry-After") != "5" || !strings.Contains(apiErr.Message, "retry after 5 seconds") {
		t.Fatalf("want 503 store_unavailable with Retry-After, got %v", err)
	}
	if _, err := c.Models.List(context.Background()); err != nil {
		t.Errorf("models with the store down: %v", err)
	}
}
