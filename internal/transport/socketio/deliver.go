package socketio

import (
	"strconv"

	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// DefaultEvent names a publication that has no event.
const DefaultEvent = "message"

// AppendDelivery appends the part of a publication's Socket.IO delivery
// that is the same for every socket: the Engine.IO message type, the EVENT
// packet type and the event's name and argument, without the closing ']'.
// The event is the publication's event (DefaultEvent when it has none), and
// its one argument is
//
//	{"type":event,"channel":…,"data":…,"offset":…,"timestamp":…,"from"?:…}
//
// so a handler registered with socket.on(event, u => …) sees u.type ===
// event. Each socket appends its tail (AppendTail): the recovery offset, when
// the socket recovers, and the closing bracket.
func AppendDelivery(dst []byte, m *protocol.Message) []byte {
	ev := m.Event
	if ev == "" {
		ev = DefaultEvent
	}
	dst = append(dst, byte(wire.EMessage), byte(wire.SEvent), '[')
	dst = protocol.AppendString(dst, ev)
	dst = append(dst, `,{"type":`...)
	dst = protocol.AppendString(dst, ev)
	dst = append(dst, `,"channel":`...)
	dst = protocol.AppendString(dst, m.Channel)
	dst = append(dst, `,"data":`...)
	if len(m.Data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, m.Data...)
	}
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, m.Offset, 10)
	dst = append(dst, `,"timestamp":`...)
	dst = protocol.AppendTime(dst, m.Time)
	if m.From != "" {
		dst = append(dst, `,"from":`...)
		dst = protocol.AppendString(dst, m.From)
	}
	return append(dst, '}')
}
