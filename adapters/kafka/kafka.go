package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// InitialOffset says where a consumer without a committed offset starts
// reading a partition.
type InitialOffset string

// The initial offsets a Config accepts.
const (
	// OffsetNewest reads only what is published after the consumer
	// starts: a gateway's clients want live updates.
	OffsetNewest InitialOffset = "newest"
	// OffsetOldest reads the partition from its first retained record. A
	// gateway uses it to rebuild its latest-state cache at start (with a
	// compacted topic that is one record per project); a backend consumer
	// uses it to see every event the first time its group runs.
	OffsetOldest InitialOffset = "oldest"
)

// topicPattern is what Kafka accepts as a topic name (as pubsub.Config does).
var topicPattern = regexp.MustCompile(`^[a-z0-9._-]{1,249}$`)

// watermillLogger bridges Watermill's logs to logger, as the Bus does:
// Watermill's Info becomes Debug.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}

// DefaultVersion is the Kafka protocol version spoken unless
// Config.Version says otherwise. Kafka 4 brokers need at least 2.1.
const DefaultVersion = "2.8.0"

// SASLConfig holds SASL/PLAIN credentials. Use it together with TLS: PLAIN
// sends the password as it is.
type SASLConfig struct {
	// User and Password authenticate the client.
	User, Password string
}

// Config configures the Kafka side of a Bus made by New. Zero values take
// the defaults.
type Config struct {
	// Brokers are the bootstrap brokers, "host:port". Required.
	Brokers []string
	// Topic is the Kafka topic every event travels on. Default: the Bus's
	// topic (pubsub.Config.Topic), which defaults to pubsub.DefaultTopic.
	// The topic must exist (it is not created automatically); see the
	// README (section Kafka) for the recommended settings
	// (cleanup.policy=compact, several partitions).
	Topic string
	// ClientID names this process to the brokers (logs, quotas). Default
	// "statusbroadcaster".
	ClientID string
	// ConsumerGroup selects how this Bus consumes the topic.
	//
	// Empty (the default) is gateway mode: the Bus reads every partition
	// itself, with no consumer group, so every instance sees every event —
	// what an SSE gateway behind a load balancer needs.
	//
	// A name makes the Bus a member of that consumer group: the group's
	// members share the partitions and the group's committed offsets
	// survive restarts — what a backend consumer needs. Such a Bus
	// acknowledges (and so commits) a record only once a reader has
	// received it from an inbox, and nothing while no inbox is subscribed
	// (pubsub.Config.AckAfterRead).
	ConsumerGroup string
	// InitialOffset is where reading starts when there is no committed
	// offset (always, in gateway mode). Default OffsetNewest.
	InitialOffset InitialOffset
	// Version is the Kafka protocol version to speak, such as "3.6.0".
	// Default DefaultVersion.
	Version string
	// TLS, when set, encrypts the connections to the brokers.
	TLS *tls.Config
	// SASL, when set, authenticates with SASL/PLAIN.
	SASL *SASLConfig
	// DialTimeout bounds connecting to a broker and writing a request.
	// Waiting for a response is bounded by DialTimeout too, but never by
	// less than 10s: a broker holds a produce request until every in-sync
	// replica has the records, up to its 10s acknowledgement timeout.
	// Default 10s. Readiness probes use 2s; closing the Bus waits for none
	// of these (see Bus.Close).
	DialTimeout time.Duration
	// ReconnectBackoff is the wait between attempts to reach the brokers
	// again after they became unreachable (consumer side; the producer
	// side is retried by the outbox). Default 1s.
	ReconnectBackoff time.Duration
	// MaxMessageBytes is the largest record the producer sends (Sarama's
	// Producer.MaxMessageBytes: key, value and headers). An event whose
	// record would be larger is rejected when it is broadcast, with
	// domain.ErrInvalidEvent (see pubsub.Config.MaxMessageBytes). Keep it at or
	// below the topic's max.message.bytes (Kafka's default: 1 MiB plus
	// 12 bytes); a record the broker refuses all the same is dropped,
	// logged and counted, never retried. Default pubsub.DefaultMaxMessageBytes.
	MaxMessageBytes int
	// PartitionCheck is how often the consumer checks the topic for
	// partitions added since it began reading. A gateway (no
	// ConsumerGroup) then reads the new ones from their oldest offset (see
	// New): watermill-kafka reads the partition list only once. A
	// consumer group's metadata is refreshed this often (Sarama's default
	// is 10m), and the group rebalances when its partition count changes,
	// within about two periods. Default 1m; negative: never (a group then
	// keeps Sarama's 10m).
	PartitionCheck time.Duration
	// FillHistory is how many of the topic's last records a gateway (no
	// ConsumerGroup, InitialOffset OffsetNewest) reads when it starts,
	// spread evenly over the partitions, before it reports ready: they
	// fill its resume history (and its latest-state cache), so that a
	// gateway just (re)started resumes the ids other gateways gave out.
	// Set it to the hub's history (statusd: --history). A subscriber of
	// the Bus before it is ready receives them as events. 0: none.
	FillHistory int
	// FillTimeout bounds the fill; what is not read by then is not in the
	// history (those ids get the snapshot). Default 30s.
	FillTimeout time.Duration
}

