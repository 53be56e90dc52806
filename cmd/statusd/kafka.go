package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// kafkaFlags is the Kafka part of the configuration (--pubsub kafka).
type kafkaFlags struct {
	brokers        string
	topic          string
	clientID       string
	initialOffset  string
	version        string
	tls            bool
	tlsCA          string
	tlsInsecure    bool
	saslUser       string
	saslPassword   string
	partitionCheck time.Duration
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.brokers, "kafka-brokers", "", "Kafka bootstrap brokers, host:port[,host:port…] (required with --pubsub kafka)")
	fs.StringVar(&k.topic, "kafka-topic", pubsub.DefaultTopic, "Kafka topic of every event; create it first, compacted, with several partitions")
	fs.StringVar(&k.clientID, "kafka-client-id", "statusd", "client id this instance gives the brokers")
	fs.StringVar(&k.initialOffset, "kafka-initial-offset", string(kafka.OffsetNewest),
		"where this gateway starts reading: newest (live events only) or oldest (replay the topic to rebuild the latest-state cache)")
	fs.StringVar(&k.version, "kafka-version", kafka.DefaultVersion, "Kafka protocol version to speak")
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to the brokers over TLS")
	fs.StringVar(&k.tlsCA, "kafka-tls-ca", "", "PEM file of the CA that signed the brokers' certificates (default: the system's; implies --kafka-tls)")
	fs.BoolVar(&k.tlsInsecure, "kafka-tls-insecure", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&k.saslUser, "kafka-sasl-user", "", "SASL/PLAIN user (use with TLS)")
	fs.StringVar(&k.saslPassword, "kafka-sasl-password", "", "SASL/PLAIN password; prefer the STATUSD_KAFKA_SASL_PASSWORD variable")
	fs.DurationVar(&k.partitionCheck, "kafka-partition-check", time.Minute,
		"how often to look for partitions added to the topic; the gateway reads the new ones from their oldest offset. Negative: never; 0 is an error")
}

// config returns the kafka.Config the flags describe, validated.
// Gateways consume without a consumer group: every instance sees every
// event.
func (k *kafkaFlags) config() (kafka.Config, error) {
	var brokers []string
	for b := range strings.SplitSeq(k.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		return kafka.Config{}, errors.New("--pubsub kafka needs --kafka-brokers")
	}
	if k.partitionCheck == 0 {
		// kafka.Config takes 0 as "the default" (1m), which is not
		// what --kafka-partition-check 0 would say.
		return kafka.Config{}, errors.New("--kafka-partition-check 0: give how often to check (such as 1m), or a negative duration for never")
	}
	kc := kafka.Config{
		Brokers:        brokers,
		Topic:          k.topic,
		ClientID:       k.clientID,
		InitialOffset:  kafka.InitialOffset(k.initialOffset),
		Version:        k.version,
		PartitionCheck: k.partitionCheck,
	}
	if k.tls || k.tlsCA != "" || k.tlsInsecure {
		kc.TLS = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: k.tlsInsecure}
		if k.tlsCA != "" {
			pem, err := os.ReadFile(k.tlsCA)
			if err != nil {
				return kafka.Config{}, fmt.Errorf("--kafka-tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return kafka.Config{}, fmt.Errorf("--kafka-tls-ca: no PEM certificate in %s", k.tlsCA)
			}
			kc.TLS.RootCAs = pool
		}
	}
	if k.saslUser != "" {
		kc.SASL = &kafka.SASLConfig{User: k.saslUser, Password: k.saslPassword}
	} else if k.saslPassword != "" {
		return kafka.Config{}, errors.New("--kafka-sasl-password without --kafka-sasl-user")
	}
	if err := kc.Validate(); err != nil {
		return kafka.Config{}, err
	}
	return kc, nil
}
