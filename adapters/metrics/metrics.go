// Package metrics defines the Prometheus metrics of statusbroadcaster in one
// place, so that names, labels and help texts stay consistent across the
// adapters that count them. A nil *Metrics is valid and counts nothing,
// which keeps tests and library users free of a registry they do not want.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "statusbroadcaster"

// Metrics holds every collector. Create it with New.
type Metrics struct {
	// Broadcaster (outbox).
	broadcast      *prometheus.CounterVec
	published      prometheus.Counter
	publishFailed  prometheus.Counter
	publishBatches prometheus.Counter
	dropped        *prometheus.CounterVec
	invalid        prometheus.Counter

	// Router and hub.
	badMessages       prometheus.Counter
	dispatched        prometheus.Counter
	delivered         prometheus.Counter
	coalesced         prometheus.Counter
	subscribersEnded  prometheus.Counter
	subscriptions     prometheus.Gauge
	openStreams       prometheus.Gauge
	streamDelay       prometheus.Histogram
	rejectedStreams   prometheus.Counter
	duplicateMessages prometheus.Counter
	offsetAnomalies   *prometheus.CounterVec

	// HTTP hardening.
	rejectedRequests *prometheus.CounterVec
}

// New creates the collectors and registers them with reg (when reg is not
// nil). queueDepth, when not nil, is read at scrape time for the outbox
// queue depth gauge.
func New(reg prometheus.Registerer, queueDepth func() float64) *Metrics {
	m := &Metrics{
		broadcast: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_broadcast_total",
			Help: "Events accepted by the StatusBroadcaster, by event type.",
		}, []string{"event"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_published_total",
			Help: "Events the outbox handed to the pub/sub successfully.",
		}),
		publishFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_failed_total",
			Help: "Events whose publish attempt failed (each attempt counts; failed events are retried).",
		}),
		publishBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "publish_batches_total",
			Help: "Successful publish calls of the outbox (each carries one or more events).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_dropped_total",
			Help: "Events the outbox gave up on, by reason (coalesced: superseded by a newer event of the same project; evicted: outbox full; closed: broadcast after close or not flushed before the close deadline; rejected: refused for good by the pub/sub, such as a record too large for the topic).",
		}, []string{"reason"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_invalid_total",
			Help: "Broadcast calls rejected because the project or error message was invalid.",
		}),
		badMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "bad_messages_total",
			Help: "Messages on the physical topic that were not valid events; logged and skipped.",
		}),
		duplicateMessages: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "duplicate_messages_total",
			Help: "Messages received again (a consumer restart re-reading an offset); skipped.",
		}),
		offsetAnomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "offset_anomalies_total",
			Help: "Kafka partitions whose offsets jumped, by reason (backwards: below what was dispatched, the topic recreated or truncated, tracking reset; log_start_passed: records deleted before they were read).",
		}, []string{"reason"}),
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_dispatched_total",
			Help: "Events received from the pub/sub by the router and fanned out.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_delivered_total",
			Help: "Event deliveries queued for subscribers (one per subscriber per event).",
		}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_coalesced_total",
			Help: "Queued deliveries replaced by a newer event of the same project because a subscriber fell behind.",
		}),
		subscribersEnded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "slow_subscribers_ended_total",
			Help: "Subscriptions ended because their queue was full even after coalescing.",
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "subscriptions",
			Help: "Open subscriptions (SSE streams and library inboxes).",
		}),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sse_open_streams",
			Help: "Open Server-Sent Events streams.",
		}),
		streamDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sse_delivery_delay_seconds",
			Help:    "Time from the hub's dispatch of a live event to the end of the stream write that carried it, for the oldest event of each write (snapshots and replays not counted): how long events wait for their streams' goroutines and sockets.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		rejectedStreams: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sse_rejected_streams_total",
			Help: "Stream requests refused with 503 because --max-clients streams were open.",
		}),
		rejectedRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "http_rejected_requests_total",
			Help: "Requests refused to protect the service, by reason (clients_per_ip: 429 for --max-clients-per-ip; publish_rate: 429 for --publish-rate; body_timeout: 408, the body did not arrive within --read-body-timeout).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.broadcast, m.published, m.publishFailed, m.publishBatches, m.dropped,
			m.invalid, m.badMessages, m.duplicateMessages, m.dispatched, m.delivered, m.coalesced,
			m.subscribersEnded, m.subscriptions, m.openStreams, m.rejectedStreams, m.rejectedRequests, m.streamDelay)
		reg.MustRegister(m.offsetAnomalies)
		if queueDepth != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Namespace: namespace, Name: "outbox_queue_depth",
				Help: "Events waiting in the outbox to be published.",
			}, queueDepth))
		}
	}
	return m
}

