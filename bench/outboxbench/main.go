//go:build linux

// Command outboxbench measures the agent outbox (agent/outbox) on this machine's disk:
//
//  1. the disk's fdatasync rate (write 256 bytes + fdatasync in a loop),
//  2. Append throughput for 256-byte events with batches of 1, 100 and 1000, from one
//     appender and from several concurrent ones, next to the fdatasync rate,
//  3. a steady flow (-phase flow): events appended while read and acknowledged, with
//     the outbox's disk use (how far acknowledged space waits to be reclaimed),
//  4. memory while buffering -mem-events events offline (no acks) and draining them
//     (Read + Ack), sampling /proc/self/status: peak RssAnon and VmHWM.
//
// The memory phase runs in a fresh child process (this binary re-executed with
// -phase=mem) so the earlier phases do not inflate its figures. It inherits the
// environment, so GOGC or GOMEMLIMIT show their effect (the Go heap is most of
// Badger's anonymous memory). RssAnon is anonymous memory only; VmHWM also counts
// the mmapped Badger files' resident pages, which the kernel can drop.
//
//	go run ./bench/outboxbench                       # full run
//	go run ./bench/outboxbench -dur 300ms -mem-events 20000 -fsyncs 100   # quick
//	GOMEMLIMIT=40MiB go run ./bench/outboxbench -phase mem
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/crossdock/crossdock/agent/outbox"
	"github.com/crossdock/crossdock/internal/platform/procmem"
)

type config struct {
	dir        string
	phase      string
	fsyncs     int
	dur        time.Duration
	conc       int
	recSize    int
	memEvents  int
	memBatch   int
	drainChunk int
	flowEvents int
	interval   time.Duration
	drainRate  int
	reopen     bool
	verbose    bool
}

func main() {
	var c config
	flag.StringVar(&c.dir, "dir", "", "directory for the test files (default: a new temp dir, removed at exit)")
	flag.StringVar(&c.phase, "phase", "all", "all, fsync, append, mem or flow")
	flag.IntVar(&c.fsyncs, "fsyncs", 1000, "write+fdatasync iterations for the disk baseline")
	flag.DurationVar(&c.dur, "dur", 2*time.Second, "duration of each append throughput run")
	flag.IntVar(&c.conc, "conc", 4, "concurrent appenders in the concurrent runs")
	flag.IntVar(&c.recSize, "size", 256, "event size in bytes")
	flag.IntVar(&c.memEvents, "mem-events", 1_000_000, "events buffered offline in the memory phase")
	flag.IntVar(&c.memBatch, "mem-batch", 1000, "append batch size in the memory phase")
	flag.IntVar(&c.flowEvents, "flow-events", 3_000_000, "events through the outbox in the flow phase")
	flag.IntVar(&c.drainChunk, "drain-chunk", 1000, "events per Read+Ack while draining")
	flag.IntVar(&c.drainRate, "drain-rate", 0, "cap the drain at this many events/s, like a real uplink would (0: as fast as possible)")
	flag.BoolVar(&c.reopen, "reopen", false, "close and reopen the outbox between buffering and draining, timing the recovery scan")
	flag.DurationVar(&c.interval, "sample", 50*time.Millisecond, "memory sampling interval")
	flag.BoolVar(&c.verbose, "v", false, "log the outbox's debug output")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "outboxbench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if c.verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "outboxbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.dir = d
	}
	switch c.phase {
	case "mem":
		return memPhase(c)
	case "flow":
		return flowPhase(c)
	case "fsync":
		_, err := fsyncPhase(c)
		return err
	case "append":
		rate, err := fsyncPhase(c)
		if err != nil {
			return err
		}
		return appendPhase(c, rate)
	case "all":
		rate, err := fsyncPhase(c)
		if err != nil {
			return err
		}
		if err := appendPhase(c, rate); err != nil {
			return err
		}
		if err := flowPhase(c); err != nil {
			return err
		}
		return memChild(c)
	default:
		return fmt.Errorf("unknown -phase %q", c.phase)
	}
}

