package kafka

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"math"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
)

// cursorPrefix starts every id a CursorCodec makes, so that an id of
// another kind (an in-memory hub's "<epoch>-<seq>") is never mistaken for
// one.
const cursorPrefix = "k"

// maxCursorID bounds the ids Decode reads: 4 KiB holds a vector of several
// hundred partitions.
const maxCursorID = 4 << 10

// CursorCodec encodes a gateway's position in a topic (the offset of the
// last record it read from each partition) as an SSE event id, and back:
// "k" then, in unpadded base64url, two bytes that tag the topic, then for
// each partition, in order, the varint of its distance from the previous
// partition and the varint of its offset: 1 + ⌈4/3 × (2 + n × (1 + offset
// bytes))⌉ characters for n partitions, an offset taking 7 bits a byte. For
// 6 partitions: 36 characters at offsets below 2 million (2^21), 52 below
// 34 billion (2^35); each partition adds 5⅓ to 8 characters. It
// implements fanout.CursorCodec.
type CursorCodec struct{ tag [2]byte }

var _ fanout.CursorCodec = CursorCodec{}

// NewCursorCodec returns the codec of the topic's ids: an id of another
// topic does not decode (but for a 1 in 65,536 chance).
func NewCursorCodec(topic string) CursorCodec {
	h := fnv.New32a()
	_, _ = h.Write([]byte(topic))
	sum := h.Sum32()
	return CursorCodec{tag: [2]byte{byte(sum >> 8), byte(sum)}}
}

// Encode returns the id of vec, which is sorted by partition.
// It allocates only the id for up to about 20 partitions (one per event
// a gateway dispatches).
func (c CursorCodec) Encode(vec []fanout.Position) string {
	var rawBuf [256]byte
	raw := append(rawBuf[:0], c.tag[:]...)
	prev := int64(-1)
	for _, p := range vec {
		raw = binary.AppendUvarint(raw, uint64(int64(p.Partition)-prev))
		raw = binary.AppendUvarint(raw, uint64(p.Offset))
		prev = int64(p.Partition)
	}
	var idBuf [350]byte
	id := idBuf[:0]
	if n := len(cursorPrefix) + base64.RawURLEncoding.EncodedLen(len(raw)); n > len(idBuf) {
		id = make([]byte, 0, n)
	}
	id = append(id, cursorPrefix...)
	id = base64.RawURLEncoding.AppendEncode(id, raw)
	return string(id)
}

// Decode returns the vector of an id Encode made for this topic.
func (c CursorCodec) Decode(id string) ([]fanout.Position, bool) {
	if len(id) > maxCursorID || len(id) < len(cursorPrefix) || id[:len(cursorPrefix)] != cursorPrefix {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(id[len(cursorPrefix):])
	if err != nil || len(raw) < 2 || raw[0] != c.tag[0] || raw[1] != c.tag[1] {
		return nil, false
	}
	raw = raw[2:]
	var vec []fanout.Position
	prev := int64(-1)
	for len(raw) > 0 {
		delta, n := binary.Uvarint(raw)
		if n <= 0 || delta == 0 || delta > math.MaxInt32 {
			return nil, false
		}
		raw = raw[n:]
		offset, n := binary.Uvarint(raw)
		if n <= 0 || offset > math.MaxInt64 {
			return nil, false
		}
		raw = raw[n:]
		partition := prev + int64(delta)
		if partition > math.MaxInt32 {
			return nil, false
		}
		vec = append(vec, fanout.Position{Partition: int32(partition), Offset: int64(offset)})
		prev = partition
	}
	return vec, len(vec) > 0
}
