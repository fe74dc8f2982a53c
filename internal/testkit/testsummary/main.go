// Command testsummary reads `go test -json` on stdin and prints what `go test` prints
// without -v (one line per package, and the output of failed tests), then one loud line
// naming every integration test that was skipped because a service (PostgreSQL,
// MariaDB, Tryton) is not installed, so a run that says "ok" cannot hide them.
//
// It exits 1 when a test, a package or a build failed, or the input ended without a
// package result, and 0 otherwise. `make test` runs it as:
//
//	go test -race -json ./... | go run ./internal/testkit/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// skipMarker starts the message internal/testkit/testsvc.Missing skips a test with.
const skipMarker = "INTEGRATION TEST NOT RUN: "

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string // build-output and build-fail events
	FailedBuild string // a package's fail event when its build failed
}

// line is one output line, with the test it belongs to ("" for the package).
type line struct{ test, text string }

// pkgState is what was seen of one package until its result.
type pkgState struct {
	lines  []line
	failed map[string]bool
	passed map[string]bool // their lines are dropped at the next compaction
	limit  int             // compact when lines reach it
}

// compactAt is how many buffered lines of a package trigger dropping those of tests
// that passed (chatty tests under -json would otherwise fill memory).
const compactAt = 50000

func (p *pkgState) compact() {
	if len(p.lines) < max(p.limit, compactAt) {
		return
	}
	p.lines = slices.DeleteFunc(p.lines, func(l line) bool { return l.test != "" && p.passed[l.test] })
	p.limit = 2 * len(p.lines)
}

// skip is an integration test that did not run, and why.
type skip struct{ test, what string }

type summary struct {
	out      io.Writer
	pkgs     map[string]*pkgState
	skips    []skip
	failed   bool
	results  int
	notJSON  int
	building map[string][]string // import path -> build output
	// recap names what failed, printed again at the end: a CI log is often read from
	// its tail, and a timed-out package's goroutine dump pushes its name far above it.
	recap []string
}

func newSummary(out io.Writer) *summary {
	return &summary{out: out, pkgs: map[string]*pkgState{}, building: map[string][]string{}}
}

func (s *summary) pkg(name string) *pkgState {
	p := s.pkgs[name]
	if p == nil {
		p = &pkgState{failed: map[string]bool{}, passed: map[string]bool{}}
		s.pkgs[name] = p
	}
	return p
}

// add handles one input line.
func (s *summary) add(raw []byte) {
	var e event
	if err := json.Unmarshal(raw, &e); err != nil || e.Action == "" {
		// go test writes some errors (e.g. a pattern matching no packages) as text.
		s.notJSON++
		fmt.Fprintln(s.out, string(raw))
		return
	}
	switch e.Action {
	case "build-output":
		s.building[e.ImportPath] = append(s.building[e.ImportPath], e.Output)
		return
	case "build-fail":
		fmt.Fprint(s.out, strings.Join(s.building[e.ImportPath], ""))
		delete(s.building, e.ImportPath)
		s.failed = true
		return
	}
	p := s.pkg(e.Package)
	switch e.Action {
	case "output":
		p.lines = append(p.lines, line{e.Test, e.Output})
		p.compact()
	case "skip":
		if e.Test == "" { // a package without test files
			s.results++
			s.flush(e.Package, p, false)
			return
		}
		p.passed[e.Test] = true
		for _, l := range p.lines {
			if l.test == e.Test {
				if i := strings.Index(l.text, skipMarker); i >= 0 {
					what, _, _ := strings.Cut(l.text[i+len(skipMarker):], " is not available")
					s.skips = append(s.skips, skip{test: shortPkg(e.Package) + "." + e.Test, what: strings.TrimSpace(what)})
					break
				}
			}
		}
	case "fail":
		s.failed = true
		if e.Test != "" {
			p.failed[e.Test] = true
			return
		}
		s.results++
		s.flush(e.Package, p, true)
	case "pass":
		if e.Test != "" {
			p.passed[e.Test] = true
		}
		if e.Test == "" {
			s.results++
			s.flush(e.Package, p, false)
		}
	}
}

// flush prints a finished package: the output of its failed tests when it failed, then
// the package's own lines ("ok ...", "FAIL ...", "? ... [no test files]").
func (s *summary) flush(name string, p *pkgState, failed bool) {
	if failed {
		s.recap = append(s.recap, recapOf(name, p)...)
	}
	for _, l := range p.lines {
		switch {
		case l.test == "":
			if !failed && strings.TrimSpace(l.text) == "PASS" {
				continue // go test without -v does not print it either
			}
		case !failed || !p.failed[l.test] || isProgress(l.text):
			continue
		}
		fmt.Fprint(s.out, l.text)
	}
	delete(s.pkgs, name)
}

