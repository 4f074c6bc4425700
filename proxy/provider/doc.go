// Package provider holds the wire formats of the upstream providers the
// gateway speaks besides OpenAI's: Anthropic's Messages API (usage metering,
// and translation between it and OpenAI chat completions) and Azure OpenAI's
// deployment URLs. Everything here is a pure function over bytes or a small
// value fed bytes by the caller: nothing does I/O except writing to an
// io.Writer it is handed, nothing reads a clock, and nothing imports the
// proxy, so all of it is tested without a server.
//
// # Bounds
//
// Every input is treated as hostile. Documents are checked for nesting
// depth (MaxDepth) with an iterative scanner before any parser sees them,
// token figures are clamped to [0, MaxTokens] before arithmetic, and the
// streaming types keep bounded memory however long the stream.
//
// gjson.Get does not recurse per nesting level of the document: values off
// the path are skipped by an iterative scanner (parseSquash), and recursion
// follows only the components of the path. gjson.Valid and encoding/json's
// decoder do recurse per level, so they only ever see depth-checked input.
package provider
