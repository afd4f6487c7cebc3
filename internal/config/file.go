package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
)

// loadFile overlays the YAML or TOML file at path onto c. Keys absent from
// the file leave c unchanged; unknown keys are an error. Every key but
// namespaces is an option of the options table, read as its flag would be.
func loadFile(path string, c *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	byKey := make(map[string]*option)
	opts := options()
	for i := range opts {
		byKey[opts[i].file] = &opts[i]
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		err = decodeYAML(data, c, byKey)
	case ".toml":
		err = decodeTOML(data, c, byKey)
	default:
		return fmt.Errorf("config file %s: unsupported extension %q (want .yaml, .yml or .toml)", path, ext)
	}
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// setFromFile sets o in c from a file's value: one scalar written as text,
// or the elements of a list. where prefixes errors ("line 3: " or "").
func setFromFile(o *option, c *Config, where string, scalar string, list []string, isList bool) error {
	if o.list != nil {
		if !isList {
			list = splitList(scalar)
		}
		*o.list(c) = list
		return nil
	}
	if isList {
		return fmt.Errorf("%s%s: want one %s, not a list", where, o.file, o.kind)
	}
	if err := o.set(c, scalar); err != nil {
		return fmt.Errorf("%sinvalid %s %q for %s: %v", where, o.kind, scalar, o.file, err)
	}
	return nil
}

// yamlFile is what a YAML file decodes into: namespaces by their struct
// (unknown keys in them are refused), every other key kept as a node.
type yamlFile struct {
	Namespaces []Namespace          `yaml:"namespaces"`
	Options    map[string]yaml.Node `yaml:",inline"`
}

// yamlIntKeys are the keys whose values are whole numbers: the options of
// that kind and a namespace's history_size. yaml.v3 decodes a float such
// as 1.5 into an int by cutting it (TOML refuses it), so these are checked
// first.
func yamlIntKeys() map[string]bool {
	keys := map[string]bool{"history_size": true}
	for _, o := range options() {
		if o.kind == "whole number" {
			keys[o.file] = true
		}
	}
	return keys
}

// checkYAMLInts reports the first of keys, at any depth, whose value is not
// an integer.
func checkYAMLInts(n *yaml.Node, keys map[string]bool) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if keys[k.Value] && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float" {
				return fmt.Errorf("line %d: %s: want a whole number, got %s", v.Line, k.Value, v.Value)
			}
		}
	}
	for _, c := range n.Content {
		if err := checkYAMLInts(c, keys); err != nil {
			return err
		}
	}
	return nil
}

// yamlParseLine matches yaml.v3's parser errors, whose line numbers count
// from 0 (its scanner's count from 1).
var yamlParseLine = regexp.MustCompile(`^yaml: line (\d+): (did not find expected .*)$`)

// yamlSyntaxError restates a syntax error of yaml.v3 with the line counted
// from 1.
func yamlSyntaxError(err error) error {
	sub := yamlParseLine.FindStringSubmatch(err.Error())
	if sub == nil {
		return err
	}
	n, _ := strconv.Atoi(sub[1])
	return fmt.Errorf("yaml: line %d: %s", n+1, sub[2])
}

// yamlUnknownField matches yaml.v3's message for a key with no struct field.
var yamlUnknownField = regexp.MustCompile(`^(line \d+): field (\S+) not found in type \S+$`)

func decodeYAML(data []byte, c *Config, byKey map[string]*option) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return yamlSyntaxError(err)
	}
	if err := checkYAMLInts(&doc, yamlIntKeys()); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f yamlFile
	f.Namespaces = c.Namespaces
	err := dec.Decode(&f)
	if errors.Is(err, io.EOF) { // empty file
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		// yaml.v3 reports one error per line, mentioning Go type names;
		// make it one line in the file's terms.
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if sub := yamlUnknownField.FindStringSubmatch(m); sub != nil {
				m = fmt.Sprintf("%s: unknown key %q", sub[1], sub[2])
			}
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	if err != nil {
		return yamlSyntaxError(err)
	}
	var extra yaml.Node
	if dec.Decode(&extra) != io.EOF {
		return errors.New("more than one YAML document")
	}
	keys := make([]string, 0, len(f.Options))
	for k := range f.Options {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return f.Options[keys[i]].Line < f.Options[keys[j]].Line })
	for _, k := range keys {
		v := f.Options[k]
		where := fmt.Sprintf("line %d: ", v.Line)
		o := byKey[k]
		if o == nil {
			return fmt.Errorf("%sunknown key %q", where, k)
		}
		var err error
		switch v.Kind {
		case yaml.ScalarNode:
			if v.ShortTag() == "!!null" {
				v.Value = ""
			}
			err = setFromFile(o, c, where, v.Value, nil, false)
		case yaml.SequenceNode:
			items := make([]string, 0, len(v.Content))
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: %s: want a list of values", e.Line, k)
				}
				items = append(items, e.Value)
			}
			err = setFromFile(o, c, where, "", items, true)
		default:
			err = fmt.Errorf("%s%s: want a %s", where, k, o.kind)
		}
		if err != nil {
			return err
		}
	}
	c.Namespaces = f.Namespaces
	return nil
}

func decodeTOML(data []byte, c *Config, byKey map[string]*option) error {
	var raw map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "namespaces" {
			if err := md.PrimitiveDecode(raw[k], &c.Namespaces); err != nil {
				return err
			}
			continue
		}
		o := byKey[k]
		if o == nil {
			return fmt.Errorf("unknown key %q", k)
		}
		var v any
		if err := md.PrimitiveDecode(raw[k], &v); err != nil {
			return err
		}
		if err := setTOML(o, c, v); err != nil {
			return err
		}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = fmt.Sprintf("%q", k.String())
		}
		sort.Strings(keys)
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	return nil
}

// setTOML sets o from a TOML value. Durations must be strings ("30s"): a
// bare number is refused rather than read as nanoseconds.
func setTOML(o *option, c *Config, v any) error {
	switch v := v.(type) {
	case string:
		return setFromFile(o, c, "", v, nil, false)
	case []any:
		items := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%s: want a list of strings", o.file)
			}
			items[i] = s
		}
		return setFromFile(o, c, "", "", items, true)
	case int64:
		if o.kind == "duration" {
			return fmt.Errorf("invalid duration %v for %s: want a string such as \"30s\"", v, o.file)
		}
		return setFromFile(o, c, "", strconv.FormatInt(v, 10), nil, false)
	case float64:
		if o.kind == "duration" {
			return fmt.Errorf("invalid duration %v for %s: want a string such as \"30s\"", v, o.file)
		}
		return setFromFile(o, c, "", strconv.FormatFloat(v, 'g', -1, 64), nil, false)
	case bool:
		return setFromFile(o, c, "", strconv.FormatBool(v), nil, false)
	default:
		return fmt.Errorf("%s: want a %s, got %v", o.file, o.kind, v)
	}
}

// Duration is a time.Duration written in files as a string such as "30s".
// Bare numbers are rejected rather than read as nanoseconds.
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as \"30s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q: %v", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

func (d *Duration) UnmarshalTOML(data any) error {
	s, ok := data.(string)
	if !ok {
		return fmt.Errorf("invalid duration %v: want a string such as \"30s\"", data)
	}
	v, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}
