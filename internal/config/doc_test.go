package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md's option table from the options table")

const (
	docPath  = "../../docs/configuration.md"
	docBegin = "<!-- options: generated from internal/config/options.go; go test ./internal/config -run TestConfigurationDoc -update -->\n"
	docEnd   = "<!-- end of options -->\n"
)

// TestConfigurationDoc fails when docs/configuration.md's table of options
// is not the one the options table gives (-update rewrites it).
func TestConfigurationDoc(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q around its table", docPath, docBegin, docEnd)
	}
	got, want := doc[i+len(docBegin):j], Markdown()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(docPath, []byte(doc[:i+len(docBegin)]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's option table differs from the options table; run go test ./internal/config -run TestConfigurationDoc -update\ngot:\n%s\nwant:\n%s", docPath, got, want)
}
