package simulator

import "time"

// answerTime is how long a non-streamed answer of n tokens (per choice; choices are generated
// side by side) takes: the time to the first token, then one token interval for each further
// token, as a stream of the same answer does. A real server takes as long to answer a request
// whole as to stream it.
func (s *Server) answerTime(n int) time.Duration {
	d := s.cfg.TTFT
	if n > 1 && s.interval > 0 {
		d += time.Duration(n-1) * s.interval
	}
	return d
}
