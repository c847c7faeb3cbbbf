package queue

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Record types; see the package documentation.
const (
	recMessage byte = 1
	recUpdate  byte = 2
	recDone    byte = 3
)

const (
	segMagic        = "MRQSEG1\n"
	segHeaderLen    = 16
	recHeaderLen    = 9
	maxRecordLength = 64 << 20 // sanity bound; inline bodies are far smaller
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// diskMessage is a MESSAGE record's metadata: the Message plus where its
// bytes live.
type diskMessage struct {
	Message
	Spilled bool `json:"spilled,omitempty"`
}

// encodeRecord frames payload parts as one record. The parts are
// concatenated; framing them here saves copying a body into a payload first.
func encodeRecord(typ byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	rec := make([]byte, recHeaderLen, recHeaderLen+n)
	binary.LittleEndian.PutUint32(rec[0:4], uint32(n))
	rec[8] = typ
	for _, p := range parts {
		rec = append(rec, p...)
	}
	binary.LittleEndian.PutUint32(rec[4:8], crc32.Checksum(rec[8:], crcTable))
	return rec
}

// encodeMessage returns a MESSAGE record and the offset of the inline body
// within it.
func encodeMessage(m diskMessage, body []byte) (rec []byte, bodyOff int64, err error) {
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, 0, err
	}
	var ml [4]byte
	binary.LittleEndian.PutUint32(ml[:], uint32(len(meta)))
	rec = encodeRecord(recMessage, ml[:], meta, body)
	return rec, int64(recHeaderLen + 4 + len(meta)), nil
}

func encodeUpdate(m Message) ([]byte, error) {
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return encodeRecord(recUpdate, meta), nil
}

func encodeDone(id string) []byte {
	return encodeRecord(recDone, []byte(id))
}

// errTorn marks the end of the valid part of a segment.
var errTorn = errors.New("torn record")

// record is one decoded record; payload is only valid until the next read.
type record struct {
	typ     byte
	payload []byte
	off     int64 // of the record header within the segment
}

// recordReader reads records sequentially from a segment body.
type recordReader struct {
	r   *bufio.Reader
	off int64
	buf []byte
}

// next returns the next record, io.EOF at a clean end, or errTorn when the
// bytes at the current offset are not a complete, intact record.
func (rr *recordReader) next() (record, error) {
	var h [recHeaderLen]byte
	n, err := io.ReadFull(rr.r, h[:])
	if err == io.EOF {
		return record{}, io.EOF
	}
	if err != nil {
		if n > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
			return record{}, errTorn
		}
		return record{}, err
	}
	size := binary.LittleEndian.Uint32(h[0:4])
	if size > maxRecordLength {
		return record{}, errTorn
	}
	if cap(rr.buf) < int(size) {
		rr.buf = make([]byte, size)
	}
	payload := rr.buf[:size]
	if _, err := io.ReadFull(rr.r, payload); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return record{}, errTorn
		}
		return record{}, err
	}
	c := crc32.Update(crc32.Checksum(h[8:9], crcTable), crcTable, payload)
	if c != binary.LittleEndian.Uint32(h[4:8]) {
		return record{}, errTorn
	}
	switch h[8] {
	case recMessage, recUpdate, recDone:
	default:
		return record{}, errTorn
	}
	rec := record{typ: h[8], payload: payload, off: rr.off}
	rr.off += int64(recHeaderLen) + int64(size)
	return rec, nil
}

// decodeMessage splits a MESSAGE payload into metadata and the inline body's
// offset and length within the payload.
func decodeMessage(p []byte) (m diskMessage, bodyOff, bodyLen int64, err error) {
	if len(p) < 4 {
		return m, 0, 0, fmt.Errorf("message record too short")
	}
	ml := int64(binary.LittleEndian.Uint32(p[:4]))
	if 4+ml > int64(len(p)) {
		return m, 0, 0, fmt.Errorf("message metadata overruns record")
	}
	if err := json.Unmarshal(p[4:4+ml], &m); err != nil {
		return m, 0, 0, fmt.Errorf("message metadata: %w", err)
	}
	if m.ID == "" {
		return m, 0, 0, fmt.Errorf("message record without id")
	}
	return m, 4 + ml, int64(len(p)) - 4 - ml, nil
}
