package ws

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/gobwas/ws/wsutil"
	"github.com/klauspost/compress/flate"

	"github.com/herald-rt/herald/internal/budget"
	"github.com/herald-rt/herald/internal/hub"
	"github.com/herald-rt/herald/internal/metrics"
	"github.com/herald-rt/herald/internal/netpoll"
	"github.com/herald-rt/herald/internal/protocol"
	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/sparselog"
	"github.com/herald-rt/herald/internal/transport"
)

// ReadBufferSize is the size of the pooled read buffers; a connection holds
// one only while a read is in progress.
const ReadBufferSize = 4096

// Conn is the reading side of a native WebSocket connection: it reads
// frames when the poller says the socket is readable, answers pings and
// closes through the hub client, and hands every text message to its
// session as a native command. It holds no buffer and no goroutine while
// the connection is idle. Set its fields, make the session with OnGone set
// to Gone, then call Watch; the fields must not change afterwards.
type Conn struct {
	NC      net.Conn
	Sess    transport.Session
	Opts    *ConnOptions // shared by a server's connections
	Deflate bool         // permessage-deflate negotiated
	// OnText, when set, takes each complete text message (valid UTF-8)
	// instead of the session's Handle: for a protocol carried in WebSocket
	// messages (Engine.IO packets). Its rate limiting is its own.
	OnText func(data []byte)
	// OnBinary, when set, takes each complete binary message instead of
	// refusing it (Engine.IO's binary message packets). data is valid
	// during the call only; its rate limiting is its own.
	OnBinary func(data []byte)
	// Out is where the connection's own answers go (a refused binary
	// frame, a rate-limited ping); nil: the native protocol's, Out{C}.
	Out transport.Out
	// Echo, when set, sends every data message back unchanged, text or
	// binary, in one frame of its kind (uncompressed, as every reply),
	// instead of handing it on: the conformance endpoint. Each counts
	// against the rate limit as a command does.
	Echo bool

	c     *hub.Client
	watch netpoll.Watch
	// discarding is set once the reader has refused what the peer sends
	// (see readFailed): from then on its bytes are read and dropped.
	discarding atomic.Bool
}

// ConnOptions are what reading needs that every connection of a server
// shares.
type ConnOptions struct {
	// MaxMessage bounds a message (after inflating); ReadTimeout bounds
	// reading one once it has begun (the pong timeout).
	MaxMessage  int64
	ReadTimeout time.Duration
	Log         *slog.Logger
	// Sparse logs the closes a client causes (protocol violations,
	// oversize or invalid messages, the memory budget), one line per reason
	// per interval. Required.
	Sparse  *sparselog.Logger
	Metrics *metrics.Metrics
}

var (
	readerPool = sync.Pool{New: func() any { return &connReader{br: bufio.NewReaderSize(nil, ReadBufferSize)} }}
	bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	// inflaterPool holds permessage-deflate decompressors (no context
	// takeover, so any connection can use any of them).
	inflaterPool = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}
	// flateTail ends a permessage-deflate message for the decompressor (RFC 7692 §7.2.2).
	flateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}
)

// Watch starts reading: the bytes that came behind the handshake first, if
// any, then whenever the socket is readable, as p tells. Call it once the
// client is greeted.
func (s *Conn) Watch(p *netpoll.Poller, pending *bufio.Reader) {
	s.c = s.Sess.Client()
	if s.Out == nil {
		s.Out = Out{C: s.c}
	}
	if pending != nil && !s.drain(pending) {
		return
	}
	sc, ok := s.NC.(syscall.Conn)
	if !ok {
		s.c.Gone(0)
		return
	}
	if err := s.watch.Start(p, sc, s.onReadable); err != nil {
		s.Opts.Sparse.Warn("cannot watch connection", "err", err)
		s.c.Gone(0)
	}
}

// Gone is the hub client's OnGone hook: stop watching the socket.
func (s *Conn) Gone() { s.watch.Stop() }

// onReadable runs when the socket has data (or EOF). It reads and handles
// every complete message available, then asks to be woken again. The
// poller never runs it twice at once for a connection. It may run before
// watch has stored d (when the client's first command was already there),
// so it uses the d it is given.
func (s *Conn) onReadable(d *netpoll.Desc) {
	r := readerPool.Get().(*connReader)
	br := r.reset(s.NC, s.c.RawConn())
	var ok bool
	if s.discarding.Load() {
		ok = s.discard(br)
	} else {
		ok = s.drain(br)
	}
	r.release()
	if !ok {
		return
	}
	if err := s.watch.Resume(d); err != nil { // gone meanwhile: Gone removes d
		s.c.Gone(0)
	}
}

