package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"
)

// errConnectionsCut is what a dial returns once the dialer has been cut.
var errConnectionsCut = errors.New("kafka: connections cut: the client is closing")

// dialer makes the connections of the Sarama clients of one configuration
// and can cut them all at once.
//
// Sarama's requests honour no context. A request to a broker that accepts
// connections but never answers waits out Net.ReadTimeout, and Sarama then
// retries — tens of seconds in all — while its caller holds locks (ours,
// Sarama's, Watermill's router's). Closing a connection under a pending
// request makes it fail at once, and a dialer that refuses new connections
// makes the retries fail at once too. cut does both: the in-flight work ends
// at once instead of after Sarama's timeouts: once cut, the metadata and
// produce retries of the configuration it is set on (useDialer) back off
// for no time, since nothing can answer them any more.
//
// The connections handed to Sarama are the *net.TCPConn themselves, not
// wrappers: Sarama checks the socket of a *net.TCPConn for a pending error
// before it reuses a connection.
type dialer struct {
	net    net.Dialer
	ctx    context.Context // cancelled by cut: aborts dials in progress
	cancel context.CancelFunc

	mu    sync.Mutex
	isCut bool
	conns map[net.Conn]struct{}
}

// useDialer makes conf connect through a new dialer with conf's settings
// and returns it. Sarama's only hook for a custom dialer is its proxy
// setting; it logs "using proxy" (to sarama.Logger, silent by default) on
// each connection. Call it once conf's retry settings are final.
func useDialer(conf *sarama.Config) *dialer {
	d := &dialer{
		net:   net.Dialer{Timeout: conf.Net.DialTimeout, KeepAlive: conf.Net.KeepAlive, LocalAddr: conf.Net.LocalAddr},
		conns: map[net.Conn]struct{}{},
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.install(conf)
	return d
}

// install makes conf, a configuration with the same network settings as
// the one d was made for, connect through d too: cut then cuts the
// connections of both.
func (d *dialer) install(conf *sarama.Config) {
	conf.Net.Proxy.Enable = true
	conf.Net.Proxy.Dialer = d
	conf.Metadata.Retry.BackoffFunc = d.noBackoffOnceCut(conf.Metadata.Retry.Backoff, conf.Metadata.Retry.BackoffFunc)
	conf.Producer.Retry.BackoffFunc = d.noBackoffOnceCut(conf.Producer.Retry.Backoff, conf.Producer.Retry.BackoffFunc)
	// Not Consumer.Retry: a partition consumer retries forever (Max 0),
	// and would spin until it is closed.
}

// noBackoffOnceCut returns a Sarama backoff function: backoff (or what
// next says) until the dialer is cut, then none.
func (d *dialer) noBackoffOnceCut(backoff time.Duration, next func(retries, maxRetries int) time.Duration) func(int, int) time.Duration {
	return func(retries, maxRetries int) time.Duration {
		switch {
		case d.ctx.Err() != nil:
			return 0
		case next != nil:
			return next(retries, maxRetries)
		default:
			return backoff
		}
	}
}

// Dial connects to address, unless the dialer has been cut.
func (d *dialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.net.DialContext(d.ctx, network, address)
	if err != nil {
		if d.ctx.Err() != nil {
			return nil, errConnectionsCut
		}
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.isCut {
		_ = c.Close()
		return nil, errConnectionsCut
	}
	// Forget the connections Sarama has closed, so that a long outage
	// with many reconnections does not pile them up.
	for old := range d.conns {
		if closed(old) {
			delete(d.conns, old)
		}
	}
	d.conns[c] = struct{}{}
	return c, nil
}

// cut closes every connection the dialer made and fails every later dial.
// Idempotent.
func (d *dialer) cut() {
	d.cancel()
	d.mu.Lock()
	conns := d.conns
	d.conns, d.isCut = nil, true
	d.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// closed reports whether c has been closed (when it can tell).
func closed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	return raw.Control(func(uintptr) {}) != nil
}
