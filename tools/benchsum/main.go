// Command benchsum summarizes rounds of scripts/bench: for every measurement
// it prints the range of each number over the rounds, how many rounds met
// herald's target for it, and, round by round, herald's fan-out p99 against
// the io_uring floor's run in the same round. docs/performance.md reports
// its summary table this way.
//
//	ROUNDS=8 scripts/bench          # runs scripts/bench 8 times, then this
//	go run ./tools/benchsum FILE... # the saved output of scripts/bench runs
//
// A file is one round: the output of one scripts/bench run, perhaps with
// more floor runs appended. A measurement that appears twice in a round
// counts twice (a second floor run); the ratios use the first.
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// target is a goal from the performance issue for one number.
type target struct {
	atMost bool // the number must be at most limit, else at least limit
	limit  float64
	label  string
}

func (t target) met(v float64) bool {
	if t.atMost {
		return v <= t.limit
	}
	return v >= t.limit
}

// series is one number of one measurement over the rounds.
type series struct {
	key    string // "fanout50k p99"
	unit   string
	values []float64
	target *target
}

// extractor pulls one number out of a measurement's section.
type extractor struct {
	suffix string // appended to the measurement's name
	unit   string
	re     *regexp.Regexp
	group  int
	scale  func(value, unit string) (float64, bool) // nil: a plain number
	// optional: a report may leave the line out
	optional bool
}

// latency converts "12.3ms", "1.2s" or "800µs" to milliseconds.
func latency(value, unit string) (float64, bool) {
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, false
	}
	switch unit {
	case "s":
		return v * 1000, true
	case "ms":
		return v, true
	case "µs", "us":
		return v / 1000, true
	}
	return 0, false
}

var (
	reLatency      = regexp.MustCompile(`(?m)^latency\s+p50 ([\d.]+)(µs|ms|s)\s+p90 [\d.]+(?:µs|ms|s)\s+p99 ([\d.]+)(µs|ms|s)`)
	reFloorLatency = regexp.MustCompile(`(?m)^delivery latency\s+p50 ([\d.]+)(µs|ms|s)\s+p99 ([\d.]+)(µs|ms|s)`)
)

// herald bench's and tools/floor's report lines, by kind of measurement.
var (
	idleNumbers = []extractor{
		{suffix: "KiB/conn", unit: "KiB", re: regexp.MustCompile(`(?m)^server RSS/conn\s+([\d.]+) KiB at the end`), group: 1},
	}
	fanoutNumbers = []extractor{
		{suffix: "p50", unit: "ms", re: reLatency, group: 1, scale: latency},
		{suffix: "p99", unit: "ms", re: reLatency, group: 3, scale: latency},
		{suffix: "server µs/delivery", unit: "µs", re: regexp.MustCompile(`(?m)^server CPU/delivery\s+([\d.]+) µs`), group: 1},
		{suffix: "generator µs/delivery", unit: "µs", re: regexp.MustCompile(`(?m)^generator CPU.*, ([\d.]+) µs/delivery\)`), group: 1},
		{suffix: "lost+dup", unit: "", re: regexp.MustCompile(`(?m)^lost/dup/reord\s+(\d+ / \d+)`), group: 1},
	}
	// saturatedNumbers adds what only saturation makes a result: the rate
	// reached, and how far the publishing lanes fell behind (reported only
	// when they did).
	saturatedNumbers = append(slices.Clip(fanoutNumbers),
		extractor{suffix: "deliveries/s", unit: "/s", re: regexp.MustCompile(`(?m)^deliveries\s+\d+ of \d+ expected\s+\((\d+)/s\)`), group: 1},
		extractor{suffix: "lanes behind", unit: "ms", re: regexp.MustCompile(`(?m)^publisher lag\s+fell up to ([\d.]+)(µs|ms|s) behind`), group: 1, scale: latency, optional: true},
	)
	connectNumbers = []extractor{
		{suffix: "connects/s", unit: "/s", re: regexp.MustCompile(`(?m)^connections\s+\d+/\d+ connected in [\d.]+s = (\d+) connects`), group: 1},
		{suffix: "server µs/connect", unit: "µs", re: regexp.MustCompile(`(?m)^server CPU/connect\s+([\d.]+) µs`), group: 1},
	}
	floorFanoutNumbers = []extractor{
		{suffix: "p50", unit: "ms", re: reFloorLatency, group: 1, scale: latency},
		{suffix: "p99", unit: "ms", re: reFloorLatency, group: 3, scale: latency},
		{suffix: "writer µs/delivery", unit: "µs", re: regexp.MustCompile(`(?m)^writer CPU per delivery\s+([\d.]+)µs`), group: 1},
		{suffix: "reader µs/delivery", unit: "µs", re: regexp.MustCompile(`(?m)^reader CPU per delivery\s+([\d.]+)µs`), group: 1},
	}
	floorConnectNumbers = []extractor{
		{suffix: "connects/s", unit: "/s", re: regexp.MustCompile(`(?m)^accepting side\s+(\d+) connections/s`), group: 1},
		{suffix: "accepting µs/connect", unit: "µs", re: regexp.MustCompile(`(?m)^accepting side.*CPU per connection ([\d.]+)µs`), group: 1},
	}
)

