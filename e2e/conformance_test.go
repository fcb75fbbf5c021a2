package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// conformanceTimeout bounds one run of the conformance suite.
const conformanceTimeout = 15 * time.Minute

// conformanceSwitches turns every API group and data kind of the OCI
// conformance suite on explicitly, so that a change of the suite's
// defaults cannot quietly test less. Tag parameters (?tag= on a push by
// digest, from the specification's development version) are on too. One
// switch stays off, on purpose: OCI_DATA_SPARSE pushes manifests whose
// layers or child manifests were never pushed. The spec lets a registry
// refuse them, and keel does (MANIFEST_BLOB_UNKNOWN), so the kind cannot
// pass by design.
var conformanceSwitches = []string{
	"OCI_VERSION=1.1",
	"OCI_API_PING=true",
	"OCI_API_PULL=true",
	"OCI_API_PUSH=true",
	"OCI_API_BLOBS_ATOMIC=true",
	"OCI_API_BLOBS_DELETE=true",
	"OCI_API_BLOBS_DIGEST_HEADER=true",
	"OCI_API_BLOBS_MOUNT_ANONYMOUS=true",
	"OCI_API_BLOBS_UPLOAD_CANCEL=true",
	"OCI_API_MANIFESTS_ATOMIC=true",
	"OCI_API_MANIFESTS_DELETE=true",
	"OCI_API_MANIFESTS_DIGEST_HEADER=true",
	"OCI_API_MANIFESTS_TAG_PARAM=true",
	"OCI_API_TAGS_ATOMIC=true",
	"OCI_API_TAGS_DELETE=true",
	"OCI_API_TAGS_LIST=true",
	"OCI_API_REFERRER=true",
	"OCI_DATA_IMAGE=true",
	"OCI_DATA_INDEX=true",
	"OCI_DATA_INDEX_LIST=true",
	"OCI_DATA_SPARSE=false",
	"OCI_DATA_ARTIFACT=true",
	"OCI_DATA_SUBJECT=true",
	"OCI_DATA_SUBJECT_MISSING=true",
	"OCI_DATA_ARTIFACT_LIST=true",
	"OCI_DATA_SUBJECT_LIST=true",
	"OCI_DATA_DATA_FIELD=true",
	"OCI_DATA_NONDISTRIBUTABLE=true",
	"OCI_DATA_CUSTOM_FIELDS=true",
	"OCI_DATA_NO_LAYERS=true",
	"OCI_DATA_EMPTY_BLOB=true",
	"OCI_DATA_SHA512=true",
}

// junitSuites is the part of the suite's junit.xml the test reads.
type junitSuites struct {
	Tests    int `xml:"tests,attr"`
	Errors   int `xml:"errors,attr"`
	Failures int `xml:"failures,attr"`
	Skipped  int `xml:"skipped,attr"`
	Disabled int `xml:"disabled,attr"`
	Suites   []struct {
		Cases []struct {
			Name string `xml:"name,attr"`
			// Status is passed, skipped, failure or error.
			Status    string `xml:"status,attr"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestConformance runs the OCI distribution-spec conformance suite against
// the multi-process stack, logged in as the read-write user.
func TestConformance(t *testing.T) {
	runConformance(t, sharedStack(t))
}

// runConformance runs the conformance suite against s as its read-write
// user and fails t on any failing leaf.
func runConformance(t *testing.T, s *stack) {
	t.Helper()
	bin := pinnedTool(t, "conformance")
	results := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), conformanceTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin)
	// An empty working folder: the suite would read an oci-conformance.yaml
	// it found there.
	cmd.Dir = t.TempDir()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, conformanceSwitches...)
	cmd.Env = append(cmd.Env,
		"OCI_REGISTRY="+s.registry,
		"OCI_TLS=disabled",
		"OCI_USERNAME="+s.admin.user,
		"OCI_PASSWORD="+s.admin.pass,
		"OCI_RESULTS_DIR="+results,
		"OCI_LOG=warn",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr

	runErr := cmd.Run()

	var exitErr *exec.ExitError
	if runErr != nil && !errors.As(runErr, &exitErr) {
		t.Fatalf("run the conformance suite: %v\n%s", runErr, stderr.String())
	}
	junit := readJUnit(t, results, stdout.String(), stderr.String())
	t.Logf("conformance summary: %d tests, %d passed, %d failed, %d errors, "+
		"%d skipped, %d disabled",
		junit.Tests, junit.Tests-junit.Failures-junit.Errors-junit.Skipped-junit.Disabled,
		junit.Failures, junit.Errors, junit.Skipped, junit.Disabled)
	logResultsYAML(t, results)

	var failing, skipped []string
	for _, suite := range junit.Suites {
		for _, c := range suite.Cases {
			switch {
			case c.Status == "failure" || c.Status == "error":
				failing = append(failing, c.Name+": "+strings.TrimSpace(c.SystemOut))
			case c.Status == "skipped":
				skipped = append(skipped, c.Name+": "+strings.TrimSpace(c.SystemOut))
			}
		}
	}
	if len(skipped) > 0 {
		t.Logf("skipped leaves (the registry answered \"unsupported\"):\n  %s",
			strings.Join(skipped, "\n  "))
	}
	if len(failing) > 0 {
		t.Errorf("failing leaves:\n  %s", strings.Join(failing, "\n  "))
	}
	if runErr != nil {
		t.Errorf("conformance suite exited with %v\n%s", runErr, tail(stdout.String(), 80))
	}
}

// readJUnit parses the suite's junit.xml. Its absence means the suite did
// not run (it exits 0 on a configuration error), which fails the test.
func readJUnit(t *testing.T, results, stdout, stderr string) junitSuites {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatalf("the conformance suite wrote no junit.xml (%v)\nstdout:\n%s\nstderr:\n%s",
			err, tail(stdout, 80), tail(stderr, 80))
	}
	var junit junitSuites
	if err := xml.Unmarshal(raw, &junit); err != nil {
		t.Fatalf("parse junit.xml: %v", err)
	}
	if junit.Tests == 0 {
		t.Fatalf("junit.xml counts no tests\nstdout:\n%s", tail(stdout, 80))
	}
	return junit
}

// logResultsYAML copies the per-API and per-data-kind statuses of
// results.yaml into the test log, without the configuration part (it holds
// the login).
func logResultsYAML(t *testing.T, results string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(results, "results.yaml"))
	if err != nil {
		t.Errorf("read results.yaml: %v", err)
		return
	}
	text := string(raw)
	if i := strings.Index(text, "\napis:"); i >= 0 {
		text = text[i+1:]
	}
	t.Logf("results.yaml:\n%s", text)
}
