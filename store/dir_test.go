package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func newDir(t *testing.T) *Dir {
	t.Helper()
	d, err := NewDir(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dirNames lists the directory's entries, temporary files included.
func dirNames(t *testing.T, d *Dir) []string {
	t.Helper()
	entries, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readBlob(t *testing.T, d *Dir, name string) []byte {
	t.Helper()
	b, err := d.Open(context.Background(), name)
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != b.Size() {
		t.Fatalf("read %d bytes, Size() = %d", len(got), b.Size())
	}
	return got
}

func TestDirWriteOpenDelete(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	content := "line one\nline two\nlast line, no newline"
	info, err := d.Write(ctx, "file-1", strings.NewReader(content), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info != (BlobInfo{Size: int64(len(content)), Lines: 3}) {
		t.Fatalf("info = %+v", info)
	}
	if got := readBlob(t, d, "file-1"); string(got) != content {
		t.Fatalf("content = %q", got)
	}

	// Range reads: ReadAt and Seek.
	b, err := d.Open(ctx, "file-1")
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 8)
	if _, err := b.ReadAt(part, 9); err != nil || string(part) != "line two" {
		t.Fatalf("ReadAt = %q, %v", part, err)
	}
	if _, err := b.Seek(-7, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(b); string(rest) != "newline" {
		t.Fatalf("after Seek = %q", rest)
	}
	_ = b.Close()

	// Replacing is atomic too; the new content wins.
	if _, err := d.Write(ctx, "file-1", strings.NewReader("v2\n"), Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, d, "file-1"); string(got) != "v2\n" {
		t.Fatalf("after replace = %q", got)
	}

	if err := d.Delete(ctx, "file-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Open(ctx, "file-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Delete: %v", err)
	}
	if err := d.Delete(ctx, "file-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete twice: %v", err)
	}
	if names := dirNames(t, d); len(names) != 0 {
		t.Fatalf("left in the directory: %v", names)
	}
}

func TestDirLineCount(t *testing.T) {
	d := newDir(t)
	for _, tc := range []struct {
		content string
		lines   int64
	}{
		{"", 0},
		{"a", 1},
		{"a\n", 1},
		{"a\nb", 2},
		{"\n", 1},
		{"\n\n", 2},
		{"a\r\nb\r\n", 2},
	} {
		info, err := d.Write(context.Background(), "f", strings.NewReader(tc.content), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Lines != tc.lines || info.Size != int64(len(tc.content)) {
			t.Errorf("%q: info = %+v, want %d lines", tc.content, info, tc.lines)
		}
	}
}

func TestDirLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		lim     Limits
		want    error // nil: accepted
	}{
		{"bytes at the limit", "12345", Limits{MaxBytes: 5}, nil},
		{"a byte over", "123456", Limits{MaxBytes: 5}, ErrTooLarge},
		{"lines at the limit", "a\nb\n", Limits{MaxLines: 2}, nil},
		{"lines at the limit, no final newline", "a\nb", Limits{MaxLines: 2}, nil},
		{"a line over", "a\nb\nc\n", Limits{MaxLines: 2}, ErrTooManyLines},
		{"a last line without newline counts", "a\nb\nc", Limits{MaxLines: 2}, ErrTooManyLines},
		{"a big file over the byte limit", strings.Repeat("x", 300_000), Limits{MaxBytes: 200_000}, ErrTooLarge},
		{"many lines over the line limit", strings.Repeat("{}\n", 50_001), Limits{MaxLines: 50_000}, ErrTooManyLines},
		{"both limits, lines crossed first", strings.Repeat("\n", 10), Limits{MaxBytes: 5, MaxLines: 3}, ErrTooManyLines},
		{"both limits, bytes crossed first", strings.Repeat("\n", 10), Limits{MaxBytes: 3, MaxLines: 5}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDir(t)
			// One byte per Read, so the limits are checked mid-stream too.
			r := io.Reader(strings.NewReader(tc.content))
			if len(tc.content) < 100 {
				r = &oneByteReader{r: r}
			}
			_, err := d.Write(context.Background(), "f", r, tc.lim)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got := readBlob(t, d, "f"); string(got) != tc.content {
					t.Fatalf("content = %q", got)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if names := dirNames(t, d); len(names) != 0 {
				t.Fatalf("left in the directory: %v", names)
			}
		})
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// failingReader yields n bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

func TestDirFailingReaderLeavesNothing(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	errClient := errors.New("client went away")
	_, err := d.Write(ctx, "f", &failingReader{n: 1 << 20, err: errClient}, Limits{})
	if !errors.Is(err, errClient) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Fatalf("a reader's failure is not the store's: %v", err)
	}
	if _, err := d.Open(ctx, "f"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after a failed write: %v", err)
	}
	// A failed replacement keeps the old blob whole.
	if _, err := d.Write(ctx, "f", strings.NewReader("old"), Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Write(ctx, "f", &failingReader{n: 100, err: errClient}, Limits{}); !errors.Is(err, errClient) {
		t.Fatalf("err = %v", err)
	}
	if got := readBlob(t, d, "f"); string(got) != "old" {
		t.Fatalf("after a failed replace = %q", got)
	}
	// A cancelled context stops the write the same way.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Write(cctx, "g", strings.NewReader("x"), Limits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v", err)
	}
	if names := dirNames(t, d); len(names) != 1 || names[0] != "f" {
		t.Fatalf("directory holds %v, want only f", names)
	}
}

// chunkedReader yields content in chunks, pausing between them, so that a
// write lasts long enough for readers to look at it mid-way.
type chunkedReader struct {
	content []byte
	chunk   int
	pause   time.Duration
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.content) == 0 {
		return 0, io.EOF
	}
	time.Sleep(c.pause)
	n := copy(p[:min(len(p), c.chunk)], c.content)
	c.content = c.content[n:]
	return n, nil
}

func TestDirReaderNeverSeesPartialBlob(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	v1 := bytes.Repeat([]byte("version one\n"), 40_000) // 480 KB
	v2 := bytes.Repeat([]byte("version two, longer\n"), 40_000)
	whole := map[[32]byte]string{sha256.Sum256(v1): "v1", sha256.Sum256(v2): "v2"}

	var done atomic.Bool
	var seen sync.Map
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for !done.Load() {
				b, err := d.Open(ctx, "f")
				if errors.Is(err, ErrNotFound) {
					seen.Store("missing", true)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				got, err := io.ReadAll(b)
				_ = b.Close()
				if err != nil {
					t.Error(err)
					return
				}
				v, ok := whole[sha256.Sum256(got)]
				if !ok || int64(len(got)) != b.Size() {
					t.Errorf("read a partial blob: %d bytes, Size() %d", len(got), b.Size())
					return
				}
				seen.Store(v, true)
			}
		})
	}
	// waitSeen waits until a reader has seen v, so that each write below
	// runs while the readers are looking.
	waitSeen := func(v string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, ok := seen.Load(v); ok {
				return
			}
		}
		t.Errorf("the readers never saw %s", v)
	}
	waitSeen("missing")
	for i, v := range [][]byte{v1, v2} {
		r := &chunkedReader{content: v, chunk: 32 << 10, pause: 2 * time.Millisecond}
		if _, err := d.Write(ctx, "f", r, Limits{}); err != nil {
			t.Fatal(err)
		}
		waitSeen([]string{"v1", "v2"}[i])
	}
	done.Store(true)
	wg.Wait()
}