// fsyncPhase measures write(256 bytes) + fdatasync per second in c.dir.
func fsyncPhase(c config) (float64, error) {
	path := filepath.Join(c.dir, "fsync.probe")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 256)
	start := time.Now()
	for i := 0; i < c.fsyncs; i++ {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, fmt.Errorf("fdatasync: %w", err)
		}
	}
	el := time.Since(start)
	rate := float64(c.fsyncs) / el.Seconds()
	fmt.Printf("== disk: %d x (write 256 B + fdatasync) in %s: %.0f fdatasync/s (%.3f ms each)\n",
		c.fsyncs, el.Round(time.Millisecond), rate, el.Seconds()*1000/float64(c.fsyncs))
	return rate, nil
}

func appendPhase(c config, fsyncRate float64) error {
	fmt.Printf("== append throughput, %d-byte events, %s per run\n", c.recSize, c.dur)
	fmt.Printf("%-6s %-5s %12s %14s %14s\n", "batch", "appdr", "appends/s", "events/s", "appends/fsync")
	for _, batch := range []int{1, 100, 1000} {
		for _, conc := range []int{1, c.conc} {
			apps, evs, err := appendRun(c, batch, conc)
			if err != nil {
				return err
			}
			fmt.Printf("%-6d %-5d %12.0f %14.0f %14.2f\n", batch, conc, apps, evs, apps/fsyncRate)
		}
	}
	return nil
}

// appendRun appends batches of batch events from conc goroutines for c.dur into a
// fresh outbox and returns appends/s and events/s.
func appendRun(c config, batch, conc int) (float64, float64, error) {
	dir := filepath.Join(c.dir, fmt.Sprintf("append-%d-%d", batch, conc))
	defer os.RemoveAll(dir)
	ob, err := outbox.Open(outbox.Options{Dir: dir, QuotaBytes: 64 << 30})
	if err != nil {
		return 0, 0, err
	}
	recs := make([][]byte, batch)
	for i := range recs {
		recs[i] = payload(c.recSize, i)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		appends int
		runErr  error
	)
	deadline := time.Now().Add(c.dur)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for time.Now().Before(deadline) {
				if _, _, err := ob.Append(context.Background(), recs); err != nil {
					mu.Lock()
					runErr = err
					mu.Unlock()
					return
				}
				n++
			}
			mu.Lock()
			appends += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if err := ob.Close(); err != nil && runErr == nil {
		runErr = err
	}
	if runErr != nil {
		return 0, 0, runErr
	}
	return float64(appends) / el, float64(appends*batch) / el, nil
}

func payload(size, i int) []byte {
	b := make([]byte, size)
	for j := range b {
		b[j] = byte(i*31 + j*7)
	}
	return b
}

// memResult is what the memory child reports to its parent.
type memResult struct {
	BaselineRssAnonKB          uint64
	PeakRssAnonKB, PeakVmHWMKB uint64 // over the whole phase
	BufPeakRssAnonKB           uint64 // while buffering
	BufEndRssAnonKB            uint64 // right after the last append
	DrainPeakRssAnonKB         uint64 // while draining
	DrainEndRssAnonKB          uint64 // right after the last ack
	EndVmHWMKB                 uint64
	BufSeconds, DrainSeconds   float64
	ReopenSeconds              float64
	DiskAfterBufMB             float64
	DiskAfterDrainMB           float64
	Samples                    int
}

