package caddymodule

import (
	"context"
	"errors"
	"strconv"

	"github.com/caddyai/gateway/internal/wire"
	"github.com/caddyai/gateway/store"
)

// The steps the Files, Batches and Message Batches APIs share over the records a key owns.
// Each API keeps its own types and wording; these carry the mechanics.

// pageLimit reads a list call's limit query value: def when it is empty, ok false when it is not
// an integer from 1 to max.
func pageLimit(v string, def, max int) (n int, ok bool) {
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= 1 && n <= max
}

// decodePage decodes every record of a listed page with decode; a record that does not read
// is an error.
func decodePage[T any](recs []store.Record, decode func([]byte) (T, error)) ([]T, error) {
	out := make([]T, 0, len(recs))
	for _, rec := range recs {
		v, err := decode(rec.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// errRefusedChange ends an updateOwned whose change was refused.
var errRefusedChange = errors.New("change refused")

// updateOwned applies change to one of owner's records of kind with a compare and swap, so it
// cannot undo a transition another writer (the runner, another instance) made meanwhile.
// change alters the decoded object, or returns the refusal to answer with, which leaves the
// record as it was (refused). err is the store's (store.ErrNotFound for another key's record).
func updateOwned[T any](ctx context.Context, objs store.Objects, kind, owner, id string,
	decode func([]byte) (T, batchRun, error), encode func(T, batchRun) []byte,
	change func(T) *wire.Error) (obj T, refused *wire.Error, err error) {
	_, err = objs.Update(ctx, kind, owner, id, func(old []byte) ([]byte, error) {
		v, run, err := decode(old)
		if err != nil {
			return nil, err
		}
		if refused = change(v); refused != nil {
			return nil, errRefusedChange
		}
		obj = v
		return encode(v, run), nil
	})
	if errors.Is(err, errRefusedChange) {
		return obj, refused, nil
	}
	return obj, nil, err
}