func TestDirNames(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	for _, name := range []string{"", ".tmp-x", "../escape", "a/b", "a\\b", "sp ace", strings.Repeat("x", 201)} {
		if _, err := d.Write(ctx, name, strings.NewReader("x"), Limits{}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Write(%q): %v, want ErrInvalidName", name, err)
		}
		if _, err := d.Open(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q): %v, want ErrNotFound", name, err)
		}
		if err := d.Delete(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete(%q): %v, want ErrNotFound", name, err)
		}
	}
	if _, err := d.Write(ctx, "file-0189abc_DEF.jsonl", strings.NewReader("x"), Limits{}); err != nil {
		t.Fatalf("a valid name: %v", err)
	}
}

func TestDirUnavailable(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	if err := os.RemoveAll(d.Path()); err != nil {
		t.Fatal(err)
	}
	// The directory is gone (an unmounted share): the store is unavailable,
	// which is not the same as a missing blob.
	if _, err := d.Write(ctx, "f", strings.NewReader("x"), Limits{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Write: %v, want ErrUnavailable", err)
	}
	if _, err := d.Sweep(ctx, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Sweep: %v, want ErrUnavailable", err)
	}

	// A full disk keeps its cause visible: the API tells ENOSPC apart in logs.
	full := unavailable(&fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC})
	if !errors.Is(full, ErrUnavailable) || !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("unavailable(ENOSPC) = %v", full)
	}
}

func TestDirSweepRemovesStaleTemps(t *testing.T) {
	ctx := context.Background()
	d := newDir(t)
	if _, err := d.Write(ctx, "kept", strings.NewReader("x"), Limits{}); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(d.Path(), tempPrefix+"crashed-1")
	fresh := filepath.Join(d.Path(), tempPrefix+"uploading-2")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	n, err := d.Sweep(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	names := dirNames(t, d)
	if len(names) != 2 || names[0] != tempPrefix+"uploading-2" || names[1] != "kept" {
		t.Fatalf("after Sweep: %v", names)
	}
}
