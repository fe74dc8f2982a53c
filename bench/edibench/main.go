// Command edibench measures the EDI inbound path: parse + validate (internal/x12's
// streaming reader: envelopes, counts, segment syntax) + map (internal/edi.Map850 and
// Apply, as the edi connector runs them) for 850s of 50 lines, in MB/s and sets/s on
// one core, and the peak memory of reading a 200 MB interchange file the same way.
//
//	go run ./bench/edibench [-mb 32] [-runs 7] [-big-mb 200] [-procs 1]
//
// Throughput is the median of -runs passes over an in-memory file of -mb MB, with the
// spread (min..max); the machine may be shared, so compare medians.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/crossdock/crossdock/internal/edi"
	"github.com/crossdock/crossdock/internal/platform/procmem"
	"github.com/crossdock/crossdock/internal/x12"
	eventv1 "github.com/crossdock/crossdock/proto/gen/crossdock/event/v1"
)

// setTemplate returns the ST..SE segments of an 850 of n lines, with %[1]s where the
// set control number goes.
func setTemplate(n int) string {
	o := &eventv1.Order{OrderNumber: "PO-BENCH", PurchaseOrderNumber: "PO-BENCH", Currency: "USD",
		OrderDate: timestamppb.New(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)),
		ShipTo:    &eventv1.Party{Name: "BIGBOX DC 7", Gln: "0614141000012", AddressLines: []string{"1200 DISTRIBUTION WAY"}, City: "RENO", Region: "NV", PostalCode: "89501", Country: "US"}}
	for i := 1; i <= n; i++ {
		o.Lines = append(o.Lines, &eventv1.OrderLine{LineNumber: fmt.Sprint(i), Sku: fmt.Sprintf("SKU-%05d", i), Quantity: "24",
			UnitOfMeasure: "EA", UnitPrice: "12.50", Gtin: "012345678905", PartnerItemId: fmt.Sprintf("BB-%06d", i), Description: "WIDGET, BLUE, 10 CM"})
	}
	set, err := edi.Build850(o)
	if err != nil {
		log.Fatalf("build the 850: %v", err)
	}
	ic, err := edi.Wrap(x12.Header{SenderQual: "ZZ", SenderID: "BIGBOXRETAIL", ReceiverQual: "ZZ", ReceiverID: "ACMEDIST", Usage: "P"},
		"BIGBOXRETAIL", "ACMEDIST", "004010", time.Date(2026, 12, 4, 9, 15, 0, 0, time.UTC), set)
	if err != nil {
		log.Fatal(err)
	}
	var b bytes.Buffer
	d := x12.DefaultDelimiters
	if err := x12.NewWriter(&b, d, &x12.Sequence{}).Write(ic); err != nil {
		log.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	var out []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "ST*"):
			out = append(out, "ST*850*%[1]s~")
		case strings.HasPrefix(l, "SE*"):
			cnt := strings.Split(l, "*")[1]
			out = append(out, "SE*"+cnt+"*%[1]s~")
		case strings.HasPrefix(l, "ISA*"), strings.HasPrefix(l, "GS*"), strings.HasPrefix(l, "GE*"), strings.HasPrefix(l, "IEA*"), l == "":
		default:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

// writeInterchange writes one interchange of one group with 850s until at least size
// bytes, and returns the number of sets.
func writeInterchange(w io.Writer, tmpl string, size int64) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	written := int64(0)
	write := func(s string) {
		n, _ := bw.WriteString(s)
		written += int64(n)
	}
	write("ISA*00*          *00*          *ZZ*BIGBOXRETAIL   *ZZ*ACMEDIST       *261204*0915*U*00401*000000001*0*P*:~\nGS*PO*BIGBOXRETAIL*ACMEDIST*20261204*0915*1*X*004010~\n")
	sets := 0
	for written < size {
		sets++
		write(fmt.Sprintf(tmpl, fmt.Sprintf("%09d", sets)))
	}
	write(fmt.Sprintf("GE*%d*1~\nIEA*1*000000001~\n", sets))
	return sets, bw.Flush()
}

