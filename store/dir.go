package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// tempPrefix starts the names of blobs being written. Valid blob names
// cannot start with a dot, so a temporary file is never opened as a blob.
const tempPrefix = ".tmp-"

// maxBlobName is the longest blob name accepted.
const maxBlobName = 200

// copyBufSize is the size of the buffers Write reads into.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// Dir keeps blobs as files in one directory. Several instances (or
// processes) may share the directory: every write is a temporary file
// renamed into place.
type Dir struct {
	path string
}

// NewDir returns the blobs of the directory at path, creating it (0700) if
// needed.
func NewDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("creating blob directory: %w", unavailable(err))
	}
	return &Dir{path: path}, nil
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// Write stores what r yields under name, atomically: the bytes go to a
// temporary file in the same directory, which is synced, renamed to name,
// and the directory synced. A failure at any step removes the temporary
// file. Errors of the file system are wrapped in ErrUnavailable.
func (d *Dir) Write(ctx context.Context, name string, r io.Reader, lim Limits) (BlobInfo, error) {
	if !validBlobName(name) {
		return BlobInfo{}, fmt.Errorf("%w: blob %.40q", ErrInvalidName, name)
	}
	f, err := os.CreateTemp(d.path, tempPrefix+name+"-*")
	if err != nil {
		return BlobInfo{}, fmt.Errorf("creating blob: %w", unavailable(err))
	}
	tmp := f.Name()
	info, err := copyCounting(ctx, f, r, lim)
	if err == nil {
		err = syncClose(f)
	} else {
		_ = f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(d.path, name))
		if err != nil {
			err = fmt.Errorf("renaming blob: %w", unavailable(err))
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return BlobInfo{}, err
	}
	if err := syncDir(d.path); err != nil {
		// The blob is complete but may not survive a crash: report the
		// failure and take it back so the caller does not record it.
		_ = os.Remove(filepath.Join(d.path, name))
		return BlobInfo{}, err
	}
	return info, nil
}

// copyCounting copies r to f, counting bytes and lines and enforcing lim.
func copyCounting(ctx context.Context, f *os.File, r io.Reader, lim Limits) (BlobInfo, error) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	var info BlobInfo
	var newlines int64
	for {
		if err := ctx.Err(); err != nil {
			return info, fmt.Errorf("writing blob: %w", err)
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			info.Size += int64(n)
			if lim.MaxBytes > 0 && info.Size > lim.MaxBytes {
				return info, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, lim.MaxBytes)
			}
			newlines += int64(bytes.Count(chunk, []byte{'\n'}))
			info.Lines = newlines
			if chunk[n-1] != '\n' {
				info.Lines++ // the last line so far has no newline yet
			}
			if lim.MaxLines > 0 && info.Lines > lim.MaxLines {
				return info, fmt.Errorf("%w: more than %d lines", ErrTooManyLines, lim.MaxLines)
			}
			if _, err := f.Write(chunk); err != nil {
				return info, fmt.Errorf("writing blob: %w", unavailable(err))
			}
		}
		if rerr == io.EOF {
			return info, nil
		}
		if rerr != nil {
			return info, fmt.Errorf("reading blob content: %w", rerr)
		}
	}
}

// syncClose flushes f to disk and closes it.
func syncClose(f *os.File) error {
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("syncing blob: %w", unavailable(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing blob: %w", unavailable(err))
	}
	return nil
}

// syncDir flushes the directory entry changes (the rename) to disk.
func syncDir(path string) error {
	dir, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("syncing blob directory: %w", unavailable(err))
	}
	err = dir.Sync()
	_ = dir.Close()
	if err != nil {
		return fmt.Errorf("syncing blob directory: %w", unavailable(err))
	}
	return nil
}

// Open returns the blob for reading, or ErrNotFound.
func (d *Dir) Open(ctx context.Context, name string) (Blob, error) {
	if !validBlobName(name) {
		return nil, ErrNotFound
	}
	f, err := os.Open(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("opening blob: %w", unavailable(err))
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("opening blob: %w", unavailable(err))
	}
	return &fileBlob{File: f, size: st.Size()}, nil
}

// Delete removes the blob, or returns ErrNotFound.
func (d *Dir) Delete(ctx context.Context, name string) error {
	if !validBlobName(name) {
		return ErrNotFound
	}
	err := os.Remove(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("deleting blob: %w", unavailable(err))
	}
	return nil
}

// Sweep removes the temporary files that writes interrupted by a crash left
// behind, once they are older than olderThan (longer than any upload lasts:
// the directory may be shared with instances still writing), and says how
// many it removed.
func (d *Dir) Sweep(ctx context.Context, olderThan time.Duration) (int, error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return 0, fmt.Errorf("reading blob directory: %w", unavailable(err))
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue // gone meanwhile, or perhaps still being written
		}
		if err := os.Remove(filepath.Join(d.path, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// fileBlob is an open blob file.
type fileBlob struct {
	*os.File
	size int64
}

// Size returns the blob's length in bytes.
func (b *fileBlob) Size() int64 { return b.size }

// validBlobName reports whether name can be a blob's file name: letters,
// digits, '-', '_' and '.', not starting with '.'.
func validBlobName(name string) bool {
	if name == "" || len(name) > maxBlobName || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// unavailable wraps a file system error in ErrUnavailable, keeping the
// cause (syscall.ENOSPC, ...) visible to errors.Is.
func unavailable(err error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Interface guards
var _ Blobs = (*Dir)(nil)
