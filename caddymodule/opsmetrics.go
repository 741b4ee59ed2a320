package caddymodule

type opsMetrics struct{}
