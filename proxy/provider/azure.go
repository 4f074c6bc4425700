package provider

import (
	"errors"
	"net/url"
	"strings"
)

// Azure OpenAI serves the OpenAI API per deployment:
// BASE/openai/deployments/DEPLOYMENT/PATH?api-version=V, with the key in the
// api-key header.

// AzureKeyHeader carries the upstream's API key; the proxy sends it instead
// of Authorization.
const AzureKeyHeader = "api-key"

// DefaultAzureAPIVersion is the api-version used when neither the config nor
// the client names one: the latest generally available data-plane version.
const DefaultAzureAPIVersion = "2024-10-21"

// Azure holds an Azure OpenAI upstream's addressing.
type Azure struct {
	// BaseURL is the resource's endpoint, https://NAME.openai.azure.com.
	BaseURL string
	// APIVersion is sent as api-version; empty keeps the client's, or
	// DefaultAzureAPIVersion.
	APIVersion string
	// Deployments maps model names to deployment names; a model not in
	// it is its own deployment name.
	Deployments map[string]string
}

// Deployment returns the deployment that serves model.
func (a Azure) Deployment(model string) string {
	if d, ok := a.Deployments[model]; ok && d != "" {
		return d
	}
	return model
}

// azureDeploymentPaths are the OpenAI paths (after /v1/) that Azure serves
// per deployment; the others (files, batches, models, ...) sit under
// /openai/ directly.
var azureDeploymentPaths = []string{
	"chat/completions", "completions", "embeddings",
	"images/generations", "images/edits",
	"audio/transcriptions", "audio/translations", "audio/speech",
}

// URL returns the upstream URL of an OpenAI-style request for model to
// path (/v1/chat/completions, ...) with the client's raw query, which is
// kept except for its api-version when the config sets one. Deployment
// paths need a model. It is safe for concurrent use.
func (a Azure) URL(model, path, rawQuery string) (string, error) {
	base, err := url.Parse(strings.TrimRight(a.BaseURL, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return "", errors.New("azure: base URL must be absolute, like https://NAME.openai.azure.com")
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/")
	if rest == "" || strings.Contains(rest, "..") {
		return "", errors.New("azure: bad path " + path)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", errors.New("azure: bad query: " + err.Error())
	}
	switch {
	case a.APIVersion != "":
		q.Set("api-version", a.APIVersion)
	case q.Get("api-version") == "":
		q.Set("api-version", DefaultAzureAPIVersion)
	}

	u := *base
	for _, p := range azureDeploymentPaths {
		if rest != p {
			continue
		}
		if model == "" {
			return "", errors.New("azure: " + path + " needs a model to choose the deployment")
		}
		d := a.Deployment(model)
		u.Path = base.Path + "/openai/deployments/" + d + "/" + rest
		u.RawPath = base.EscapedPath() + "/openai/deployments/" + url.PathEscape(d) + "/" + rest
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	u.Path = base.Path + "/openai/" + rest
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return u.String(), nil
}
