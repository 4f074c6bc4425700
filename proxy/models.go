package proxy

import (
	"path"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
)

// GET /v1/models is merged over the upstreams: each is asked for its own
// list (Anthropic's shape mapped to OpenAI's), and the lists are joined in
// upstream order, keeping the models each upstream's globs let it serve
// and the caller may call, each model once.

// Bounds of the merged model list.
const (
	modelsTimeout   = 10 * time.Second // for every upstream's answer
	maxModelsBody   = 4 << 20          // bytes read of one upstream's list
	maxListedModels = 10000            // models in the merged list
	maxModelIDBytes = 256              // longer ids are skipped
)

// modelList is one upstream's answer to GET /v1/models: nil when it failed.
type modelList struct {
	up   *upstream
	body []byte
}

// mergeModels writes the merged OpenAI model list
// {"object":"list","data":[{"id","object":"model","created","owned_by"}]}
// of the upstreams' answers, filtered by each upstream's globs and by
// allows. An upstream's body is hostile: ids of the wrong type or too long
// are skipped, numbers clamped, strings re-encoded. It reports how many
// upstreams answered a list.
func mergeModels(lists []modelList, allows func(string) bool) (out []byte, answered int) {
	out = append(make([]byte, 0, 4096), `{"object":"list","data":[`...)
	seen := make(map[string]bool)
	for _, l := range lists {
		if l.body == nil {
			continue
		}
		data := gjson.GetBytes(l.body, "data")
		if !data.IsArray() {
			continue
		}
		answered++
		owner := l.up.Name
		data.ForEach(func(_, m gjson.Result) bool {
			id := m.Get("id")
			if id.Type != gjson.String || id.Str == "" || len(id.Str) > maxModelIDBytes || seen[id.Str] {
				return true
			}
			if !l.up.serves(id.Str) || !allows(id.Str) {
				return true
			}
			if len(seen) >= maxListedModels {
				return false
			}
			seen[id.Str] = true
			if len(seen) > 1 {
				out = append(out, ',')
			}
			out = append(out, `{"id":`...)
			out = gjson.AppendJSONString(out, id.Str)
			out = append(out, `,"object":"model","created":`...)
			out = strconv.AppendInt(out, modelCreated(m), 10)
			out = append(out, `,"owned_by":`...)
			if o := m.Get("owned_by"); o.Type == gjson.String && o.Str != "" && len(o.Str) <= maxModelIDBytes {
				out = gjson.AppendJSONString(out, o.Str)
			} else if l.up.kind == kindAnthropic {
				out = append(out, `"anthropic"`...)
			} else {
				out = gjson.AppendJSONString(out, owner)
			}
			out = append(out, '}')
			return true
		})
	}
	return append(out, "]}\n"...), answered
}

// modelCreated is a model's creation time in Unix seconds: OpenAI's
// "created", or Anthropic's "created_at" (RFC 3339; Azure writes Unix
// seconds there), clamped to [0, 2^40].
func modelCreated(m gjson.Result) int64 {
	v := m.Get("created")
	if !v.Exists() {
		v = m.Get("created_at")
	}
	var n int64
	switch v.Type {
	case gjson.Number:
		if f := v.Float(); f > 0 && f < 1<<40 {
			n = int64(f)
		}
	case gjson.String:
		if len(v.Str) <= 64 {
			if t, err := time.Parse(time.RFC3339, v.Str); err == nil && t.Unix() > 0 {
				n = min(t.Unix(), 1<<40)
			}
		}
	}
	return n
}

// serves reports whether the upstream's globs admit model.
func (u *upstream) serves(model string) bool {
	if len(u.Models) == 0 {
		return true
	}
	for _, g := range u.Models {
		if ok, _ := path.Match(g, model); ok {
			return true
		}
	}
	return false
}
