package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
)

// Counters keeps named rows of integer fields that every instance adds to: the usage ledger's
// totals (per key, model and day) and the spend of budgets. An Add applies whole or not at
// all, so totals never hold half a request; several instances adding to one row lose nothing
// (Redis HINCRBY, a bbolt transaction).
type Counters interface {
	// Add applies every increment, all together.
	Add(ctx context.Context, incs []Increment) error
	// Scan returns the rows whose names lie in [from, to) in name order (to "" for no upper
	// bound), at most limit of them (0 for DefaultScanLimit).
	Scan(ctx context.Context, from, to string, limit int) ([]CounterRow, error)
}

// DefaultScanLimit is the most rows a Scan returns when its limit is 0.
const DefaultScanLimit = 100_000

// Increment adds By to one field of one row (creating both as needed).
type Increment struct {
	Row   string
	Field string
	By    int64
}

// CounterRow is one row of counters.
type CounterRow struct {
	Name   string
	Fields map[string]int64
}

func checkIncrements(incs []Increment) error {
	for _, in := range incs {
		if !validName(in.Row) || !validName(in.Field) {
			return fmt.Errorf("%w: counter %.40q/%.40q", ErrInvalidName, in.Row, in.Field)
		}
	}
	return nil
}

func scanLimit(n int) int {
	if n <= 0 || n > DefaultScanLimit {
		return DefaultScanLimit
	}
	return n
}

// countersBucket holds the counters of the bbolt file: <row>\x00<field> -> int64 (8 bytes).
var countersBucket = []byte("counters")

// Counters returns the file's counters.
func (b *Bolt) Counters() Counters { return boltCounters{b} }

type boltCounters struct{ b *Bolt }

func counterKey(row, field string) []byte {
	k := make([]byte, 0, len(row)+1+len(field))
	return append(append(append(k, row...), 0), field...)
}

// Add applies the increments in one transaction, synced before it returns.
func (c boltCounters) Add(_ context.Context, incs []Increment) error {
	if len(incs) == 0 {
		return nil
	}
	if err := checkIncrements(incs); err != nil {
		return err
	}
	return c.b.update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(countersBucket)
		if err != nil {
			return err
		}
		for _, in := range incs {
			k := counterKey(in.Row, in.Field)
			var v int64
			if old := bk.Get(k); len(old) == 8 {
				v = int64(binary.BigEndian.Uint64(old))
			}
			var buf [8]byte
			binary.BigEndian.PutUint64(buf[:], uint64(v+in.By))
			if err := bk.Put(k, buf[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Scan walks the rows in [from, to).
func (c boltCounters) Scan(_ context.Context, from, to string, limit int) ([]CounterRow, error) {
	limit = scanLimit(limit)
	var rows []CounterRow
	err := c.b.view(func(tx *bolt.Tx) error {
		bk := tx.Bucket(countersBucket)
		if bk == nil {
			return nil
		}
		cur := bk.Cursor()
		for k, v := cur.Seek([]byte(from)); k != nil; k, v = cur.Next() {
			i := bytes.IndexByte(k, 0)
			if i < 0 || len(v) != 8 {
				continue
			}
			row := string(k[:i])
			if to != "" && row >= to {
				break
			}
			if len(rows) == 0 || rows[len(rows)-1].Name != row {
				if len(rows) == limit {
					break
				}
				rows = append(rows, CounterRow{Name: row, Fields: map[string]int64{}})
			}
			rows[len(rows)-1].Fields[string(k[i+1:])] = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return rows, err
}

// Counters returns the counters kept in Redis:
//
//	<p>ctr:<row>    hash   field -> integer
//	<p>ctr-idx      zset   every row name at score 0, scanned by lex range
func (s *Redis) Counters() Counters { return redisCounters{s} }

type redisCounters struct{ s *Redis }

func (c redisCounters) rowKey(row string) string { return c.s.prefix + "ctr:" + esc(row) }

// Add applies the increments in one MULTI.
func (c redisCounters) Add(ctx context.Context, incs []Increment) error {
	if len(incs) == 0 {
		return nil
	}
	if err := checkIncrements(incs); err != nil {
		return err
	}
	idx := c.s.prefix + "ctr-idx"
	_, err := c.s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		last := ""
		for _, in := range incs {
			p.HIncrBy(ctx, c.rowKey(in.Row), in.Field, in.By)
			if in.Row != last {
				p.ZAddNX(ctx, idx, redis.Z{Member: in.Row})
				last = in.Row
			}
		}
		return nil
	})
	if err != nil {
		return fail("adding counters", err)
	}
	return nil
}

// Scan reads the index's lex range, then the rows in one pipeline.
func (c redisCounters) Scan(ctx context.Context, from, to string, limit int) ([]CounterRow, error) {
	limit = scanLimit(limit)
	max := "+"
	if to != "" {
		max = "(" + to
	}
	names, err := c.s.client.ZRangeByLex(ctx, c.s.prefix+"ctr-idx", &redis.ZRangeBy{Min: "[" + from, Max: max, Count: int64(limit)}).Result()
	if err != nil {
		return nil, fail("scanning counters", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(names))
	_, err = c.s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.HGetAll(ctx, c.rowKey(n))
		}
		return nil
	})
	if err != nil {
		return nil, fail("reading counters", err)
	}
	rows := make([]CounterRow, 0, len(names))
	for i, n := range names {
		m := cmds[i].Val()
		row := CounterRow{Name: n, Fields: make(map[string]int64, len(m))}
		for f, v := range m {
			var x int64
			if _, err := fmt.Sscan(v, &x); err == nil {
				row.Fields[f] = x
			}
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

// Interface guards
var (
	_ Counters = boltCounters{}
	_ Counters = redisCounters{}
)
