package bench

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"

	"github.com/gobwas/ws"
)

// Socket.IO subscribers (--protocol socketio): a WebSocket to the server's
// --socketio-path with Engine.IO v4 (transport=websocket, no polling), the
// token in the upgrade request's Authorization header, which herald's
// CONNECT takes when the CONNECT packet names none. Each WebSocket message
// is one Engine.IO packet: the server's pings ("2") are answered with pongs
// ("3"), and a delivery, an EVENT whose argument is herald's message
// document, is handed on as that document, so the rest of the generator
// (latency, order, loss) treats it as a native delivery.

// sioTarget is the target a Socket.IO subscriber's upgrade requests.
func sioTarget(t target, path string) target {
	t.path = path + "?" + url.Values{"EIO": {"4"}, "transport": {"websocket"}}.Encode()
	return t
}

// sioMessageKey starts the argument of a delivery: herald's message
// document with its type first.
var sioMessageKey = []byte(`{"type":"message"`)

// sioPacket sorts one Engine.IO packet a subscriber received: ping is set
// for a ping (answer "3"); doc is the message document of a delivery (an
// EVENT packet, 42[...], carrying one); otherwise neither.
func sioPacket(p []byte) (doc []byte, ping bool) {
	if len(p) == 1 && p[0] == '2' {
		return nil, true
	}
	if len(p) > 3 && p[0] == '4' && p[1] == '2' && p[2] == '[' {
		if i := bytes.Index(p, sioMessageKey); i >= 0 {
			return p[i:], false
		}
	}
	return nil, false
}

// sioPong is the Engine.IO pong.
var sioPong = []byte{'3'}

// sioSetup is a Socket.IO subscriber's setup: the open packet answered
// with a CONNECT, the CONNECT's answer with one subscribe event per
// channel (ack ids 1…n), then their acks.
type sioSetup struct {
	opened, connected bool
	acked             int
}

// step takes packet p of the setup (deliveries and pings are the caller's)
// and returns the packets to send, and whether the setup is complete; a
// refusal is an error.
func (s *sioSetup) step(p []byte, chans []string) (send [][]byte, done bool, err error) {
	switch {
	case !s.opened:
		if !bytes.HasPrefix(p, []byte(`0{`)) {
			return nil, false, fmt.Errorf("first frame is not the open packet: %.100q", p)
		}
		s.opened = true
		return [][]byte{[]byte("40")}, false, nil
	case !s.connected:
		if bytes.HasPrefix(p, []byte("44")) {
			return nil, false, fmt.Errorf("first frame is not connected: connect refused: %.100q", p)
		}
		if !bytes.HasPrefix(p, []byte(`40{`)) {
			return nil, false, nil
		}
		s.connected = true
		for k, ch := range chans {
			b := strconv.AppendInt([]byte("42"), int64(k+1), 10)
			b = append(b, `["subscribe",`...)
			b = strconv.AppendQuote(b, ch)
			send = append(send, append(b, ']'))
		}
		return send, false, nil
	case bytes.HasPrefix(p, []byte("43")):
		if !bytes.Contains(p, []byte(`"ok":true`)) {
			return nil, false, fmt.Errorf("subscribe refused: %s", stringField(p, "code"))
		}
		s.acked++
		return nil, s.acked == len(chans), nil
	}
	return nil, false, nil
}

// sioSetupConn runs the setup on a goroutine-read connection (readFrame
// answers pings and translates deliveries, which are counted here).
func (f *localFleet) sioSetupConn(bc *bconn) error {
	var st sioSetup
	chans := f.spec.channelsOf(bc.idx)
	for {
		op, p, err := bc.ws.readFrame()
		if err != nil {
			return fmt.Errorf("socket.io setup: %w", err)
		}
		if op == ws.OpClose {
			return fmt.Errorf("closed by server while subscribing: %d", closeCode(p))
		}
		if op != ws.OpText {
			continue
		}
		if string(frameType(p)) == "message" {
			bc.countFrame(p)
			f.onMessage(bc, p)
			continue
		}
		send, done, err := st.step(p, chans)
		if err != nil {
			return err
		}
		if err := writeSend(bc.ws, send); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// writeSend writes a setup step's packets, if any.
func writeSend(c *wsConn, send [][]byte) error {
	if len(send) == 0 {
		return nil
	}
	if err := c.writeTexts(send...); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	return nil
}

// readPacket is readFrame for a Socket.IO subscriber: pings are answered
// and skipped, a delivery is returned as its message document.
func (c *wsConn) readPacket() (ws.OpCode, []byte, error) {
	for {
		op, p, err := c.readWSFrame()
		if err != nil || op != ws.OpText {
			return op, p, err
		}
		doc, ping := sioPacket(p)
		switch {
		case ping:
			if err := c.writeText(sioPong); err != nil {
				return 0, nil, err
			}
		case doc != nil:
			return op, doc, nil
		default:
			return op, p, nil
		}
	}
}
