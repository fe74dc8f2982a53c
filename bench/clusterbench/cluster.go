package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/cliconfig"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// node is one `crossdock server` process.
type node struct {
	id, api, raft, dir, log string
	metrics                 string // --metrics-listen address
	cmd                     *exec.Cmd
	admin                   adminv1connect.AdminServiceClient // talks to this node only (no redirect for status)
	closeAdmin              func()
}

// cluster is n server processes: the first bootstraps, the others join with server
// tokens, exactly as an operator does it with the CLI.
type cluster struct {
	dir   string
	nodes []*node
	cc    *cliconfig.Config // node 1's admin.yaml
	admin adminv1connect.AdminServiceClient
	close func()
	// serverArgs are added to every node's command line (e.g. --views=false).
	serverArgs []string
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func poll(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (c *cluster) start(bin string, i int, extra ...string) (*node, error) {
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	raft, err := freeAddr()
	if err != nil {
		return nil, err
	}
	maddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	n := &node{id: fmt.Sprintf("cp%d", i+1), api: api, raft: raft, metrics: maddr, dir: filepath.Join(c.dir, fmt.Sprintf("cp%d", i+1))}
	n.log = n.dir + ".log"
	f, err := os.Create(n.log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	args := append([]string{"server", "--data-dir", n.dir, "--node-id", n.id, "--listen", api, "--raft-listen", raft,
		"--write-cli-config=false", "--log-level", "warn", "--metrics-listen", maddr}, append(extra, c.serverArgs...)...)
	n.cmd = exec.Command(bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.Env = append(os.Environ(), "HOME="+c.dir, "CROSSDOCK_JOIN_TOKEN=")
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c.nodes = append(c.nodes, n)
	return n, nil
}

// startCluster forms an n-node cluster of real processes and waits until all are voters.
func startCluster(ctx context.Context, bin, dir string, n int, serverArgs ...string) (*cluster, error) {
	c := &cluster{dir: dir, serverArgs: serverArgs}
	first, err := c.start(bin, 0)
	if err != nil {
		return c, err
	}
	adminPath := filepath.Join(first.dir, "admin.yaml")
	if err := poll(60*time.Second, "node 1 to bootstrap (admin.yaml)", func() bool { _, err := os.Stat(adminPath); return err == nil }); err != nil {
		return c, err
	}
	if c.cc, err = cliconfig.Load(adminPath); err != nil {
		return c, err
	}
	if c.admin, c.close, err = c.cc.AdminClient(); err != nil {
		return c, err
	}
	if err := c.nodeAdmin(first); err != nil {
		return c, err
	}
	for i := 1; i < n; i++ {
		var tok *connect.Response[adminv1.CreateTokenResponse]
		var tokErr error
		if err := poll(30*time.Second, "a server token", func() bool {
			tok, tokErr = c.admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_SERVER, Ttl: durationpb.New(5 * time.Minute)}))
			return tokErr == nil
		}); err != nil {
			return c, fmt.Errorf("%w: %v", err, tokErr)
		}
		nd, err := c.start(bin, i, "--join", first.api, "--join-token", tok.Msg.GetToken())
		if err != nil {
			return c, err
		}
		if err := c.nodeAdmin(nd); err != nil {
			return c, err
		}
		if err := poll(90*time.Second, fmt.Sprintf("%d voters", i+1), func() bool { return c.voters(ctx) == i+1 }); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *cluster) nodeAdmin(n *node) error {
	cc := *c.cc
	cc.Addr = n.api
	var err error
	n.admin, n.closeAdmin, err = cc.AdminClient()
	return err
}

// voters counts voters in the leader's view of the configuration.
func (c *cluster) voters(ctx context.Context) int {
	st, err := c.status(ctx)
	if err != nil || st.GetLeaderId() == "" {
		return 0
	}
	v := 0
	for _, p := range st.GetPeers() {
		if p.GetRole() != "nonvoter" {
			v++
		}
	}
	return v
}

func (c *cluster) status(ctx context.Context) (*adminv1.GetClusterStatusResponse, error) {
	res, err := c.admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// leader returns the leading node process.
func (c *cluster) leader(ctx context.Context) (*node, error) {
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.nodes {
		if n.id == st.GetLeaderId() {
			return n, nil
		}
	}
	return nil, fmt.Errorf("leader %q is not one of this benchmark's nodes", st.GetLeaderId())
}

// lastSeqs reads each node's own ledger position (no read index: followers answer
// from their replica).
func (c *cluster) lastSeqs(ctx context.Context) []uint64 {
	out := make([]uint64, len(c.nodes))
	for i, n := range c.nodes {
		res, err := n.admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
		if err == nil {
			out[i] = res.Msg.GetLastSeq()
		}
	}
	return out
}

func (c *cluster) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.api
	}
	return out
}

func (c *cluster) stop() {
	if c.close != nil {
		c.close()
	}
	for _, n := range c.nodes {
		if n.closeAdmin != nil {
			n.closeAdmin()
		}
		if n.cmd == nil || n.cmd.Process == nil {
			continue
		}
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-done
		}
	}
}

