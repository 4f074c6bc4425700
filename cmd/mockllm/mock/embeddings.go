package mock

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
)

// DefaultDimensions is the length of embedding vectors when the request
// does not ask for `dimensions`.
const DefaultDimensions = 8

// maxDimensions bounds the `dimensions` a request may ask for.
const maxDimensions = 4096

// embeddings serves POST /v1/embeddings: one vector per input, usage with
// prompt_tokens = total_tokens = the words of every input.
func (h *handler) embeddings(w http.ResponseWriter, r *http.Request, req *request) {
	inputs, err := textInputs(req.Input, "input")
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	dims := int64(DefaultDimensions)
	if req.Dimensions != nil {
		dims = *req.Dimensions
		if dims < 1 || dims > maxDimensions {
			writeBadRequest(w, &badRequest{
				msg:   "Invalid 'dimensions': expected a value between 1 and " + strconv.Itoa(maxDimensions) + ".",
				param: "dimensions",
			})
			return
		}
	}
	var b64 bool
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		b64 = true
	default:
		writeBadRequest(w, &badRequest{
			msg:   "Invalid 'encoding_format': expected 'float' or 'base64', got " + strconv.Quote(req.EncodingFormat) + ".",
			param: "encoding_format",
		})
		return
	}

	var prompt int64
	p := h.getBuf()
	b := (*p)[:0]
	b = append(b, `{"object":"list","data":[`...)
	vec := make([]float32, dims)
	raw := make([]byte, 4*dims)
	for i, in := range inputs {
		prompt += in.words
		if i > 0 {
			b = append(b, ',')
		}
		embed(vec, in.key)
		b = append(b, `{"object":"embedding","index":`...)
		b = appendInt(b, int64(i))
		b = append(b, `,"embedding":`...)
		if b64 {
			for j, v := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, v := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendFloat(b, v)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendString(b, req.Model)
	if !h.opts.NoUsage {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = appendInt(b, prompt)
		b = append(b, `,"total_tokens":`...)
		b = appendInt(b, prompt)
		b = append(b, '}')
	}
	b = append(b, "}\n"...)
	writeJSON(w, http.StatusOK, b)
	h.putBuf(p, b)
}

// embed fills vec with a unit vector derived only from text.
func embed(vec []float32, text string) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	x := h.Sum64() | 1
	var norm float64
	for i := range vec {
		// xorshift64*: cheap, deterministic, well spread.
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		v := float64((x*2685821657736338717)>>11)/float64(1<<53)*2 - 1
		vec[i] = float32(v)
		norm += v * v
	}
	if norm == 0 {
		return
	}
	inv := 1 / math.Sqrt(norm)
	for i := range vec {
		vec[i] = float32(float64(vec[i]) * inv)
	}
}
