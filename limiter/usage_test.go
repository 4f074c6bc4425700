package limiter

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestUsageHandler(t *testing.T) {
	st := newMapStore()
	p := policy(
		Limit{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour},
		Limit{Name: "total-minute", Metric: MetricTotalTokens, Limit: 20000, Window: time.Minute, Models: []string{"gpt-4o*"}},
		Limit{Name: "req-30s", Metric: MetricRequests, Limit: 60, Window: 30 * time.Second},
	)
	p.Overrides = map[string][]Limit{"alice": {{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 50000, Window: time.Hour}}}
	now := t0 + 30*60_000 // half an hour into the hour
	st.Add("prompt-hourly", "alice", t0, hour, 1234)
	st.Add("prompt-hourly", "bob", t0-hour, hour, 2000) // previous hour, half of it still counts
	l := newTest(t, p, st, Options{Now: newClock(now).Now})
	srv := httptest.NewServer(l.UsageHandler())
	defer srv.Close()

	tests := []struct {
		name       string
		method     string
		query      string
		wantStatus int
		wantBody   string
	}{
		{"alice", "GET", "?user=alice", 200,
			`{"user":"alice","limits":[{"name":"prompt-hourly","metric":"prompt_tokens","window":"1h","limit":50000,"used":1234,"remaining":48766,"reset_seconds":5400},` +
				`{"name":"total-minute","metric":"total_tokens","window":"1m","limit":20000,"used":0,"remaining":20000,"reset_seconds":0},` +
				`{"name":"req-30s","metric":"requests","window":"30s","limit":60,"used":0,"remaining":60,"reset_seconds":0}]}`},
		{"bob: over the limit, previous window", "GET", "?user=bob", 200,
			`{"user":"bob","limits":[{"name":"prompt-hourly","metric":"prompt_tokens","window":"1h","limit":1000,"used":1000,"remaining":0,"reset_seconds":1800},` +
				`{"name":"total-minute","metric":"total_tokens","window":"1m","limit":20000,"used":0,"remaining":20000,"reset_seconds":0},` +
				`{"name":"req-30s","metric":"requests","window":"30s","limit":60,"used":0,"remaining":60,"reset_seconds":0}]}`},
		{"missing user", "GET", "", 400,
			`{"error":{"message":"missing query parameter user: GET /usage?user=NAME","type":"invalid_request_error","param":"user","code":null}}`},
		{"empty user", "GET", "?user=", 400,
			`{"error":{"message":"missing query parameter user: GET /usage?user=NAME","type":"invalid_request_error","param":"user","code":null}}`},
		{"POST", "POST", "?user=alice", 405,
			`{"error":{"message":"method POST not allowed on /usage","type":"invalid_request_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+"/usage"+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var got, want any
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.wantBody), &want); err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			if string(g) != string(w) {
				t.Errorf("body\ngot  %s\nwant %s", g, w)
			}
		})
	}
}

func TestUsageAnonymousAndEmpty(t *testing.T) {
	st := newMapStore()
	p := policy(Limit{Name: "r", Metric: MetricRequests, Limit: 5, Window: time.Hour})
	p.MissingUser = MissingUserAnonymous
	l := newTest(t, p, st, Options{Now: newClock(t0).Now})
	if _, err := l.Admit("", "m", Estimate{}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"", AnonymousUser} {
		if got := l.Usage(user); len(got) != 1 || got[0].Used != 1 {
			t.Errorf("Usage(%q) = %+v, want the anonymous bucket with used 1", user, got)
		}
	}
	l2 := newTest(t, policy(Limit{Name: "r", Metric: MetricRequests, Limit: 5, Window: time.Hour}), st, Options{})
	if got := l2.Usage(""); got == nil || len(got) != 0 {
		t.Errorf("Usage(\"\") when anonymous is refused = %#v, want an empty non-nil list", got)
	}
}

// TestReservationTightest: the headroom a reservation reports is what the
// user has left once this request is counted, for the tightest token limit
// (by share of its size) and the requests limit, with the time until the
// window forgets it all; no store lookup is needed.
func TestReservationTightest(t *testing.T) {
	st := newMapStore()
	st.Add("big", "u", t0, hour, 100)   // 100 of 10000 used: 99 % left
	st.Add("small", "u", t0, hour, 500) // 500 of 1000 used: 50 % left
	st.Add("req", "u", t0, hour, 3)
	l := newTest(t, policy(
		Limit{Name: "big", Metric: MetricTotalTokens, Limit: 10000, Window: time.Hour},
		Limit{Name: "small", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour},
		Limit{Name: "req", Metric: MetricRequests, Limit: 10, Window: time.Hour},
	), st, Options{Now: newClock(t0 + 1000).Now})
	r, err := l.Admit("u", "gpt-4o", est(40, nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, req, tokOK, reqOK := r.Tightest()
	if !tokOK || !reqOK {
		t.Fatalf("Tightest: tokens %v, requests %v; want both", tokOK, reqOK)
	}
	if tok.Limit != 1000 || tok.Remaining != 460 {
		t.Errorf("tokens headroom %+v, want limit 1000 remaining 460", tok)
	}
	if req.Limit != 10 || req.Remaining != 6 {
		t.Errorf("requests headroom %+v, want limit 10 remaining 6", req)
	}
	if want := 2*time.Hour - time.Second; tok.Reset != want || req.Reset != want {
		t.Errorf("reset %v / %v, want %v (the next window forgets this one)", tok.Reset, req.Reset, want)
	}
	var none *Reservation
	if _, _, a, b := none.Tightest(); a || b {
		t.Error("a nil reservation reports headroom")
	}
}