// targets are the goals, by series key.
var targets = map[string]target{
	"idle18k KiB/conn":             {atMost: true, limit: 4, label: "≤ 4 KiB"},
	"saturated server µs/delivery": {atMost: true, limit: 1.5, label: "≤ 1.5 µs"},
	"saturated deliveries/s":       {limit: 600000, label: "≥ 600k/s"},
	"fanout50k p99":                {atMost: true, limit: 70, label: "≤ 70 ms"},
	"fanout10k p99":                {atMost: true, limit: 10, label: "≤ 10 ms"},
	"connect connects/s":           {limit: 15000, label: "≥ 15k/s"},
	"connecturl connects/s":        {limit: 15000, label: "≥ 15k/s"},
	"floor50k p99":                 {atMost: true, limit: 70, label: "≤ 70 ms"},
	"floor50kuring p99":            {atMost: true, limit: 70, label: "≤ 70 ms"},
	"floor10k p99":                 {atMost: true, limit: 10, label: "≤ 10 ms"},
	"floor10kuring p99":            {atMost: true, limit: 10, label: "≤ 10 ms"},
	"floorconnect connects/s":      {limit: 15000, label: "≥ 15k/s"},
	"floorconnect1 connects/s":     {limit: 15000, label: "≥ 15k/s"},
	"fanout50k lost+dup":           {atMost: true, limit: 0, label: "none"},
	"fanout10k lost+dup":           {atMost: true, limit: 0, label: "none"},
	"saturated lost+dup":           {atMost: true, limit: 0, label: "none"},
}

// numbersFor says what to read from a measurement, by its name.
func numbersFor(name string) []extractor {
	switch {
	case strings.HasPrefix(name, "idle"):
		return idleNumbers
	case strings.HasPrefix(name, "saturated"):
		return saturatedNumbers
	case strings.HasPrefix(name, "fanout"):
		return fanoutNumbers
	case strings.HasPrefix(name, "connect"):
		return connectNumbers
	case strings.HasPrefix(name, "floorconnect"):
		return floorConnectNumbers
	case strings.HasPrefix(name, "floor"):
		return floorFanoutNumbers
	}
	return nil
}

// section is one measurement's output: the "=== name: ..." line and what follows.
type section struct {
	name string
	text string
}