// process is the connector's inbound path without the transport: read, map each 850,
// apply the mapping errors, and build the group's 997.
func process(r io.Reader) (sets, orders int, err error) {
	err = x12.Read(r, x12.Handler{
		Set: func(ic *x12.Interchange, g *x12.Group, s *x12.Set) error {
			sets++
			o, errs := edi.Map850(s, edi.Options{Partner: "bigbox"})
			edi.Apply(g, s, errs)
			if o != nil && s.Result.Status != x12.StatusRejected {
				orders++
			}
			return nil
		},
		GroupEnd: func(ic *x12.Interchange, g *x12.Group) error {
			_ = x12.FunctionalAck(g, ic.Delimiters)
			return nil
		},
	})
	return sets, orders, err
}

// cpuTime is the process's user+system CPU time in seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	mb := flag.Int("mb", 32, "size of the in-memory file for throughput, MB")
	runs := flag.Int("runs", 7, "throughput passes")
	bigMB := flag.Int("big-mb", 200, "size of the interchange file for peak memory, MB (0 skips)")
	procs := flag.Int("procs", 1, "GOMAXPROCS")
	lines := flag.Int("lines", 50, "lines per 850")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the throughput passes to this file")
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	tmpl := setTemplate(*lines)
	fmt.Printf("edibench: 850s of %d lines (%d bytes each), GOMAXPROCS=%d; machine may be shared: medians and spread\n", *lines, len(fmt.Sprintf(tmpl, "000000001")), *procs)

	var buf bytes.Buffer
	nsets, err := writeInterchange(&buf, tmpl, int64(*mb)<<20)
	if err != nil {
		log.Fatal(err)
	}
	data := buf.Bytes()
	var mbps, setps []float64
	if *cpuprofile != "" {
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var cpumbps []float64
	for range *runs {
		runtime.GC()
		start, cpu0 := time.Now(), cpuTime()
		sets, orders, err := process(bytes.NewReader(data))
		el := time.Since(start).Seconds()
		cpumbps = append(cpumbps, float64(len(data))/(1<<20)/(cpuTime()-cpu0))
		if err != nil || sets != nsets || orders != nsets {
			log.Fatalf("pass: %d sets, %d orders of %d: %v", sets, orders, nsets, err)
		}
		mbps = append(mbps, float64(len(data))/(1<<20)/el)
		setps = append(setps, float64(sets)/el)
	}
	med := func(v []float64) (m, lo, hi float64) {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2], s[0], s[len(s)-1]
	}
	m, lo, hi := med(mbps)
	fmt.Printf("parse+validate+map: %.1f MB/s median (%.1f..%.1f over %d runs of %.1f MB, %d sets)\n", m, lo, hi, *runs, float64(len(data))/(1<<20), nsets)
	m, lo, hi = med(setps)
	fmt.Printf("parse+validate+map: %.0f sets/s median (%.0f..%.0f)\n", m, lo, hi)
	m, lo, hi = med(cpumbps)
	fmt.Printf("parse+validate+map per CPU second of this process (GC included): %.1f MB/s median (%.1f..%.1f); wall-clock figures above are lower when the core is shared\n", m, lo, hi)
	buf = bytes.Buffer{}
	data = nil

	if *bigMB == 0 {
		return
	}
	dir, err := os.MkdirTemp("", "edibench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "big.x12")
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	bigSets, err := writeInterchange(f, tmpl, int64(*bigMB)<<20)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		log.Fatal(err)
	}
	info, _ := os.Stat(path)
	runtime.GC()
	debug.FreeOSMemory()
	before, _ := procmem.Read()
	sampler := procmem.StartSampler(5 * time.Millisecond)
	f, err = os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	sets, orders, err := process(f)
	el := time.Since(start)
	f.Close()
	peak := sampler.Peak()
	sampler.Stop()
	if err != nil || sets != bigSets || orders != bigSets {
		log.Fatalf("big file: %d sets, %d orders of %d: %v", sets, orders, bigSets, err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("%.0f MB interchange (%d sets) read from a file in %.1fs: peak RssAnon %.1f MB (%.1f MB before), peak VmHWM %.1f MB, Go heap now %.1f MB\n",
		float64(info.Size())/(1<<20), sets, el.Seconds(), procmem.MB(peak.RssAnonKB), procmem.MB(before.RssAnonKB), procmem.MB(peak.VmHWMKB), float64(ms.HeapAlloc)/(1<<20))
}
