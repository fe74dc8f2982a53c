// Command logstore compares durable raft log stores (hashicorp/raft-wal and
// hashicorp/raft-boltdb/v2 with fsync on) under the control plane's ingest
// pattern: one raft log entry per ingest batch of N x 256 B events, with
// several entries group-committed per StoreLogs call.
//
// It runs four measurements, printing one key=value line per measurement:
//
//	bench=fsync  raw fdatasync/fsync rate of the disk under -dir (the yardstick)
//	bench=raw    LogStore.StoreLogs throughput and latency, then DeleteRange cost
//	bench=e2e    single-node raft (in-memory transport, trivial FSM), N clients Apply
//	bench=ratio  wal/bolt ratios of the medians
//
// Lines with rep=median are the median of -reps repetitions (each metric is
// taken separately). See README.md for how to run it.
package main

import (
	"bufio"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"
)

// store is what both candidates implement: raft.LogStore + raft.StableStore.
type store interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

type opener func(dir string) (store, error)

type options struct {
	dir             string
	stores          []string
	duration        time.Duration
	maxEntries      int
	maxBytes        int64
	reps            int
	eventBytes      int
	events          []int
	perCall         []int
	warmup          int
	trailing        uint64
	afterDelete     int
	fsyncDuration   time.Duration
	e2e             bool
	e2eDuration     time.Duration
	e2eAfter        time.Duration
	e2eEvents       int
	clients         []int
	boltNoFreeSync  bool
	boltFreelist    string
	walSegmentBytes int
}

