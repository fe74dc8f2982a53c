package x12

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// generate writes one interchange of 850s with 50 PO1 lines each until at least size
// bytes have been written, and returns the number of sets.
func generate(w io.Writer, size int64) (int, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	cw := &countingWriter{w: bw}
	fmt.Fprint(cw, "ISA*00*          *00*          *ZZ*RETAILCO       *ZZ*ACMEDIST       *261204*1030*U*00401*000000777*0*P*>~\n")
	fmt.Fprint(cw, "GS*PO*RETAILCO*ACMEDIST*20261204*1030*777*X*004010~\n")
	var body []byte
	body = append(body, "REF*DP*0042~\nDTM*002*20261215~\nN1*ST*RETAILCO DC 7*92*0007~\n"...)
	for l := 1; l <= 50; l++ {
		body = fmt.Appendf(body, "PO1*%d*%d*EA*12.50*PE*UP*0123456%05d*VN*SKU-%05d~\n", l, l%7+1, l, l)
	}
	body = append(body, "CTT*50~\n"...)
	sets := 0
	for cw.n < size {
		sets++
		ctl := fmt.Sprintf("%06d", sets)
		fmt.Fprintf(cw, "ST*850*%s~\nBEG*00*SA*PO-%s**20261204~\n", ctl, ctl)
		_, _ = cw.Write(body)
		fmt.Fprintf(cw, "SE*57*%s~\n", ctl)
	}
	fmt.Fprintf(cw, "GE*%d*777~\nIEA*1*000000777~\n", sets)
	if err := bw.Flush(); err != nil {
		return sets, err
	}
	return sets, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TestStreaming200MB reads a 200 MB interchange generated through a pipe (never on
// disk) and checks that the heap in use stays bounded by the set size, not the file.
func TestStreaming200MB(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 200 MB")
	}
	size := int64(200 << 20)
	if raceEnabled {
		size = 20 << 20 // the race detector makes 200 MB take minutes
	}
	const limit = 32 << 20
	pr, pw := io.Pipe()
	want := make(chan int, 1)
	go func() {
		n, err := generate(pw, size)
		want <- n
		pw.CloseWithError(err)
	}()
	runtime.GC()
	var ms runtime.MemStats
	var peak uint64
	sample := func() {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	sets, accepted := 0, 0
	var status string
	start := time.Now()
	// DiscardResults: the 997 of 78,000 sets is not built here, so nothing per set is kept.
	err := Reader{DiscardResults: true}.Read(countingReader{pr, &bytesRead}, Handler{
		Set: func(_ *Interchange, _ *Group, s *Set) error {
			sets++
			if s.Result.Status == StatusAccepted && len(s.Segments) == 55 {
				accepted++
			}
			if sets%500 == 0 {
				sample()
			}
			return nil
		},
		GroupEnd: func(_ *Interchange, g *Group) error {
			sample()
			status, _ = GroupStatus(g)
			if g.Received != sets || len(g.Results) != 0 {
				return fmt.Errorf("group counted %d sets and kept %d results", g.Received, len(g.Results))
			}
			return nil
		},
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	n := <-want
	if sets != n || accepted != n || status != StatusAccepted {
		t.Fatalf("read %d sets, %d accepted, group %s; generated %d", sets, accepted, status, n)
	}
	t.Logf("read %d MB, %d sets in %v (%.0f MB/s); peak HeapInuse %.1f MB", bytesRead>>20, sets, elapsed,
		float64(bytesRead)/(1<<20)/elapsed.Seconds(), float64(peak)/(1<<20))
	if peak > limit {
		t.Errorf("peak HeapInuse %d MB, want under %d MB", peak>>20, limit>>20)
	}
}

var bytesRead int64

type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// BenchmarkRead850 reads 850s of 50 lines from memory: MB/s and sets/s of parsing,
// envelope checks and element validation (no mapping).
func BenchmarkRead850(b *testing.B) {
	var buf bytes.Buffer
	sets, err := generate(&buf, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		err := Reader{DiscardResults: true}.Read(bytes.NewReader(data), Handler{
			Set: func(*Interchange, *Group, *Set) error { n++; return nil },
		})
		if err != nil || n != sets {
			b.Fatalf("read %d of %d sets: %v", n, sets, err)
		}
	}
	b.ReportMetric(float64(sets)*float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}
