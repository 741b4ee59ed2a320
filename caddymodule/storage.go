package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/tidwall/gjson"
	"go.uber.org/zap"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// StorageConfig says where the gateway keeps what outlives a request: uploaded files (their
// metadata and bytes) and, later, batches.
type StorageConfig struct {
	// Dir is the directory of the embedded store: the bbolt file store.db (metadata) and the
	// files/ directory (file bytes, every write a temporary file synced and renamed). With store
	// redis only files/ is used, and every instance must mount the same directory. Default: the
	// ai_gateway directory in Caddy's data directory (caddy.AppDataDir()).
	Dir string `json:"dir,omitempty"`
	// Store is where metadata lives: "bolt" (default; the bbolt file in Dir, nothing to install,
	// one process at a time) or "redis" (shared by every instance that uses the same Redis and
	// the same Dir).
	Store string `json:"store,omitempty"`
	// RedisURL is the Redis URL for store redis, e.g. redis://:password@redis:6379/0. May be a
	// placeholder such as {env.REDIS_URL}.
	RedisURL string `json:"redis_url,omitempty"`
	// RedisPrefix namespaces the store's Redis keys. Default: aigw:store:.
	RedisPrefix string `json:"redis_prefix,omitempty"`
	// BatchLease is how long an instance holds a batch line it runs (renewed every third of it
	// while the line runs): after a crash, the line is run again once its lease has ended, by
	// the next start or another instance. At least 1s. Default: 30s.
	BatchLease caddy.Duration `json:"batch_lease,omitempty"`
}

// FilesConfig bounds the Files API (/v1/files).
type FilesConfig struct {
	// MaxBytes is the largest file accepted, in bytes (the Caddyfile takes sizes such as
	// 200MB); a larger upload gets 413 and nothing is kept. Default: 200 MB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// MaxLines is the most lines a purpose=batch file may have; more gets 400. Default: 50000.
	MaxLines int64 `json:"max_lines,omitempty"`
	// BatchExpiry is how long a purpose=batch file is kept when the upload sets no
	// expires_after. Default: 720h (30 days). Files of other purposes never expire unless the
	// upload says so.
	BatchExpiry caddy.Duration `json:"batch_expiry,omitempty"`
}

const (
	defaultFileMaxBytes    = 200_000_000
	defaultFileMaxLines    = 50_000
	defaultFileBatchExpiry = 30 * 24 * time.Hour
)

// backendPool holds the store across config reloads, keyed by its settings: bbolt lets one
// handle at a time open its file, so a reload must reuse the one it has.
var backendPool = caddy.NewUsagePool()

// provisionStorage sets the storage and files defaults and takes the store from the pool. It
// opens nothing: the store opens on first use (caddy validate never touches the data).
func (g *Gateway) provisionStorage(repl *caddy.Replacer) error {
	if g.Storage == nil {
		g.Storage = new(StorageConfig)
	}
	if g.Files == nil {
		g.Files = new(FilesConfig)
	}
	st, fc := g.Storage, g.Files
	if fc.MaxBytes == 0 {
		fc.MaxBytes = defaultFileMaxBytes
	}
	if fc.MaxLines == 0 {
		fc.MaxLines = defaultFileMaxLines
	}
	if fc.BatchExpiry == 0 {
		fc.BatchExpiry = caddy.Duration(defaultFileBatchExpiry)
	}
	if st.Store == "" {
		st.Store = "bolt"
	}
	dir := st.Dir
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "ai_gateway")
	}
	dir, err := repl.ReplaceOrErr(dir, true, true)
	if err != nil {
		return fmt.Errorf("storage: resolving dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("storage: dir: %w", err)
	}
	h := &backendHandle{dir: dir}
	var key string
	switch st.Store {
	case "bolt":
		if st.RedisURL != "" || st.RedisPrefix != "" {
			return errors.New("storage: redis_url and redis_prefix apply to store redis only")
		}
		key = "bolt|" + dir
	case "redis":
		u, err := repl.ReplaceOrErr(st.RedisURL, true, true)
		if err != nil {
			return fmt.Errorf("storage: resolving redis url: %w", err)
		}
		if h.redisOpts, err = redis.ParseURL(u); err != nil {
			return fmt.Errorf("storage: parsing redis url: %w", errors.New(redactURLError(err)))
		}
		h.redisOpts.DialTimeout = 2 * time.Second
		h.redisOpts.ReadTimeout = 2 * time.Second
		h.redisOpts.WriteTimeout = 2 * time.Second
		h.prefix = st.RedisPrefix
		key = "redis|" + u + "|" + st.RedisPrefix + "|" + dir
	default:
		return fmt.Errorf("storage: store must be bolt or redis, got %q", st.Store)
	}
	val, _, err := backendPool.LoadOrNew(key, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		h.logger = caddy.Log().Named("ai_gateway.store")
		go h.sweep(ctx, sweepInterval)
		h.runner = h.newRunner(caddy.Log().Named("ai_gateway.batch"))
		go h.runner.run(ctx)
		return h, nil
	})
	if err != nil {
		return err
	}
	g.backendKey, g.backend = key, val.(*backendHandle)
	g.backend.lease.Store(int64(st.BatchLease)) // the latest config's lease, for the lines claimed from now on
	return nil
}

