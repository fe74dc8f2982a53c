package controlplane

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/crossdock/crossdock/internal/platform/metrics"
)

var (
	descPartnerRequests = metrics.Desc("partner_requests_total", "Partner API calls answered by this node since it started, by partner (\"-\" when the key was missing or unknown), method and code (ok, or a Connect code or refusal reason).", "partner", "method", "code")
	descViewsSeq        = metrics.Desc("views_seq", "Ledger seq the views (inventory, prices, items) on this node reflect.")
	descViewsBehind     = metrics.Desc("views_behind_events", "Events committed to this node's ledger that the views have not folded yet.")
	descViewsLag        = metrics.Desc("views_lag_seconds", "Time from the ledger applying an entry on this node to the views folding it, over the recent samples, by quantile (0.5, 0.99, 1 for the maximum).", "quantile")
	descAlertsFiring    = metrics.Desc("alerts_firing", "Alert instances firing, by Alert document and severity (committed state: the same on every node).", "alert", "severity")
	descDiskFree        = metrics.Desc("disk_free_bytes", "Free bytes on the file system of this node's data dir, as last sampled (every second).")
	descDiskMinFree     = metrics.Desc("disk_min_free_bytes", "Free bytes this node keeps (--min-free-disk); below it the cluster refuses new events. 0 when the guard is off.")
	descIngestRefused   = metrics.Desc("ingest_refused", "1 while this node refuses new events because a node is short of disk (the leader knows every node's; a follower only its own), else 0.")
	descLowWater        = metrics.Desc("ledger_low_water_seq", "Earliest seq this node's ledger still holds after retention pruned it (0 when nothing was pruned).")
	descOldestAge       = metrics.Desc("ledger_oldest_event_age_seconds", "Age of the earliest event held at the low-water mark (0 when nothing was pruned): near the longest retention of any type; well above it plus a few prune intervals, pruning is falling behind.")
	descSegmentFiles    = metrics.Desc("ledger_segment_files", "Segment files holding this node's log chunks.")
	descCompactKeys     = metrics.Desc("retention_compact_keys_followed", "Keys (type and keys) of compact types the leader follows to leave out of a prune's compacted writes those the log holds a newer event of (0 on a follower; --prune-compact-keys bounds it).")
	descCompactListed   = metrics.Desc("retention_compact_listed_events", "Events the leader's last prune listed for the compacted base; -1 when it wrote the newest pruned event of every key instead (following not caught up, over --prune-compact-keys, a list over 8,192, or a node that has not reported a build applying a list).")
	descSegmentBytes    = metrics.Desc("ledger_segment_bytes", "Bytes in this node's segment files: all of them (state=\"all\"), and the chunks the log still holds (state=\"held\").", "state")
)

// moreCollector reads the partner API's counters, the views' lag and the committed
// alert state at scrape time.
type moreCollector struct{ s *Server }

func (c *moreCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPartnerRequests, descViewsSeq, descViewsBehind, descViewsLag, descAlertsFiring, descDiskFree, descDiskMinFree, descIngestRefused,
		descLowWater, descOldestAge, descSegmentFiles, descSegmentBytes, descCompactKeys, descCompactListed} {
		ch <- d
	}
}

func (c *moreCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.partner != nil && s.partner.Usage != nil {
		for k, n := range s.partner.Usage.Totals() {
			parts := strings.SplitN(k, " ", 3) // partner method code
			if len(parts) != 3 {
				continue
			}
			if parts[0] == "" {
				parts[0] = "-"
			}
			ch <- metrics.Counter(descPartnerRequests, float64(n), parts...)
		}
	}
	if s.views != nil {
		st := s.views.Stats()
		ch <- metrics.Gauge(descViewsSeq, float64(st.Seq))
		last := s.store.Ledger().LastSeq()
		ch <- metrics.Gauge(descViewsBehind, float64(last-min(last, st.Seq)))
		ch <- metrics.Gauge(descViewsLag, st.LagP50.Seconds(), "0.5")
		ch <- metrics.Gauge(descViewsLag, st.LagP99.Seconds(), "0.99")
		ch <- metrics.Gauge(descViewsLag, st.LagMax.Seconds(), "1")
	}
	if d, ok := s.disk.Local(); ok {
		ch <- metrics.Gauge(descDiskFree, float64(d.Free))
		ch <- metrics.Gauge(descDiskMinFree, float64(d.Min))
	}
	ch <- metrics.Gauge(descIngestRefused, b2f(s.disk.Check() != nil))
	low, at := s.store.Ledger().LowWater()
	age := 0.0
	if low > 0 && !at.IsZero() {
		age = max(time.Since(at).Seconds(), 0)
	}
	ch <- metrics.Gauge(descLowWater, float64(low))
	ch <- metrics.Gauge(descOldestAge, age)
	seg := s.store.Ledger().Segments()
	ch <- metrics.Gauge(descSegmentFiles, float64(seg.Files))
	ch <- metrics.Gauge(descSegmentBytes, float64(seg.Bytes), "all")
	ch <- metrics.Gauge(descSegmentBytes, float64(seg.HeldBytes), "held")
	if s.pruner != nil {
		cs := s.pruner.CompactStats()
		listed := float64(cs.ListedSeqs)
		if !cs.Listed {
			listed = -1
		}
		ch <- metrics.Gauge(descCompactKeys, float64(cs.KeysFollowed))
		ch <- metrics.Gauge(descCompactListed, listed)
	}
	states, err := s.store.Ledger().AlertStates()
	if err != nil {
		s.logger.Warn("metrics: read alert states", "err", err)
		return
	}
	firing := map[[2]string]int{}
	for _, in := range states {
		k := [2]string{in.GetAlert(), in.GetLabels()["severity"]}
		if in.GetState() == "firing" {
			firing[k]++
		} else if _, ok := firing[k]; !ok {
			firing[k] = 0
		}
	}
	for k, n := range firing {
		ch <- metrics.Gauge(descAlertsFiring, float64(n), k[0], k[1])
	}
}