func (k *Config) setDefaults(busTopic string) {
	if k.Topic == "" {
		k.Topic = busTopic
	}
	if k.Topic == "" {
		k.Topic = pubsub.DefaultTopic
	}
	if k.ClientID == "" {
		k.ClientID = "statusbroadcaster"
	}
	if k.InitialOffset == "" {
		k.InitialOffset = OffsetNewest
	}
	if k.Version == "" {
		k.Version = DefaultVersion
	}
	if k.DialTimeout <= 0 {
		k.DialTimeout = 10 * time.Second
	}
	if k.ReconnectBackoff <= 0 {
		k.ReconnectBackoff = time.Second
	}
	if k.PartitionCheck == 0 {
		k.PartitionCheck = time.Minute
	}
	if k.MaxMessageBytes <= 0 {
		k.MaxMessageBytes = pubsub.DefaultMaxMessageBytes
	}
	if k.FillTimeout <= 0 {
		k.FillTimeout = 30 * time.Second
	}
}

// Validate reports a configuration that cannot work, once the defaults
// are applied.
func (k Config) Validate() error {
	k.setDefaults("")
	if len(k.Brokers) == 0 {
		return errors.New("kafka: at least one broker is required")
	}
	for _, b := range k.Brokers {
		if b == "" || !strings.Contains(b, ":") {
			return fmt.Errorf("kafka: broker %q is not host:port", b)
		}
	}
	if !topicPattern.MatchString(k.Topic) {
		return fmt.Errorf("kafka: topic %q must be 1-249 characters of [a-z0-9._-]", k.Topic)
	}
	switch k.InitialOffset {
	case OffsetNewest, OffsetOldest:
	default:
		return fmt.Errorf("kafka: initial offset %q is neither %q nor %q", k.InitialOffset, OffsetNewest, OffsetOldest)
	}
	if _, err := sarama.ParseKafkaVersion(k.Version); err != nil {
		return fmt.Errorf("kafka: version: %w", err)
	}
	if k.SASL != nil && k.SASL.User == "" {
		return errors.New("kafka: SASL needs a user")
	}
	for _, role := range []saramaRole{roleProducer, roleConsumer} {
		if err := k.sarama(role).Validate(); err != nil {
			return err // "kafka: invalid configuration (…)"
		}
	}
	return nil
}

// saramaRole says which client a Sarama config is for: the producer needs
// settings (one request in flight) that would slow the consumer down.
type saramaRole int

const (
	roleProducer saramaRole = iota
	roleConsumer
	roleProbe
)

