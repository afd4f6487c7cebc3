package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Load builds the configuration for `herald serve` from, in increasing
// precedence: Default(), the optional config file (--config PATH or
// HERALD_CONFIG; .yaml/.yml or .toml by extension), HERALD_* environment
// variables, then command-line flags.
//
// getenv is os.Getenv in production (injected for tests); an environment
// variable set to the empty string counts as unset. Usage/help goes to out.
// It returns flag.ErrHelp when -h/--help was given (after printing help to
// out). Any other problem (unknown flag, bad value, unreadable or invalid
// file) is returned as a one-line error and nothing is printed, so the caller
// reports it exactly once.
//
// The listen address is special: when no layer sets addr (an empty addr
// counts as unset), the PORT environment variable gives ":"+PORT, and
// otherwise Default().Addr is used.
//
// Load does not call Validate; the caller does.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	settings := options()

	fs := flag.NewFlagSet("herald serve", flag.ContinueOnError)
	// The flag package prints parse errors (and the usage) to its output; the
	// error is returned instead, and help is printed below, so keep it quiet.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	var configPath string
	fs.StringVar(&configPath, "config", "", "config file")
	values := make([]*flagValue, len(settings))
	for i := range settings {
		values[i] = &flagValue{s: &settings[i]}
		fs.Var(values[i], settings[i].name, settings[i].usage)
	}

	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		writeHelp(out, settings)
		return Config{}, flag.ErrHelp
	}
	if err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (herald serve takes only flags)", fs.Arg(0))
	}

	cfg := Default()
	cfg.Addr = "" // resolved last, so that PORT only applies when nothing else set it

	// --config wins over HERALD_CONFIG even when empty: --config "" means no file.
	configFlagSet := false
	fs.Visit(func(f *flag.Flag) { configFlagSet = configFlagSet || f.Name == "config" })
	if !configFlagSet {
		configPath = getenv("HERALD_CONFIG")
	}
	if configPath != "" {
		if err := loadFile(configPath, &cfg); err != nil {
			return Config{}, err
		}
	}

	for i := range settings {
		if err := settings[i].applyEnv(&cfg, getenv); err != nil {
			return Config{}, err
		}
	}

	for i, v := range values {
		if err := settings[i].applyFlag(&cfg, v.values); err != nil {
			return Config{}, err
		}
	}

	if cfg.Addr == "" {
		if port := getenv("PORT"); port != "" {
			cfg.Addr = ":" + port
		} else {
			cfg.Addr = Default().Addr
		}
	}
	return cfg, nil
}

// option is one entry of the options table. Exactly one of set (scalar
// options) and list (list options) is non-nil.
type option struct {
	name   string   // flag name, e.g. "ws-path"
	arg    string   // placeholder for the value in help, e.g. "PATH"; "" for booleans
	usage  string   // one-line description, without default or env
	envs   []string // environment variables, in order
	file   string   // key in the YAML or TOML file
	def    string   // default, as it would be given on the command line
	kind   string   // what a value is, for errors: "duration", "byte size", ...
	isBool bool     // boolean flag: --name alone means true

	// set parses v into the option's field of c.
	set func(c *Config, v string) error

	// list returns the option's field; the environment variable holds a
	// comma-separated list.
	list func(c *Config) *[]string
	// repeat makes every use of the flag add one element. Otherwise the flag
	// takes a comma-separated list and the last use wins.
	repeat bool

	// show formats the option's value in c, for the help text.
	show func(c *Config) string
	// checkFn, when not nil, checks the option's value in c (Validate).
	checkFn func(c *Config) error
}

func (o option) env(names ...string) option { o.envs = names; return o }
func (o option) key(k string) option        { o.file = k; return o }
func (o option) repeated() option           { o.repeat = true; return o }
func (o option) shown(f func(*Config) string) option {
	o.show = f
	return o
}
func (o option) check(f func(*Config) error) option { o.checkFn = f; return o }

// setDefault puts the option's default into c.
func (o *option) setDefault(c *Config) {
	switch {
	case o.list != nil:
		*o.list(c) = splitList(o.def)
	case o.def != "":
		if err := o.set(c, o.def); err != nil {
			panic(fmt.Sprintf("config: option %s: default %q: %v", o.name, o.def, err))
		}
	}
}