func main() {
	var o options
	var stores, events, perCall, clients string
	flag.StringVar(&o.dir, "dir", os.TempDir(), "base directory for the stores (temp dirs are created and removed under it)")
	flag.StringVar(&stores, "stores", "wal,bolt", "stores to measure (wal, bolt)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "max duration of one raw StoreLogs run")
	flag.IntVar(&o.maxEntries, "max-entries", 100000, "max entries written in one raw run (whichever of -duration/-max-entries/-max-bytes comes first)")
	flag.Int64Var(&o.maxBytes, "max-bytes", 1<<30, "max payload bytes written in one raw run")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of each configuration; the median is reported")
	flag.IntVar(&o.eventBytes, "event-bytes", 256, "bytes per event")
	flag.StringVar(&events, "events", "1,100,500", "events per log entry (one entry = one ingest batch)")
	flag.StringVar(&perCall, "per-call", "1,16", "entries per StoreLogs call (group commit)")
	flag.IntVar(&o.warmup, "warmup", 3, "untimed StoreLogs calls / Applies before each timed run")
	flag.Uint64Var(&o.trailing, "trailing", 128, "entries kept when truncating the log head (raw DeleteRange and raft TrailingLogs)")
	flag.IntVar(&o.afterDelete, "after-delete-calls", 50, "timed StoreLogs calls after the raw DeleteRange (after_delete_p50_ms)")
	flag.DurationVar(&o.fsyncDuration, "fsync-duration", 2*time.Second, "duration of each raw fsync-rate loop (0 to skip)")
	flag.BoolVar(&o.e2e, "e2e", true, "run the single-node raft end-to-end measurement")
	flag.DurationVar(&o.e2eDuration, "e2e-duration", 5*time.Second, "duration of one e2e run")
	flag.DurationVar(&o.e2eAfter, "e2e-after", time.Second, "e2e: how long to keep applying after the snapshot/compaction")
	flag.IntVar(&o.e2eEvents, "e2e-events", 500, "events per Apply payload in the e2e run")
	flag.StringVar(&clients, "clients", "1,16", "concurrent Apply goroutines in the e2e run")
	flag.BoolVar(&o.boltNoFreeSync, "bolt-no-freelist-sync", false, "set bbolt NoFreelistSync (default false, the bbolt default)")
	flag.StringVar(&o.boltFreelist, "bolt-freelist", "array", "bbolt freelist type: array (bbolt default) or hashmap")
	flag.IntVar(&o.walSegmentBytes, "wal-segment-bytes", 0, "raft-wal segment size (0 = library default, 64 MiB)")
	flag.Parse()

	var err error
	o.stores = splitList(stores)
	if o.events, err = intList(events); err != nil {
		fatal(err)
	}
	if o.perCall, err = intList(perCall); err != nil {
		fatal(err)
	}
	if o.clients, err = intList(clients); err != nil {
		fatal(err)
	}
	if o.reps < 1 {
		fatal(errors.New("-reps must be >= 1"))
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		fatal(err)
	}

	openers := map[string]opener{
		"wal": func(dir string) (store, error) {
			// WithSegmentSize(0) keeps the library default.
			return wal.Open(dir, wal.WithLogger(hclog.NewNullLogger()), wal.WithSegmentSize(o.walSegmentBytes))
		},
		"bolt": func(dir string) (store, error) {
			return raftboltdb.New(raftboltdb.Options{
				Path:   filepath.Join(dir, "raft.db"),
				NoSync: false, // fsync on every commit: the durable configuration
				BoltOptions: &bbolt.Options{
					Timeout:        time.Second,
					NoFreelistSync: o.boltNoFreeSync,
					FreelistType:   bbolt.FreelistType(o.boltFreelist),
				},
			})
		},
	}
	if o.boltFreelist != string(bbolt.FreelistArrayType) && o.boltFreelist != string(bbolt.FreelistMapType) {
		fatal(fmt.Errorf("-bolt-freelist must be %s or %s", bbolt.FreelistArrayType, bbolt.FreelistMapType))
	}
	for _, s := range o.stores {
		if openers[s] == nil {
			fatal(fmt.Errorf("unknown store %q (want wal or bolt)", s))
		}
	}

	start := time.Now()
	printEnv(o)
	if o.fsyncDuration > 0 {
		if err := fsyncRates(o); err != nil {
			fatal(err)
		}
	}

	rawMed := map[string]result{}
	for _, ev := range o.events {
		for _, pc := range o.perCall {
			key := fmt.Sprintf("events_per_entry=%d entries_per_call=%d entry_bytes=%d", ev, pc, ev*o.eventBytes)
			for name, med := range repeat(o, "raw", key, func(name string) (result, error) {
				return runRaw(o, openers[name], ev, pc)
			}) {
				rawMed[name+" "+key] = med
			}
		}
	}

	e2eMed := map[string]result{}
	if o.e2e {
		for _, c := range o.clients {
			key := fmt.Sprintf("clients=%d events_per_entry=%d entry_bytes=%d", c, o.e2eEvents, o.e2eEvents*o.eventBytes)
			for name, med := range repeat(o, "e2e", key, func(name string) (result, error) {
				return runE2E(o, openers[name], c)
			}) {
				e2eMed[name+" "+key] = med
			}
		}
	}

	// Ratios wal/bolt of the medians: >1 means wal has more of that metric
	// (better for rates, worse for latencies). The entries_per_s ratio is also
	// the events/s and MB/s ratio (same payload on both sides).
	if hasStores(o.stores, "wal", "bolt") {
		for _, ev := range o.events {
			for _, pc := range o.perCall {
				key := fmt.Sprintf("events_per_entry=%d entries_per_call=%d entry_bytes=%d", ev, pc, ev*o.eventBytes)
				printRatio("raw", key, rawMed["wal "+key], rawMed["bolt "+key])
			}
		}
		for _, c := range o.clients {
			key := fmt.Sprintf("clients=%d events_per_entry=%d entry_bytes=%d", c, o.e2eEvents, o.e2eEvents*o.eventBytes)
			if o.e2e {
				printRatio("e2e", key, e2eMed["wal "+key], e2eMed["bolt "+key])
			}
		}
	}
	fmt.Printf("bench=done total_s=%.1f\n", time.Since(start).Seconds())
}

// repeat runs one configuration -reps times for every store, interleaving the
// stores (and alternating their order) so that drift over time (disk
// throttling, page cache, background writeback) hits all stores alike. It
// prints every repetition and the medians, and returns the medians by store.
func repeat(o options, bench, key string, run func(store string) (result, error)) map[string]result {
	reps := map[string][]result{}
	for rep := 1; rep <= o.reps; rep++ {
		order := append([]string(nil), o.stores...)
		if rep%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			runtime.GC()
			res, err := run(name)
			if err != nil {
				fatal(fmt.Errorf("%s %s %s: %w", bench, name, key, err))
			}
			fmt.Printf("bench=%s store=%s %s rep=%d %s\n", bench, name, key, rep, res)
			reps[name] = append(reps[name], res)
		}
	}
	meds := map[string]result{}
	for _, name := range o.stores {
		meds[name] = median(reps[name])
		fmt.Printf("bench=%s store=%s %s rep=median %s\n", bench, name, key, meds[name])
	}
	return meds
}

// result is an ordered set of named metrics of one run.
type result struct {
	names []string
	vals  map[string]float64
}

func (r *result) set(name string, v float64) {
	if r.vals == nil {
		r.vals = map[string]float64{}
	}
	if _, ok := r.vals[name]; !ok {
		r.names = append(r.names, name)
	}
	r.vals[name] = v
}

