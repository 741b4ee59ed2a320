package tokens

import (
	"encoding/json"
	"os"
	"testing"
)

// TestHFReferenceFile compares the hf counter with reference counts produced
// outside Go, for tokenizer files too large to keep in testdata (the full
// Llama 3 and Llama 2 tokenizer.json). Set TOKENS_HF_TOKENIZER to the
// tokenizer.json and TOKENS_HF_REFERENCE to a JSON array of
// {"text": ..., "count": ...} (testdata/gen/reference.mjs writes one).
func TestHFReferenceFile(t *testing.T) {
	tokPath, refPath := os.Getenv("TOKENS_HF_TOKENIZER"), os.Getenv("TOKENS_HF_REFERENCE")
	if tokPath == "" || refPath == "" {
		t.Skip("TOKENS_HF_TOKENIZER and TOKENS_HF_REFERENCE not set")
	}
	c, err := LoadHF(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	checkReference(t, c, readReference(t, refPath))
}

// refCase is one reference count.
type refCase struct {
	Text  string `json:"text"`
	Count int    `json:"count"`
}

// readReference reads a JSON array of reference counts.
func readReference(t *testing.T, path string) []refCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []refCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s has no cases", path)
	}
	return cases
}

// checkReference asserts c's count and the Estimate bound for every case.
func checkReference(t *testing.T, c Counter, cases []refCase) {
	t.Helper()
	bad := 0
	for i, rc := range cases {
		got := c.Count(rc.Text)
		if got != rc.Count {
			bad++
			if bad <= 10 {
				t.Errorf("case %d %q: %s count = %d, reference %d", i, trunc(rc.Text), c.Name(), got, rc.Count)
			}
		}
		if est := Estimate().Count(rc.Text); est < got {
			t.Errorf("case %d %q: Estimate %d < %s count %d", i, trunc(rc.Text), est, c.Name(), got)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d cases differ", bad, len(cases))
	}
}

// trunc shortens a text for an error message.
func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

// TestHFTinyTokenizers checks the hf counter against @lenml/tokenizers on the
// tiny tokenizers testdata/gen/gen.mjs trains, one per supported style.
func TestHFTinyTokenizers(t *testing.T) {
	for _, name := range []string{"tiny-bytelevel", "tiny-spm", "tiny-metaspace"} {
		t.Run(name, func(t *testing.T) {
			c, err := New("hf testdata/" + name + ".json")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.Name(), "hf:testdata/"+name+".json"; got != want {
				t.Errorf("Name() = %q, want %q", got, want)
			}
			checkReference(t, c, readReference(t, "testdata/"+name+".ref.json"))
		})
	}
}