// drain handles every complete message (or control frame) br holds or the
// socket delivers without waiting, until one ends the connection, and
// reports whether the connection is still to be read (which it is, to be discarded, after a refusal: see
// readFailed). Waiting for a message to begin has no deadline (on Linux
// the poller only calls when bytes or EOF are there; the portable fallback
// waits here); once it has begun, it must arrive within --pong-timeout, as
// a client silent that long is closed (4002) anyway: a half-sent frame
// cannot pin a reader.
func (s *Conn) drain(br *bufio.Reader) bool {
	for {
		if _, err := br.Peek(1); err != nil {
			return s.readFailed(err)
		}
		_ = s.NC.SetReadDeadline(time.Now().Add(s.Opts.ReadTimeout))
		if err := s.readMessage(br); err != nil {
			return s.readFailed(err)
		}
		if s.ended() {
			return false // the message ended the connection: what follows it is not handled
		}
		// More bytes buffered means the next message has begun: its Peek
		// cannot wait, so the deadline is only cleared when leaving.
		if br.Buffered() == 0 {
			_ = s.NC.SetReadDeadline(time.Time{})
			return true
		}
	}
}

// ended reports whether the connection has ended (its hub client is gone,
// as a message can make it: a Socket.IO DISCONNECT).
func (s *Conn) ended() bool {
	select {
	case <-s.c.Done():
		return true
	default:
		return false
	}
}

// errPeerClosed ends reading after the client's close frame was answered.
var errPeerClosed = errors.New("peer closed")

// frameReader is what reading a connection's frames needs during one
// readiness event: gobwas's message reader with its deflate state, and
// room for a control frame's header and payload. Readers are pooled, with
// their callbacks bound once, so that a pong — all an idle connection sends —
// is read and handled without allocating: idle connections leave no garbage
// behind them, and the heap does not grow between collections.
type frameReader struct {
	s        *Conn
	rd       wsutil.Reader
	msgState wsflate.MessageState
	exts     [1]wsutil.RecvExtension // deflateRecv{&msgState}
	hdr      [ws.MaxHeaderSize - 2]byte
	ctl      [ws.MaxControlFramePayloadSize]byte
	onCtl    func(ws.Header, io.Reader) error // intermediate control frames
}

var frameReaders = sync.Pool{New: func() any {
	fr := &frameReader{}
	fr.exts[0] = deflateRecv{&fr.msgState}
	fr.onCtl = fr.intermediate
	return fr
}}

// deflateRecv is permessage-deflate's receive extension, with RFC 6455
// §5.2's rule kept: RSV1 is the extension's, RSV2 and RSV3 stay undefined,
// and a frame that sets them fails the connection. gobwas's header check
// lets every RSV bit through once an extension is negotiated, and wsflate
// clears only RSV1. It sees every frame: the first, the continuations and
// the control frames between them.
type deflateRecv struct{ *wsflate.MessageState }

func (d deflateRecv) UnsetBits(h ws.Header) (ws.Header, error) {
	h, err := d.MessageState.UnsetBits(h)
	if err == nil && h.Rsv != 0 {
		err = ws.ErrProtocolNonZeroRsv
	}
	return h, err
}

// errControlRsv fails a connection that sets an RSV bit on a control frame
// (permessage-deflate's RSV1 included: control frames are never compressed).
var errControlRsv = ws.ProtocolError("reserved bits set on a control frame")

// errBadDeflate fails a connection whose compressed message does not inflate.
var errBadDeflate = ws.ProtocolError("invalid permessage-deflate data")

// readMessage reads one message (any fragments, and control frames between
// them) and handles it, or one control frame sent between messages. It
// returns after that control frame rather than wait for a data frame: a
// client that only answers pings sends nothing else, and its reader must
// not sit on the socket (with the frame deadline running) until it does.
func (s *Conn) readMessage(br *bufio.Reader) error {
	fr := frameReaders.Get().(*frameReader)
	fr.s = s
	var err error
	if b, perr := br.Peek(1); perr == nil && ws.OpCode(b[0]&0x0f).IsControl() {
		err = fr.control(br)
	} else {
		err = fr.message(br)
	}
	fr.s, fr.rd = nil, wsutil.Reader{}
	frameReaders.Put(fr)
	return err
}

