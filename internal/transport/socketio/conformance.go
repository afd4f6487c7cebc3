package socketio

import (
	"errors"
	"net/http"
	"time"

	"github.com/herald-rt/herald/internal/transport/socketio/engine"

	"github.com/herald-rt/herald/internal/transport/socketio/wire"
)

// The conformance mode answers as the reference server of the
// socket.io-protocol test suite: namespaces "/" and "/custom", "auth"
// emitted with the CONNECT payload, "message" echoed as "message-back",
// "message-with-ack" acked with its arguments, binary attachments carried.

func (c *Conn) conformanceConnect(p wire.SPacket) {
	if p.Nsp != "/" && p.Nsp != "/custom" {
		c.srv.report(KindBadNamespace, errors.New("CONNECT to namespace "+p.Nsp))
		c.connectError(p.Nsp, "", "Invalid namespace")
		return
	}
	sid := randomID()
	c.mu.Lock()
	if p.Nsp == "/" {
		c.sid = sid
	} else {
		if c.nsps == nil {
			c.nsps = map[string]string{}
		}
		c.nsps[p.Nsp] = sid
	}
	c.mu.Unlock()
	c.stopTimer()
	b := wire.AppendSPacketHead([]byte{byte(wire.EMessage)}, wire.SConnect, 0, p.Nsp, -1)
	b = append(b, `{"sid":`...)
	b = wire.AppendJSONString(b, sid)
	c.send(append(b, '}'))
	payload := p.Data
	if payload == nil {
		payload = []byte("{}")
	}
	auth := wire.AppendEvent([]byte{byte(wire.EMessage)}, p.Nsp, -1, "auth", payload)
	// The reference server writes the CONNECT answer and this event in two
	// turns of its event loop, and the suite reads them with two one-shot
	// listeners: arriving in one TCP segment, the second would be missed.
	time.AfterFunc(conformanceGap, func() { c.send(auth) })
}

// conformanceGap separates the CONNECT answer from the "auth" event.
const conformanceGap = 20 * time.Millisecond

func (c *Conn) conformanceEvent(p wire.SPacket, atts [][]byte) {
	name, args, err := wire.EventArgs(p.Data)
	if err != nil {
		c.protocolError(KindBadPacket, err)
		return
	}
	var b []byte
	switch name {
	case "message":
		t := wire.SEvent
		if len(atts) > 0 {
			t = wire.SBinaryEvent
		}
		b = wire.AppendSPacketHead([]byte{byte(wire.EMessage)}, t, len(atts), p.Nsp, -1)
		b = append(b, '[')
		b = wire.AppendJSONString(b, "message-back")
		for _, a := range args {
			b = append(append(b, ','), a...)
		}
	case "message-with-ack":
		if p.ID < 0 {
			return
		}
		t := wire.SAck
		if len(atts) > 0 {
			t = wire.SBinaryAck
		}
		b = wire.AppendSPacketHead([]byte{byte(wire.EMessage)}, t, len(atts), p.Nsp, p.ID)
		b = append(b, '[')
		for i, a := range args {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, a...)
		}
	default:
		return
	}
	c.send(append(b, ']'))
	for _, a := range atts {
		_ = c.ess.SendBinary(a)
	}
}

// NewEngineEcho returns the engine.io-protocol test suite's reference
// server: an Engine.IO server (eo, its Open replaced) that sends every
// message back as it came, text or binary.
func NewEngineEcho(eo engine.Options) *engine.Server {
	eo.Open = func(s *engine.Session, _ *http.Request) (engine.Handler, error) { return echo{s}, nil }
	return engine.New(eo)
}

type echo struct{ s *engine.Session }

func (e echo) OnMessage(data []byte, binary bool) {
	if binary {
		_ = e.s.SendBinary(data)
		return
	}
	_ = e.s.Send(append([]byte{byte(wire.EMessage)}, data...), nil)
}

func (echo) OnClose(string) {}
