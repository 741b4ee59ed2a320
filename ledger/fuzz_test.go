package ledger

import "testing"

// FuzzParseMicros: whatever the text, parsing never panics, and an accepted amount renders to a
// text that parses back to the same amount.
func FuzzParseMicros(f *testing.F) {
	for _, s := range []string{"0", "0.15", "12.000001", ".5", "1.", "999999999999.999999", "-1", "1e3", " 2 ", "0.0000001", "1.2.3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMicros(s)
		if err != nil {
			return
		}
		if m < 0 {
			t.Fatalf("%q parsed to a negative amount %d", s, m)
		}
		back, err := ParseMicros(m.String())
		if err != nil || back != m {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, m, m.String(), back, err)
		}
	})
}
