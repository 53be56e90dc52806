package kafka_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Sarama's metrics library starts one ticker goroutine per process,
		// on first use, and never stops it: a singleton, not a leak per Bus.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		// A Sarama producer whose circuit breaker opened (broker down, or
		// its connections cut by Close) leaves a goroutine sleeping out the
		// breaker's 10s timeout, even after it is closed; it then ends
		// (breaker.timer: time.Sleep, then a state change). Its top frame
		// is time.Sleep, hence IgnoreAnyFunction.
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	)
}
