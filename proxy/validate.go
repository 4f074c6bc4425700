package proxy

// checkRequestBody refuses, before any JSON library reads it, a metered
// request body that is not JSON, is nested deeper than maxJSONDepth, is
// not an object, or repeats a top-level key (the gateway and the upstream
// must never read two different models or streams from one body).
func checkRequestBody(b []byte) *apiError {
	switch problem, key := checkBody(b); problem {
	case bodyOK:
		return nil
	case bodyTooDeep:
		return errDepth()
	case bodyDuplicateKey:
		return errDuplicateKey(key)
	case bodyTooLarge:
		return errTooLarge(int64(len(b)) - 1)
	default:
		return errBadJSON()
	}
}