// sarama returns a fresh Sarama config for role. Each client gets its own:
// a config carries a metrics registry that must not be shared.
func (k Config) sarama(role saramaRole) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = k.ClientID
	c.Version, _ = sarama.ParseKafkaVersion(k.Version) // checked by Validate
	c.Net.DialTimeout = k.DialTimeout
	c.Net.ReadTimeout = max(k.DialTimeout, 10*time.Second)
	c.Net.WriteTimeout = k.DialTimeout
	if k.TLS != nil {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = k.TLS
	}
	if k.SASL != nil {
		c.Net.SASL.Enable = true
		c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		c.Net.SASL.User = k.SASL.User
		c.Net.SASL.Password = k.SASL.Password
	}
	// The topic is created deliberately, with the right partitions and
	// cleanup policy; a typo must not create a new one.
	c.Metadata.AllowAutoTopicCreation = false

	switch role {
	case roleProducer:
		// Acknowledged by every in-sync replica, written once even when a
		// request is retried, in order per partition.
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
		c.Producer.Retry.Max = 5
		c.Producer.Return.Successes = true
		c.Producer.Return.Errors = true
		c.Producer.MaxMessageBytes = k.MaxMessageBytes
		// Every event of a project lands on one partition: the key is the
		// project id, hashed with murmur2 like the Java client (and
		// franz-go), so records another producer writes for a project land
		// on the same partition as ours. Sarama's default (FNV-1a) would
		// not.
		c.Producer.Partitioner = sarama.NewMurmur2Partitioner
	case roleConsumer:
		if k.InitialOffset == OffsetOldest {
			c.Consumer.Offsets.Initial = sarama.OffsetOldest
		} else {
			c.Consumer.Offsets.Initial = sarama.OffsetNewest
		}
		// Without a group nobody reads a partition consumer's error
		// channel (watermill-kafka does not), and a full one blocks it
		// forever: let Sarama log errors instead. A group's errors are
		// drained by watermill-kafka.
		c.Consumer.Return.Errors = k.ConsumerGroup != ""
		// Retry a partition forever, from the offset it had reached: a
		// broker outage then costs no event and replays none.
		c.Consumer.Retry.Max = 0
		c.Consumer.Retry.Backoff = k.ReconnectBackoff
		c.Metadata.Retry.Backoff = min(k.ReconnectBackoff, 500*time.Millisecond)
		if k.ConsumerGroup != "" && k.PartitionCheck > 0 {
			// A consumer group rebalances when it sees the partition count
			// change in its metadata, which it refreshes this often.
			c.Metadata.RefreshFrequency = k.PartitionCheck
		}
	case roleProbe:
		c.Metadata.Full = false
		c.Metadata.Retry.Max = 0
		c.Net.DialTimeout = probeTimeout
		c.Net.ReadTimeout = probeTimeout
		c.Net.WriteTimeout = probeTimeout
	}
	return c
}

