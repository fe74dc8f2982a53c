package console_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/crossdock/crossdock/internal/testkit/testsvc"
)

// ArtifactsEnv names a directory for the browser test's screenshots (in
// console/<test>/ under it); without it they go to the test's artifact directory
// (kept with go test -artifacts -outputdir DIR).
const ArtifactsEnv = "CROSSDOCK_ARTIFACTS"

func chromium(t *testing.T) string {
	t.Helper()
	var errs []error
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		p, err := testsvc.LookPath(name)
		if err == nil {
			return p
		}
		errs = append(errs, err)
	}
	testsvc.Missing(t, "Chromium (Debian package chromium)", errors.Join(errs...))
	return ""
}

func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv(ArtifactsEnv); d != "" {
		dir := filepath.Join(d, "console", t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("create the artifact dir: %v", err)
		}
		return dir
	}
	return t.ArtifactDir()
}

// TestConsoleInBrowser drives the console in headless Chromium against a real node,
// agent and webhook receiver: log in, see the fleet, open the destination, retry its
// dead letter (its alert firing, then resolved), search a SKU and read its timeline,
// log out. Screenshots of each step
// are written to the artifact directory (see ArtifactsEnv).
func TestConsoleInBrowser(t *testing.T) {
	bin := chromium(t)
	f := newFixture(t)
	dir := artifactDir(t)
	base := "https://" + f.srv.Addr()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,        // tests run as root in CI containers
		chromedp.IgnoreCertErrors, // the cluster's own CA signs the node's certificate
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	// The first call starts the browser and binds its life to its context: no timeout
	// on that one; every later step has its own.
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium %s: %v", bin, err)
	}
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(bctx, 30*time.Second) }
	shot := func(name string) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			dctx, dcancel := context.WithTimeout(bctx, 5*time.Second)
			defer dcancel()
			loc, _ := chromedp.Run(dctx, chromedp.Location())
			html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
			t.Fatalf("%s: %v (the browser is at %s:\n%.2000s)", what, err, loc, html)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := step()
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Not logged in: the login page.
	do("open the console", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(css("#login-form")))
	shot("01-login")
	ctx, cancel := step()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	cancel()
	if err != nil || !strings.Contains(loc, "/ui/login") {
		t.Fatalf("not logged in, the console is at %s (%v), want the login page", loc, err)
	}
	// A wrong token is refused.
	do("log in with a wrong token", chromedp.SendKeys(css("#token"), "cdadm_nope.nope"), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#error")))
	if s := text("#error"); !strings.Contains(s, "Refused") {
		t.Errorf("wrong token: error %q", s)
	}
	// Log in: the fleet, with the agent connected.
	do("log in", chromedp.SetValue(css("#token"), f.cc.Token), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#fleet")))
	shot("02-fleet")
	if s := text("#agent-" + f.agentID); !strings.Contains(s, "connected") {
		t.Errorf("fleet row of %s: %q, want connected", f.agentID, s)
	}

	// Destinations, then the destination with its dead letter; retry it.
	dlID := f.openDeadLetter(t)
	// The dead letter fires the fixture's Alert (evaluated by the leader, committed
	// through raft): the alerts page lists it firing.
	waitAlert := func(state string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			do("open alerts", chromedp.Click(css("#nav-alerts")), chromedp.WaitVisible(css("#alerts")))
			if s := text("#alerts tbody"); strings.Contains(s, "shop-dead-letters") && strings.Contains(s, state) {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("alerts page after 30s: %q, want shop-dead-letters %s", s, state)
			}
		}
	}
	waitAlert("firing")
	shot("03a-alerts-firing")
	do("open destinations", chromedp.Click(css("#nav-destinations")), chromedp.WaitVisible(css("#dest-shop")))
	shot("03-destinations")
	if s := text("#dest-shop"); !strings.Contains(s, "closed") {
		t.Errorf("destinations row of shop: %q, want its breaker closed", s)
	}
	f.recv.accept.Store(true)
	do("open shop", chromedp.Click(css("#dest-shop a")), chromedp.WaitVisible(css("#dl-"+dlID)))
	shot("04-destination")
	if s := text("#dl-" + dlID); !strings.Contains(s, "open") || !strings.Contains(s, "422") {
		t.Errorf("dead letter row: %q, want open with the 422", s)
	}
	do("retry the dead letter", chromedp.Click(css("#dl-"+dlID+" button.retry")), chromedp.WaitVisible(css("#flash")))
	shot("05-retried")
	if s := text("#flash"); !strings.Contains(s, "queued for retry") {
		t.Errorf("after retry: %q", s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		do("reload the destination", chromedp.Navigate(base+"/ui/destinations/shop"), chromedp.WaitVisible(css("#dl-"+dlID)))
		if s := text("#dl-" + dlID + " td.state"); s == "delivered" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the retried dead letter is %q after 30s, want delivered", s)
		}
	}
	shot("06-delivered")

	// Search a SKU: its timeline.
	do("search sku=A-100", chromedp.SetValue(css("#nav-q"), "sku=A-100"), chromedp.Submit(css("#nav-q")), chromedp.WaitVisible(css("#timeline-summary")))
	shot("07-timeline")
	if s := text("#timeline-summary"); !strings.HasPrefix(s, "2 events with sku=A-100") {
		t.Errorf("timeline summary %q, want 2 events", s)
	}
	if s := text("main"); !strings.Contains(s, "attempt retry HTTP 503") || !strings.Contains(s, "attempt ok HTTP 200") || !strings.Contains(s, "delivered") {
		t.Errorf("timeline text lacks the 503 retry and the delivery:\n%s", s)
	}

	// The dead letter delivered, its alert resolves.
	waitAlert("resolved")
	shot("08-alerts-resolved")

	// Log out: back to the login page, and the fleet needs a login again.
	do("log out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#login-form")),
		chromedp.Navigate(base+"/ui/fleet"), chromedp.WaitVisible(css("#login-form")))
	shot("09-logged-out")
	t.Logf("screenshots in %s", dir)
}
