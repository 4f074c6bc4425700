package mock

import (
	"net/http"
	"strings"
)

// Models are the model ids GET /v1/models lists. Any other model name is
// accepted by the other endpoints too; it is only echoed back.
func Models() []string {
	return []string{"gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "text-embedding-3-small", "llama-3.1-8b-instruct"}
}

// ClaudeModels are the model ids GET /v1/models lists in Anthropic's shape,
// for a request that carries an anthropic-version header.
func ClaudeModels() []string {
	return []string{"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"}
}

// modelsCreated is the fixed "created" time of the listed models.
const modelsCreated = 1715367049

// claudeCreatedAt is modelsCreated as Anthropic writes it (RFC 3339).
const claudeCreatedAt = "2024-05-10T18:50:49Z"

// models serves GET /v1/models: OpenAI's list, or Anthropic's
// ({"data":[{"type":"model","id","display_name","created_at"}],"has_more",
// "first_id","last_id"}) when the request names an anthropic-version.
func (h *handler) models(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("anthropic-version") != "" {
		ids := ClaudeModels()
		b := append(make([]byte, 0, 512), `{"data":[`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"type":"model","id":`...)
			b = appendString(b, id)
			b = append(b, `,"display_name":`...)
			b = appendString(b, strings.ToUpper(id))
			b = append(b, `,"created_at":"`+claudeCreatedAt+`"}`...)
		}
		b = append(b, `],"has_more":false,"first_id":`...)
		b = appendString(b, ids[0])
		b = append(b, `,"last_id":`...)
		b = appendString(b, ids[len(ids)-1])
		writeJSON(w, http.StatusOK, append(b, "}\n"...))
		return
	}
	b := make([]byte, 0, 512)
	b = append(b, `{"object":"list","data":[`...)
	for i, id := range Models() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, id)
	}
	b = append(b, "]}\n"...)
	writeJSON(w, http.StatusOK, b)
}

// model serves GET /v1/models/{id}.
func (h *handler) model(w http.ResponseWriter, id string) {
	for _, m := range Models() {
		if m == id {
			b := appendModel(make([]byte, 0, 128), id)
			writeJSON(w, http.StatusOK, append(b, '\n'))
			return
		}
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", "model",
		"The model '"+id+"' does not exist or you do not have access to it.")
}

// appendModel appends one model object.
func appendModel(b []byte, id string) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, id)
	b = append(b, `,"object":"model","created":`...)
	b = appendInt(b, modelsCreated)
	return append(b, `,"owned_by":"mockllm"}`...)
}

// modelPath extracts {id} from /v1/models/{id}.
func modelPath(path string) (string, bool) {
	id, ok := strings.CutPrefix(path, "/v1/models/")
	if !ok || id == "" {
		return "", false
	}
	return id, true
}
