// Package benchkit is what the memory, growth and soak programs share: real
// `crossdock server` processes of a built binary (the first bootstraps, the others join
// with server tokens, as an operator does), their memory figures, and a load generator
// that speaks the uplink stream like an agent, from memory.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/crossdock/crossdock/internal/cliconfig"
	"github.com/crossdock/crossdock/internal/platform/procmem"
	adminv1 "github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1"
	"github.com/crossdock/crossdock/proto/gen/crossdock/admin/v1/adminv1connect"
)

// Node is one `crossdock server` process.
type Node struct {
	ID, API, Raft, Pprof, MetricsAddr, Dir, Log string
	Args                                        []string // the arguments it was started with
	Cmd                                         *exec.Cmd
	Admin                                       adminv1connect.AdminServiceClient // talks to this node only
	closeAdmin                                  func()
	exited                                      chan struct{}
}

// Cluster is a set of server processes of one binary.
type Cluster struct {
	Bin   string
	Dir   string
	Extra []string // extra server flags for every node
	Nodes []*Node
	made  int               // nodes started so far (names cp1, cp2, ... are never reused)
	CC    *cliconfig.Config // node 1's admin.yaml
	Admin adminv1connect.AdminServiceClient
	close func()
}

// FreeAddr returns a loopback address with a free TCP port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Poll calls cond every interval until it holds, ctx ends or timeout passes.
func Poll(ctx context.Context, interval, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
	return nil
}

// Promoted reports whether the leader lists node id as a voter: a joining node is a
// nonvoter until it has applied the log up to where it joined, then promotes itself.
func (c *Cluster) Promoted(ctx context.Context, id string) bool {
	st, err := c.Status(ctx)
	if err != nil {
		return false
	}
	for _, p := range st.GetPeers() {
		if p.GetId() == id {
			return p.GetRole() == "follower" || p.GetRole() == "leader"
		}
	}
	return false
}

func (c *Cluster) newNode(i int) (*Node, error) {
	api, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	raft, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	pp, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	met, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("cp%d", i+1)
	return &Node{ID: id, API: api, Raft: raft, Pprof: pp, MetricsAddr: met, Dir: filepath.Join(c.Dir, id), Log: filepath.Join(c.Dir, id+".log")}, nil
}

// exec starts n's process with its Args.
func (c *Cluster) exec(n *Node) error {
	f, err := os.OpenFile(n.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	n.Cmd = exec.Command(c.Bin, n.Args...)
	n.Cmd.Stdout, n.Cmd.Stderr = f, f
	n.Cmd.Env = append(os.Environ(), "HOME="+c.Dir, "CROSSDOCK_JOIN_TOKEN=")
	if err := n.Cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.Bin, err)
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(n.Cmd, n.exited)
	return nil
}

func (c *Cluster) start(extra ...string) (*Node, error) {
	n, err := c.newNode(c.made)
	if err != nil {
		return nil, err
	}
	n.Args = append([]string{"server", "--data-dir", n.Dir, "--node-id", n.ID, "--listen", n.API, "--raft-listen", n.Raft,
		"--pprof-listen", n.Pprof, "--metrics-listen", n.MetricsAddr, "--write-cli-config=false", "--log-level", "warn"}, c.Extra...)
	n.Args = append(n.Args, extra...)
	c.made++
	if err := c.exec(n); err != nil {
		return nil, err
	}
	c.Nodes = append(c.Nodes, n)
	return n, nil
}

