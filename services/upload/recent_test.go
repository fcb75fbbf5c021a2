package upload

import (
	"errors"
	"io"
	"slices"
	"testing"
)

// TestRecorderReplay runs a recorder through what run does to it: an
// attempt that reads two chunks and stops with errStale, then a second
// attempt that replays them, confirms its start in the middle of the
// replay (stop), and reads the rest of the request.
func TestRecorderReplay(t *testing.T) {
	chunks := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc"), []byte("dddd")}
	i := 0
	r := &recorder{src: func() ([]byte, error) {
		if i == len(chunks) {
			return nil, io.EOF
		}
		i++
		return chunks[i-1], nil
	}}
	read := func(n int) []string {
		var got []string
		for range n {
			b, err := r.next()
			if errors.Is(err, io.EOF) {
				got = append(got, "EOF")
				break
			}
			got = append(got, string(b))
		}
		return got
	}

	if got := read(2); !slices.Equal(got, []string{"a", "bb"}) {
		t.Fatalf("first attempt read %q", got)
	}
	r.rewind()
	if got := read(1); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("replay read %q", got)
	}
	r.stop()
	if got := read(5); !slices.Equal(got, []string{"bb", "ccc", "dddd", "EOF"}) {
		t.Fatalf("after stop mid-replay read %q, want the rest of the request once", got)
	}
	if len(r.kept) != 0 {
		t.Errorf("a stopped recorder kept %d chunks", len(r.kept))
	}
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Errorf("next after the end = %v, want io.EOF again", err)
	}
}

// TestRecentStates checks that entries are copies, that a committed state
// is dropped rather than kept, and that the table stays bounded.
func TestRecentStates(t *testing.T) {
	var r recentStates
	s := &session{Repo: "repo", Offset: 5, Hash: []byte{1, 2}}
	r.put("x", s, "e1")
	s.Hash[0] = 9
	got, etag, ok := r.get("x")
	if !ok || etag != "e1" || got.Offset != 5 || got.Hash[0] != 1 {
		t.Fatalf("get = %+v, %q, %v; want a copy of what was put", got, etag, ok)
	}
	got.Hash[1] = 7
	if again, _, _ := r.get("x"); again.Hash[1] != 2 {
		t.Errorf("changing a returned state changed the entry")
	}

	r.put("x", &session{Repo: "repo", Committed: "sha256:abc"}, "e2")
	if _, _, ok := r.get("x"); ok {
		t.Errorf("a committed state was kept")
	}

	for i := range maxRecent + 10 {
		r.put(string(rune(i)), &session{}, "e")
	}
	if len(r.entries) > maxRecent {
		t.Errorf("%d entries, want at most %d", len(r.entries), maxRecent)
	}
}
