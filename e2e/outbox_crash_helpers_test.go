package e2e

// Helpers of the outbox crash tests (outbox_crash_test.go): the usher
// processes (the real binary, and the restart with its clock ahead), a
// Standard Webhooks receiver on TLS that keeps every delivery, an SMTP sink
// that knows when the killed usher's connections are gone, and the load.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/notify/mail"
	"github.com/usher-oidc/usher/notify/webhooks"
)

// ---- the restarted usher -----------------------------------------------

// The last restart, after the kills, is this test binary run again in
// child mode (usherChildEnv=outbox): it runs usher as `usher serve` does
// (config.Load, app.New, then ServeAll until SIGTERM) on the same config
// file and store, with two differences, which `usher serve` has no setting
// for:
//
//   - its clock runs outboxClockAhead ahead. The killed usher held leases:
//     on invitations whose events it was handing over (30 s), mail jobs
//     (2 min) and webhook lanes (2 min 10 s). A real restart delivers that
//     work once those leases lapse; the clock ahead makes them lapse at
//     once instead of making the test wait minutes.
//   - it serves a probe (outboxProbeEnv) that reads the store: how many
//     events the invitations hold, and how many mail jobs and webhook lanes
//     are queued, at its start (before any worker ran) and now. The admin
//     API cannot tell "drained" from "not yet".
const (
	outboxProbeEnv   = "USHER_E2E_OUTBOX_PROBE"
	outboxClockAhead = 5 * time.Minute
)

func runOutboxChild(e childEnv) error {
	ctx, cfg, log := e.ctx, e.cfg, e.log
	now := func() time.Time { return time.Now().Add(outboxClockAhead) }
	st, err := app.OpenStore(cfg, now, log)
	if err != nil {
		return err
	}
	defer st.Close()
	atStart, err := readOutboxState(ctx, st, now())
	if err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, app.Options{Logger: log, Now: now, Store: st})
	if err != nil {
		return err
	}
	defer a.Close()
	probe := &http.Server{Addr: os.Getenv(outboxProbeEnv), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur, err := readOutboxState(r.Context(), st, now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]outboxState{"at_start": atStart, "now": cur})
	})}
	go probe.ListenAndServe()
	defer probe.Close()
	return a.ServeAll(ctx, log)
}

// outboxState is what the store holds of the outbox and the queues behind it.
type outboxState struct {
	Invitations  int            `json:"invitations"`
	WithEvents   int            `json:"with_events"` // invitations whose record holds events
	Events       map[string]int `json:"events"`      // by type
	MailJobs     int            `json:"mail_jobs"`
	WebhookLanes int            `json:"webhook_lanes"` // lanes with undelivered webhooks
}

func (s outboxState) events() int {
	n := 0
	for _, v := range s.Events {
		n += v
	}
	return n
}