func (r result) String() string {
	var b strings.Builder
	for i, n := range r.names {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", n, fmtNum(r.vals[n]))
	}
	return b.String()
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatInt(int64(v), 10)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// median takes the median of each metric separately.
func median(rs []result) result {
	var out result
	for _, n := range rs[0].names {
		vs := make([]float64, 0, len(rs))
		for _, r := range rs {
			vs = append(vs, r.vals[n])
		}
		sort.Float64s(vs)
		m := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			m = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
		}
		out.set(n, m)
	}
	return out
}

func printRatio(bench, key string, w, b result) {
	var parts []string
	for _, n := range []string{"entries_per_s", "p50_ms", "p99_ms"} {
		bv, ok := b.vals[n]
		if !ok || bv == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%.2f", n, w.vals[n]/bv))
	}
	fmt.Printf("bench=ratio of=%s wal_over_bolt %s %s\n", bench, key, strings.Join(parts, " "))
}

// runRaw measures LogStore.StoreLogs on a fresh store, then the cost of
// truncating the head of the log (what raft does after a snapshot).
func runRaw(o options, open opener, eventsPerEntry, perCall int) (result, error) {
	var res result
	dir, err := os.MkdirTemp(o.dir, "logstore-raw-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	s, err := open(dir)
	if err != nil {
		return res, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = s.Close()
		}
	}()

	entryBytes := eventsPerEntry * o.eventBytes
	payload := randomBytes(entryBytes)
	logs := make([]*raft.Log, perCall)
	for i := range logs {
		logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: payload}
	}
	next := uint64(1)
	store := func() (time.Duration, error) {
		now := time.Now()
		for _, l := range logs {
			l.Index = next
			l.AppendedAt = now
			next++
		}
		err := s.StoreLogs(logs)
		return time.Since(now), err
	}
	for i := 0; i < o.warmup; i++ {
		if _, err := store(); err != nil {
			return res, err
		}
	}

	lat := make([]time.Duration, 0, 1<<14)
	var entries int
	var bytes int64
	begin := time.Now()
	deadline := begin.Add(o.duration)
	for time.Now().Before(deadline) && entries < o.maxEntries && bytes < o.maxBytes {
		d, err := store()
		if err != nil {
			return res, err
		}
		lat = append(lat, d)
		entries += perCall
		bytes += int64(perCall * entryBytes)
	}
	elapsed := time.Since(begin).Seconds()

	res.set("calls", float64(len(lat)))
	res.set("entries", float64(entries))
	res.set("elapsed_s", elapsed)
	res.set("entries_per_s", float64(entries)/elapsed)
	res.set("events_per_s", float64(entries*eventsPerEntry)/elapsed)
	res.set("mb_per_s", float64(bytes)/1e6/elapsed)
	res.set("calls_per_s", float64(len(lat))/elapsed)
	p50, p99 := percentiles(lat)
	res.set("p50_ms", p50)
	res.set("p99_ms", p99)

	// Head truncation, keeping the last -trailing entries, like raft's
	// compactLogs after a snapshot.
	first, err := s.FirstIndex()
	if err != nil {
		return res, err
	}
	last, err := s.LastIndex()
	if err != nil {
		return res, err
	}
	res.set("disk_bytes", float64(diskUsage(dir)))
	if last > first+o.trailing {
		t := time.Now()
		if err := s.DeleteRange(first, last-o.trailing); err != nil {
			return res, err
		}
		res.set("delete_ms", msOf(time.Since(t)))
		res.set("deleted_entries", float64(last-o.trailing-first+1))
		res.set("disk_bytes_after_delete", float64(diskUsage(dir)))
		// Appends after truncation, so a cost of the freed space (e.g. bbolt
		// freelist bookkeeping) shows.
		var after []time.Duration
		for i := 0; i < o.afterDelete; i++ {
			d, err := store()
			if err != nil {
				return res, err
			}
			after = append(after, d)
		}
		if len(after) > 0 {
			p50, _ := percentiles(after)
			res.set("after_delete_p50_ms", p50)
		}
	}
	closed = true
	if err := s.Close(); err != nil {
		return res, err
	}
	return res, nil
}

// countingStore counts StoreLogs calls so the e2e run can report raft's
// effective group-commit size.
type countingStore struct {
	store
	calls, entries atomic.Int64
}

func (c *countingStore) StoreLog(l *raft.Log) error {
	return c.StoreLogs([]*raft.Log{l})
}

