package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/ws"
)

// dialSSE opens a Server-Sent Events stream: the GET of t's path (which
// names the channels) with a bearer token, its 200 response head read
// through the connection's own bufio.Reader. The wsConn it returns reads
// events as frames (readFrame): each event's data, a native JSON document,
// as a text frame. A refused stream is a *dialError with the HTTP status.
func dialSSE(ctx context.Context, t target, token string, local net.IP, readBuf int, timeout time.Duration) (*wsConn, error) {
	nc, err := dialLoopback(ctx, t.hostPort, local, timeout)
	if err != nil {
		return nil, &dialError{err: err}
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c := newWSConn(nc, bufio.NewReaderSize(nc, readBuf), readBuf, 1)
	c.sse = true
	err = c.streamHandshake(t, token)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

// streamHandshake writes the stream's request and reads its response head.
func (c *wsConn) streamHandshake(t target, token string) error {
	req := make([]byte, 0, 256+len(token)+len(t.path))
	req = append(req, "GET "...)
	req = append(req, t.path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, t.hostPort...)
	req = append(req, "\r\nAccept: text/event-stream\r\nAuthorization: Bearer "...)
	req = append(req, token...)
	req = append(req, "\r\n\r\n"...)
	if _, err := c.nc.Write(req); err != nil {
		return &dialError{err: err}
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return &dialError{err: fmt.Errorf("reading the stream's response: %w", err)}
	}
	status, ok := parseStatusLine(line)
	if !ok {
		return &dialError{err: fmt.Errorf("malformed stream response status line %.60q", line)}
	}
	if status != http.StatusOK {
		return &dialError{status: status, body: responseBody(line, c.br), err: fmt.Errorf("unexpected HTTP status %d", status)}
	}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return &dialError{err: fmt.Errorf("reading the stream's response: %w", err)}
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}

// errEventTooLarge refuses an event past maxFrame.
var errEventTooLarge = fmt.Errorf("event exceeds %d bytes", maxFrame)

// readEvent returns the data of the next event (its data lines joined with
// LF, as EventSource does) as a text frame; comments, event names, ids and
// retry fields are skipped. The data is valid until the next call; the
// end of the stream is io.EOF.
func (c *wsConn) readEvent() (ws.OpCode, []byte, error) {
	data := c.scratch[:0]
	has := false
	wire := 0
	for {
		line, n, err := c.readLine()
		if err != nil {
			return 0, nil, err
		}
		wire += n
		switch {
		case len(line) == 0:
			if has {
				c.scratch = data
				c.lastWire, c.lastCompressed = wire, false
				return ws.OpText, data, nil
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if has {
				data = append(data, '\n')
			}
			data = append(data, bytes.TrimPrefix(line[len("data:"):], []byte(" "))...)
			has = true
		}
	}
}

// readLine returns the next line without its end, valid until the next
// read, and how many bytes it took on the wire. A line longer than the
// read buffer is gathered in c.line (at most maxFrame).
func (c *wsConn) readLine() ([]byte, int, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		c.line = append(c.line[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(c.line) > maxFrame {
				return nil, 0, errEventTooLarge
			}
			line, err = c.br.ReadSlice('\n')
			c.line = append(c.line, line...)
		}
		line = c.line
	}
	if err != nil {
		return nil, 0, err
	}
	return bytes.TrimRight(line, "\r\n"), len(line), nil
}