// Start forms an n-node cluster and waits until all are voters.
func Start(ctx context.Context, bin, dir string, n int, extra ...string) (*Cluster, error) {
	c := &Cluster{Bin: bin, Dir: dir, Extra: extra}
	first, err := c.start()
	if err != nil {
		return c, err
	}
	adminPath := filepath.Join(first.Dir, "admin.yaml")
	if err := Poll(ctx, 20*time.Millisecond, 60*time.Second, "node 1 to bootstrap (admin.yaml)", func() bool { _, err := os.Stat(adminPath); return err == nil }); err != nil {
		return c, err
	}
	if c.CC, err = cliconfig.Load(adminPath); err != nil {
		return c, err
	}
	if c.Admin, c.close, err = c.CC.AdminClient(); err != nil {
		return c, err
	}
	if err := c.nodeAdmin(first); err != nil {
		return c, err
	}
	if err := Poll(ctx, 20*time.Millisecond, 60*time.Second, "a leader", func() bool { return c.Voters(ctx) == 1 }); err != nil {
		return c, err
	}
	for i := 1; i < n; i++ {
		if _, err := c.Join(ctx); err != nil {
			return c, err
		}
		if err := Poll(ctx, 20*time.Millisecond, 120*time.Second, fmt.Sprintf("%d voters", i+1), func() bool { return c.Voters(ctx) == i+1 }); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Join starts one more node that joins the cluster with a server token. It returns
// once the process runs; the caller waits for what it needs (Voters, AppliedIndex).
func (c *Cluster) Join(ctx context.Context) (*Node, error) {
	var tok *connect.Response[adminv1.CreateTokenResponse]
	var tokErr error
	if err := Poll(ctx, 20*time.Millisecond, 30*time.Second, "a server token", func() bool {
		tok, tokErr = c.Admin.CreateToken(ctx, connect.NewRequest(&adminv1.CreateTokenRequest{Kind: adminv1.TokenKind_TOKEN_KIND_SERVER, Ttl: durationpb.New(5 * time.Minute)}))
		return tokErr == nil
	}); err != nil {
		return nil, fmt.Errorf("%w: %v", err, tokErr)
	}
	nd, err := c.start("--join", c.Nodes[0].API, "--join-token", tok.Msg.GetToken())
	if err != nil {
		return nil, err
	}
	return nd, c.nodeAdmin(nd)
}

func (c *Cluster) nodeAdmin(n *Node) error {
	cc := *c.CC
	cc.Addr = n.API
	var err error
	n.Admin, n.closeAdmin, err = cc.AdminClient()
	return err
}

// Status is the cluster status as the leader sees it.
func (c *Cluster) Status(ctx context.Context) (*adminv1.GetClusterStatusResponse, error) {
	res, err := c.Admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// Voters counts voters in the leader's view of the configuration.
func (c *Cluster) Voters(ctx context.Context) int {
	st, err := c.Status(ctx)
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

// Leader returns the leading node.
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if n.ID == st.GetLeaderId() {
			return n, nil
		}
	}
	return nil, fmt.Errorf("leader %q is not one of this benchmark's nodes", st.GetLeaderId())
}

// NodeStatus is the status one node gives from its own replica (last seq, and the
// applied index it reports for itself).
func (n *Node) NodeStatus(ctx context.Context) (lastSeq, applied uint64, err error) {
	res, err := n.Admin.GetClusterStatus(ctx, connect.NewRequest(&adminv1.GetClusterStatusRequest{}))
	if err != nil {
		return 0, 0, err
	}
	for _, p := range res.Msg.GetPeers() {
		if p.GetId() == n.ID {
			applied = p.GetAppliedIndex()
		}
	}
	return res.Msg.GetLastSeq(), applied, nil
}

// Stop ends the process with SIGTERM (SIGKILL after 30 s).
func (n *Node) Stop() {
	if n.Cmd == nil || n.Cmd.Process == nil {
		return
	}
	_ = n.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		_ = n.Cmd.Process.Kill()
		<-n.exited
	}
}

// Restart stops n and starts it again with the same arguments (without --join: the
// data dir already belongs to the cluster). It returns once the process runs.
func (c *Cluster) Restart(n *Node) error {
	n.Stop()
	var args []string
	for i := 0; i < len(n.Args); i++ {
		if n.Args[i] == "--join" || n.Args[i] == "--join-token" {
			i++
			continue
		}
		args = append(args, n.Args[i])
	}
	n.Args = args
	return c.exec(n)
}

// Stop ends every node.
func (c *Cluster) Stop() {
	if c.close != nil {
		c.close()
	}
	for _, n := range c.Nodes {
		if n.closeAdmin != nil {
			n.closeAdmin()
		}
		n.Stop()
	}
}

// TailLogs prints the end of every node's log, for a failed run.
func (c *Cluster) TailLogs(w io.Writer) {
	for _, n := range c.Nodes {
		b, err := os.ReadFile(n.Log)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		fmt.Fprintf(w, "--- %s (%s), last lines:\n", n.ID, n.Log)
		for _, l := range lines[max(0, len(lines)-15):] {
			fmt.Fprintln(w, l)
		}
	}
}

// Mem is one sample of a node's memory.
type Mem struct {
	RssAnonMiB   float64 // /proc/<pid>/status RssAnon
	RssMiB       float64 // VmRSS (anonymous + mapped files)
	HeapInuseMiB float64 // Go runtime HeapInuse, from the pprof listener
	HeapAllocMiB float64 // live heap objects (HeapAlloc)
	// HeapIdleMiB is heap memory the runtime holds but no object uses and has not
	// returned to the OS (HeapIdle - HeapReleased): freed garbage still resident.
	HeapIdleMiB float64
	SysMiB      float64 // everything the Go runtime obtained from the OS
}

// Memory reads the node's RSS from /proc and its Go heap from its pprof listener
// (/debug/pprof/heap?debug=1 ends with the runtime's MemStats).
func (n *Node) Memory(ctx context.Context, gc bool) (Mem, error) {
	var m Mem
	if gc {
		// ?gc=1 runs a garbage collection before the profile, so HeapAlloc is live data.
		if _, err := n.pprofGet(ctx, "/debug/pprof/heap?gc=1"); err != nil {
			return m, err
		}
	}
	st, err := procmem.ReadPID(n.Cmd.Process.Pid)
	if err != nil {
		return m, err
	}
	m.RssAnonMiB, m.RssMiB = procmem.MB(st.RssAnonKB), procmem.MB(st.VmRSSKB)
	b, err := n.pprofGet(ctx, "/debug/pprof/heap?debug=1")
	if err != nil {
		return m, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[2] != "=" {
			continue
		}
		v, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "HeapIdle":
			m.HeapIdleMiB += v / (1 << 20)
		case "HeapReleased":
			m.HeapIdleMiB -= v / (1 << 20)
		case "Sys":
			m.SysMiB = v / (1 << 20)
		case "HeapInuse":
			m.HeapInuseMiB = v / (1 << 20)
		case "HeapAlloc":
			m.HeapAllocMiB = v / (1 << 20)
		}
	}
	return m, nil
}