func (c *countingStore) StoreLogs(logs []*raft.Log) error {
	c.calls.Add(1)
	c.entries.Add(int64(len(logs)))
	return c.store.StoreLogs(logs)
}

// IsMonotonic forwards raft.MonotonicLogStore (raft-wal implements it).
func (c *countingStore) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// countFSM is a trivial FSM: it counts applied entries.
type countFSM struct{ applied atomic.Uint64 }

func (f *countFSM) Apply(*raft.Log) interface{} {
	f.applied.Add(1)
	return nil
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnap(f.applied.Load()), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return err
	}
	f.applied.Store(n)
	return nil
}

type countSnap uint64

func (s countSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write([]byte(strconv.FormatUint(uint64(s), 10))); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnap) Release() {}

// runE2E runs a bootstrapped single-voter raft node on the store and has
// `clients` goroutines Apply payloads and wait for the futures.
func runE2E(o options, open opener, clients int) (result, error) {
	var res result
	dir, err := os.MkdirTemp(o.dir, "logstore-e2e-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	inner, err := open(dir)
	if err != nil {
		return res, err
	}
	s := &countingStore{store: inner}
	defer s.Close()

	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.Logger = hclog.NewNullLogger()
	conf.HeartbeatTimeout = 100 * time.Millisecond
	conf.ElectionTimeout = 100 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.TrailingLogs = o.trailing
	conf.SnapshotThreshold = math.MaxUint64 / 2 // only the explicit snapshot below
	conf.SnapshotInterval = 24 * time.Hour

	addr, trans := raft.NewInmemTransport("n1")
	defer trans.Close()
	snaps := raft.NewInmemSnapshotStore()
	fsm := &countFSM{}
	boot := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: addr}}}
	if err := raft.BootstrapCluster(conf, s, s, snaps, trans, boot); err != nil {
		return res, err
	}
	r, err := raft.NewRaft(conf, fsm, s, s, snaps, trans)
	if err != nil {
		return res, err
	}
	defer r.Shutdown()
	waitUntil := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(waitUntil) {
			return res, errors.New("no leader after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	entryBytes := o.e2eEvents * o.eventBytes
	payload := randomBytes(entryBytes)
	for i := 0; i < o.warmup; i++ {
		if err := r.Apply(payload, 10*time.Second).Error(); err != nil {
			return res, err
		}
	}
	calls0, entries0 := s.calls.Load(), s.entries.Load()

	// Phases, with the clients applying throughout:
	//   steady:  [begin, tA)            throughput and latency
	//   compact: [tSnap, tDone]         r.Snapshot() incl. raft's DeleteRange of the log head
	//   after:   (tDone, tDone+after]   latency once the head has been truncated
	type sample struct{ start, end time.Time }
	samples := make([][]sample, clients)
	errs := make([]error, clients)
	var stop atomic.Bool
	var wg sync.WaitGroup
	begin := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			out := make([]sample, 0, 1<<12)
			for !stop.Load() {
				t := time.Now()
				if err := r.Apply(payload, 30*time.Second).Error(); err != nil {
					errs[c] = err
					break
				}
				out = append(out, sample{t, time.Now()})
			}
			samples[c] = out
		}(c)
	}
	time.Sleep(time.Until(begin.Add(o.e2eDuration)))
	tA := time.Now()
	calls, entries := s.calls.Load()-calls0, s.entries.Load()-entries0
	diskBefore := diskUsage(dir)
	first, _ := s.FirstIndex()
	tSnap := time.Now()
	snapErr := r.Snapshot().Error()
	tDone := time.Now()
	first2, _ := s.FirstIndex()
	time.Sleep(o.e2eAfter)
	tEnd := time.Now()
	stop.Store(true)
	wg.Wait()
	if err := errors.Join(append(errs, snapErr)...); err != nil {
		return res, err
	}

	var steady, after []time.Duration
	var window time.Duration
	var windowN int
	for _, cs := range samples {
		for _, x := range cs {
			d := x.end.Sub(x.start)
			switch {
			case !x.end.After(tA):
				steady = append(steady, d)
			case x.start.After(tDone) && !x.end.After(tEnd):
				after = append(after, d)
			}
			if x.start.Before(tDone) && x.end.After(tSnap) {
				window = max(window, d)
				windowN++
			}
		}
	}
	elapsed := tA.Sub(begin).Seconds()
	n := len(steady)
	res.set("applied", float64(n))
	res.set("elapsed_s", elapsed)
	res.set("entries_per_s", float64(n)/elapsed)
	res.set("events_per_s", float64(n*o.e2eEvents)/elapsed)
	res.set("mb_per_s", float64(n*entryBytes)/1e6/elapsed)
	p50, p99 := percentiles(steady)
	res.set("p50_ms", p50)
	res.set("p99_ms", p99)
	res.set("storelogs_calls", float64(calls))
	if calls > 0 {
		res.set("entries_per_storelogs", float64(entries)/float64(calls))
	}
	res.set("disk_bytes", float64(diskBefore))
	res.set("snapshot_compact_ms", msOf(tDone.Sub(tSnap)))
	res.set("compacted_entries", float64(first2-first))
	res.set("compact_window_applies", float64(windowN))
	res.set("compact_window_max_ms", msOf(window))
	p50, p99 = percentiles(after)
	res.set("after_compact_entries_per_s", float64(len(after))/tEnd.Sub(tDone).Seconds())
	res.set("after_compact_p50_ms", p50)
	res.set("after_compact_p99_ms", p99)

	if err := r.Shutdown().Error(); err != nil {
		return res, err
	}
	return res, nil
}