// control reads and handles a control frame sent between messages.
func (fr *frameReader) control(br *bufio.Reader) error {
	hdr, err := ws.ReadHeaderBuffer(br, fr.hdr[:])
	if err != nil {
		return err
	}
	// Control frames are never compressed: no extension state applies,
	// and no RSV bit may be set, whatever was negotiated.
	if hdr.Rsv != 0 {
		return errControlRsv
	}
	if err := ws.CheckHeader(hdr, ws.StateServerSide); err != nil {
		return err
	}
	p := fr.ctl[:hdr.Length] // at most 125 bytes: CheckHeader
	if _, err := io.ReadFull(br, p); err != nil {
		return err
	}
	ws.Cipher(p, hdr.Mask, 0)
	return fr.s.control(hdr, p)
}

// intermediate handles a control frame that arrives between the fragments
// of a message (wsutil.Reader's OnIntermediate; r unmasks).
func (fr *frameReader) intermediate(hdr ws.Header, r io.Reader) error {
	p := fr.ctl[:hdr.Length]
	if _, err := io.ReadFull(r, p); err != nil {
		return err
	}
	return fr.s.control(hdr, p)
}

// message reads a data message, all its fragments, and handles it.
func (fr *frameReader) message(br *bufio.Reader) error {
	s := fr.s
	fr.msgState = wsflate.MessageState{}
	fr.rd = wsutil.Reader{
		Source:         br,
		State:          ws.StateServerSide,
		MaxMessageSize: s.Opts.MaxMessage,
		OnIntermediate: fr.onCtl,
	}
	if s.Deflate {
		fr.rd.State = fr.rd.State.Set(ws.StateExtended)
		fr.rd.Extensions = fr.exts[:]
	}
	hdr, err := fr.rd.NextFrame()
	if err != nil {
		return err
	}
	if hdr.OpCode.IsControl() {
		// readMessage sends control frames to control; should one get here
		// anyway, it is still read whole and handled, never taken for data.
		return fr.intermediate(hdr, &fr.rd)
	}
	buf := bufferPool.Get().(*bytes.Buffer)
	buf.Reset()
	acct := s.c.Budget()
	reserved, err := readReserved(buf, &fr.rd, acct, 0)
	defer func() { acct.Release(reserved) }()
	if err == nil && fr.msgState.IsCompressed() {
		reserved, err = s.inflate(buf, acct, reserved)
	}
	if err == nil {
		s.c.Touch()
		err = s.message(hdr.OpCode, buf.Bytes())
	}
	if buf.Cap() <= 64<<10 {
		bufferPool.Put(buf)
	}
	return err
}

// errOverBudget ends a connection whose message being received would pass
// its user's or the server's memory budget.
var errOverBudget = errors.New("memory budget reached")

// readChunk is the least room readReserved makes before a read.
const readChunk = 4096

// readReserved reads r to its end into buf, reserving in acct (as
// budget.Read) all the memory buf holds before each read that may wait
// for the peer: a message half sent holds no more than its user's budget
// allows. reserved is what buf's capacity already has reserved; it returns
// what is reserved now (the caller releases it once the message is
// handled), and errOverBudget when the budget refuses.
func readReserved(buf *bytes.Buffer, r io.Reader, acct *budget.Account, reserved int) (int, error) {
	for {
		if buf.Available() < readChunk {
			buf.Grow(readChunk)
		}
		if more := buf.Cap() - reserved; more > 0 {
			if !acct.Reserve(budget.Read, more) {
				return reserved, errOverBudget
			}
			reserved += more
		}
		p := buf.AvailableBuffer()[:buf.Available()]
		n, err := r.Read(p)
		buf.Write(p[:n])
		if err == io.EOF {
			return reserved, nil
		}
		if err != nil {
			return reserved, err
		}
	}
}

// inflaterBytes is what a permessage-deflate decompressor holds while it
// inflates a message, counted in the budget for that time: its 32 KiB
// window and its Huffman tables, rounded up.
const inflaterBytes = 48 << 10

