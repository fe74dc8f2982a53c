package archive

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ManifestVersion is the version of the manifest format this package writes and reads.
const ManifestVersion = 1

// maxManifestBytes bounds a manifest read (about 50,000 files of a day).
const maxManifestBytes = 64 << 20

// Manifest lists one day's archive files. It is stored as DAY/manifest.json
// ("2026/12/04/manifest.json") and replaced atomically whenever a file is added.
type Manifest struct {
	Version int        `json:"version"`
	Day     string     `json:"day"` // 2026-12-04 (UTC, of the events' commit time)
	Files   []FileInfo `json:"files"`
}

// FileInfo describes one archive file: the events of one type committed on one day
// (UTC), a contiguous part of one prune, in seq order.
type FileInfo struct {
	// Name is the object's name in the store: 2026/12/04/inventory.level/000000000123-000000004567.pb.gz
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Events    uint64    `json:"events"`
	FirstSeq  uint64    `json:"firstSeq"`
	LastSeq   uint64    `json:"lastSeq"`
	FirstTime time.Time `json:"firstTime"` // commit time of the first event
	LastTime  time.Time `json:"lastTime"`  // latest commit time in the file
	Bytes     int64     `json:"bytes"`     // compressed size
	SHA256    string    `json:"sha256"`    // of the compressed bytes, hex
}

// Day returns the file's day (2026-12-04) from its name.
func (f FileInfo) Day() string {
	parts := strings.SplitN(f.Name, "/", 4)
	if len(parts) < 3 {
		return ""
	}
	return parts[0] + "-" + parts[1] + "-" + parts[2]
}

// dayDir is the store prefix of a day: 2026/12/04.
func dayDir(t time.Time) string { return t.UTC().Format("2006/01/02") }

// manifestName is the store name of a day's manifest.
func manifestName(dir string) string { return dir + "/manifest.json" }

// fileExt ends every archive file's name: gzip of length-delimited protobuf records.
const fileExt = ".pb.gz"

// fileName is the store name of the file holding seqs first..last of typ on day dir.
func fileName(dir, typ string, first, last uint64) string {
	return fmt.Sprintf("%s/%s/%012d-%012d%s", dir, typeDir(typ), first, last, fileExt)
}

var safeType = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)

// typeDir is the directory of an event type: the type itself when it is a plain name
// (every canonical type is), else "_" and its hex, so no type can name another path.
func typeDir(typ string) string {
	if safeType.MatchString(typ) && !strings.Contains(typ, "..") {
		return typ
	}
	return "_" + hex.EncodeToString([]byte(typ))
}

var baseRE = regexp.MustCompile(`^([0-9]{12,20})-([0-9]{12,20})\.pb\.gz$`)

// ParseManifest reads and checks a manifest: the version, the day, and for every file
// a name under the day that matches its type and seq range, sane counts, times within
// the day, a byte size and a SHA-256. A manifest that fails any check is damaged: the
// reader reports it and yields nothing it lists.
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a manifest: data after the JSON object")
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("manifest version %d; this build reads version %d", m.Version, ManifestVersion)
	}
	day, err := time.Parse(time.DateOnly, m.Day)
	if err != nil {
		return nil, fmt.Errorf("day %q: want YYYY-MM-DD", m.Day)
	}
	dir := dayDir(day)
	seen := map[string]bool{}
	for i, f := range m.Files {
		if err := checkFileInfo(f, dir, day); err != nil {
			return nil, fmt.Errorf("files[%d] (%s): %w", i, f.Name, err)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("files[%d]: %s listed twice", i, f.Name)
		}
		seen[f.Name] = true
	}
	return &m, nil
}

func checkFileInfo(f FileInfo, dir string, day time.Time) error {
	want := dir + "/" + typeDir(f.Type) + "/"
	base, ok := strings.CutPrefix(f.Name, want)
	if !ok {
		return fmt.Errorf("name is not under %s (type %q)", want, f.Type)
	}
	mm := baseRE.FindStringSubmatch(base)
	if mm == nil {
		return fmt.Errorf("name %q is not FIRSTSEQ-LASTSEQ%s", base, fileExt)
	}
	first, err1 := strconv.ParseUint(mm[1], 10, 64)
	last, err2 := strconv.ParseUint(mm[2], 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return fmt.Errorf("name %q: seq out of range", base)
	case first != f.FirstSeq || last != f.LastSeq:
		return fmt.Errorf("name says seqs %d..%d, the entry %d..%d", first, last, f.FirstSeq, f.LastSeq)
	case f.FirstSeq == 0 || f.FirstSeq > f.LastSeq:
		return fmt.Errorf("seq range %d..%d is empty", f.FirstSeq, f.LastSeq)
	case f.Events == 0 || f.Events-1 > f.LastSeq-f.FirstSeq:
		return fmt.Errorf("%d events do not fit seqs %d..%d", f.Events, f.FirstSeq, f.LastSeq)
	case f.Bytes <= 0:
		return fmt.Errorf("byte size %d", f.Bytes)
	case len(f.SHA256) != 64 || strings.ToLower(f.SHA256) != f.SHA256:
		return fmt.Errorf("sha256 %q is not 64 lower-case hex digits", f.SHA256)
	case f.LastTime.Before(f.FirstTime):
		return fmt.Errorf("time range %s..%s ends before it starts", f.FirstTime.Format(time.RFC3339Nano), f.LastTime.Format(time.RFC3339Nano))
	case dayDir(f.FirstTime) != dir || dayDir(f.LastTime) != dir:
		return fmt.Errorf("time range %s..%s is not on %s", f.FirstTime.Format(time.RFC3339Nano), f.LastTime.Format(time.RFC3339Nano), day.Format(time.DateOnly))
	}
	if _, err := hex.DecodeString(f.SHA256); err != nil {
		return fmt.Errorf("sha256 %q is not hex", f.SHA256)
	}
	return nil
}

// encode returns the manifest as indented JSON, files sorted by name.
func (m *Manifest) encode() []byte {
	slices.SortFunc(m.Files, func(a, b FileInfo) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("archive: encode manifest: %v", err)) // plain data: cannot fail
	}
	return append(b, '\n')
}

// isManifest reports whether a store name is a day's manifest.
func isManifest(name string) bool {
	dir, base := path.Split(name)
	return base == "manifest.json" && isDay(strings.TrimSuffix(dir, "/"))
}

// isDay reports whether name is a day's prefix, 2026/12/04.
func isDay(name string) bool {
	t, err := time.Parse("2006/01/02", name)
	return err == nil && dayDir(t) == name
}

// EncodeManifest returns m as the JSON the archive stores (files sorted by name).
func EncodeManifest(m *Manifest) []byte {
	c := *m
	c.Files = slices.Clone(m.Files)
	return c.encode()
}
