package protocol

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// goldenCase is one file of testdata/golden: real frames recorded from herald
// (clients/js: npm run golden) under the commands that produced them. The
// JavaScript client's tests read the same files, so the two sides share one
// description of the wire.
type goldenCase struct {
	Steps []struct {
		Send    json.RawMessage              `json:"send"`
		Receive map[string][]json.RawMessage `json:"receive"`
	} `json:"steps"`
}

// goldenFrame holds every field a server frame may carry.
type goldenFrame struct {
	Type         string          `json:"type"`
	Channel      string          `json:"channel"`
	ClientID     string          `json:"clientId"`
	UserID       string          `json:"userId"`
	Role         string          `json:"role"`
	Org          string          `json:"org"`
	Timestamp    string          `json:"timestamp"`
	PingInterval int64           `json:"pingInterval"`
	Offset       uint64          `json:"offset"`
	Epoch        string          `json:"epoch"`
	Recovered    *bool           `json:"recovered"`
	Duplicate    bool            `json:"duplicate"`
	Truncated    bool            `json:"truncated"`
	ID           json.RawMessage `json:"id"`
	Data         json.RawMessage `json:"data"`
	From         string          `json:"from"`
	Event        string          `json:"event"`
	Code         Code            `json:"code"`
	Message      string          `json:"message"`
	User         struct {
		ClientID string `json:"clientId"`
		UserID   string `json:"userId"`
	} `json:"user"`
	Publications []struct {
		Data      json.RawMessage `json:"data"`
		Timestamp string          `json:"timestamp"`
		From      string          `json:"from"`
		Offset    uint64          `json:"offset"`
		Event     string          `json:"event"`
	} `json:"publications"`
}

// encodeGolden encodes f again with this package's encoders; ok is false for
// a frame type encoded elsewhere (presence, by the server's API code).
func encodeGolden(t *testing.T, f *goldenFrame) (b []byte, ok bool) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("timestamp %q: %v", s, err)
		}
		return tm
	}
	pos := Position{Offset: f.Offset, Epoch: f.Epoch}
	switch f.Type {
	case TypeConnected:
		return AppendConnected(nil, &Connected{ClientID: f.ClientID, UserID: f.UserID, Role: f.Role, OrgID: f.Org,
			Time: at(f.Timestamp), PingInterval: time.Duration(f.PingInterval) * time.Millisecond}), true
	case TypeSubscribed:
		return AppendSubscribed(nil, f.Channel, pos, f.Recovered, f.ID), true
	case TypeUnsubscribed:
		return AppendAck(nil, f.Type, f.Channel, f.ID), true
	case TypePublished:
		return AppendPublished(nil, f.Channel, pos, f.Duplicate, f.ID), true
	case TypeMessage:
		return AppendMessage(nil, &Message{Channel: f.Channel, Data: f.Data, Time: at(f.Timestamp), From: f.From, Offset: f.Offset, Event: f.Event}), true
	case TypeHistory:
		pubs := make([]Message, len(f.Publications))
		for i, p := range f.Publications {
			pubs[i] = Message{Data: p.Data, Time: at(p.Timestamp), From: p.From, Offset: p.Offset, Event: p.Event}
		}
		return AppendHistory(nil, f.Channel, pos, pubs, f.Truncated, f.ID), true
	case TypeJoin, TypeLeave:
		return AppendJoinLeave(nil, f.Type, f.Channel, f.User.ClientID, f.User.UserID), true
	case TypePong:
		return AppendPong(nil, at(f.Timestamp), f.ID), true
	case TypeError:
		return AppendError(nil, f.Code, f.Message, f.Channel, f.ID), true
	}
	return nil, false
}

// TestGoldenFrames: every recorded server frame is exactly what this package's
// encoders write for its fields, every recorded command decodes, and the files
// hold every frame type the server sends.
func TestGoldenFrames(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	seen := map[string]bool{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var c goldenCase
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for i, step := range c.Steps {
			if len(step.Send) > 0 {
				cmd, err := DecodeCommand(step.Send)
				if err == nil {
					err = cmd.Validate()
				}
				if errs := hasErrorFor(step.Receive); err != nil && !errs {
					t.Errorf("%s step %d: command %s: %v", file, i, step.Send, err)
				}
			}
			for _, frames := range step.Receive {
				for _, fr := range frames {
					var f goldenFrame
					if err := json.Unmarshal(fr, &f); err != nil {
						t.Fatalf("%s step %d: %s: %v", file, i, fr, err)
					}
					seen[f.Type] = true
					got, ok := encodeGolden(t, &f)
					if !ok {
						continue
					}
					if !bytes.Equal(got, fr) {
						t.Errorf("%s step %d:\n recorded %s\n encoded  %s", file, i, fr, got)
					}
				}
			}
		}
	}
	for _, typ := range []string{TypeConnected, TypeSubscribed, TypeUnsubscribed, TypePublished, TypeMessage,
		TypeHistory, TypePresence, TypeJoin, TypeLeave, TypePong, TypeError} {
		if !seen[typ] {
			t.Errorf("no golden %q frame", typ)
		}
	}
}

// hasErrorFor reports whether a step's answer is an error frame: then its
// command was meant to be refused.
func hasErrorFor(receive map[string][]json.RawMessage) bool {
	for _, frames := range receive {
		for _, fr := range frames {
			if bytes.HasPrefix(fr, []byte(`{"type":"error"`)) {
				return true
			}
		}
	}
	return false
}
