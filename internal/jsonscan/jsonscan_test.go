package jsonscan

import "testing"

func TestValueEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // the value ValueEnd finds at the start of in
	}{
		{`"a" ,`, `"a"`},
		{`"a\"b\\" }`, `"a\"b\\"`},
		{`{"a":[1,"}",{"b":"]"}]}, 2`, `{"a":[1,"}",{"b":"]"}]}`},
		{`[[],[[]]]]`, `[[],[[]]]`},
		{`-1.5e3}`, `-1.5e3`},
		{`true,`, `true`},
		{"null\t", `null`},
		{`12`, `12`},
	} {
		if got := c.in[:ValueEnd([]byte(c.in), 0)]; got != c.want {
			t.Errorf("ValueEnd(%s) ends after %s, want %s", c.in, got, c.want)
		}
	}
	if got := SkipSpace([]byte(" \t\r\nx "), 0); got != 4 {
		t.Errorf("SkipSpace = %d, want 4", got)
	}
	if got := SkipSpace([]byte("  "), 1); got != 2 {
		t.Errorf("SkipSpace at the end = %d, want 2", got)
	}
}

func TestPlain(t *testing.T) {
	for in, want := range map[string]string{`"abc"`: "abc", `""`: "", `"café"`: "café"} {
		if got, ok := Plain([]byte(in)); !ok || string(got) != want {
			t.Errorf("Plain(%s) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{`"a\"b"`, `"\u0041"`, "\"\xff\"", `"`, ``, `12`} {
		if got, ok := Plain([]byte(in)); ok {
			t.Errorf("Plain(%s) = %q, want not plain", in, got)
		}
	}
}
