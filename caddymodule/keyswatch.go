package caddymodule

import (
	"time"

	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
)

// watchKeysFile re-reads the keys file whenever its content changes, until the config's context
// ends. A file that cannot be read or parsed (deleted, unreadable, broken) keeps the last good
// key set in service; the trouble is logged once when it starts and once when it ends, not at
// every check. To revoke every key from the file, write it with an empty list ({"keys": []}).
func (g *Gateway) watchKeysFile(kf *policy.KeyFile) {
	defer logPanic(g.logger, "keys file watcher panicked")
	ticker := time.NewTicker(time.Duration(g.KeysFileInterval))
	defer ticker.Stop()
	var trouble string // the error of the last check, "" when it went well
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-ticker.C:
			trouble = g.reloadKeysFile(kf, trouble)
		}
	}
}

// reloadKeysFile loads the keys file once and swaps the key table if the content changed. It
// returns the check's error ("" for none), and logs and counts an error only when it differs
// from the previous check's (trouble).
func (g *Gateway) reloadKeysFile(kf *policy.KeyFile, trouble string) string {
	keys, changed, err := kf.Load()
	var table *policy.KeyTable
	if err == nil && changed {
		table, err = g.mergeFileKeys(keys)
	}
	if err != nil {
		if err.Error() != trouble {
			g.metrics.keysReloaded.WithLabelValues("error").Inc()
			g.logger.Error("keys file not reloaded; keeping the last good key set", zap.String("path", kf.Path), zap.Error(err))
		}
		return err.Error()
	}
	if trouble != "" && !changed {
		g.logger.Info("keys file readable again; its key set is unchanged", zap.String("path", kf.Path))
	}
	if changed {
		g.keys.Store(table)
		g.metrics.keysReloaded.WithLabelValues("ok").Inc()
		g.logger.Info("keys file reloaded", zap.String("path", kf.Path), zap.Int("keys", table.Len()))
	}
	return ""
}