// New returns a running Bus on Kafka, through watermill-kafka: the
// same Bus as pubsub.NewInMemory, with a Kafka publisher and subscriber on
// kcfg.Topic.
//
// Publishing: one record per event, key = project id (so every event of a
// project lands on one partition, in order), value = the envelope JSON
// (the bytes SSE clients receive), headers = the codec metadata plus the
// CloudEvents Kafka binding (ce_*). The outbox's batches (cfg.BatchSize)
// go out in one produce round trip each — in waves of one record per
// project, so that a failure part way never reorders a project's events —
// acknowledged by all in-sync replicas, from an idempotent producer.
//
// Consuming: see Config.ConsumerGroup. Records that are not valid
// events are logged, counted and skipped. Records this Bus has already
// dispatched (a consumer that re-reads after a restart or a rebalance) are
// skipped too.
//
// Event ids: a gateway (no ConsumerGroup) dispatches every record with its
// partition and offset, and, unless cfg.Hub.Cursor is set, with
// NewCursorCodec(kcfg.Topic) as the hub's cursor codec: an event's id is the
// gateway's position in the topic after it, from which every gateway of the
// topic resumes a stream exactly (see fanout.CursorCodec).
//
// Partitions added to the topic later: watermill-kafka's consumer without
// a group reads the partition list once, so a gateway counts the
// partitions every kcfg.PartitionCheck and reads the new ones itself, from
// their oldest offset, with Sarama's partition consumers, the way
// watermill-kafka would (one message at a time per partition, the next
// once the router acknowledged it).
//
// New does not need a broker to answer: the Bus starts anyway, queues
// broadcasts, reports not ready (Ready) and connects when a broker answers.
// It fails only on an invalid configuration. cfg.Dedupe and cfg.Ready, if
// set, run after the Kafka checks. cfg.RetryMax defaults to 1s here.
func New(cfg pubsub.Config, kcfg Config, logger *slog.Logger) (*pubsub.Bus, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if kcfg.Topic != "" && cfg.Topic != "" && kcfg.Topic != cfg.Topic {
		return nil, fmt.Errorf("kafka: topic %q differs from the Bus topic %q", kcfg.Topic, cfg.Topic)
	}
	kcfg.setDefaults(cfg.Topic)
	if err := kcfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Topic = kcfg.Topic
	if cfg.MaxMessageBytes <= 0 || cfg.MaxMessageBytes > kcfg.MaxMessageBytes {
		cfg.MaxMessageBytes = kcfg.MaxMessageBytes
	}
	if cfg.RetryMax <= 0 {
		// A failed attempt already spent Sarama's own retries (a second or
		// more): retry at least every second, so that publishing resumes
		// soon after a broker is back.
		cfg.RetryMax = time.Second
	}
	logger = logger.With("kafka_topic", kcfg.Topic)
	wlog := watermillLogger(logger)

	consumerConf := kcfg.sarama(roleConsumer)
	consumerDialer := useDialer(consumerConf)
	inner, err := wmkafka.NewSubscriber(wmkafka.SubscriberConfig{
		Brokers:               kcfg.Brokers,
		Unmarshaler:           lenientUnmarshaler{},
		OverwriteSaramaConfig: consumerConf,
		ConsumerGroup:         kcfg.ConsumerGroup,
		ReconnectRetrySleep:   kcfg.ReconnectBackoff,
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscriber: %w", err)
	}
	offsets := newOffsetTracker()
	offsets.newest = func(partition int32) (int64, error) { return kcfg.partitionOffset(partition, sarama.OffsetNewest) }
	offsets.oldest = func(partition int32) (int64, error) { return kcfg.partitionOffset(partition, sarama.OffsetOldest) }
	offsets.logStartPassed = func(partition int32, expected, oldest, offset int64) {
		cfg.Metrics.OffsetAnomaly("log_start_passed")
		logger.Warn("kafka partition's log start passed what this Bus had read: records deleted before they were delivered",
			"partition", partition, "expected_offset", expected, "oldest_offset", oldest, "offset", offset, "lost_at_most", oldest-expected)
	}
	offsets.wentBackwards = func(partition int32, offset, dispatched, newest int64) {
		// Once per partition each time: its tracking starts again here.
		cfg.Metrics.OffsetAnomaly("backwards")
		logger.Warn("kafka partition offsets went backwards (topic recreated or truncated?): delivering its records again from here",
			"partition", partition, "offset", offset, "dispatched_up_to", dispatched, "newest_offset", newest)
	}
	var watch *partitionWatch
	if kcfg.ConsumerGroup == "" {
		watch = &partitionWatch{
			every: kcfg.PartitionCheck,
			newClient: func() (sarama.Client, error) {
				conf := kcfg.sarama(roleConsumer)
				consumerDialer.install(conf)
				return sarama.NewClient(kcfg.Brokers, conf)
			},
			dispatched: offsets.nextOf,
		}
	}
	sub := newRetryingSubscriber(inner, consumerDialer, kcfg.ConsumerGroup != "", kcfg.partitionCount, watch, kcfg.ReconnectBackoff, logger)
	if kcfg.ConsumerGroup == "" && kcfg.InitialOffset == OffsetNewest && kcfg.FillHistory > 0 {
		sub.fill = &historyFill{
			records: kcfg.FillHistory,
			timeout: kcfg.FillTimeout,
			newClient: func() (sarama.Client, error) {
				conf := kcfg.sarama(roleConsumer)
				consumerDialer.install(conf)
				return sarama.NewClient(kcfg.Brokers, conf)
			},
			done: make(chan struct{}),
		}
	}
	pub := newBatchPublisher(kcfg.Brokers, kcfg.sarama(roleProducer), newMarshaler(), sub.attached, logger)
	probe := newBrokerProbe(kcfg)

	if kcfg.ConsumerGroup != "" {
		// The group commits what the Bus acknowledges: only what a reader
		// has received.
		cfg.AckAfterRead = true
	} else {
		// A gateway reads every partition: its event ids are positions in
		// the topic, which every gateway of the topic can resume from.
		if cfg.Hub.Cursor == nil {
			cfg.Hub.Cursor = NewCursorCodec(kcfg.Topic)
		}
		cfg.Position = func(msg *message.Message) (fanout.Position, bool) {
			partition, offset, ok := recordPosition(msg.Context())
			return fanout.Position{Partition: partition, Offset: offset}, ok
		}
	}
	userDedupe, userReady := cfg.Dedupe, cfg.Ready
	cfg.Dedupe = func(msg *message.Message) bool {
		if offsets.seen(msg) {
			return true
		}
		return userDedupe != nil && userDedupe(msg)
	}
	cfg.Ready = func(ctx context.Context) error {
		select {
		case <-sub.attached:
		default:
			return errors.New("kafka: consumer not connected yet")
		}
		if sub.fill != nil {
			select {
			case <-sub.fill.done:
			default:
				return errors.New("kafka: filling the history from the topic")
			}
		}
		if err := probe.check(ctx); err != nil {
			return err
		}
		if userReady != nil {
			return userReady(ctx)
		}
		return nil
	}
	bus, err := pubsub.New(cfg, pub, sub, logger)
	if err != nil {
		return nil, errors.Join(err, pub.Close(), sub.Close())
	}
	return bus, nil
}
