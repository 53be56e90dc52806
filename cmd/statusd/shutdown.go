package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// drainShare is the part of --shutdown-timeout the HTTP drain may take;
// the pub/sub's flush gets the rest, so at least 1-drainShare of it.
const drainShare = 0.5

// forwarderShare is the point of --shutdown-timeout by which the outbox
// forwarder (--database-url) must have stopped; the pub/sub's flush gets
// the rest.
const forwarderShare = 0.75

// shutdown stops srv, then closes bus, within total, each with its own
// share: the HTTP drain (streams end at once; requests in flight finish)
// gets at most drainShare of total, and whatever it leaves goes to the
// outbox's flush, which so gets at least the rest, whatever the clients
// do. A client that holds its request open past the drain's share (one
// that stalls in the middle of its POST body) has its connection closed:
// no 202 was sent for that request, so nothing it sent was accepted. Then
// everything the outbox holds is flushed until the end of total.
// It logs "stopped", or "unclean shutdown" with what the pub/sub could not
// deliver.
//
// metricsSrv (--metrics-addr; may be nil) drains with srv. stopForwarding
// (--database-url; may be nil) stops the outbox forwarder before the
// pub/sub closes, by forwarderShare of total at the latest: what it has
// not forwarded stays committed in the database for the next start.
func shutdown(srv, metricsSrv *http.Server, stopForwarding func() error, bus *pubsub.Bus, total time.Duration, logger *slog.Logger) {
	start := time.Now()
	drain := time.Duration(float64(total) * drainShare)
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), drain)
	defer cancelDrain()
	if err := srv.Shutdown(drainCtx); err != nil {
		logger.Warn("HTTP drain took its share of the shutdown timeout: closing the connections still open",
			"share", drain, "error", err)
		if err := srv.Close(); err != nil {
			logger.Warn("closing the HTTP connections", "error", err)
		}
	}
	if metricsSrv != nil {
		if err := metricsSrv.Shutdown(drainCtx); err != nil {
			_ = metricsSrv.Close()
		}
	}
	unclean := false
	if stopForwarding != nil {
		// The forwarder waits on the database (its last acknowledgement, a
		// prune): bounded by its own share, so that a slow or unreachable
		// database cannot eat the outbox's flush. What it has not
		// acknowledged stays in the database and is forwarded again at the
		// next start (at least once).
		stopped := make(chan error, 1)
		go func() { stopped <- stopForwarding() }()
		select {
		case err := <-stopped:
			if err != nil {
				logger.Error("unclean shutdown", "error", err)
				unclean = true
			}
		case <-time.After(time.Until(start.Add(time.Duration(float64(total) * forwarderShare)))):
			logger.Error("unclean shutdown: the outbox forwarder did not stop within its share of the shutdown timeout; what it had not acknowledged is forwarded again at the next start",
				"share", time.Duration(float64(total)*forwarderShare))
			unclean = true
		}
	}
	flushCtx, cancelFlush := context.WithDeadline(context.Background(), start.Add(total))
	defer cancelFlush()
	if err := bus.Close(flushCtx); err != nil {
		logger.Error("unclean shutdown", "error", fmt.Errorf("pub/sub close: %w", err))
		return
	}
	if !unclean {
		logger.Info("stopped", "after", time.Since(start).Round(time.Millisecond))
	}
}