// StreamDelivered observes the delay of the oldest live event of a stream
// write: from its dispatch by the hub to the end of the write.
func (m *Metrics) StreamDelivered(delay time.Duration) {
	if m != nil {
		m.streamDelay.Observe(delay.Seconds())
	}
}

// Broadcast counts an accepted event of type eventType.
func (m *Metrics) Broadcast(eventType string) {
	if m != nil {
		m.broadcast.WithLabelValues(eventType).Inc()
	}
}

// Invalid counts a rejected broadcast call.
func (m *Metrics) Invalid() {
	if m != nil {
		m.invalid.Inc()
	}
}

// Published counts one successful publish call carrying n events.
func (m *Metrics) Published(n int) {
	if m != nil {
		m.published.Add(float64(n))
		m.publishBatches.Inc()
	}
}

// PublishFailed counts n events whose publish attempt failed.
func (m *Metrics) PublishFailed(n int) {
	if m != nil {
		m.publishFailed.Add(float64(n))
	}
}

// Dropped counts n events the outbox gave up on, for reason.
func (m *Metrics) Dropped(reason string, n int) {
	if m != nil && n > 0 {
		m.dropped.WithLabelValues(reason).Add(float64(n))
	}
}

// BadMessage counts a skipped message.
func (m *Metrics) BadMessage() {
	if m != nil {
		m.badMessages.Inc()
	}
}

// DuplicateMessage counts a skipped re-delivery.
func (m *Metrics) DuplicateMessage() {
	if m != nil {
		m.duplicateMessages.Inc()
	}
}

// OffsetAnomaly counts a partition whose offsets jumped: reason is
// "backwards" or "log_start_passed".
func (m *Metrics) OffsetAnomaly(reason string) {
	if m != nil {
		m.offsetAnomalies.WithLabelValues(reason).Inc()
	}
}

// EventDispatched counts an event fanned out by the hub.
func (m *Metrics) EventDispatched() {
	if m != nil {
		m.dispatched.Inc()
	}
}

// Delivered counts n deliveries queued for subscribers.
func (m *Metrics) Delivered(n int) {
	if m != nil {
		m.delivered.Add(float64(n))
	}
}

// Coalesced counts n deliveries replaced by newer ones.
func (m *Metrics) Coalesced(n int) {
	if m != nil && n > 0 {
		m.coalesced.Add(float64(n))
	}
}

// SubscriberDropped counts a subscription ended for being too slow.
func (m *Metrics) SubscriberDropped() {
	if m != nil {
		m.subscribersEnded.Inc()
	}
}

// SubscriptionsChanged moves the open subscriptions gauge by delta.
func (m *Metrics) SubscriptionsChanged(delta int) {
	if m != nil {
		m.subscriptions.Add(float64(delta))
	}
}

// StreamsChanged moves the open SSE streams gauge by delta.
func (m *Metrics) StreamsChanged(delta int) {
	if m != nil {
		m.openStreams.Add(float64(delta))
	}
}

// StreamRejected counts a stream refused for the client limit.
func (m *Metrics) StreamRejected() {
	if m != nil {
		m.rejectedStreams.Inc()
	}
}