// fsyncRates prints how many small synchronous writes per second the disk
// under -dir sustains: the ceiling for any store that syncs per commit.
func fsyncRates(o options) error {
	for _, mode := range []string{"overwrite_fdatasync", "append_fdatasync", "append_fsync"} {
		f, err := os.CreateTemp(o.dir, "logstore-fsync-")
		if err != nil {
			return err
		}
		buf := randomBytes(256)
		var lat []time.Duration
		var off int64
		begin := time.Now()
		deadline := begin.Add(o.fsyncDuration)
		for time.Now().Before(deadline) {
			t := time.Now()
			if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
			if mode != "overwrite_fdatasync" {
				off += int64(len(buf))
			}
			if mode == "append_fsync" {
				err = f.Sync()
			} else {
				err = fdatasync(f)
			}
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
		}
		elapsed := time.Since(begin).Seconds()
		p50, p99 := percentiles(lat)
		fmt.Printf("bench=fsync mode=%s write_bytes=256 ops=%d elapsed_s=%.3f ops_per_s=%.1f p50_ms=%.3f p99_ms=%.3f\n",
			mode, len(lat), elapsed, float64(len(lat))/elapsed, p50, p99)
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	return nil
}

func printEnv(o options) {
	abs, err := filepath.Abs(o.dir)
	if err == nil {
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			abs = r
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("bench=env go=%s goos=%s goarch=%s cpus=%d kernel=%s dir=%s stores=%s reps=%d duration=%s max_entries=%d max_bytes=%d e2e_duration=%s trailing=%d bolt_no_freelist_sync=%t bolt_freelist=%s wal_segment_bytes=%d\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), orNA(strings.TrimSpace(string(kernel))),
		abs, strings.Join(o.stores, ","), o.reps, o.duration, o.maxEntries, o.maxBytes, o.e2eDuration, o.trailing,
		o.boltNoFreeSync, o.boltFreelist, o.walSegmentBytes)
	dev, mnt, fstype, mopts := mountOf(abs)
	fmt.Printf("bench=env mount=%s device=%s fstype=%s mount_opts=%s\n", orNA(mnt), orNA(dev), orNA(fstype), orNA(mopts))
	if out, err := exec.Command("df", "-hT", abs).Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) >= 2 {
			f := strings.Fields(lines[len(lines)-1])
			if len(f) >= 7 {
				fmt.Printf("bench=env df_fs=%s df_type=%s df_size=%s df_used=%s df_avail=%s df_use=%s df_mount=%s\n",
					f[0], f[1], f[2], f[3], f[4], f[5], f[6])
			}
		}
	}
}

// mountOf finds the /proc/mounts entry with the longest mount point that is a
// prefix of path.
func mountOf(path string) (dev, mnt, fstype, opts string) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		m := fs[1]
		if path == m || strings.HasPrefix(path, strings.TrimSuffix(m, "/")+"/") {
			if len(m) >= len(mnt) {
				dev, mnt, fstype, opts = fs[0], m, fs[2], fs[3]
			}
		}
	}
	return
}

func diskUsage(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			total += allocatedBytes(info)
		}
		return nil
	})
	return total
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	if len(d) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return msOf(rank(0.50)), msOf(rank(0.99))
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fatal(err)
	}
	return b
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func intList(s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad list element %q in %q", p, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func hasStores(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return strings.ReplaceAll(s, " ", "_")
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "logstore:", err)
	os.Exit(1)
}
