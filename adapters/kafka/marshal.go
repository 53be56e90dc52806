package kafka

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
)

// Headers of the CloudEvents Kafka protocol binding (binary content mode),
// set on every record besides the codec's own metadata headers, so that
// tools that understand CloudEvents understand the events.
const (
	// HeaderCESpecVersion is the CloudEvents version, CESpecVersion.
	HeaderCESpecVersion = "ce_specversion"
	// HeaderCEID is the event id (the Watermill message UUID).
	HeaderCEID = "ce_id"
	// HeaderCESource identifies the producer, CESource.
	HeaderCESource = "ce_source"
	// HeaderCEType is CETypePrefix + the envelope's event type.
	HeaderCEType = "ce_type"
	// HeaderCESubject is the project id.
	HeaderCESubject = "ce_subject"
	// HeaderCETime is when the record was produced (RFC 3339).
	HeaderCETime = "ce_time"
	// HeaderContentType is the media type of the value, "application/json".
	HeaderContentType = "content-type"
)

// Values of the CloudEvents headers.
const (
	// CESpecVersion is the CloudEvents specification version used.
	CESpecVersion = "1.0"
	// CESource is the ce_source of every event.
	CESource = "/statusbroadcaster"
	// CETypePrefix starts every ce_type: "statusbroadcaster.project_updated"
	// and "statusbroadcaster.project_error".
	CETypePrefix = "statusbroadcaster."
)

// marshaler turns a message of the outbox into a Kafka record: key = the
// project id (through watermill-kafka's partitioning marshaler: its
// DefaultMarshaler sets no key), value = the envelope JSON, headers = the
// codec metadata, the Watermill UUID and the CloudEvents headers.
type marshaler struct {
	wmkafka.MarshalerUnmarshaler
}

func newMarshaler() marshaler {
	return marshaler{wmkafka.NewWithPartitioningMarshaler(func(_ string, msg *message.Message) (string, error) {
		id := msg.Metadata.Get(codec.MetadataProjectID)
		if id == "" {
			return "", errors.New("message has no project id")
		}
		return id, nil
	})}
}

// Marshal implements wmkafka.Marshaler.
func (m marshaler) Marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	rec, err := m.MarshalerUnmarshaler.Marshal(topic, msg)
	if err != nil {
		return nil, err
	}
	rec.Headers = append(rec.Headers,
		header(HeaderCESpecVersion, CESpecVersion),
		header(HeaderCEID, msg.UUID),
		header(HeaderCESource, CESource),
		header(HeaderCEType, CETypePrefix+msg.Metadata.Get(codec.MetadataEventType)),
		header(HeaderCESubject, msg.Metadata.Get(codec.MetadataProjectID)),
		header(HeaderCETime, time.Now().UTC().Format(time.RFC3339Nano)),
		header(HeaderContentType, "application/json"),
	)
	return rec, nil
}

func header(k, v string) sarama.RecordHeader {
	return sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}

// lenientUnmarshaler turns every record into a message, whatever its
// content: watermill-kafka stops consuming a partition when Unmarshal
// fails ("resend will make no sense"), and one bad record must not stop
// the stream. A record that is not a valid event becomes a message the
// Bus handler rejects, logs, counts and acknowledges.
type lenientUnmarshaler struct{}

// Unmarshal implements wmkafka.Unmarshaler. It never fails.
func (lenientUnmarshaler) Unmarshal(rec *sarama.ConsumerMessage) (*message.Message, error) {
	msg, err := wmkafka.DefaultMarshaler{}.Unmarshal(rec)
	if err != nil || msg == nil {
		msg = message.NewMessage("", rec.Value)
	}
	if msg.UUID == "" {
		// A record from another producer: name it by its position so the
		// log line about it can be traced to the record.
		msg.UUID = msg.Metadata.Get(HeaderCEID)
		if msg.UUID == "" {
			msg.UUID = fmt.Sprintf("%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)
		}
	}
	return msg, nil
}
