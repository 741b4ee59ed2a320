package simulator

import "strconv"

// serveTokenizeTGI answers TGI's POST /tokenize {"inputs": text}: an array with one
// {"id","text","start","stop"} per token, start and stop being byte offsets into text.
func (s *Server) serveTokenizeTGI(x *exchange, text string) {
	var ids []uint
	var pieces []string
	if text != "" {
		ids, pieces, _ = s.codec.Encode(text)
	}
	b := append(make([]byte, 0, 2+len(ids)*48), '[')
	off := 0
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		piece := ""
		if i < len(pieces) {
			piece = pieces[i]
		}
		b = append(b, `{"id":`...)
		b = strconv.AppendUint(b, uint64(id), 10)
		b = append(b, `,"text":`...)
		b = appendJSONString(b, piece)
		b = append(b, `,"start":`...)
		b = appendInt(b, off)
		off = min(off+len(piece), len(text))
		b = append(b, `,"stop":`...)
		b = appendInt(b, off)
		b = append(b, '}')
	}
	x.writeJSON(append(b, ']'))
}

// serveTokenizeLlamaCpp answers llama.cpp server's POST /tokenize {"content": text}:
// {"tokens":[ids]}.
func (s *Server) serveTokenizeLlamaCpp(x *exchange, text string) {
	var ids []uint
	if text != "" {
		ids, _, _ = s.codec.Encode(text)
	}
	b := append(make([]byte, 0, 16+len(ids)*7), `{"tokens":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(id), 10)
	}
	x.writeJSON(append(b, "]}"...))
}
