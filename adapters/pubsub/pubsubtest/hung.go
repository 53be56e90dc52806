package pubsubtest

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// HungBroker is a TCP listener that accepts connections, reads what it is
// sent and never answers: a broker that hangs, or a proxy in front of a
// dead one. A client waits on it until its own timeouts expire, which is
// what shutdown paths must not do.
type HungBroker struct {
	ln net.Listener
	wg sync.WaitGroup

	mu       sync.Mutex
	accepted int
	open     map[net.Conn]struct{}
}

// NewHungBroker starts a HungBroker on a free local port. It stops at the
// end of the test, closing the connections still open.
func NewHungBroker(t testing.TB) *HungBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &HungBroker{ln: ln, open: map[net.Conn]struct{}{}}
	h.wg.Go(h.accept)
	t.Cleanup(h.stop)
	return h
}

func (h *HungBroker) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.accepted++
		h.open[c] = struct{}{}
		h.mu.Unlock()
		h.wg.Go(func() {
			_, _ = io.Copy(io.Discard, c) // until the client closes it
			h.mu.Lock()
			delete(h.open, c)
			h.mu.Unlock()
			_ = c.Close()
		})
	}
}

// Addr returns the broker's "host:port".
func (h *HungBroker) Addr() string { return h.ln.Addr().String() }

// Accepted returns how many connections it has accepted.
func (h *HungBroker) Accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.accepted
}

// Open returns how many of them the client has not closed: a client that
// has stopped waiting on the broker leaves none open.
func (h *HungBroker) Open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.open)
}

func (h *HungBroker) stop() {
	_ = h.ln.Close()
	h.mu.Lock()
	for c := range h.open {
		_ = c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// SwallowProduce makes cluster take every produce request and never answer
// it — a broker that hangs in the middle of publishing — and returns a
// channel that receives when a produce request has been swallowed.
func SwallowProduce(cluster *kfake.Cluster) <-chan struct{} {
	produced := make(chan struct{}, 1)
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		select {
		case produced <- struct{}{}:
		default:
		}
		return nil, nil, true // swallowed: no answer, ever
	})
	return produced
}