// validateStorage checks the files limits.
func (g *Gateway) validateStorage() error {
	fc := g.Files
	switch {
	case fc.MaxBytes < 0:
		return errors.New("files: max_bytes must not be negative")
	case fc.MaxLines < 0:
		return errors.New("files: max_lines must not be negative")
	case fc.BatchExpiry < 0:
		return errors.New("files: batch_expiry must not be negative")
	case g.Storage.BatchLease != 0 && time.Duration(g.Storage.BatchLease) < minBatchLease:
		return fmt.Errorf("storage: batch_lease must be at least %s", minBatchLease)
	}
	return nil
}

// runnerStopWait bounds how long closing the store waits for the batch runner to put down the
// lines it holds.
const runnerStopWait = 5 * time.Second

// sweepInterval is how often expired files are deleted.
const sweepInterval = time.Minute

// backendHandle is the store shared by the configs that name the same settings. It opens on
// first use and is closed by Destruct when no config uses it any more.
type backendHandle struct {
	dir       string
	redisOpts *redis.Options // nil for bolt
	prefix    string
	cancel    context.CancelFunc
	logger    *zap.Logger
	runner    *batchRunner
	lease     atomic.Int64     // the batch line lease of the config provisioned last, ns; 0: the runner's default
	acct      handleAccounting // the usage ledger, budgets and admin keys of this store

	mu      sync.Mutex
	closed  bool
	objects store.Backend
	blobs   *store.Dir
	client  *redis.Client
}

// errStoreClosed is what a request still running on a config whose store was replaced gets.
var errStoreClosed = fmt.Errorf("%w: the store was closed by a config change", store.ErrUnavailable)

// open returns the store, opening it on first use. A failure (a locked or unwritable file) is
// not kept: the next call tries again.
func (h *backendHandle) open() (store.Backend, *store.Dir, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, errStoreClosed
	}
	if h.objects != nil {
		return h.objects, h.blobs, nil
	}
	blobs, err := store.NewDir(filepath.Join(h.dir, "files"))
	if err != nil {
		return nil, nil, err
	}
	if h.redisOpts != nil {
		h.client = redis.NewClient(h.redisOpts) // connects lazily
		h.objects = store.NewRedis(h.client, store.RedisOptions{Prefix: h.prefix})
	} else {
		b, err := store.OpenBolt(filepath.Join(h.dir, "store.db"), store.BoltOptions{})
		if err != nil {
			return nil, nil, err
		}
		h.objects = b
	}
	h.blobs = blobs
	return h.objects, h.blobs, nil
}

// opened returns the store if it is open, else nils.
func (h *backendHandle) opened() (store.Backend, *store.Dir) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil
	}
	return h.objects, h.blobs
}

// sweep deletes expired files every interval until the handle is destroyed. It sweeps only a
// store some request opened, so a config that never serves files never touches the data
// directory (and caddy validate never does).
func (h *backendHandle) sweep(ctx context.Context, every time.Duration) {
	defer logPanic(h.logger, "store sweeper panicked")
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.sweepOnce(ctx)
		}
	}
}

