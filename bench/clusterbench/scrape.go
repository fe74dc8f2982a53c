package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// startScraper fetches every node's /metrics each interval (0: does nothing) until the
// returned func is called, which prints how many scrapes succeeded and their bytes.
func startScraper(ctx context.Context, c *cluster, every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, failed, bytes int
	var took time.Duration
	var lastErr error
	client := &http.Client{Timeout: every}
	for _, n := range c.nodes {
		url := "http://" + n.metrics + "/metrics"
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				start := time.Now()
				resp, err := client.Get(url)
				var b int64
				if err == nil {
					b, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: %s", url, resp.Status)
					}
				}
				mu.Lock()
				if err != nil {
					failed++
					lastErr = err
				} else {
					ok++
					bytes += int(b)
					took += time.Since(start)
				}
				mu.Unlock()
			}
		}()
	}
	return func() {
		cancel()
		wg.Wait()
		avg, size := time.Duration(0), 0
		if ok > 0 {
			avg, size = took/time.Duration(ok), bytes/ok
		}
		fmt.Printf("clusterbench scrape every=%s nodes=%d scrapes=%d failed=%d avg_bytes=%d avg_took=%s last_err=%v\n", every, len(c.nodes), ok, failed, size, avg.Round(time.Microsecond), lastErr)
	}
}