// recapOf is a failed package's lines for the recap: its failed tests and, when its
// test binary panicked (a timeout included), the panic line and the tests running then.
func recapOf(name string, p *pkgState) []string {
	var tests []string
	for t := range p.failed {
		tests = append(tests, t)
	}
	slices.Sort(tests)
	out := []string{strings.TrimSuffix("FAIL "+shortPkg(name)+": "+strings.Join(tests, " "), ": ")}
	for _, test := range tests {
		out = append(out, failureLines(test, p.lines)...)
	}
	running := false
	for _, l := range p.lines {
		t := strings.TrimRight(l.text, "\n")
		switch {
		case strings.HasPrefix(t, "panic: "):
			out = append(out, "  "+t)
		case t == "running tests:":
			running = true
		case running && strings.HasPrefix(t, "\t"):
			out = append(out, "  running: "+strings.TrimSpace(t))
		default:
			running = false
		}
	}
	return out
}

// recapPerTest and recapWidth bound what failureLines keeps of one failed test.
const (
	recapPerTest = 3
	recapWidth   = 300
)

// failureLines is the first lines a failed test reported with t.Error, t.Fatal or
// their kin ("    x_test.go:12: want 2, got 3"), without the log records a test logger
// writes the same way ("handler.go:322: time=..."): the recap then says why a test
// failed even when its log pushed the reason out of what a CI log shows.
func failureLines(test string, lines []line) []string {
	var out []string
	for _, l := range lines {
		if l.test != test || len(out) == recapPerTest {
			continue
		}
		t := strings.TrimSpace(l.text)
		loc, msg, ok := strings.Cut(t, ": ")
		file, lineNo, ok2 := strings.Cut(loc, ".go:")
		if !ok || !ok2 || file == "" || strings.ContainsAny(file, " \t") || strings.Trim(lineNo, "0123456789") != "" || strings.HasPrefix(msg, "time=") {
			continue
		}
		if len(t) > recapWidth {
			t = t[:recapWidth] + "..."
		}
		out = append(out, "  "+test+": "+t)
	}
	return out
}

// isProgress reports the lines only -v shows.
func isProgress(text string) bool {
	t := strings.TrimSpace(text)
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- SKIP"} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return false
}

func shortPkg(p string) string {
	const mod = "github.com/crossdock/crossdock/"
	return strings.TrimPrefix(p, mod)
}

// finish prints what is left and the skip summary, and returns the exit code.
func (s *summary) finish() int {
	// A package whose test binary died without a result (e.g. killed) still shows.
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.pkgs {
			if !yield(k) {
				return
			}
		}
	}) {
		p := s.pkgs[name]
		for _, l := range p.lines {
			fmt.Fprint(s.out, l.text)
		}
		fmt.Fprintf(s.out, "FAIL\t%s\t(no result: the test binary ended early)\n", name)
		s.failed = true
		s.recap = append(s.recap, recapOf(name, p)...)
	}
	if len(s.recap) > 0 {
		fmt.Fprintln(s.out, "failed:")
		for _, l := range s.recap {
			fmt.Fprintln(s.out, "  "+l)
		}
	}
	if len(s.skips) == 0 {
		fmt.Fprintln(s.out, "integration tests: none skipped")
	} else {
		services := map[string]bool{}
		var names []string
		for _, sk := range s.skips {
			services[sk.what] = true
			names = append(names, sk.test)
		}
		slices.Sort(names)
		var what []string
		for k := range services {
			what = append(what, k)
		}
		slices.Sort(what)
		fmt.Fprintf(s.out, "!!! %d INTEGRATION TESTS NOT RUN (%s not available; install them, see .ci/run, or set CROSSDOCK_REQUIRE_INTEGRATION=1 to make this a failure): %s\n",
			len(s.skips), strings.Join(what, ", "), strings.Join(names, " "))
	}
	if s.failed || (s.results == 0 && s.notJSON > 0) {
		return 1
	}
	return 0
}

func main() {
	s := newSummary(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		s.add(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "testsummary: read go test -json output: %v\n", err)
		os.Exit(1)
	}
	os.Exit(s.finish())
}