// sections splits one round's output at its "=== " lines.
func sections(r io.Reader) ([]section, error) {
	var out []section
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var cur *section
	var b strings.Builder
	flush := func() {
		if cur != nil {
			cur.text = b.String()
			out = append(out, *cur)
		}
		b.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "=== "); ok {
			flush()
			name, _, _ := strings.Cut(rest, ":")
			cur = &section{name: strings.TrimSpace(name)}
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	flush()
	return out, sc.Err()
}

// summary gathers the series of all rounds.
type summary struct {
	order  []string
	series map[string]*series
	ratios []string // one line per round
}

func newSummary() *summary { return &summary{series: make(map[string]*series)} }

func (s *summary) add(key, unit string, v float64) {
	se := s.series[key]
	if se == nil {
		se = &series{key: key, unit: unit}
		if t, ok := targets[key]; ok {
			se.target = &t
		}
		s.series[key] = se
		s.order = append(s.order, key)
	}
	se.values = append(se.values, v)
}

// addRound reads one round's sections. A number a section does not report
// (a measurement that failed) is left out, and named in the returned list.
func (s *summary) addRound(label string, secs []section) []string {
	var missing []string
	first := map[string]float64{} // the first p99 of each measurement, for the ratios
	for _, sec := range secs {
		for _, ex := range numbersFor(sec.name) {
			key := sec.name + " " + ex.suffix
			m := ex.re.FindStringSubmatch(sec.text)
			if m == nil {
				if !ex.optional {
					missing = append(missing, label+": "+key)
				}
				continue
			}
			var v float64
			var ok bool
			switch {
			case ex.suffix == "lost+dup":
				lost, dup, _ := strings.Cut(m[1], " / ")
				a, _ := strconv.Atoi(strings.TrimSpace(lost))
				b, _ := strconv.Atoi(strings.TrimSpace(dup))
				v, ok = float64(a+b), true
			case ex.scale != nil:
				v, ok = ex.scale(m[ex.group], m[ex.group+1])
			default:
				f, err := strconv.ParseFloat(m[ex.group], 64)
				v, ok = f, err == nil
			}
			if !ok {
				missing = append(missing, label+": "+key)
				continue
			}
			s.add(key, ex.unit, v)
			if ex.suffix == "p99" {
				if _, seen := first[sec.name]; !seen {
					first[sec.name] = v
				}
			}
		}
	}
	var parts []string
	for _, p := range [][2]string{{"fanout50k", "floor50kuring"}, {"fanout10k", "floor10kuring"}} {
		h, okh := first[p[0]]
		f, okf := first[p[1]]
		if okh && okf && f > 0 {
			parts = append(parts, fmt.Sprintf("%s p99 %.1f ms = %.2f× %s's %.1f ms", p[0], h, h/f, p[1], f))
		}
	}
	if len(parts) > 0 {
		s.ratios = append(s.ratios, label+": "+strings.Join(parts, "; "))
	}
	return missing
}

// format prints a series' values with one precision, chosen by the largest
// and by whether all are whole numbers.
func format(values []float64, v float64) string {
	whole := true
	for _, x := range values {
		whole = whole && x == math.Trunc(x)
	}
	prec := 2
	switch hi := slices.Max(values); {
	case whole || hi >= 1000:
		prec = 0
	case hi >= 100:
		prec = 1
	case hi < 1:
		prec = 3
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func (s *summary) write(w io.Writer, rounds int) {
	fmt.Fprintf(w, "%d round(s)\n", rounds)
	for _, key := range s.order {
		se := s.series[key]
		lo, hi := slices.Min(se.values), slices.Max(se.values)
		line := fmt.Sprintf("%-36s n=%-3d %s–%s %s", key, len(se.values), format(se.values, lo), format(se.values, hi), se.unit)
		if se.target != nil {
			met := 0
			for _, v := range se.values {
				if se.target.met(v) {
					met++
				}
			}
			line += fmt.Sprintf("   target %s: %d of %d", se.target.label, met, len(se.values))
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	if len(s.ratios) > 0 {
		fmt.Fprintln(w, "herald's fan-out p99 against the io_uring floor's first run in the same round:")
		for _, r := range s.ratios {
			fmt.Fprintln(w, "  "+r)
		}
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: benchsum FILE... (each the output of one scripts/bench run)")
		os.Exit(2)
	}
	s := newSummary()
	var missing []string
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchsum:", err)
			os.Exit(1)
		}
		secs, err := sections(f)
		_ = f.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchsum:", name+":", err)
			os.Exit(1)
		}
		missing = append(missing, s.addRound(name, secs)...)
	}
	s.write(os.Stdout, len(os.Args)-1)
	for _, m := range missing {
		fmt.Fprintln(os.Stderr, "benchsum: not reported:", m)
	}
	if len(missing) > 0 {
		os.Exit(1)
	}
}
