package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadDocumentFiles(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "routing")
	if err := os.MkdirAll(filepath.Join(sub, "nested"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "b-route.yaml"), e2eRoute)
	writeFile(t, filepath.Join(sub, "a-dest.yml"), strings.Replace(e2eDestination, "${env:MARKET_SECRET}", "${file:secrets/market}", 1)+"---\n"+e2ePolicy)
	writeFile(t, filepath.Join(sub, "notes.txt"), "not yaml: [")
	writeFile(t, filepath.Join(sub, "nested", "x.yaml"), "not: [read")
	if err := os.MkdirAll(filepath.Join(sub, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "secrets", "market"), e2eSecret+"\n")

	// A directory: its .yaml/.yml files in name order, not recursive; ${file:} relative
	// to the document's file.
	stream, n, err := readDocumentFiles([]string{sub}, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || !strings.Contains(stream, "secret: "+e2eSecret) {
		t.Fatalf("read %d documents:\n%s", n, stream)
	}
	if strings.Index(stream, "kind: Destination") > strings.Index(stream, "kind: Route") {
		t.Error("files not read in name order")
	}

	// Standard input.
	stream, n, err = readDocumentFiles([]string{"-"}, strings.NewReader(e2ePolicy))
	if err != nil || n != 1 || !strings.Contains(stream, "name: marketplace-2rps") {
		t.Fatalf("stdin: %d documents, %v", n, err)
	}

	// Every bad file is reported with its name and the field.
	bad := writeFile(t, filepath.Join(dir, "bad.yaml"), strings.Replace(e2eRoute, "destination: marketplace", "destination: Market Place", 1))
	missing := writeFile(t, filepath.Join(dir, "nosecret.yaml"), strings.Replace(e2eDestination, "${env:MARKET_SECRET}", "${file:nope}", 1))
	_, _, err = readDocumentFiles([]string{bad, missing}, nil)
	for _, want := range []string{
		"bad.yaml:\n  routes/marketplace-inventory: spec.destination: \"Market Place\" is not a valid destination name",
		"nosecret.yaml:\n  destinations/marketplace: spec.secret: read nope: open " + filepath.Join(dir, "nope"),
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\ndoes not contain %q", err, want)
		}
	}
	if _, _, err := readDocumentFiles([]string{filepath.Join(sub, "nested", "..", "secrets")}, nil); err == nil || !strings.Contains(err.Error(), "no .yaml or .yml files") {
		t.Errorf("directory without documents: %v", err)
	}
}
