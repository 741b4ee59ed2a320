package testredis

import "testing"

func TestStartKillRestart(t *testing.T) {
	s := StartServer(t)
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	s.Kill()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("ping after kill succeeded")
	}
	s.Restart()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	addr, stop := Start(t)
	if addr == s.Addr() {
		t.Fatalf("two servers share %s", addr)
	}
	stop()
	stop()
	if err := ping(addr); err == nil {
		t.Fatal("ping after stop succeeded")
	}
}