// inflate decompresses a permessage-deflate message in place, bounded by
// --max-message-bytes. Everything it holds is counted in acct as
// budget.Read, as the compressed message was: the compressed copy and the
// decompressor while it runs, and the inflated message as buf grows
// (reserved is what buf's capacity has reserved; it returns what is
// reserved now). A message whose inflated size passes the user's or the
// server's budget fails with errOverBudget, however small it came.
func (s *Conn) inflate(buf *bytes.Buffer, acct *budget.Account, reserved int) (int, error) {
	held := buf.Len() + len(flateTail) + inflaterBytes
	if !acct.Reserve(budget.Read, held) {
		return reserved, errOverBudget
	}
	defer acct.Release(held)
	in := append(append(make([]byte, 0, buf.Len()+len(flateTail)), buf.Bytes()...), flateTail...)
	fr := inflaterPool.Get().(io.ReadCloser)
	defer inflaterPool.Put(fr)
	if err := fr.(flate.Resetter).Reset(bytes.NewReader(in), nil); err != nil {
		return reserved, err
	}
	buf.Reset()
	limit := s.Opts.MaxMessage
	reserved, err := readReserved(buf, io.LimitReader(fr, limit+1), acct, reserved)
	switch {
	case errors.Is(err, errOverBudget):
		return reserved, err
	case int64(buf.Len()) > limit:
		return reserved, wsutil.ErrMessageTooLarge
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return reserved, errBadDeflate
	}
	return reserved, nil
}

// control handles a ping, pong or close frame; every reply goes through the
// connection's single writer.
func (s *Conn) control(hdr ws.Header, p []byte) error {
	s.c.Touch()
	switch hdr.OpCode {
	case ws.OpPing:
		if s.Sess.Admit(s.Out) { // a flood of pings is limited like one of commands
			s.c.Send(PongFrame(p))
		}
	case ws.OpPong:
	case ws.OpClose:
		code, reason := ws.StatusNoStatusRcvd, ""
		if len(p) >= 2 {
			code, reason = ws.ParseCloseFrameData(p)
			if err := ws.CheckCloseFrameData(code, reason); err != nil {
				return err
			}
			if code >= 5000 { // no range of RFC 6455's; gobwas lets it through
				return ws.ErrProtocolStatusCodeUnknown
			}
		} else if len(p) == 1 {
			return ws.ErrProtocolControlPayloadOverflow
		}
		reply := int(code)
		if code == ws.StatusNoStatusRcvd {
			reply = protocol.CloseNormal
		}
		s.c.CloseReply(reply)
		return errPeerClosed
	}
	return nil
}

// errInvalidUTF8 ends a connection that sent a text message that is not
// valid UTF-8.
var errInvalidUTF8 = errors.New("invalid UTF-8 in text message")

// message handles one complete data message; it fails with errInvalidUTF8
// only.
func (s *Conn) message(op ws.OpCode, data []byte) error {
	s.Opts.Metrics.MessagesIn.Inc()
	s.Opts.Metrics.BytesIn.Add(float64(len(data)))
	if op == ws.OpText && !utf8.Valid(data) {
		return errInvalidUTF8
	}
	if s.Echo {
		if s.Sess.Admit(s.Out) {
			s.c.Send(sealOp(append(NewFrameBuffer(len(data)), data...), byte(op)))
		}
		return nil
	}
	if op != ws.OpText && s.OnBinary != nil {
		s.OnBinary(data)
		return nil
	}
	if op != ws.OpText {
		if !s.Sess.Admit(s.Out) { // a binary frame counts against the rate limit like a command
			return nil
		}
		s.Sess.Error(s.Out, protocol.CodeBinaryNotSupported, "binary frames are not supported; send JSON text frames")
		return nil
	}
	if s.OnText != nil {
		s.OnText(data)
		return nil
	}
	s.Sess.Handle(data, s.Out)
	return nil
}

