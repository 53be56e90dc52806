package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestOffsetTrackerSkipsOffsetsAlreadyDispatched(t *testing.T) {
	tr := newOffsetTracker()
	steps := []struct {
		partition int32
		offset    int64
		seen      bool
	}{
		{0, 5, false}, // the first record of a partition, wherever it starts
		{0, 6, false},
		{1, 0, false}, // partitions are independent
		{0, 6, true},  // read again after a restart
		{0, 5, true},
		{0, 9, false}, // gaps (compaction, other records) are fine
		{0, 7, true},  // behind the highest offset dispatched
		{1, 0, true},
		{1, 1, false},
	}
	for i, s := range steps {
		assert.Equal(t, s.seen, tr.seenAt(s.partition, s.offset), "step %d: partition %d offset %d", i, s.partition, s.offset)
	}
	assert.False(t, tr.seen(message.NewMessage("x", nil)), "a message without a Kafka position is never a duplicate")
}

// Offsets below what was dispatched are a repeat while the partition's log
// still reaches past them, and a log that went backwards (a recreated or
// truncated topic) otherwise: then the tracking starts again there.
func TestOffsetTrackerNoticesOffsetsGoingBackwards(t *testing.T) {
	tr := newOffsetTracker()
	newest, asked := int64(10), 0
	var err error
	tr.newest = func(int32) (int64, error) { asked++; return newest, err }
	var resets []string
	tr.wentBackwards = func(partition int32, offset, dispatched, newest int64) {
		resets = append(resets, fmt.Sprintf("%d:%d<=%d/%d", partition, offset, dispatched, newest))
	}
	for o := range int64(10) {
		require.False(t, tr.seenAt(0, o))
	}
	assert.True(t, tr.seenAt(0, 3), "a repeat: the log still ends at 10")
	assert.True(t, tr.seenAt(0, 4), "a repeat, and the answer is reused")
	assert.Equal(t, 1, asked)

	tr.verified = map[int32]verification{} // later on: the topic was recreated, 2 records so far
	newest = 2
	assert.False(t, tr.seenAt(0, 0), "the log went backwards: delivered")
	assert.Equal(t, []string{"0:0<=9/2"}, resets)
	assert.False(t, tr.seenAt(0, 1), "and the partition goes on from there")
	assert.True(t, tr.seenAt(0, 1))

	tr.verified = map[int32]verification{}
	err = fmt.Errorf("no broker")
	assert.True(t, tr.seenAt(0, 0), "cannot tell: skipped as a repeat")
	assert.Len(t, resets, 1)
}

// Which produce errors drop a record for good, and which are retried.
func TestPermanentProduceErrors(t *testing.T) {
	for _, err := range []error{
		sarama.ErrMessageSizeTooLarge, sarama.ErrMessageSetSizeTooLarge, sarama.ErrInvalidRecord,
		sarama.ErrInvalidTimestamp, sarama.ErrPolicyViolation, sarama.ErrTopicAuthorizationFailed,
		sarama.ErrInvalidTopic, sarama.ErrUnsupportedForMessageFormat,
		sarama.ConfigurationError("Attempt to produce message larger than configured Producer.MaxMessageBytes: 1100748 > 1048576"),
		fmt.Errorf("wrapped: %w", sarama.ErrPolicyViolation),
	} {
		assert.True(t, permanent(err), "%v is permanent", err)
	}
	for _, err := range []error{
		sarama.ErrNotEnoughReplicas, sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut,
		sarama.ErrUnknown, sarama.ErrOutOfBrokers, sarama.ErrBrokerNotAvailable, sarama.ErrClusterAuthorizationFailed,
		sarama.ErrOutOfOrderSequenceNumber, fmt.Errorf("connection reset"),
	} {
		assert.False(t, permanent(err), "%v may pass: retried", err)
	}
}

// A gap in a partition's offsets makes the tracker check the log start (at
// most once a second): past what it expected, records were deleted before
// they were read.
func TestOffsetTrackerNoticesTheLogStartPassingWhatWasRead(t *testing.T) {
	tr := newOffsetTracker()
	oldest, asked := int64(0), 0
	tr.oldest = func(int32) (int64, error) { asked++; return oldest, nil }
	var passed []string
	tr.logStartPassed = func(partition int32, expected, oldest, offset int64) {
		passed = append(passed, fmt.Sprintf("%d:%d/%d/%d", partition, expected, oldest, offset))
	}
	require.False(t, tr.seenAt(0, 0))
	require.False(t, tr.seenAt(0, 1))
	require.False(t, tr.seenAt(0, 5), "a gap (compaction): delivered")
	assert.Equal(t, 1, asked)
	assert.Empty(t, passed, "the log still starts before the gap")
	require.False(t, tr.seenAt(0, 9))
	assert.Equal(t, 1, asked, "at most one question a second")

	tr.gapChecked = map[int32]time.Time{} // later on: retention deleted records 10 to 49 unread
	oldest = 50
	require.False(t, tr.seenAt(0, 50))
	assert.Equal(t, []string{"0:10/50/50"}, passed)
	require.False(t, tr.seenAt(0, 51), "no gap: no question")
	assert.Equal(t, 2, asked)
}