// memChild re-executes this binary with -phase=mem and prints its report.
func memChild(c config) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-phase=mem", "-dir", c.dir, "-mem-events", fmt.Sprint(c.memEvents),
		"-mem-batch", fmt.Sprint(c.memBatch), "-drain-chunk", fmt.Sprint(c.drainChunk),
		"-size", fmt.Sprint(c.recSize), "-sample", c.interval.String(), "-drain-rate", fmt.Sprint(c.drainRate), fmt.Sprintf("-reopen=%v", c.reopen)}
	if c.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func memPhase(c config) error {
	dir := filepath.Join(c.dir, "mem")
	defer os.RemoveAll(dir)
	base, err := procmem.Read()
	if err != nil {
		return err
	}
	s := procmem.StartSampler(c.interval)
	defer s.Stop()
	var r memResult
	r.BaselineRssAnonKB = base.RssAnonKB
	total := c.memEvents
	quota := int64(total*c.recSize) + 1
	ob, err := outbox.Open(outbox.Options{Dir: dir, QuotaBytes: quota})
	if err != nil {
		return err
	}
	recs := make([][]byte, c.memBatch)
	for i := range recs {
		recs[i] = payload(c.recSize, i)
	}
	start := time.Now()
	for n := 0; n < total; n += len(recs) {
		if total-n < len(recs) {
			recs = recs[:total-n]
		}
		if _, _, err := ob.Append(context.Background(), recs); err != nil {
			return err
		}
	}
	r.BufSeconds = time.Since(start).Seconds()
	r.BufEndRssAnonKB = s.Sample().RssAnonKB
	r.BufPeakRssAnonKB = s.Peak().RssAnonKB
	r.DiskAfterBufMB = dirMB(dir)
	st := ob.Stats()
	if st.PendingEvents != uint64(total) {
		return fmt.Errorf("buffered %d events, want %d", st.PendingEvents, total)
	}
	if c.reopen {
		if err := ob.Close(); err != nil {
			return err
		}
		t0 := time.Now()
		ob, err = outbox.Open(outbox.Options{Dir: dir, QuotaBytes: quota})
		if err != nil {
			return err
		}
		r.ReopenSeconds = time.Since(t0).Seconds()
		if st := ob.Stats(); st.PendingEvents != uint64(total) || st.PendingBytes != uint64(total*c.recSize) {
			return fmt.Errorf("after reopen: %+v", st)
		}
	}
	s.ResetPeak()
	start = time.Now()
	from, drained := uint64(1), 0
	for drained < total {
		es, err := ob.Read(from, c.drainChunk, 0)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return fmt.Errorf("read from %d returned nothing with %d events left", from, total-drained)
		}
		last := es[len(es)-1].Seq
		if err := ob.Ack(last); err != nil {
			return err
		}
		drained += len(es)
		from = last + 1
		if c.drainRate > 0 {
			due := start.Add(time.Duration(float64(drained) / float64(c.drainRate) * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
	}
	r.DrainSeconds = time.Since(start).Seconds()
	r.DrainEndRssAnonKB = s.Sample().RssAnonKB
	r.DrainPeakRssAnonKB = s.Peak().RssAnonKB
	r.DiskAfterDrainMB = dirMB(dir)
	if err := ob.Close(); err != nil {
		return err
	}
	peak := s.Stop()
	r.PeakRssAnonKB = max(peak.RssAnonKB, r.BufPeakRssAnonKB)
	r.PeakVmHWMKB = peak.VmHWMKB
	r.EndVmHWMKB = s.Last().VmHWMKB
	r.Samples, _ = s.Samples()

	rate := "as fast as possible"
	if c.drainRate > 0 {
		rate = fmt.Sprintf("at most %d events/s", c.drainRate)
	}
	fmt.Printf("== memory: %d x %d-byte events buffered offline in batches of %d, then drained (Read+Ack %d, %s)\n",
		total, c.recSize, c.memBatch, c.drainChunk, rate)
	limit := debug.SetMemoryLimit(-1)
	limitStr := "none"
	if limit != math.MaxInt64 {
		limitStr = fmt.Sprintf("%.0f MiB", float64(limit)/(1<<20))
	}
	gogc := os.Getenv("GOGC")
	if gogc == "" {
		gogc = "100 (default)"
	}
	fmt.Printf("Go GC: GOGC=%s, memory limit %s\n", gogc, limitStr)
	fmt.Printf("baseline RssAnon      %7.1f MB (before Open)\n", procmem.MB(r.BaselineRssAnonKB))
	fmt.Printf("buffering             %7.1f s  %9.0f events/s, disk after %7.1f MB\n", r.BufSeconds, float64(total)/r.BufSeconds, r.DiskAfterBufMB)
	fmt.Printf("  peak RssAnon        %7.1f MB, at end %7.1f MB\n", procmem.MB(r.BufPeakRssAnonKB), procmem.MB(r.BufEndRssAnonKB))
	if c.reopen {
		fmt.Printf("reopen (recovery scan of %d pending) %.3f s\n", total, r.ReopenSeconds)
	}
	fmt.Printf("draining              %7.1f s  %9.0f events/s, disk after %7.1f MB\n", r.DrainSeconds, float64(total)/r.DrainSeconds, r.DiskAfterDrainMB)
	fmt.Printf("  peak RssAnon        %7.1f MB, at end %7.1f MB\n", procmem.MB(r.DrainPeakRssAnonKB), procmem.MB(r.DrainEndRssAnonKB))
	fmt.Printf("overall peak RssAnon  %7.1f MB, peak VmHWM %7.1f MB (incl. Close; %d samples every %s)\n",
		procmem.MB(r.PeakRssAnonKB), procmem.MB(r.PeakVmHWMKB), r.Samples, c.interval)
	if os.Getenv("OUTBOXBENCH_JSON") != "" {
		b, _ := json.Marshal(r)
		fmt.Printf("JSON %s\n", b)
	}
	return nil
}

// flowPhase appends c.flowEvents events in batches of c.memBatch from one goroutine
// while another reads and acknowledges them as an uplink would (c.drainChunk per
// Read+Ack), and samples the outbox's disk use: how far it grows past what is pending
// before acknowledged space is reclaimed (Badger reclaims value-log files after
// compactions have dropped the deleted keys), and what is left 10 s after the flow.
func flowPhase(c config) error {
	dir := filepath.Join(c.dir, "flow")
	defer os.RemoveAll(dir)
	ob, err := outbox.Open(outbox.Options{Dir: dir, QuotaBytes: 256 << 20})
	if err != nil {
		return err
	}
	defer ob.Close()
	recs := make([][]byte, c.memBatch)
	for i := range recs {
		recs[i] = payload(c.recSize, i)
	}
	var peakMB, peakPendingMB float64
	sample := func() {
		peakMB = max(peakMB, dirMB(dir))
		peakPendingMB = max(peakPendingMB, float64(ob.Stats().PendingBytes)/1e6)
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(c.interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		for n := 0; n < c.flowEvents; n += len(recs) {
			if _, _, err := ob.Append(context.Background(), recs); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	from, drained := uint64(1), 0
	for drained < c.flowEvents/len(recs)*len(recs) {
		es, err := ob.Read(from, c.drainChunk, 0)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			select {
			case <-ob.Notify():
			case err := <-errc:
				if err != nil {
					return err
				}
				errc <- nil
			}
			continue
		}
		last := es[len(es)-1].Seq
		if err := ob.Ack(last); err != nil {
			return err
		}
		drained += len(es)
		from = last + 1
	}
	if err := <-errc; err != nil {
		return err
	}
	el := time.Since(start).Seconds()
	close(stop)
	<-sampled
	endMB := dirMB(dir)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(c.interval)
	}
	fmt.Printf("== flow: %d x %d-byte events appended in batches of %d while read and acknowledged %d at a time\n",
		drained, c.recSize, c.memBatch, c.drainChunk)
	fmt.Printf("throughput            %9.0f events/s (%.1f s)\n", float64(drained)/el, el)
	fmt.Printf("disk                  peak %7.1f MB (peak pending %.1f MB), at end %7.1f MB, 10 s later %7.1f MB\n",
		peakMB, peakPendingMB, endMB, dirMB(dir))
	return nil
}

// dirMB is the disk space used by the files under dir.
func dirMB(dir string) float64 {
	var blocks int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			blocks += st.Blocks
		}
		return nil
	})
	return float64(blocks*512) / (1 << 20)
}
