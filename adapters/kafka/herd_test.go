package kafka_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// herdClient is one projects:* client of the herd.
type herdClient struct {
	lastID         string
	bytes, entries int
}

// drain takes everything s has until its backlog is done and nothing is
// queued, adding to the client's counts.
func (c *herdClient) drain(s *fanout.Subscription, until time.Time) bool {
	var batch []*fanout.Entry
	for time.Now().Before(until) {
		batch = s.Take(batch[:0])
		for _, e := range batch {
			c.bytes += len(e.Data) + len(e.ID)
			c.entries++
			c.lastID = e.ID
		}
		if len(batch) == 0 && !s.InBacklog() {
			return true
		}
	}
	return false
}

// readUntilDone reads s until it ends (its gateway stopped).
func (c *herdClient) readUntilDone(s *fanout.Subscription) {
	var batch []*fanout.Entry
	for {
		select {
		case <-s.Ready():
		case <-s.Done():
			return
		}
		batch = s.Take(batch[:0])
		for _, e := range batch {
			c.lastID = e.ID
		}
	}
}

// The herd (STATUSBROADCASTER_HERD=1; figures in BENCHMARKS.md): clients
// of projects:* on gateway A over many projects, A stops, and they all
// reconnect to gateway B at once with their ids while events keep flowing;
// the same run with resume disabled (no id: the snapshot) for comparison.
// It reports bytes and events per client, the time until every client is
// live, and the latency of live events to clients that stayed on B.
func TestKafkaResumeHerd(t *testing.T) {
	if os.Getenv("STATUSBROADCASTER_HERD") == "" {
		t.Skip("a measurement: set STATUSBROADCASTER_HERD=1 (see BENCHMARKS.md)")
	}
	clients, projects := 1_000, 10_000
	if n, err := strconv.Atoi(os.Getenv("STATUSBROADCASTER_HERD_CLIENTS")); err == nil {
		clients = n
	}
	for _, resume := range []bool{true, false} {
		t.Run(fmt.Sprintf("resume=%t", resume), func(t *testing.T) {
			cluster := startKafka(t)
			brokers := cluster.ListenAddrs()
			producer := newKafkaBus(t, brokers, pubsub.Config{OutboxCapacity: 2 * projects}, withClient(kafka.Config{}, "producer"))
			a := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "gateway-a"))
			b := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "gateway-b"))
			awaitReady(t, producer, a, b)
			ids := make([]string, projects)
			for i := range ids {
				ids[i] = fmt.Sprintf("herd-%05d", i)
				require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(ids[i], 1)))
			}
			awaitLatest(t, a, ids[projects-1:], 1)
			awaitLatest(t, b, ids[projects-1:], 1)
			require.Eventually(t, func() bool { return len(a.LatestAll()) == projects && len(b.LatestAll()) == projects },
				60*time.Second, 50*time.Millisecond)

			// Clients that stay on B and measure the latency of live events.
			var latencies []time.Duration
			var latMu sync.Mutex
			stay := make([]*fanout.Subscription, 20)
			for i := range stay {
				s, err := b.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}})
				require.NoError(t, err)
				stay[i] = s
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, s := range stay {
				wg.Go(func() {
					defer s.Close()
					var batch []*fanout.Entry
					for {
						select {
						case <-stop:
							return
						case <-s.Ready():
						}
						batch = s.Take(batch[:0])
						now := time.Now()
						for _, e := range batch {
							sent, err := time.Parse(time.RFC3339Nano, e.Event().Project.Name[len("live-"):])
							if err == nil {
								latMu.Lock()
								latencies = append(latencies, now.Sub(sent))
								latMu.Unlock()
							}
						}
					}
				})
			}
			// Events keep flowing: 500 a second.
			var flowing atomic.Int64
			wg.Go(func() {
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					p := pubsubtest.Project(ids[n%projects], 2)
					p.Name = "live-" + time.Now().Format(time.RFC3339Nano)
					if producer.BroadcastProjectUpdate(p) == nil {
						flowing.Add(1)
					}
				}
			})
			// The herd: each client reads A until A stops, then reconnects
			// to B at once, with its id (resume) or without (snapshot).
			herd := make([]*herdClient, clients)
			var onA, herdDone sync.WaitGroup
			var resumed atomic.Int64
			var slowest atomic.Int64 // ns from the end of A's stream to live on B
			onA.Add(clients)
			for i := range herd {
				c := &herdClient{}
				herd[i] = c
				herdDone.Go(func() {
					s, err := a.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true})
					if err != nil {
						onA.Done()
						t.Error(err)
						return
					}
					c.drain(s, time.Now().Add(2*time.Minute))
					onA.Done()
					c.readUntilDone(s)
					ended := time.Now()
					c.bytes, c.entries = 0, 0
					opts := fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true}
					if resume {
						opts.LastEventID = c.lastID
					}
					sb, err := b.Subscribe(opts)
					if err != nil {
						t.Error(err)
						return
					}
					defer sb.Close()
					if sb.Resumed() {
						resumed.Add(1)
					}
					if !c.drain(sb, time.Now().Add(2*time.Minute)) {
						t.Error("a client did not catch up")
					}
					took := int64(time.Since(ended))
					for {
						old := slowest.Load()
						if took <= old || slowest.CompareAndSwap(old, took) {
							break
						}
					}
				})
			}
			onA.Wait()
			latMu.Lock()
			latencies = latencies[:0]
			latMu.Unlock()
			time.Sleep(2 * time.Second) // live events flow to A's clients
			latMu.Lock()
			baseline := slices.Clone(latencies)
			latencies = latencies[:0]
			latMu.Unlock()
			slices.Sort(baseline)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, a.Close(ctx)) // A stops; its clients reconnect to B
			herdDone.Wait()
			allLive := time.Since(start)
			close(stop)
			wg.Wait()

			var bytes, entries int
			for _, c := range herd {
				bytes += c.bytes
				entries += c.entries
			}
			latMu.Lock()
			slices.Sort(latencies)
			p50, p99 := percentile(latencies, 0.50), percentile(latencies, 0.99)
			latMu.Unlock()
			t.Logf("resume=%t: %d clients over %d projects: resumed %d; per client %d bytes, %.1f events; every client live %s after A began to stop (slowest client %s from its stream's end); "+
				"live events to %d staying clients before the herd (2 s): %d, latency p50 %s p99 %s; "+
				"during the herd: %d, latency p50 %s p99 %s; %d events flowed",
				resume, clients, projects, resumed.Load(), bytes/clients, float64(entries)/float64(clients), allLive.Round(time.Millisecond), time.Duration(slowest.Load()).Round(time.Millisecond),
				len(stay), len(baseline), percentile(baseline, 0.50), percentile(baseline, 0.99), len(latencies), p50, p99, flowing.Load())
			if resume {
				require.EqualValues(t, clients, resumed.Load(), "every client resumed")
			}
		})
	}
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))].Round(10 * time.Microsecond)
}

