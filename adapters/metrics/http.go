package metrics

// Reasons of RequestRejected.
const (
	// RejectedClientsPerIP is a stream refused because its client address
	// had --max-clients-per-ip streams open.
	RejectedClientsPerIP = "clients_per_ip"
	// RejectedPublishRate is a POST /events over --publish-rate.
	RejectedPublishRate = "publish_rate"
	// RejectedBodyTimeout is a request whose body did not arrive in time.
	RejectedBodyTimeout = "body_timeout"
)

// RequestRejected counts a request refused to protect the service.
func (m *Metrics) RequestRejected(reason string) {
	if m != nil {
		m.rejectedRequests.WithLabelValues(reason).Inc()
	}
}
