//go:build unix

package outbox

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv switches the test binary into the crash child: it appends to the
// outbox in that directory until it is killed.
const crashChildEnv = "OUTBOX_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	os.Exit(m.Run())
}

// crashRecords builds batch i of appender w: records "w:i:j:" plus pseudo-random
// padding, so the parent can tell which batch every record belongs to.
func crashRecords(w, i int) [][]byte {
	r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
	out := make([][]byte, 1+r.IntN(40))
	for j := range out {
		b := []byte(fmt.Sprintf("%d:%d:%d:", w, i, j))
		for range r.IntN(300) {
			b = append(b, byte(r.IntN(256)))
		}
		out[j] = b
	}
	return out
}

func checksum(recs [][]byte) uint32 {
	h := crc32.NewIEEE()
	for _, r := range recs {
		fmt.Fprintf(h, "%d:", len(r))
		h.Write(r)
	}
	return h.Sum32()
}

// crashChild runs two appenders, each with its own source position, and prints a
// line per acknowledged append: "ok <appender> <batch> <first> <last> <crc>". It
// also acknowledges half of what it wrote now and then and prints "ack <seq>".
func crashChild(dir string) int {
	o, err := Open(Options{Dir: dir, Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := 0
	if s := os.Getenv("OUTBOX_CRASH_CHILD_START"); s != "" {
		start, _ = strconv.Atoi(s)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := start; ; i++ {
				recs := crashRecords(w, i)
				first, last, err := o.Append(context.Background(), recs,
					Position{Name: fmt.Sprintf("src%d", w), Value: strconv.Itoa(i)})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ok %d %d %d %d %d\n", w, i, first, last, checksum(recs))
				out.Unlock()
				if w == 0 && i%50 == 49 {
					upTo := last / 2
					if err := o.Ack(upTo); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					out.Lock()
					fmt.Fprintf(os.Stdout, "ack %d\n", upTo)
					out.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return 0
}

type okLine struct {
	w, i        int
	first, last uint64
	crc         uint32
}

// runCrashChild starts the child, lets it acknowledge at least n appends, kills it
// with SIGKILL and returns the complete lines it printed.
func runCrashChild(t *testing.T, dir string, start, n int) (oks []okLine, acked uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, fmt.Sprintf("OUTBOX_CRASH_CHILD_START=%d", start))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			// EOF: a line cut short by the kill has no newline and is ignored.
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 6 && f[0] == "ok":
			var l okLine
			l.w, _ = strconv.Atoi(f[1])
			l.i, _ = strconv.Atoi(f[2])
			l.first, _ = strconv.ParseUint(f[3], 10, 64)
			l.last, _ = strconv.ParseUint(f[4], 10, 64)
			c, _ := strconv.ParseUint(f[5], 10, 32)
			l.crc = uint32(c)
			oks = append(oks, l)
		case len(f) == 2 && f[0] == "ack":
			acked, _ = strconv.ParseUint(f[1], 10, 64)
		default:
			t.Fatalf("unexpected child output %q", line)
		}
		if len(oks) >= n && !killed {
			// Mid-stream: the child is still appending.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child exited before %d appends: %v\n%s", n, err, stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v\n%s", err, stderr.String())
	}
	return oks, acked
}

// TestCrashSafety kills a child that appends in a loop with SIGKILL, twice, and
// checks after each crash that every acknowledged append is readable with the same
// bytes, that seqs are gap-free, that the ack mark survived and that each source
// position matches the newest batch of its appender in the outbox (positions are
// committed with their records).
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	dir := t.TempDir()
	start := 0
	var prevLast uint64
	for round := range 2 {
		oks, acked := runCrashChild(t, dir, start, 300)
		o := open(t, dir, 0)
		s := o.Stats()
		if s.AckedSeq < acked {
			t.Fatalf("round %d: acked mark %d, child acknowledged %d", round, s.AckedSeq, acked)
		}
		es := readAll(t, o, 0)
		if len(es) == 0 || es[0].Seq != s.AckedSeq+1 {
			t.Fatalf("round %d: first entry %v, acked %d", round, es[:min(1, len(es))], s.AckedSeq)
		}
		for i, e := range es {
			if e.Seq != es[0].Seq+uint64(i) {
				t.Fatalf("round %d: gap: entry %d has seq %d after %d", round, i, e.Seq, es[0].Seq+uint64(i)-1)
			}
		}
		last := es[len(es)-1].Seq
		if last != s.LastSeq || uint64(len(es)) != s.PendingEvents {
			t.Fatalf("round %d: read up to %d (%d entries), stats %+v", round, last, len(es), s)
		}
		if last <= prevLast {
			t.Fatalf("round %d: no progress: last seq %d, before %d", round, last, prevLast)
		}
		bySeq := func(q uint64) []byte { return es[q-es[0].Seq].Data }

		// Every acknowledged append is there, byte for byte.
		maxBatch := map[int]int{}
		var verified int
		for _, l := range oks {
			maxBatch[l.w] = max(maxBatch[l.w], l.i)
			if l.last > last {
				t.Fatalf("round %d: acknowledged append %d..%d beyond the last seq %d", round, l.first, l.last, last)
			}
			if l.first <= s.AckedSeq {
				continue // deleted by an ack
			}
			var recs [][]byte
			for q := l.first; q <= l.last; q++ {
				recs = append(recs, bySeq(q))
			}
			if checksum(recs) != l.crc || !strings.HasPrefix(string(recs[0]), fmt.Sprintf("%d:%d:0:", l.w, l.i)) {
				t.Fatalf("round %d: append %+v has different bytes after the crash", round, l)
			}
			verified++
		}
		if verified < 50 {
			t.Fatalf("round %d: only %d acknowledged appends left to verify", round, verified)
		}

		// Each position names the newest batch of its appender in the outbox, and
		// is at least as new as the last acknowledged one.
		newest := map[int]int{}
		for _, e := range es {
			var w, i int
			if _, err := fmt.Sscanf(string(e.Data), "%d:%d:", &w, &i); err != nil {
				t.Fatalf("round %d: seq %d: malformed record %q", round, e.Seq, e.Data[:min(20, len(e.Data))])
			}
			newest[w] = max(newest[w], i)
		}
		for w := range 2 {
			pos, ok, err := o.Position(fmt.Sprintf("src%d", w))
			if err != nil || !ok {
				t.Fatalf("round %d: position src%d: %v %v", round, w, ok, err)
			}
			i, err := strconv.Atoi(pos)
			if err != nil {
				t.Fatalf("round %d: position src%d = %q", round, w, pos)
			}
			if i != newest[w] || i < maxBatch[w] {
				t.Fatalf("round %d: position src%d = batch %d; newest batch in the outbox %d, newest acknowledged %d",
					round, w, i, newest[w], maxBatch[w])
			}
			start = max(start, i+1)
		}
		t.Logf("round %d: %d acknowledged appends, %d verified, seqs %d..%d, acked %d",
			round, len(oks), verified, es[0].Seq, last, s.AckedSeq)
		prevLast = last
		closeOK(t, o)
	}
}