// SaveHeapProfile writes the node's heap profile (after a GC) to path, for
// `go tool pprof -top`.
func (n *Node) SaveHeapProfile(ctx context.Context, path string) error {
	b, err := n.pprofGet(ctx, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (n *Node) pprofGet(ctx context.Context, path string) ([]byte, error) {
	return httpGet(ctx, "pprof of "+n.ID, "http://"+n.Pprof+path)
}

// Metrics reads samples of the node's /metrics in one scrape: each is a name with its
// labels as the exposition format writes them (`crossdock_ledger_segment_bytes{state="held"}`).
func (n *Node) Metrics(ctx context.Context, samples ...string) ([]float64, error) {
	b, err := httpGet(ctx, "metrics of "+n.ID, "http://"+n.MetricsAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(samples))
	found := make([]bool, len(samples))
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		for i, s := range samples {
			if v, ok := strings.CutPrefix(line, s+" "); ok {
				if out[i], err = strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
					return nil, fmt.Errorf("metrics of %s: %s: %w", n.ID, s, err)
				}
				found[i] = true
			}
		}
	}
	if i := slices.Index(found, false); i >= 0 {
		return nil, fmt.Errorf("metrics of %s: no sample %s", n.ID, samples[i])
	}
	return out, nil
}

func httpGet(ctx context.Context, what, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", what, res.Status)
	}
	return b, err
}

// DirBytes is the disk usage of everything under dir: allocated blocks, like du (Badger
// and raft-wal preallocate sparse files, whose sizes overstate what is used).
func DirBytes(dir string) int64 {
	var total int64
	_ = filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total
}
