package caddymodule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddyai/gateway/store"
)

// TestSweepDeletesBytesOfGoneFiles: the sweeper deletes the bytes of a file whose record is
// gone (expired or never finished) once its blob record is older than the grace, and keeps the
// bytes of live files and of uploads still in progress.
func TestSweepDeletesBytesOfGoneFiles(t *testing.T) {
	h := &backendHandle{dir: t.TempDir(), logger: zap.NewNop(), cancel: func() {}}
	t.Cleanup(func() { _ = h.Destruct() })
	h.sweepOnce(context.Background()) // not opened yet: nothing to do, nothing opened
	if objs, _ := h.opened(); objs != nil {
		t.Fatal("the sweeper opened the store")
	}
	objs, blobs, err := h.open()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, recent := time.Now().Add(-2*blobGrace), time.Now()
	put := func(id string, created time.Time, live bool) {
		t.Helper()
		if err := objs.Put(ctx, store.Record{Kind: kindFileBlob, Owner: blobOwner, ID: id, Data: appendBlobRecord(nil, "k", created)}); err != nil {
			t.Fatal(err)
		}
		if _, err := blobs.Write(ctx, id, strings.NewReader("{}\n"), store.Limits{}); err != nil {
			t.Fatal(err)
		}
		if live {
			if err := objs.Put(ctx, store.Record{Kind: kindFile, Owner: "k", ID: id, Data: []byte(`{"id":"` + id + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	put("file-gone", old, false)
	put("file-live", old, true)
	put("file-uploading", recent, false)
	h.sweepOnce(ctx)
	for id, want := range map[string]bool{"file-gone": false, "file-live": true, "file-uploading": true} {
		b, err := blobs.Open(ctx, id)
		if got := err == nil; got != want {
			t.Errorf("%s: bytes kept %v, want %v (%v)", id, got, want, err)
		}
		if err == nil {
			_ = b.Close()
		}
	}
	if _, err := objs.Get(ctx, kindFileBlob, blobOwner, "file-gone"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the blob record of a gone file stays: %v", err)
	}
	_ = h.Destruct()
	if _, _, err := h.open(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("open after Destruct: %v", err)
	}
}