// readFailed ends the connection after a read error, with the close code
// the error calls for, and reports whether the socket is still to be read.
// A message refused while it arrives (too big, over budget, invalid, not
// completed in time) or a protocol violation gets its close frame; the
// peer may still be sending then, so the socket is read on and what comes
// is discarded (see discard) until the peer ends its side or the hub ends
// the connection after its close grace. Left unread, those bytes would make
// the kernel answer the close with a reset, and a peer that had not read
// the close frame yet would lose it (a reset discards what it has not
// read): it would see an abnormal end, not the code.
func (s *Conn) readFailed(err error) bool {
	var pe ws.ProtocolError
	switch {
	case errors.Is(err, errPeerClosed):
		return false // the close reply is queued; the writer ends the connection
	case errors.Is(err, wsutil.ErrMessageTooLarge), errors.Is(err, wsutil.ErrFrameTooLarge):
		s.Opts.Sparse.Info("message too large, closing", "client", s.c.ID, "user", s.c.UserID)
		return s.refuse(protocol.CloseMessageTooBig, "message too big")
	case errors.As(err, &pe):
		s.Opts.Sparse.Info("protocol violation, closing", "client", s.c.ID, "user", s.c.UserID, "err", err)
		return s.refuse(protocol.CloseProtocolError, string(pe))
	case errors.Is(err, ws.ErrHeaderLengthMSB), errors.Is(err, ws.ErrHeaderLengthUnexpected):
		// gobwas reports these header errors as plain errors, not as
		// protocol errors: a 64-bit length with its top bit set (the other
		// is not returned when reading). A length written in more bytes than
		// it needs is accepted, as gobwas reads it.
		s.Opts.Sparse.Info("protocol violation, closing", "client", s.c.ID, "user", s.c.UserID, "err", err)
		return s.refuse(protocol.CloseProtocolError, "invalid frame length")
	case errors.Is(err, errInvalidUTF8):
		s.Opts.Sparse.Info("invalid UTF-8 in text frame, closing", "client", s.c.ID, "user", s.c.UserID)
		return s.refuse(protocol.CloseInvalidPayload, "invalid UTF-8")
	case errors.Is(err, errOverBudget):
		s.Opts.Sparse.Warn("memory budget reached: message being received refused, closing", "client", s.c.ID, "user", s.c.UserID)
		return s.refuse(protocol.CloseOverBudget, "memory budget reached")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Opts.Sparse.Info("message not completed within pong-timeout, closing", "client", s.c.ID, "user", s.c.UserID, "timeout", s.Opts.ReadTimeout)
		return s.refuse(protocol.CloseNoPong, "message not completed in time")
	}
	s.Opts.Log.Debug("client gone", "client", s.c.ID, "user", s.c.UserID, "err", err)
	s.c.Gone(0)
	return false
}

// refuse closes the connection with code and reason and turns the reader
// to discarding what the peer still sends; it reports true (read on).
// A refusal while discarding cannot happen: discard parses nothing.
func (s *Conn) refuse(code int, reason string) bool {
	s.c.Close(code, reason)
	s.discarding.Store(true)
	// Reads wait no longer than a message may take; the hub ends the
	// connection sooner, after its close grace.
	_ = s.NC.SetReadDeadline(time.Now().Add(s.Opts.ReadTimeout))
	return true
}

// discard reads what the socket holds, one read of at most br's size, and
// drops it: a refused connection's reader, until the peer ends its side or
// the connection ends. It reports whether to read on. At the peer's end of
// stream the connection ends as soon as the close frame is written (at once
// when it is); on any other error (the hub ended the connection, the peer
// reset it, the read deadline passed) it ends now.
func (s *Conn) discard(br *bufio.Reader) bool {
	_, err := br.Peek(1) // one read: the poller said bytes or EOF are there
	if err == nil {
		_, _ = br.Discard(br.Buffered())
		return true
	}
	if errors.Is(err, io.EOF) {
		// Our close is queued or sent: CloseReply ends the connection
		// right after writing it, or now.
		s.c.CloseReply(protocol.CloseNormal)
		return false
	}
	s.c.Gone(0)
	return false
}

// connReader is a pooled read buffer: a connection holds one only while it
// reads. Reads are raw system calls (internal/rawio).
type connReader struct {
	br  *bufio.Reader
	raw rawio.Reader
}

// reset points r at c, read through rc when c has a descriptor.
func (r *connReader) reset(c net.Conn, rc syscall.RawConn) *bufio.Reader {
	if rc != nil {
		r.raw.Reset(rc)
		r.br.Reset(&r.raw)
	} else {
		r.br.Reset(c)
	}
	return r.br
}

// release returns r to readerPool.
func (r *connReader) release() {
	r.br.Reset(nil)
	r.raw.Reset(nil)
	readerPool.Put(r)
}
