package routing_test

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyai/gateway/routing"
)

func ExampleTracker() {
	tr := routing.NewTracker(routing.TrackerOptions{})
	upstreams := []string{"10.0.0.1:8000", "10.0.0.2:8000"}

	// A long request is in flight on the first upstream.
	release := tr.Acquire(upstreams[0], 3000)
	defer release()

	i := tr.Pick(upstreams, nil)
	done := tr.Acquire(upstreams[i], 250) // prompt + max_tokens of the new request
	defer done()
	fmt.Println(upstreams[i])
	// Output: 10.0.0.2:8000
}

func ExampleAdmission() {
	gate := routing.NewAdmission(1, 0, 30*time.Second)
	release, err := gate.Acquire(context.Background(), 0)
	if err != nil {
		panic(err)
	}
	defer release()

	// The only slot is taken and there is no queue: refused.
	_, err = gate.Acquire(context.Background(), 0)
	if reason, ok := routing.RefusalReason(err); ok {
		fmt.Println(reason, gate.RetryAfter())
	}
	// Output: queue_full 30s
}
