package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// maxHeaderLine bounds one response header line (the bufio buffer size).
const maxHeaderLine = 16 << 10

// response is what one exchange read back. body aliases the client's buffer and is only valid
// until the next exchange.
type response struct {
	status int
	body   []byte
	// tail holds the last bytes of the body even when body was truncated at maxBody.
	tail      [32]byte
	tailLen   int
	firstByte time.Time
	close     bool
}

// client is one HTTP/1.1 keep-alive connection that writes pre-serialised requests and parses
// responses without allocating: status line, Content-Length, chunked bodies with trailers,
// Connection: close.
type client struct {
	addr    string
	timeout time.Duration
	maxBody int
	conn    net.Conn
	br      *bufio.Reader
	body    []byte
}

func newClient(addr string, timeout time.Duration, maxBody int) *client {
	return &client{addr: addr, timeout: timeout, maxBody: maxBody, body: make([]byte, 0, 8<<10)}
}

func (c *client) dial() error {
	conn, err := net.DialTimeout("tcp", c.addr, c.timeout)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", c.addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, maxHeaderLine)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

// Close closes the connection, if any.
func (c *client) Close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// do sends req (a complete HTTP/1.1 request) and reads the response into r. On error the
// connection is closed; the next call dials again.
func (c *client) do(req []byte, r *response) error {
	if c.conn == nil {
		if err := c.dial(); err != nil {
			return err
		}
	}
	_ = c.conn.SetDeadline(time.Now().Add(c.timeout))
	if _, err := c.conn.Write(req); err != nil {
		c.Close()
		return fmt.Errorf("writing request: %w", err)
	}
	if err := c.read(r); err != nil {
		c.Close()
		return err
	}
	if r.close {
		c.Close()
	}
	return nil
}

var (
	errMalformed = errors.New("malformed response")
	hdrLength    = []byte("content-length")
	hdrEncoding  = []byte("transfer-encoding")
	hdrConn      = []byte("connection")
)

func (c *client) line() ([]byte, error) {
	l, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("reading response: line over %d bytes: %w", maxHeaderLine, errMalformed)
		}
		return nil, fmt.Errorf("reading response: %w", err)
	}
	return bytes.TrimRight(l, "\r\n"), nil
}

func (c *client) read(r *response) error {
	*r = response{}
	c.body = c.body[:0]
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		// Status line: HTTP/1.1 200 OK
		if len(l) < 12 || !bytes.HasPrefix(l, []byte("HTTP/1.")) {
			return fmt.Errorf("reading status line %q: %w", l, errMalformed)
		}
		st, err := strconv.Atoi(string(l[9:12]))
		if err != nil {
			return fmt.Errorf("reading status line %q: %w", l, errMalformed)
		}
		r.status = st
		if st >= 200 || st == 101 {
			break
		}
		// 1xx informational: skip its headers and read the real response.
		for {
			if l, err = c.line(); err != nil {
				return err
			}
			if len(l) == 0 {
				break
			}
		}
	}
	length, chunked := -1, false
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if len(l) == 0 {
			break
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return fmt.Errorf("reading header %q: %w", l, errMalformed)
		}
		name, value := l[:colon], bytes.TrimSpace(l[colon+1:])
		switch {
		case bytes.EqualFold(name, hdrLength):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 {
				return fmt.Errorf("reading Content-Length %q: %w", value, errMalformed)
			}
			length = n
		case bytes.EqualFold(name, hdrEncoding):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, hdrConn):
			r.close = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case r.status == 204 || r.status == 304:
	case chunked:
		if err := c.readChunked(r); err != nil {
			return err
		}
	case length >= 0:
		if err := c.readN(r, length); err != nil {
			return err
		}
	default:
		// Body until EOF.
		r.close = true
		for {
			if err := c.readN(r, 4096); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					break
				}
				return err
			}
		}
	}
	r.body = c.body
	return nil
}

// readN reads exactly n body bytes.
func (c *client) readN(r *response, n int) error {
	for n > 0 {
		if c.br.Buffered() == 0 {
			if _, err := c.br.Peek(1); err != nil {
				return fmt.Errorf("reading body: %w", err)
			}
		}
		if r.firstByte.IsZero() {
			r.firstByte = time.Now()
		}
		k := min(n, c.br.Buffered())
		p, err := c.br.Peek(k)
		if err != nil {
			return fmt.Errorf("reading body: %w", err)
		}
		c.keep(r, p)
		_, _ = c.br.Discard(k)
		n -= k
	}
	return nil
}

// keep appends p to the body buffer (up to maxBody) and to the tail window.
func (c *client) keep(r *response, p []byte) {
	if room := c.maxBody - len(c.body); room > 0 {
		c.body = append(c.body, p[:min(room, len(p))]...)
	}
	if len(p) >= len(r.tail) {
		r.tailLen = copy(r.tail[:], p[len(p)-len(r.tail):])
		return
	}
	drop := max(0, r.tailLen+len(p)-len(r.tail))
	copy(r.tail[:], r.tail[drop:r.tailLen])
	r.tailLen -= drop
	r.tailLen += copy(r.tail[r.tailLen:], p)
}

func (c *client) readChunked(r *response) error {
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(l, ';'); i >= 0 {
			l = l[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(l)), 16, 31)
		if err != nil {
			return fmt.Errorf("reading chunk size %q: %w", l, errMalformed)
		}
		if size == 0 {
			break
		}
		if err := c.readN(r, int(size)); err != nil {
			return err
		}
		if l, err = c.line(); err != nil {
			return err
		}
		if len(l) != 0 {
			return fmt.Errorf("reading chunk end: %w", errMalformed)
		}
	}
	// Trailers, up to the empty line.
	for {
		l, err := c.line()
		if err != nil {
			return err
		}
		if len(l) == 0 {
			return nil
		}
	}
}