func readOutboxState(ctx context.Context, st grants.Store, now time.Time) (outboxState, error) {
	s := outboxState{Events: map[string]int{}}
	cursor := ""
	for {
		invs, next, err := st.ListInvitations(ctx, grants.InvitationFilter{Limit: 1000, Cursor: cursor}, now)
		if err != nil {
			return s, err
		}
		for _, inv := range invs {
			s.Invitations++
			if len(inv.Outbox) > 0 {
				s.WithEvents++
			}
			for _, e := range inv.Outbox {
				s.Events[e.Type]++
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	var err error
	if s.MailJobs, err = st.JobCount(ctx, mail.JobKindMail); err != nil {
		return s, err
	}
	s.WebhookLanes, err = st.JobCount(ctx, webhooks.JobKindWebhook)
	return s, err
}

// ---- the rig ---------------------------------------------------------------

const (
	crashClientID     = "crash"
	crashClientSecret = "crash-client-secret-0123456789abcdef"
)

// crashRig is one usher configuration on one store, with its webhook
// receiver and SMTP sink, that the test starts, kills and restarts.
type crashRig struct {
	t        *testing.T
	base     string // usher's issuer, without the trailing slash
	cfgPath  string
	certFile string // the webhook receiver's certificate, trusted by usher
	probe    string // the restarted usher's probe
	hooks    *hookLog
	mail     *mailSink
}

func newCrashRig(t *testing.T, storeYAML string) *crashRig {
	t.Helper()
	r := &crashRig{t: t, hooks: &hookLog{key: []byte("crash-tests-webhook-key-0123456!")}, mail: startMailSink(t)}
	// `usher serve` posts webhooks over https only: the receiver is a TLS
	// server whose certificate usher trusts through SSL_CERT_FILE.
	srv := httptest.NewTLSServer(r.hooks)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	r.certFile = filepath.Join(dir, "receiver.pem")
	if err := os.WriteFile(r.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	r.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	r.probe = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mailHost, mailPort, _ := strings.Cut(r.mail.addr, ":")
	secret := base64.StdEncoding.EncodeToString([]byte("crash-tests-share-this-session!!"))
	cfg := fmt.Sprintf(`issuer: %s/
listen: 127.0.0.1:%d
metrics: {listen: "127.0.0.1:0"}
rate_limits: {invite_per_minute: 100000, api_per_minute: 100000, authorize_per_minute: 1000, failed_redemptions_per_hour: 1000}
log: {level: warn, format: json}
store: %s
sessions: {secret: "%s"}
upstream: {issuer: "http://127.0.0.1:9/", client_id: usher, client_secret: crash-upstream-secret}  # nobody signs in here
clients:
  - {id: %s, type: confidential, secret: "%s", grant_types: [client_credentials], scopes: [invitations:write, invitations:read]}
mail: {from: "usher <no-reply@example.com>", smtp: {host: "%s", port: %s, tls: none}}
webhooks:
  - {id: crm, url: "%s/hook", secrets: ["whsec_%s"]}
`, r.base, port, storeYAML, secret, crashClientID, crashClientSecret, mailHost, mailPort, srv.URL,
		base64.StdEncoding.EncodeToString(r.hooks.key))
	r.cfgPath = filepath.Join(dir, "usher.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// usherProc is one running usher process.
type usherProc struct {
	cmd  *exec.Cmd
	out  *procLog
	done chan struct{}
}

func (r *crashRig) start(name string, cmd *exec.Cmd, env ...string) *usherProc {
	r.t.Helper()
	p := &usherProc{cmd: cmd, out: &procLog{w: newTestWriter(r.t), name: name}, done: make(chan struct{})}
	cmd.Env = append(append(os.Environ(), "SSL_CERT_FILE="+r.certFile), env...)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	r.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
		if s := p.out.String(); strings.Contains(s, "WARNING: DATA RACE") || strings.Contains(s, "panic:") {
			r.t.Errorf("%s reported a data race or a panic (its output is in the log)", name)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(r.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, to the log
			<-p.done
			r.t.Fatalf("%s never became ready", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startUsher runs the real usher binary (`usher serve`).
func (r *crashRig) startUsher() *usherProc {
	r.t.Helper()
	return r.start("usher serve", exec.Command(usherBinary(r.t), "serve", "--config", r.cfgPath))
}

// restart runs usher again on the same config and store: this test binary
// in child mode, its clock ahead (see runOutboxChild).
func (r *crashRig) restart() *usherProc {
	r.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		r.t.Fatal(err)
	}
	return r.start("restarted usher", exec.Command(exe), usherChildEnv+"=outbox", "USHER_CONFIG="+r.cfgPath, outboxProbeEnv+"="+r.probe)
}

// procLog keeps a process's output (to look for data races) and hands it
// to the test log at the end.
type procLog struct {
	w    *testWriter
	name string
	mu   sync.Mutex
	b    bytes.Buffer
}

func (p *procLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.b.Write(b)
	p.mu.Unlock()
	p.w.Write([]byte(p.name + ": " + string(b)))
	return len(b), nil // a short count would make exec stop copying and the process die of SIGPIPE
}

func (p *procLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.String()
}

// readProbe reads the restarted usher's probe.
func (r *crashRig) readProbe() (start, now outboxState, err error) {
	resp, err := http.Get("http://" + r.probe + "/")
	if err != nil {
		return start, now, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return start, now, fmt.Errorf("probe: %d %s", resp.StatusCode, b)
	}
	var v map[string]outboxState
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return start, now, err
	}
	return v["at_start"], v["now"], nil
}

// token is a client_credentials token of the crash client.
func (r *crashRig) token() string {
	r.t.Helper()
	return clientToken(r.t, r.dev(), crashClientID, crashClientSecret, "invitations:write invitations:read")
}

// dev lets the shared helpers (apiCall, clientToken) address this usher.
func (r *crashRig) dev() *app.Dev { return &app.Dev{IssuerURL: r.base + "/"} }

// listAll reads every page of an admin API listing (path has no query).
func listAll(t *testing.T, d *app.Dev, path, token, key string) []map[string]any {
	t.Helper()
	var out []map[string]any
	cursor := ""
	for page := 0; ; page++ {
		q := "?limit=40"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		res := apiCall(t, d, http.MethodGet, path+q, token, nil)
		if res.status != http.StatusOK {
			t.Fatalf("GET %s%s: %d %s", path, q, res.status, res.raw)
		}
		items, _ := res.body[key].([]any)
		for _, it := range items {
			out = append(out, it.(map[string]any))
		}
		next, _ := res.body["next_cursor"].(string)
		if next == "" {
			return out
		}
		if page > 1000 {
			t.Fatalf("GET %s: the cursor never ends", path)
		}
		cursor = next
	}
}

// ---- the webhook receiver --------------------------------------------------

// hookLog verifies Standard Webhooks signatures on its own and keeps every
// authentic delivery, redeliveries of a webhook-id included.
type hookLog struct {
	key []byte
	mu  sync.Mutex
	got []hookDelivery
}

type hookDelivery struct {
	ID, Type, Invitation string
	Data                 map[string]any
	Raw                  string
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, body, ok := verifiedWebhook(r, h.key)
	if !ok || id == "" {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var e struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	json.Unmarshal(body, &e)
	inv, _ := e.Data["invitation_id"].(string)
	h.mu.Lock()
	h.got = append(h.got, hookDelivery{ID: id, Type: e.Type, Invitation: inv, Data: e.Data, Raw: string(body)})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookLog) snapshot() []hookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookDelivery(nil), h.got...)
}

// ---- the SMTP sink -----------------------------------------------------------

// mailSink is the SMTP mailbox of smtp_test.go that also counts the open
// SMTP sessions: once a killed usher's sessions are closed, nothing it sent
// can still arrive.
type mailSink struct {
	*mailbox
	open atomic.Int64
}

func startMailSink(t *testing.T) *mailSink {
	t.Helper()
	ms := &mailSink{mailbox: &mailbox{}}
	srv := smtp.NewServer(sinkBackend{ms})
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ms
}

type sinkBackend struct{ ms *mailSink }

func (b sinkBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.ms.open.Add(1)
	return &sinkSession{mbSession: mbSession{mb: b.ms.mailbox}, ms: b.ms}, nil
}

type sinkSession struct {
	mbSession
	ms *mailSink
}

func (s *sinkSession) Logout() error { s.ms.open.Add(-1); return nil }

func (ms *mailSink) snapshot() []receivedMail {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]receivedMail(nil), ms.msgs...)
}

// ---- the load ----------------------------------------------------------------

// tracked is what the client knows of one invitation it tried to create:
// what usher acknowledged (2xx received) and which requests got no answer
// because usher was killed ("in doubt": they may or may not have landed).
// Each invitation is driven by one worker, one request at a time.
type tracked struct {
	Email       string
	SendEmail   bool
	ID          string // set once the create was acknowledged
	CreateAck   bool
	CreateDoubt bool
	Links       []string // from acknowledged creates and resends, in order
	ResendAcks  int
	ResendDoubt int
	RevokeAck   bool
	RevokeDoubt bool
}

func (tr *tracked) actionable() bool {
	return tr.CreateAck && !tr.RevokeAck && !tr.RevokeDoubt && tr.ResendDoubt == 0
}

type loadStats struct {
	workers                int
	attempts, acked, doubt map[string]int
	inFlightAtKill         int64
	ackedBeforeKill        int64
	killedAfter            time.Duration
}

// driveLoad runs workers that create (mailed or not), resend and revoke
// invitations through the admin API (the invitations of earlier phases
// too: prior), and calls kill (once) as soon as killWhen holds after an
// acknowledgement (it gets how many there were), while the other workers'
// requests are in flight; the workers stop at the kill. It returns every
// invitation the workers tried to create.
func driveLoad(t *testing.T, phase int, base, token string, workers int, prior []*tracked, killWhen func(acks int64) bool, kill func()) ([]*tracked, loadStats) {
	t.Helper()
	var (
		killed   atomic.Bool
		inflight atomic.Int64
		acks     atomic.Int64
		once     sync.Once
		st       = loadStats{workers: workers, attempts: map[string]int{}, acked: map[string]int{}, doubt: map[string]int{}}
		mu       sync.Mutex
		all      []*tracked
		wg       sync.WaitGroup
	)
	start := time.Now()
	transport := &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 15 * time.Second}
	note := func(kind, outcome string) {
		mu.Lock()
		defer mu.Unlock()
		st.attempts[kind]++
		switch outcome {
		case "acked":
			st.acked[kind]++
		case "doubt":
			st.doubt[kind]++
		}
	}
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(phase)))
			var mine []*tracked
			for i := w; i < len(prior); i += workers {
				mine = append(mine, prior[i])
			}
			for seq := 0; !killed.Load(); seq++ {
				var pick []*tracked
				for _, tr := range mine {
					if tr.actionable() {
						pick = append(pick, tr)
					}
				}
				var (
					kind, method, path string
					body               any
					tr                 *tracked
				)
				switch r := rng.IntN(10); {
				case len(pick) == 0 || r < 5:
					kind, method, path = "create", http.MethodPost, "/api/invitations"
					tr = &tracked{Email: fmt.Sprintf("p%d-w%d-%d@crash.example", phase, w, seq), SendEmail: rng.IntN(2) == 0}
					body = map[string]any{"email": tr.Email, "roles": []string{"crash"}, "send_email": tr.SendEmail}
					mine = append(mine, tr)
					mu.Lock()
					all = append(all, tr)
					mu.Unlock()
				case r < 8:
					tr = pick[rng.IntN(len(pick))]
					kind, method, path = "resend", http.MethodPost, "/api/invitations/"+tr.ID+"/resend"
				default:
					tr = pick[rng.IntN(len(pick))]
					kind, method, path = "revoke", http.MethodDelete, "/api/invitations/"+tr.ID
				}
				inflight.Add(1)
				status, out, err := callJSON(client, method, base+path, token, body)
				inflight.Add(-1)
				switch {
				case err != nil:
					// No answer: usher was killed with it in flight (or
					// just before it was sent). It may have landed.
					if !killed.Load() {
						t.Errorf("%s %s before the kill: %v", method, path, err)
					}
					note(kind, "doubt")
					switch kind {
					case "create":
						tr.CreateDoubt = true
					case "resend":
						tr.ResendDoubt++
					case "revoke":
						tr.RevokeDoubt = true
					}
					continue
				case status < 200 || status > 299:
					t.Errorf("%s %s: %d %v", method, path, status, out)
					note(kind, "refused")
					continue
				}
				note(kind, "acked")
				switch kind {
				case "create":
					tr.ID, _ = out["id"].(string)
					tr.CreateAck = true
					tr.Links = append(tr.Links, fmt.Sprint(out["url"]))
				case "resend":
					tr.ResendAcks++
					tr.Links = append(tr.Links, fmt.Sprint(out["url"]))
				case "revoke":
					tr.RevokeAck = true
				}
				if n := acks.Add(1); killWhen(n) {
					once.Do(func() {
						killed.Store(true)
						st.inFlightAtKill = inflight.Load()
						st.ackedBeforeKill = n
						st.killedAfter = time.Since(start)
						kill()
					})
				}
			}
		})
	}
	wg.Wait()
	if !killed.Load() {
		t.Fatal("the load ended without the kill")
	}
	return all, st
}

// callJSON sends one admin API request; err is set when no answer came.
func callJSON(c *http.Client, method, u, token string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err // the answer was cut off: in doubt too
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil && resp.StatusCode < 300 {
		return 0, nil, fmt.Errorf("answer %d not JSON: %w", resp.StatusCode, err)
	}
	return resp.StatusCode, out, nil
}