// tailLogs prints the end of every node's log, for a failed run.
func (c *cluster) tailLogs() {
	for _, n := range c.nodes {
		b, err := os.ReadFile(n.log)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(os.Stderr, "--- %s (%s), last lines:\n", n.id, n.log)
		for _, l := range lines[max(0, len(lines)-15):] {
			fmt.Fprintln(os.Stderr, l)
		}
	}
}

// cpuSeconds is a process's user+system CPU time from /proc (clock ticks of 1/100 s,
// the Linux USER_HZ).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat format")
	}
	return (ut + st) / 100, nil
}

// cpuMeter measures the CPU each node process and this process use over an interval.
type cpuMeter struct {
	pids  []int
	names []string
	start []float64
	t0    time.Time
}

func (c *cluster) meter(leaderID string) *cpuMeter {
	m := &cpuMeter{}
	for _, n := range c.nodes {
		role := "follower"
		if n.id == leaderID {
			role = "leader"
		}
		m.pids = append(m.pids, n.cmd.Process.Pid)
		m.names = append(m.names, n.id+"_"+role)
	}
	m.pids = append(m.pids, os.Getpid())
	m.names = append(m.names, "loadgen")
	m.reset()
	return m
}

func (m *cpuMeter) reset() {
	m.start = make([]float64, len(m.pids))
	for i, p := range m.pids {
		m.start[i], _ = cpuSeconds(p)
	}
	m.t0 = time.Now()
}

// report returns each process's CPU seconds and microseconds per event, and how busy
// the benchmark's processes kept all cores ("cpu_busy"; other load on the machine is
// not counted).
func (m *cpuMeter) report(events int) string {
	wall := time.Since(m.t0).Seconds()
	var b strings.Builder
	total := 0.0
	for i, p := range m.pids {
		now, _ := cpuSeconds(p)
		d := now - m.start[i]
		total += d
		fmt.Fprintf(&b, "cpu_%s_s=%.2f cpu_%s_us_per_event=%.1f ", m.names[i], d, m.names[i], d*1e6/float64(events))
	}
	fmt.Fprintf(&b, "cpu_total_us_per_event=%.1f wall_s=%.2f cpu_busy=%.2f", total*1e6/float64(events), wall, total/(wall*float64(numCPU())))
	return b.String()
}

// viewsStatus prints each node's views: how far they are, how far they trail the
// node's ledger (lag from the ledger applying an entry to the views folding it) and
// how long their start-up rebuild took.
func (c *cluster) viewsStatus(ctx context.Context) {
	for _, n := range c.nodes {
		res, err := n.admin.GetViewsStatus(ctx, connect.NewRequest(&adminv1.GetViewsStatusRequest{}))
		if err != nil {
			fmt.Printf("clusterbench views node=%s err=%q\n", n.id, err)
			continue
		}
		m := res.Msg
		if !m.GetEnabled() {
			fmt.Printf("clusterbench views node=%s enabled=false\n", n.id)
			continue
		}
		ms := func(d interface{ AsDuration() time.Duration }) float64 {
			return float64(d.AsDuration().Microseconds()) / 1000
		}
		fmt.Printf("clusterbench views node=%s views_seq=%d ledger_seq=%d levels=%d lag_samples=%d lag_p50_ms=%.2f lag_p99_ms=%.2f lag_max_ms=%.2f\n",
			n.id, m.GetViewsSeq(), m.GetLedgerSeq(), m.GetLevels(), m.GetLagSamples(), ms(m.GetLagP50()), ms(m.GetLagP99()), ms(m.GetLagMax()))
	}
}