func TestLenientUnmarshalerNeverFails(t *testing.T) {
	for _, rec := range []*sarama.ConsumerMessage{
		{Topic: "t", Partition: 2, Offset: 7, Value: []byte("\x00\xffnot json")},
		{Topic: "t", Partition: 0, Offset: 1},
		{Topic: "t", Partition: 0, Offset: 2, Value: []byte(`{}`), Headers: []*sarama.RecordHeader{{Key: []byte(HeaderCEID), Value: []byte("ce-1")}}},
	} {
		msg, err := lenientUnmarshaler{}.Unmarshal(rec)
		require.NoError(t, err)
		assert.Equal(t, []byte(rec.Value), []byte(msg.Payload))
		_, _, err = codec.FromMessage(msg)
		assert.ErrorIs(t, err, codec.ErrBadMessage, "the Bus handler rejects it")
		if len(rec.Headers) > 0 {
			assert.Equal(t, "ce-1", msg.UUID, "a foreign record is named by its CloudEvents id")
		} else {
			assert.Equal(t, fmt.Sprintf("t/%d/%d", rec.Partition, rec.Offset), msg.UUID, "or by its position")
		}
	}
}

func testEvent(t testing.TB, id string, n int) *message.Message {
	t.Helper()
	ts := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ev, err := domain.NewProjectUpdated(domain.Project{
		ID: id, Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
		InsertedAt: ts, UpdatedAt: ts.Add(time.Duration(n) * time.Millisecond),
	})
	require.NoError(t, err)
	msg, err := codec.NewMessage(ev)
	require.NoError(t, err)
	return msg
}

func TestMarshalerSetsKeyAndHeaders(t *testing.T) {
	msg := testEvent(t, "p-1", 1)
	rec, err := newMarshaler().Marshal(pubsub.DefaultTopic, msg)
	require.NoError(t, err)
	key, err := rec.Key.Encode()
	require.NoError(t, err)
	assert.Equal(t, "p-1", string(key), "key = project id")
	value, err := rec.Value.Encode()
	require.NoError(t, err)
	assert.Equal(t, []byte(msg.Payload), value, "value = the envelope JSON")
	headers := map[string]string{}
	for _, h := range rec.Headers {
		headers[string(h.Key)] = string(h.Value)
	}
	assert.Equal(t, "project_updated", headers[codec.MetadataEventType])
	assert.Equal(t, "p-1", headers[codec.MetadataProjectID])
	assert.Equal(t, "projects:p-1", headers[codec.MetadataTopic])
	assert.Equal(t, codec.SchemaVersion, headers[codec.MetadataSchemaVersion])
	assert.Equal(t, "1.0", headers[HeaderCESpecVersion])
	assert.Equal(t, msg.UUID, headers[HeaderCEID])
	assert.Equal(t, CESource, headers[HeaderCESource])
	assert.Equal(t, "statusbroadcaster.project_updated", headers[HeaderCEType])
	assert.Equal(t, "p-1", headers[HeaderCESubject])
	assert.Equal(t, "application/json", headers[HeaderContentType])
	_, err = time.Parse(time.RFC3339Nano, headers[HeaderCETime])
	assert.NoError(t, err)

	_, err = newMarshaler().Marshal(pubsub.DefaultTopic, message.NewMessage("x", []byte("{}")))
	assert.Error(t, err, "a message without project id cannot be keyed")
}

// ReadTopic reads n records of topic from its start. It is exported for
// the package's external tests (test builds only).
func ReadTopic(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "got %d of %d records", len(recs), n)
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}