// The kinds of the store's records the Files API writes. A file's record is under its owner;
// its blob record is under blobOwner, so the sweeper can find the bytes of files that expired.
const (
	kindFile     = "file"
	kindFileBlob = "file_blob"
	blobOwner    = "gateway"
)

// blobGrace is how old a blob record must be before the sweeper takes a blob whose file record
// does not exist: an upload puts the blob record first and the file record last.
const blobGrace = time.Hour

// sweepOnce deletes expired records, the blobs of files that are gone and the temporary files
// of interrupted uploads.
func (h *backendHandle) sweepOnce(ctx context.Context) {
	objs, blobs := h.opened()
	if objs == nil {
		return
	}
	if _, err := objs.Sweep(ctx); err != nil {
		h.logger.Error("sweeping expired records", zap.Error(err))
	}
	cutoff := time.Now().Add(-blobGrace).Unix()
	n := 0
	for after := ""; ; {
		page, err := objs.List(ctx, kindFileBlob, blobOwner, store.ListOptions{After: after, Limit: 1000, Order: store.OrderAsc})
		if err != nil {
			h.logger.Error("listing file blobs", zap.Error(err))
			break
		}
		for _, rec := range page.Records {
			after = rec.ID
			owner, created := blobRecordOf(rec.Data)
			if created > cutoff {
				continue
			}
			if _, err := objs.Get(ctx, blobKind(rec.ID), owner, blobParent(rec.ID)); !errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err := blobs.Delete(ctx, rec.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				h.logger.Error("deleting the bytes of an expired file", zap.String("file_id", rec.ID), zap.Error(err))
				continue
			}
			if err := objs.Delete(ctx, kindFileBlob, blobOwner, rec.ID); err == nil {
				n++
			}
		}
		if !page.HasMore {
			break
		}
	}
	if n > 0 {
		h.logger.Info("deleted expired files", zap.Int("files", n))
	}
	if _, err := blobs.Sweep(ctx, blobGrace); err != nil {
		h.logger.Error("sweeping interrupted uploads", zap.Error(err))
	}
}

// appendBlobRecord appends the data of a blob record: {"owner","created_at"}.
func appendBlobRecord(dst []byte, owner string, created time.Time) []byte {
	dst = append(dst, `{"owner":`...)
	dst = wire.AppendString(dst, owner)
	dst = append(dst, `,"created_at":`...)
	dst = strconv.AppendInt(dst, created.Unix(), 10)
	return append(dst, '}')
}

func blobRecordOf(data []byte) (owner string, created int64) {
	r := gjson.ParseBytes(data)
	return r.Get("owner").String(), r.Get("created_at").Int()
}

// Destruct stops the sweeper and closes the store once no config uses it.
func (h *backendHandle) Destruct() error {
	h.cancel()
	if h.runner != nil {
		h.runner.stop(runnerStopWait)
	}
	h.stopAccounting()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	var errs []error
	if h.objects != nil {
		errs = append(errs, h.objects.Close())
	}
	if h.client != nil {
		errs = append(errs, h.client.Close())
	}
	h.objects, h.blobs, h.client = nil, nil, nil
	return errors.Join(errs...)
}

// minBatchLease is the shortest batch_lease: a line's lease is renewed every third of it.
const minBatchLease = time.Second

// currentLease is the lease a batch line is claimed and renewed on: the store's configured
// batch_lease, else the runner's default.
func (r *batchRunner) currentLease() time.Duration {
	if d := time.Duration(r.h.lease.Load()); d > 0 {
		return d
	}
	return r.lease
}

// boltRunner is the name of the batch runner of a bolt store, the same in every process.
const boltRunner = "bolt"

// newRunner is the store's batch runner. A bolt file is held by one process at a time, so the
// holds its runner takes in batch records (ending a batch, filling the queue) can only be its
// own or those of a process gone: its runner goes by one name across restarts, and a start
// after a crash takes up a close or an enqueueing cut short at once instead of waiting out a
// dead process's hold (five minutes for a close). With Redis every process has its own name.
func (h *backendHandle) newRunner(logger *zap.Logger) *batchRunner {
	r := newBatchRunner(h, logger)
	if h.redisOpts == nil {
		r.consumer = boltRunner
	}
	return r
}