// The start-up cost of FillHistory (STATUSBROADCASTER_HERD=1; figures in
// BENCHMARKS.md): a gateway that fills its history with the topic's last
// 10,000 records, against one that fills none, same run: the time to
// ready and the heap it holds once ready.
func TestKafkaFillHistoryCost(t *testing.T) {
	if os.Getenv("STATUSBROADCASTER_HERD") == "" {
		t.Skip("a measurement: set STATUSBROADCASTER_HERD=1 (see BENCHMARKS.md)")
	}
	const records = 10_000
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	producer := newKafkaBus(t, brokers, pubsub.Config{OutboxCapacity: records}, withClient(kafka.Config{}, "producer"))
	watcher := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "watcher"))
	awaitReady(t, producer, watcher)
	ids := make([]string, records)
	for i := range ids {
		ids[i] = fmt.Sprintf("cost-%05d", i)
		require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(ids[i], 1)))
	}
	require.Eventually(t, func() bool { return len(watcher.LatestAll()) == records }, 60*time.Second, 50*time.Millisecond)
	for _, fill := range []int{0, records} {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		g := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{FillHistory: fill}, fmt.Sprintf("fill-%d", fill)))
		require.Eventually(t, func() bool { return g.Ready(context.Background()) == nil }, 60*time.Second, time.Millisecond)
		took := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		t.Logf("FillHistory=%d: ready after %s, %d projects cached, heap +%.1f MiB",
			fill, took.Round(time.Millisecond), len(g.LatestAll()), float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, g.Close(ctx))
		cancel()
	}
}
