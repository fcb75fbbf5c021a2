package querycli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
)

// table writes aligned columns, as kubectl and docker do: a header in
// capitals, then one row per entry, columns three spaces apart.
type table struct {
	w *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(anys(header)...)
	return t
}

// row adds a row; each cell is printed with %v.
func (t *table) row(cells ...any) {
	strs := make([]string, len(cells))
	for i, c := range cells {
		strs[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.w, strings.Join(strs, "\t"))
}

// flush writes the table out.
func (t *table) flush() error { return t.w.Flush() }

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// orDash is s, or "-" for an empty cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeJSON writes m in the API's JSON mapping (the gateway's, so that a
// script reads the same fields either way), unset fields included:
// indented, or on one line.
func writeJSON(w io.Writer, m proto.Message, indent bool) error {
	raw, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	// protojson varies its spacing on purpose; normalize it.
	var buf bytes.Buffer
	if indent {
		err = json.Indent(&buf, raw, "", "  ")
	} else {
		err = json.Compact(&buf, raw)
	}
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

// printManifest writes a manifest as a block of fields, then a table of
// its layers or, for an index, of its manifests.
func printManifest(w io.Writer, repo string, m *manifestv1.Manifest) error {
	f := newTable(w)
	field := func(name string, value any) { f.row(name+":", value) }
	field("Repository", repo)
	field("Digest", m.GetDigest())
	field("Media type", m.GetMediaType())
	if m.GetArtifactType() != "" {
		field("Artifact type", m.GetArtifactType())
	}
	field("Size", m.GetSize())
	field("Total size", m.GetTotalSize())
	if c := m.GetConfig(); c != nil {
		field("Config", c.GetDigest()+"   "+fmt.Sprint(c.GetSize())+"   "+c.GetMediaType())
	}
	if s := m.GetSubject(); s != nil {
		field("Subject", s.GetDigest())
	}
	for i, k := range slices.Sorted(maps.Keys(m.GetAnnotations())) {
		label := ""
		if i == 0 {
			label = "Annotations:"
		}
		f.row(label, k+"="+m.GetAnnotations()[k])
	}
	if err := f.flush(); err != nil {
		return err
	}

	switch {
	case len(m.GetLayers()) > 0:
		fmt.Fprintln(w)
		t := newTable(w, "LAYER", "DIGEST", "SIZE", "MEDIA TYPE")
		for i, l := range m.GetLayers() {
			t.row(i+1, l.GetDigest(), l.GetSize(), l.GetMediaType())
		}
		return t.flush()
	case len(m.GetManifests()) > 0:
		fmt.Fprintln(w)
		t := newTable(w, "PLATFORM", "DIGEST", "SIZE", "TOTAL SIZE", "MEDIA TYPE")
		for _, e := range m.GetManifests() {
			d := e.GetDescriptor_()
			t.row(platformString(e.GetPlatform()), d.GetDigest(), d.GetSize(), e.GetTotalSize(),
				d.GetMediaType())
		}
		return t.flush()
	}
	return nil
}

// platformString writes a platform as os/architecture[/variant], with the
// OS version after a comma; "-" for none.
func platformString(p *manifestv1.Platform) string {
	if p == nil {
		return "-"
	}
	s := p.GetOs() + "/" + p.GetArchitecture()
	if p.GetVariant() != "" {
		s += "/" + p.GetVariant()
	}
	if p.GetOsVersion() != "" {
		s += "," + p.GetOsVersion()
	}
	return s
}

// watchRow lays out a row of watch's table. A watch cannot know its
// columns' widths in advance, so they are fixed.
const watchRow = "%-24s   %-12s   %-30s   %-71s   %-20s   %s\n"

// writeWatchHeader writes the header of watch's table.
func writeWatchHeader(w io.Writer) error {
	_, err := fmt.Fprintf(w, watchRow, "TIME", "EVENT", "REPOSITORY", "DIGEST", "TAGS", "CURSOR")
	return err
}

// eventNames are the short names of change kinds in watch's table.
var eventNames = map[manifestv1.ChangeKind]string{
	manifestv1.ChangeKind_CHANGE_KIND_MANIFEST_PUSHED:  "pushed",
	manifestv1.ChangeKind_CHANGE_KIND_MANIFEST_DELETED: "deleted",
	manifestv1.ChangeKind_CHANGE_KIND_TAG_DELETED:      "tag-deleted",
}

// writeWatchRow writes one change as a row of watch's table.
func writeWatchRow(w io.Writer, r *manifestv1.QueryServiceWatchChangesResponse) error {
	c := r.GetChange()
	event, ok := eventNames[c.GetKind()]
	if !ok {
		event = strings.ToLower(c.GetKind().String())
	}
	when := c.GetTime().AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
	_, err := fmt.Fprintf(w, watchRow, when, event, c.GetRepository(), orDash(c.GetDigest()),
		orDash(strings.Join(c.GetTags(), ",")), r.GetCursor())
	return err
}
