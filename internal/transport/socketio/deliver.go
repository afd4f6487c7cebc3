package socketio

import (
	"strconv"

	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/transport/socketio/wire"
	"github.com/herald-rt/herald/internal/transport/ws"
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

// FrameWires are the wires of whole WebSocket frames that sockets are
// sent when their per-socket bytes are those of every socket like
// them, so that a publication is framed once for them all rather than
// around the shared bytes per socket. Each derives from the socketio
// wire's shared bytes.
type FrameWires struct {
	// closed is the event closed without a recovery offset (a notice, or a
	// socket without recovery).
	closed hub.Wire
	// offset is the event closed with the recovery offset of a socket
	// whose one room is the publication's channel, at its offset and epoch.
	offset hub.Wire
}

// registerFrames registers FrameWires on h, derived from the socketio
// wire shared.
func registerFrames(h *hub.Hub, shared hub.Wire) *FrameWires {
	return &FrameWires{
		closed: h.RegisterWire("socketio-frame", func(m *hub.Message) []byte {
			return frameOf(m.Bytes(shared), closeBracket)
		}),
		offset: h.RegisterWire("socketio-frame-offset", func(m *hub.Message) []byte {
			if m.Notice != nil {
				return frameOf(m.Bytes(shared), closeBracket)
			}
			return frameOf(m.Bytes(shared), appendOneRoomTail(nil, m.Pub.Channel, m.Pub.Epoch, m.Pub.Offset))
		}),
	}
}

// appendOneRoomTail appends the tail of a delivery to a socket whose one
// room is ch, at epoch and offset: its recovery offset and the closing
// bracket. The shared frame (FrameWires) and a socket's own tail
// (Conn.appendTailLocked) are both made by it, so they cannot differ.
func appendOneRoomTail(dst []byte, ch, epoch string, offset uint64) []byte {
	dst = append(dst, ',', '"', recoveryMark)
	dst = appendRoom(dst, ch, epoch, offset)
	return append(dst, '"', ']')
}

// frameOf returns one WebSocket text frame of shared followed by tail.
func frameOf(shared, tail []byte) []byte {
	b := ws.NewFrameBuffer(len(shared) + len(tail))
	return ws.Seal(append(append(b, shared...), tail...))
}
