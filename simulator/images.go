package simulator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"hash/fnv"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"strings"
)

// Bounds of a simulated image.
const (
	maxImages    = 10
	maxImageSide = 2048
	// imageTile is the side of the square of pixels that counts one output token.
	imageTile = 64
)

type imagesRequest struct {
	Model          string  `json:"model"`
	Prompt         *string `json:"prompt"`
	N              *int    `json:"n"`
	Size           string  `json:"size"`
	ResponseFormat string  `json:"response_format"`
}

// serveImages answers POST /v1/images/generations with n small deterministic PNGs: a
// checkerboard of 64-pixel squares in two colours derived from the prompt and the image's index,
// at the requested size (default 1024x1024, at most 2048 a side). response_format url (the
// default, as DALL-E's) gives a data: URL, b64_json the base64 PNG. usage is reported as
// gpt-image-1 does: input_tokens the prompt's tokens, output_tokens one per 64x64 tile. The
// answer comes after TTFT plus one token interval per output token after the first.
func (s *Server) serveImages(x *exchange, body []byte) {
	var req imagesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		x.fail(badJSON(err))
		return
	}
	if req.Prompt == nil || *req.Prompt == "" {
		x.fail(missing("prompt"))
		return
	}
	n := 1
	if req.N != nil {
		if n = *req.N; n < 1 {
			x.fail(belowMin("n", n, 1))
			return
		}
		if n > maxImages {
			x.fail(&simError{kind: errInvalid, param: "n", code: "integer_above_max_value",
				msg: "Invalid 'n': integer above maximum value. Expected a value <= 10, but got " + strconv.Itoa(n) + " instead."})
			return
		}
	}
	w, h, ok := parseImageSize(req.Size)
	if !ok {
		x.fail(&simError{kind: errInvalid, param: "size", code: "invalid_value",
			msg: "Invalid 'size': expected WIDTHxHEIGHT with sides from 1 to 2048, or auto."})
		return
	}
	asURL := true
	switch req.ResponseFormat {
	case "", "url":
	case "b64_json":
		asURL = false
	default:
		x.fail(&simError{kind: errInvalid, param: "response_format", code: "invalid_value",
			msg: "Invalid 'response_format': expected url or b64_json."})
		return
	}
	prompt := s.count(*req.Prompt)
	tiles := ((w + imageTile - 1) / imageTile) * ((h + imageTile - 1) / imageTile)
	s.promptTokens.Add(int64(prompt))
	if !x.wait(s.answerTime(tiles)) {
		return
	}
	b := append(make([]byte, 0, 4096), `{"created":`...)
	b = strconv.AppendInt(b, s.now().Unix(), 10)
	b = append(b, `,"data":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		img := checkerPNG(*req.Prompt, i, w, h)
		if asURL {
			b = append(b, `{"url":"data:image/png;base64,`...)
		} else {
			b = append(b, `{"b64_json":"`...)
		}
		b = base64.StdEncoding.AppendEncode(b, img)
		b = append(b, `","revised_prompt":`...)
		b = appendJSONString(b, *req.Prompt)
		b = append(b, '}')
	}
	out := tiles * n
	b = append(b, `],"output_format":"png","usage":{"input_tokens":`...)
	b = appendInt(b, prompt)
	b = append(b, `,"output_tokens":`...)
	b = appendInt(b, out)
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, prompt+out)
	b = append(b, `,"input_tokens_details":{"text_tokens":`...)
	b = appendInt(b, prompt)
	b = append(b, `,"image_tokens":0}}}`...)
	s.completionTokens.Add(int64(out))
	x.writeJSON(b)
}

// parseImageSize reads "WxH" (or "auto" and "": 1024x1024).
func parseImageSize(size string) (w, h int, ok bool) {
	if size == "" || size == "auto" {
		return 1024, 1024, true
	}
	ws, hs, found := strings.Cut(size, "x")
	if !found {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if err1 != nil || err2 != nil || w < 1 || h < 1 || w > maxImageSide || h > maxImageSide {
		return 0, 0, false
	}
	return w, h, true
}

// checkerPNG draws the deterministic image i of prompt: a checkerboard of two colours taken from
// an FNV hash of both. The same prompt, index and size always give the same bytes.
func checkerPNG(prompt string, i, w, h int) []byte {
	f := fnv.New64a()
	f.Write([]byte(prompt))
	f.Write([]byte{0, byte(i)})
	v := f.Sum64()
	pal := color.Palette{
		color.RGBA{byte(v), byte(v >> 8), byte(v >> 16), 255},
		color.RGBA{byte(v >> 24), byte(v >> 32), byte(v >> 40), 255},
	}
	img := image.NewPaletted(image.Rect(0, 0, w, h), pal)
	for y := range h {
		row := img.Pix[y*img.Stride : y*img.Stride+w]
		for x := range row {
			row[x] = uint8((x/imageTile + y/imageTile) % 2)
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	_ = enc.Encode(&buf, img) // writing to memory cannot fail
	return buf.Bytes()
}
