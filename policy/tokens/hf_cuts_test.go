package tokens

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// naiveHF counts text with h the simple way, as the package did before
// cutting: each segment normalized and pre-tokenized whole, each piece merged
// whole. The cut counts must equal it.
func naiveHF(h *hfCounter, text string) int {
	text = strings.ToValidUTF8(text, "\uFFFD")
	sc := &bpeScratch{}
	total, i := 0, 0
	for seg, rest := range h.added.segments(text) {
		if seg != "" {
			s := seg
			for _, n := range h.norms {
				switch n.kind {
				case normNFC:
					s = norm.NFC.String(s)
				case normPrepend:
					s = n.a + s
				case normReplace:
					s = strings.ReplaceAll(s, n.a, n.b)
				}
			}
			var walk func(int, piece)
			walk = func(j int, pc piece) {
				if j == len(h.pre) {
					total += h.model.merge(pc.text, sc, true)
					return
				}
				h.pre[j].each(pc, func(p piece) bool { walk(j+1, p); return true })
			}
			walk(0, piece{text: s, first: i == 0})
		}
		if rest {
			total++
		}
		i++
	}
	return total
}

func TestHFCutModes(t *testing.T) {
	for name, want := range map[string]cutMode{"tiny-bytelevel": cutSplit, "tiny-spm": cutSpace, "tiny-metaspace": cutSpace} {
		h := mustCounter(t, "hf testdata/"+name+".json").(*hfCounter)
		if h.cuts.mode != want {
			t.Errorf("%s: cut mode %d, want %d", name, h.cuts.mode, want)
		}
	}
}

// TestHFCutsExact checks that counting in parts gives the whole count on
// long texts for every tiny tokenizer.
func TestHFCutsExact(t *testing.T) {
	for _, name := range []string{"tiny-bytelevel", "tiny-spm", "tiny-metaspace"} {
		h := mustCounter(t, "hf testdata/"+name+".json").(*hfCounter)
		for i, text := range equivalenceTexts() {
			if whitespaceCost(text) > maxWhitespaceCost {
				continue
			}
			if got, want := h.Count(text), naiveHF(h, text); got != want {
				t.Errorf("%s: text %d (%d bytes, %q): Count = %d, whole %d", name, i, len(text), trunc(text), got, want)
			}
		}
	}
}

// FuzzHFCuts checks on arbitrary repeated text that counting in parts gives
// the whole count, or more when a part is too long to merge exactly.
func FuzzHFCuts(f *testing.F) {
	for _, tc := range tiktokenCases {
		f.Add(tc.text, uint16(300))
	}
	f.Add("ab ", uint16(9000))
	f.Add("a\u0301 b", uint16(7000))
	var hs []*hfCounter
	for _, name := range []string{"tiny-bytelevel", "tiny-spm", "tiny-metaspace"} {
		hs = append(hs, mustCounter(f, "hf testdata/"+name+".json").(*hfCounter))
	}
	f.Fuzz(func(t *testing.T, unit string, times uint16) {
		text := strings.Repeat(unit, int(times%20000)+1)
		if len(text) > 256<<10 || whitespaceCost(text) > maxWhitespaceCost {
			return
		}
		for _, h := range hs {
			got, want := h.Count(text), naiveHF(h, text)
			if got < want || got > want && len(text) <= maxExactPiece {
				t.Fatalf("%s: Count = %d, whole %d for %q x %d", h.Name(), got, want, trunc(unit), times)
			}
		}
	})
}

// TestHFCutsKnownPatterns runs the tiny byte-level vocabulary behind each
// known split pattern (and GPT-2's ByteLevel regex) and checks that cutting
// gives the whole count.
func TestHFCutsKnownPatterns(t *testing.T) {
	data, err := os.ReadFile("testdata/tiny-bytelevel.json")
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	split := func(pattern string) string {
		return `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":` + jsonString(pattern) +
			`},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]}`
	}
	pres := map[string]string{
		"cl100k":         split(cl100kPattern),
		"o200k":          split(o200kPattern),
		"qwen2":          split(qwen2Pattern),
		"gpt2":           split(gpt2Pattern),
		"bytelevel":      `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`,
		"bytelevel+nfc":  `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`,
		"prefixed (off)": `{"type":"ByteLevel","add_prefix_space":true,"use_regex":true}`,
	}
	texts := append(equivalenceTexts(), strings.Repeat("Ａ1２3'４ 55 ６六七八 9", 3000), strings.Repeat("e\u0301\u0300 ", 6000))
	for name, pre := range pres {
		f["pre_tokenizer"] = json.RawMessage(pre)
		f["normalizer"] = json.RawMessage(`null`)
		if strings.HasSuffix(name, "+nfc") {
			f["normalizer"] = json.RawMessage(`{"type":"NFC"}`)
		}
		js, _ := json.Marshal(f)
		c, err := ParseHF(name, js)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		h := c.(*hfCounter)
		if want := strings.Contains(name, "(off)"); (h.cuts.mode == cutNone) != want {
			t.Errorf("%s: cut mode %d", name, h.cuts.mode)
		}
		for i, text := range texts {
			if whitespaceCost(text) > maxWhitespaceCost {
				continue
			}
			if got, want := h.Count(text), naiveHF(h, text); got != want {
				t.Errorf("%s: text %d (%q): Count = %d, whole %d", name, i, trunc(text), got, want)
			}
		}
	}
}
