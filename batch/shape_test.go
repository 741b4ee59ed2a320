package batch

import (
	"testing"
)

func TestShape(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		line    int64
		badUTF8 bool
	}{
		{"ok", "{\"a\":1}\n{\"b\":\"é€😀\"}\n", 0, false},
		{"no final newline, CRLF, blanks, BOM", bom + "{}\r\n\n  {} \r\n{}", 0, false},
		{"empty", "", 0, false},
		{"not an object", "{}\n[1]\n", 2, false},
		{"cut object", "{}\n{}\n{\"a\":\n", 3, false},
		{"last line cut", "{}\n{\"a\"", 2, false},
		{"bad utf-8", "{\"a\":\"\xff\"}\n", 0, true},
		{"truncated rune at the end", "{}\n{\"a\":\"\xe2\x82", 2, true},
		{"BOM on a later line", "{}\n" + bom + "{}\n", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// every chunking: one byte at a time and whole
			for _, step := range []int{1, 2, 3, len(tc.in) + 1} {
				var s Shape
				for i := 0; i < len(tc.in); i += step {
					_, _ = s.Write([]byte(tc.in[i:min(i+step, len(tc.in))]))
				}
				line, badUTF8, ok := s.Check()
				if line != tc.line || badUTF8 != tc.badUTF8 || ok != (tc.line == 0 && !tc.badUTF8) {
					t.Errorf("step %d: Check() = %d, %v, %v; want line %d, badUTF8 %v", step, line, badUTF8, ok, tc.line, tc.badUTF8)
				}
			}
		})
	}
}