func TestBatchPublisherRetrySendsOnlyWhatWasNotAcknowledged(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cluster.Close()
	kcfg := Config{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	require.NoError(t, kcfg.Validate())
	attached := make(chan struct{})
	close(attached)
	pub := newBatchPublisher(kcfg.Brokers, kcfg.sarama(roleProducer), newMarshaler(), attached, slog.New(slog.DiscardHandler))
	defer func() { require.NoError(t, pub.Close()) }()

	// Three waves: [a0 b0], [a1 b1], [a2]. The broker rejects the second
	// produce request (Sarama may split a wave in two requests, so that is
	// part of the first or the second wave) and the call fails there.
	batch := []*message.Message{testEvent(t, "a", 0), testEvent(t, "b", 0), testEvent(t, "a", 1),
		testEvent(t, "b", 1), testEvent(t, "a", 2)}
	produces := 0
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		produces++
		if produces != 2 {
			return nil, nil, false
		}
		cluster.DropControl()
		return rejectProduce(req.(*kmsg.ProduceRequest)), nil, true
	})
	require.Error(t, pub.Publish(pubsub.DefaultTopic, batch...), "the second wave is rejected")
	require.NoError(t, pub.Publish(pubsub.DefaultTopic, batch...), "the outbox retries the same batch")

	var got []string
	for _, r := range ReadTopic(t, kcfg.Brokers, pubsub.DefaultTopic, len(batch)) {
		got = append(got, string(r.Key)+"/"+headerValue(r, HeaderCEID))
	}
	var want []string
	for _, m := range batch {
		want = append(want, m.Metadata.Get(codec.MetadataProjectID)+"/"+m.UUID)
	}
	// Per project, in order, each once (the first wave is not sent again).
	assert.Equal(t, []string{want[0], want[1], want[2], want[3], want[4]}, got)
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// rejectProduce answers a produce request with an error for every
// partition that Sarama does not retry itself but that is not known to be
// permanent (UNKNOWN_SERVER_ERROR): the outbox retries it.
func rejectProduce(req *kmsg.ProduceRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = kerr.UnknownServerError.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

var _ wmkafka.Marshaler = marshaler{}

// A Publish stuck on a broker that takes produce requests and never
// answers does not hold Close up: Close cuts its connections, and both
// return at once (they used to wait for Sarama's read timeouts and
// retries, about a minute).
func TestBatchPublisherCloseDoesNotWaitForAHungPublish(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cluster.Close()
	kcfg := Config{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	attached := make(chan struct{})
	close(attached)
	pub := newBatchPublisher(kcfg.Brokers, kcfg.sarama(roleProducer), newMarshaler(), attached, slog.New(slog.DiscardHandler))

	produced := pubsubtest.SwallowProduce(cluster)
	published := make(chan error, 1)
	go func() { published <- pub.Publish(pubsub.DefaultTopic, testEvent(t, "hung", 1)) }()
	select {
	case <-produced:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the produce request never reached the broker")
	}

	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- pub.Close() }()
	select {
	case <-closed:
		t.Logf("Close returned after %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		require.FailNow(t, "Close waited for the hung Publish")
	}
	select {
	case err := <-published:
		require.Error(t, err, "the hung Publish failed")
		t.Logf("Publish returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(3 * time.Second):
		require.FailNow(t, "the hung Publish did not end")
	}
	require.ErrorIs(t, pub.Publish(pubsub.DefaultTopic, testEvent(t, "hung", 2)), errPublisherClosed)
}

var (
	_ pubsub.Aborter = (*batchPublisher)(nil)
	_ pubsub.Aborter = (*retryingSubscriber)(nil)
)

// The history fill reads at least from the newest offsets taken just
// before the consumer began (newestOffsets, then the consumer's
// Subscribe): records that arrived in between, more than the partition's
// share of the fill, are read by the fill, so none fall between the fill
// and the consumer (which takes everything before its start for repeats).
func TestHistoryFillReadsFromWhereTheConsumerBegan(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cluster.Close()
	kcfg := Config{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	f := &historyFill{records: 2, timeout: 20 * time.Second, done: make(chan struct{}),
		newClient: func() (sarama.Client, error) { return sarama.NewClient(kcfg.Brokers, kcfg.sarama(roleConsumer)) }}
	cl, err := kgo.NewClient(kgo.SeedBrokers(kcfg.Brokers...), kgo.DefaultProduceTopic(pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cl.Close()
	produce := func(from, to int) {
		for n := from; n < to; n++ {
			msg := testEvent(t, "fill", n)
			require.NoError(t, cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte("fill"), Value: msg.Payload}).FirstErr())
		}
	}
	produce(0, 3)
	until := f.newestOffsets(pubsub.DefaultTopic, 1) // the consumer would begin here: offset 3
	require.Equal(t, []int64{3}, until)
	produce(3, 8) // five records before the fill reads: more than its share of 2

	out := make(chan *message.Message)
	var offsets []int64
	collected := make(chan struct{})
	go func() { // as the Bus does: take each message, acknowledge it
		defer close(collected)
		for msg := range out {
			_, off, _ := recordPosition(msg.Context())
			offsets = append(offsets, off)
			msg.Ack()
		}
	}()
	n, err := f.read(context.Background(), pubsub.DefaultTopic, 1, until, out)
	close(out)
	<-collected
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	assert.Equal(t, []int64{3, 4, 5, 6, 7}, offsets, "from where the consumer began, not only the last 2")

	// Without an offset from before the consumer: its share only.
	out = make(chan *message.Message)
	go func() {
		for msg := range out {
			msg.Ack()
		}
	}()
	n, err = f.read(context.Background(), pubsub.DefaultTopic, 1, nil, out)
	close(out)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}
