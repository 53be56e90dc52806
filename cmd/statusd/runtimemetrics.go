package main

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus/collectors"
)

// latencyRuntimeMetrics adds two runtime/metrics histograms to /metrics,
// the floors under the delivery latency: how long runnable goroutines wait
// for a CPU (go_sched_latencies_seconds: every hand-off between the POST
// handler, the outbox, the router, the hub and a stream waits there), and
// the garbage collector's stop-the-world pauses
// (go_sched_pauses_total_gc_seconds).
var latencyRuntimeMetrics = collectors.WithGoCollectorRuntimeMetrics(collectors.GoRuntimeMetricsRule{
	Matcher: regexp.MustCompile(`^/sched/(latencies|pauses/total/gc):seconds$`),
})
