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

// modelsCreated is the fixed "created" time of the listed models.
const modelsCreated = 1715367049

// models serves GET /v1/models.
func (h *handler) models(w http.ResponseWriter) {
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
