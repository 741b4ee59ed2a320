package caddymodule

import (
	"time"

	"go.uber.org/zap"

	"github.com/caddyai/gateway/policy"
)

// watchKeysFile re-reads the keys file whenever its content changes, until the config's context
// ends. A file that cannot be read or parsed keeps the last good key set in service.
func (g *Gateway) watchKeysFile(kf *policy.KeyFile) {
	defer logPanic(g.logger, "keys file watcher panicked")
	ticker := time.NewTicker(time.Duration(g.KeysFileInterval))
	defer ticker.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-ticker.C:
			g.reloadKeysFile(kf)
		}
	}
}

// reloadKeysFile loads the keys file once and swaps the key table if the content changed.
func (g *Gateway) reloadKeysFile(kf *policy.KeyFile) {
	keys, changed, err := kf.Load()
	if err != nil {
		g.metrics.keysReloaded.WithLabelValues("error").Inc()
		g.logger.Error("keys file not reloaded; keeping the last good key set", zap.String("path", kf.Path), zap.Error(err))
		return
	}
	if !changed {
		return
	}
	table, err := g.mergeFileKeys(keys)
	if err != nil {
		g.metrics.keysReloaded.WithLabelValues("error").Inc()
		g.logger.Error("keys file not reloaded; keeping the last good key set", zap.String("path", kf.Path), zap.Error(err))
		return
	}
	g.keys.Store(table)
	g.metrics.keysReloaded.WithLabelValues("ok").Inc()
	g.logger.Info("keys file reloaded", zap.String("path", kf.Path), zap.Int("keys", table.Len()))
}