// applyEnv applies the option's environment variables, if set, to c.
func (s *option) applyEnv(c *Config, getenv func(string) string) error {
	if s.list != nil {
		var items []string
		found := false
		for _, name := range s.envs {
			if v := getenv(name); v != "" {
				found = true
				items = append(items, splitList(v)...)
			}
		}
		if found {
			*s.list(c) = items
		}
		return nil
	}
	for _, name := range s.envs {
		v := getenv(name)
		if v == "" {
			continue
		}
		if err := s.set(c, v); err != nil {
			return fmt.Errorf("invalid value %q for %s: %v", v, name, err)
		}
	}
	return nil
}

// applyFlag applies the values given on the command line (in order; none if
// the flag was not used) to c. A list flag replaces the list from lower layers.
func (s *option) applyFlag(c *Config, values []string) error {
	if len(values) == 0 {
		return nil
	}
	last := values[len(values)-1]
	switch {
	case s.list != nil && s.repeat:
		*s.list(c) = append([]string(nil), values...)
	case s.list != nil:
		*s.list(c) = splitList(last)
	default:
		if err := s.set(c, last); err != nil {
			return fmt.Errorf("invalid value %q for flag --%s: %v", last, s.name, err)
		}
	}
	return nil
}

// flagValue is the flag.Value registered for an option. It checks each value
// as it is parsed and records it; Load applies the values after the file and
// the environment.
type flagValue struct {
	s      *option
	values []string
}

func (v *flagValue) String() string { return "" }

func (v *flagValue) IsBoolFlag() bool { return v.s != nil && v.s.isBool }

func (v *flagValue) Set(s string) error {
	if v.s.set != nil {
		var scratch Config
		if err := v.s.set(&scratch, s); err != nil {
			return err
		}
	}
	v.values = append(v.values, s)
	return nil
}

// RedactURL hides a URL's password, for help and logs.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(malformed)"
	}
	return u.Redacted()
}

// envName is the environment variable for a flag: HERALD_ plus the flag name
// in upper case with dashes as underscores.
func envName(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newOption fills what every kind shares: the environment variable and the
// file key follow from the flag name.
func newOption(name, arg, def, usage, kind string) option {
	return option{name: name, arg: arg, def: def, usage: usage, kind: kind,
		envs: []string{envName(name)}, file: strings.ReplaceAll(name, "-", "_")}
}

func stringOpt(name, arg, def, usage string, field func(*Config) *string) option {
	o := newOption(name, arg, def, usage, "string")
	o.set = func(c *Config, v string) error { *field(c) = v; return nil }
	o.show = func(c *Config) string {
		if v := *field(c); v != "" {
			return strconv.Quote(v)
		}
		return "none"
	}
	return o
}

func listOpt(name, arg, def, usage string, field func(*Config) *[]string) option {
	o := newOption(name, arg, def, usage, "list")
	o.list = field
	o.show = func(c *Config) string { return showList(*field(c)) }
	return o
}

func boolOpt(name string, def bool, usage string, field func(*Config) *bool) option {
	o := newOption(name, "", strconv.FormatBool(def), usage, "boolean")
	o.isBool = true
	o.set = func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		*field(c) = b
		return nil
	}
	o.show = func(c *Config) string { return strconv.FormatBool(*field(c)) }
	return o
}

func intOpt(name, def, usage string, field func(*Config) *int) option {
	o := newOption(name, "N", def, usage, "whole number")
	o.set = func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("want an integer")
		}
		*field(c) = n
		return nil
	}
	o.show = func(c *Config) string { return strconv.Itoa(*field(c)) }
	return o
}

func floatOpt(name, arg, def, usage string, field func(*Config) *float64) option {
	o := newOption(name, arg, def, usage, "number")
	o.set = func(c *Config, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("want a number")
		}
		*field(c) = f
		return nil
	}
	o.show = func(c *Config) string { return strconv.FormatFloat(*field(c), 'g', -1, 64) }
	return o
}

