package cache

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix starts every key the RedisStore writes when no prefix is given.
const DefaultRedisPrefix = "caddyai:cache:"

// RedisStore is a Store in Redis, shared by every gateway instance using the same server and
// prefix. Entries are written with SET ... PX (go-redis picks EX for whole seconds), so Redis
// expires them; values are a compact binary envelope (see encodeEntry). The client is the
// caller's: RedisStore never closes it.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisStore returns a store keeping entries under prefix + hex(key)
// (DefaultRedisPrefix when prefix is empty).
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{client: client, prefix: prefix}
}

func (s *RedisStore) redisKey(key *[32]byte) string {
	b := make([]byte, len(s.prefix)+hex.EncodedLen(len(key)))
	n := copy(b, s.prefix)
	hex.Encode(b[n:], key[:])
	return string(b)
}

// Get returns the entry stored under key. A value that does not decode is reported as an error
// (and is a miss for the caller), never served.
func (s *RedisStore) Get(ctx context.Context, key [32]byte) (*Entry, bool, error) {
	b, err := s.client.Get(ctx, s.redisKey(&key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading cache entry from redis: %w", err)
	}
	e, err := decodeEntry(b)
	if err != nil {
		return nil, false, fmt.Errorf("reading cache entry from redis: %w", err)
	}
	return e, true, nil
}

// Set stores e under key for ttl (DefaultTTL when ttl <= 0).
func (s *RedisStore) Set(ctx context.Context, key [32]byte, e *Entry, ttl time.Duration) error {
	if e == nil {
		return errors.New("storing cache entry: nil entry")
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if ttl < time.Millisecond {
		ttl = time.Millisecond
	}
	if err := s.client.Set(ctx, s.redisKey(&key), encodeEntry(nil, e), ttl).Err(); err != nil {
		return fmt.Errorf("storing cache entry in redis: %w", err)
	}
	return nil
}

// The envelope: a magic byte and version, then varints (created in Unix nanoseconds, prompt,
// completion, total and cached tokens, flags), the model name (length-prefixed) and the body (the
// rest).
const (
	envelopeMagic   = 0xCA
	envelopeVersion = 1

	flagEstimated = 1 << 0
	flagMarked    = 1 << 1
)

var errEnvelope = errors.New("malformed cache envelope")

// encodeEntry appends the binary envelope of e to dst.
func encodeEntry(dst []byte, e *Entry) []byte {
	dst = append(dst, envelopeMagic, envelopeVersion)
	var created int64
	if !e.Created.IsZero() {
		created = e.Created.UnixNano()
	}
	dst = binary.AppendVarint(dst, created)
	dst = binary.AppendVarint(dst, e.Usage.PromptTokens)
	dst = binary.AppendVarint(dst, e.Usage.CompletionTokens)
	dst = binary.AppendVarint(dst, e.Usage.TotalTokens)
	dst = binary.AppendVarint(dst, e.Usage.CachedTokens)
	var flags uint64
	if e.Usage.Estimated {
		flags |= flagEstimated
	}
	if e.Marked {
		flags |= flagMarked
	}
	dst = binary.AppendUvarint(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(e.Model)))
	dst = append(dst, e.Model...)
	return append(dst, e.Body...)
}

// decodeEntry parses an envelope. The entry's body aliases b.
func decodeEntry(b []byte) (*Entry, error) {
	if len(b) < 2 || b[0] != envelopeMagic {
		return nil, errEnvelope
	}
	if b[1] != envelopeVersion {
		return nil, fmt.Errorf("%w: version %d", errEnvelope, b[1])
	}
	b = b[2:]
	var vals [5]int64
	for i := range vals {
		v, n := binary.Varint(b)
		if n <= 0 {
			return nil, errEnvelope
		}
		vals[i], b = v, b[n:]
	}
	flags, n := binary.Uvarint(b)
	if n <= 0 {
		return nil, errEnvelope
	}
	b = b[n:]
	ml, n := binary.Uvarint(b)
	if n <= 0 || ml > uint64(len(b)-n) {
		return nil, errEnvelope
	}
	b = b[n:]
	e := &Entry{
		Model: string(b[:ml]),
		Body:  b[ml:len(b):len(b)],
		Usage: wire.Usage{
			PromptTokens:     vals[1],
			CompletionTokens: vals[2],
			TotalTokens:      vals[3],
			CachedTokens:     vals[4],
			Estimated:        flags&flagEstimated != 0,
		},
		Marked: flags&flagMarked != 0,
	}
	if vals[0] != 0 {
		e.Created = time.Unix(0, vals[0])
	}
	return e, nil
}
