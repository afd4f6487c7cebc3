package ws

import (
	"io"
	"testing"

	"github.com/herald-rt/herald/internal/rawio"
	"github.com/herald-rt/herald/internal/testnet"
)

// TestConnReader: a pooled reader reads a TCP connection through its
// RawConn (raw reads, internal/rawio) or, without one, through the
// connection itself, and holds nothing once released.
func TestConnReader(t *testing.T) {
	s, c := testnet.TCPPair(t)
	for _, rc := range []bool{true, false} {
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		r := readerPool.Get().(*connReader)
		var br io.Reader
		if rc {
			br = r.reset(s, rawio.RawConn(s))
		} else {
			br = r.reset(s, nil)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hello" {
			t.Fatalf("raw %v: read %q, %v", rc, buf, err)
		}
		r.release()
		if r.br.Buffered() != 0 {
			t.Fatal("a released reader holds bytes")
		}
	}
}