func durationOpt(name, def, usage string, field func(*Config) *time.Duration) option {
	o := newOption(name, "DURATION", def, usage, "duration")
	o.set = func(c *Config, v string) error {
		d, err := parseDuration(v)
		if err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
	o.show = func(c *Config) string { return field(c).String() }
	return o
}

func bytesOpt(name, def, usage string, field func(*Config) *int64) option {
	o := newOption(name, "SIZE", def, usage, "byte size")
	o.set = func(c *Config, v string) error {
		n, err := parseBytes(v)
		if err != nil {
			return err
		}
		*field(c) = n
		return nil
	}
	o.show = func(c *Config) string { return formatBytes(*field(c)) }
	return o
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty elements.
func splitList(s string) []string {
	var items []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func showList(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strconv.Quote(strings.Join(items, ","))
}

// parseDuration parses a duration such as "30s" or "1m30s" (time.ParseDuration).
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, errors.New(`want a duration such as "500ms", "30s" or "1m30s"`)
	}
	return d, nil
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// parseBytes parses a byte size: a non-negative integer, optionally followed
// by a unit. Units are case-insensitive and binary: B; K, KB, KiB = 1024;
// M, MB, MiB = 1024²; G, GB, GiB = 1024³. "64KB" is therefore 65536 bytes.
func parseBytes(s string) (int64, error) {
	errSize := errors.New(`want a byte size such as "1048576", "512KiB" or "1MiB"`)
	s = strings.TrimSpace(s)
	digits := 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	if digits == 0 {
		return 0, errSize
	}
	n, err := strconv.ParseInt(s[:digits], 10, 64)
	if err != nil {
		return 0, errSize
	}
	var unit int64
	switch strings.ToLower(strings.TrimSpace(s[digits:])) {
	case "", "b":
		unit = 1
	case "k", "kb", "kib":
		unit = kib
	case "m", "mb", "mib":
		unit = mib
	case "g", "gb", "gib":
		unit = gib
	default:
		return 0, errSize
	}
	if n > math.MaxInt64/unit {
		return 0, errors.New("byte size too large")
	}
	return n * unit, nil
}

// formatBytes formats n with the largest binary unit that divides it.
func formatBytes(n int64) string {
	switch {
	case n != 0 && n%gib == 0:
		return strconv.FormatInt(n/gib, 10) + "GiB"
	case n != 0 && n%mib == 0:
		return strconv.FormatInt(n/mib, 10) + "MiB"
	case n != 0 && n%kib == 0:
		return strconv.FormatInt(n/kib, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10)
	}
}

const helpHeader = `Usage: herald serve [flags]

Runs the herald WebSocket server. Every option can be set by a flag, by a
HERALD_* environment variable or in an optional YAML (.yaml, .yml) or TOML
(.toml) file named by --config, whose keys are the flag names with
underscores (ws_path, api_keys, ...); flags override environment variables,
which override the file. Channel namespaces can only be set in the file.
Sizes are bytes, optionally with a binary unit: 512KiB, 1MiB, 64KB (K, KB
and KiB all mean 1024). Durations look like 500ms, 30s or 1m30s.

Flags:
`

// writeHelp prints the usage text for `herald serve`.
func writeHelp(out io.Writer, settings []option) {
	io.WriteString(out, helpHeader)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  --config PATH\tconfig file, YAML or TOML by extension (default none; env HERALD_CONFIG)\n")
	def := Default()
	for _, s := range settings {
		flagName := "--" + s.name
		if s.arg != "" {
			flagName += " " + s.arg
		}
		env := strings.Join(s.envs, " or ")
		if s.list != nil {
			env += ", comma-separated"
		}
		fmt.Fprintf(tw, "  %s\t%s (default %s; env %s)\n", flagName, s.usage, s.show(&def), env)
	}
	tw.Flush()
}

// Markdown returns the table of every option as docs/configuration.md
// shows it: flag, environment, file key, default and meaning.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| flag | env | file key | default | meaning |\n| --- | --- | --- | --- | --- |\n")
	def := Default()
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, o := range options() {
		flagName := "`--" + o.name + "`"
		if o.repeat {
			flagName += " (repeatable)"
		}
		envs := make([]string, len(o.envs))
		for i, e := range o.envs {
			envs[i] = "`" + e + "`"
		}
		env := strings.Join(envs, " or ")
		if o.list != nil {
			env += " (comma-separated)"
		}
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s |\n", flagName, env, o.file, cell(o.show(&def)), cell(o.usage))
	}
	return b.String()
}
