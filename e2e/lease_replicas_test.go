package e2e

// Leases across replicas (issue 16 §3): the mail and webhook workers of
// several usher processes on one Redis claim jobs under a lease, so every
// job is delivered once, the webhooks of one invitation in order, and a
// replica killed mid-delivery leaves its job to another once the lease
// lapses. The leases are short here (app.Options), not in production.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

const (
	// testLease is every worker lease of the replicas: a killed replica's
	// mail job, webhook lane or outbox claim goes to another after it. Under
	// make test's load (-race, every package at once) a live replica was
	// seen stalled long enough for 3 s leases to lapse mid-delivery, which
	// redelivers (at least once, as promised) what this test counts as
	// once; production leases are 30 s.
	testLease = 5 * time.Second
)

// runLeaseChild runs usher as `usher serve` does, with short leases and
// backoffs, which `usher serve` has no setting for.
func runLeaseChild(e childEnv) error {
	a, err := app.New(e.ctx, e.cfg, app.Options{Logger: e.log, MailBackoff: 200 * time.Millisecond,
		WebhookBackoff: 200 * time.Millisecond, MailLease: testLease, WebhookLease: testLease,
		OutboxLease: testLease, MirrorLease: testLease})
	if err != nil {
		return err
	}
	defer a.Close()
	return a.ServeAll(e.ctx, e.log)
}

// leaseArrival is one webhook request as the receiver saw it.
type leaseArrival struct {
	ID, Type, Invitation, Email string
	Replica                     int  // which replica's socket sent it (-1: unknown)
	Seq, AckSeq                 int  // arrival, and answer (0: never answered 2xx)
	Held                        bool // the one delivery held until its sender died
	At                          time.Time
}

// leaseHooks verifies Standard Webhooks signatures and keeps every
// arrival; it holds the first delivery for holdEmail until the request's
// connection dies (its sender was killed) or release is closed.
type leaseHooks struct {
	key      []byte
	pids     func() []int
	mu       sync.Mutex
	seq      int
	got      []*leaseArrival
	holdMail string
	held     chan *leaseArrival
	release  chan struct{}
	srvPort  int
}

func (h *leaseHooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	email, _ := e.Data["email"].(string)
	a := &leaseArrival{ID: id, Type: e.Type, Invitation: inv, Email: email, Replica: -1, At: time.Now()}
	if v, ok := r.Context().Value(senderKey{}).(int); ok {
		a.Replica = v
	}
	if a.Replica < 0 {
		a.Replica = h.sender(r.RemoteAddr)
	}
	h.mu.Lock()
	h.seq++
	a.Seq = h.seq
	hold := h.holdMail != "" && email == h.holdMail && h.held != nil
	if hold {
		a.Held = true
		h.holdMail = ""
	}
	h.got = append(h.got, a)
	h.mu.Unlock()
	if hold {
		h.held <- a
		select {
		case <-r.Context().Done():
		case <-h.release:
		}
		http.Error(w, "held", http.StatusServiceUnavailable)
		return
	}
	h.mu.Lock()
	h.seq++
	a.AckSeq = h.seq
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// senderKey holds, in a connection's context, the replica that opened it:
// looked up as it is accepted, while its sender is surely alive.
type senderKey struct{}

func (h *leaseHooks) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, senderKey{}, h.sender(c.RemoteAddr().String()))
}

func (h *leaseHooks) snapshot() []leaseArrival {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]leaseArrival, len(h.got))
	for i, a := range h.got {
		out[i] = *a
	}
	return out
}

// sender finds which replica process holds the client end of a connection
// to the receiver: the socket's inode in /proc/net/tcp, then the process
// whose file descriptors include it (Linux only; -1 when not found).
func (h *leaseHooks) sender(remote string) int {
	_, p, err := net.SplitHostPort(remote)
	if err != nil {
		return -1
	}
	port, _ := strconv.Atoi(p)
	inode := ""
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			if hexPort(fs[1]) == port && hexPort(fs[2]) == h.srvPort {
				inode = fs[9]
			}
		}
	}
	if inode == "" {
		return -1
	}
	h.mu.Lock()
	pids := h.pids
	h.mu.Unlock()
	if pids == nil {
		return -1
	}
	target := "socket:[" + inode + "]"
	for i, pid := range pids() {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == target {
				return i
			}
		}
	}
	return -1
}

func hexPort(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(p, 16, 32)
	if err != nil {
		return -1
	}
	return int(n)
}

// TestLeaseReplicas: three usher processes on one Redis, one webhook
// endpoint, one SMTP server. A backlog of invitations (half mailed, some
// revoked) is delivered by all three; then the receiver holds the first
// webhook of one more invitation, the replica sending it is SIGKILLed, the
// invitation is revoked through another, and:
//
//   - another replica delivers the held webhook (same webhook-id) once the
//     lease lapses, then the revocation: each invitation's webhooks arrive
//     in order, the next only once the one before was answered;
//   - every other webhook-id is answered once (a second time only when the
//     killed replica sent it and died before it could note it);
//   - every mailed invitation's link is mailed once (twice only when the
//     killed replica may have sent it; at most once when it was revoked,
//     which the held one is as its mail job may still be leased by the
//     killed replica), nothing for an unmailed one; the held invitation's
//     mail ends sent or failed (not queued): its job was taken over.
//
// The Auth0 mirror's jobs are not part of it: they need an Auth0 upstream
// and sign-ins, beyond this rig (they lease as the mail jobs do).
func TestLeaseReplicas(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("needs Linux /proc to tell which replica sends a webhook")
	}
	started := time.Now()
	redisAddr := testkit.StartRedis(t)
	sink := startMailSink(t)
	hooks := &leaseHooks{key: []byte("lease-tests-webhook-key-0123456!"), release: make(chan struct{})}
	srv := httptest.NewUnstartedServer(hooks)
	srv.Config.ConnContext = hooks.connContext
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hooks.release) }) // before srv.Close (cleanups run last first)
	hooks.srvPort = srv.Listener.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	certFile := filepath.Join(dir, "receiver.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	const replicas = 3
	issuer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // shared: tokens of one replica are good at all
	bases := make([]string, replicas)
	procs := make([]*usherProc, replicas)
	mailHost, mailPort, _ := strings.Cut(sink.addr, ":")
	secret := base64.StdEncoding.EncodeToString([]byte("lease-tests-share-this-session!!"))
	for i := range replicas {
		port := freePort(t)
		bases[i] = fmt.Sprintf("http://127.0.0.1:%d", port)
		cfg := fmt.Sprintf(`issuer: %s/
listen: 127.0.0.1:%d
metrics: {listen: "127.0.0.1:0"}
rate_limits: {invite_per_minute: 100000, api_per_minute: 100000, authorize_per_minute: 1000, failed_redemptions_per_hour: 1000}
log: {level: warn, format: json}
store: {driver: redis, redis: {url: "redis://%s/0"}}
sessions: {secret: "%s"}
upstream: {issuer: "http://127.0.0.1:9/", client_id: usher, client_secret: lease-upstream-secret}
clients:
  - {id: %s, type: confidential, secret: "%s", grant_types: [client_credentials], scopes: [invitations:write, invitations:read]}
mail: {from: "usher <no-reply@example.com>", smtp: {host: "%s", port: %s, tls: none}}
webhooks:
  - {id: crm, url: "%s/hook", secrets: ["whsec_%s"]}
`, issuer, port, redisAddr, secret, crashClientID, crashClientSecret, mailHost, mailPort, srv.URL,
			base64.StdEncoding.EncodeToString(hooks.key))
		path := filepath.Join(dir, fmt.Sprintf("usher-%d.yaml", i))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(exe)
		name := fmt.Sprintf("replica %d", i)
		p := &usherProc{cmd: cmd, out: &procLog{w: newTestWriter(t), name: name}, done: make(chan struct{})}
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile, usherChildEnv+"=lease", "USHER_CONFIG="+path)
		cmd.Stdout, cmd.Stderr = p.out, p.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { cmd.Wait(); close(p.done) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-p.done
			}
			if s := p.out.String(); strings.Contains(s, "WARNING: DATA RACE") || strings.Contains(s, "panic:") {
				t.Errorf("%s reported a data race or a panic (its output is in the log)", name)
			}
		})
		procs[i] = p
	}
	hooks.mu.Lock()
	hooks.pids = func() []int {
		out := make([]int, replicas)
		for i, p := range procs {
			out[i] = p.cmd.Process.Pid
		}
		return out
	}
	hooks.mu.Unlock()
	for i, b := range bases {
		if !testkit.Within(30*time.Second, func() bool {
			resp, err := http.Get(b + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == http.StatusOK
		}) {
			t.Fatalf("replica %d never became ready", i)
		}
	}
	t.Logf("3 replicas ready after %s", time.Since(started).Round(time.Millisecond))
	token := clientToken(t, &app.Dev{IssuerURL: bases[0] + "/"}, crashClientID, crashClientSecret, "invitations:write invitations:read")
	client := &http.Client{Timeout: 10 * time.Second}

	type inv struct {
		ID, Email       string
		Mailed, Revoked bool
	}
	var (
		invMu sync.Mutex
		invs  []*inv
	)
	create := func(replica int, email string, mailed bool) *inv {
		t.Helper()
		status, out, err := callJSON(client, http.MethodPost, bases[replica]+"/api/invitations", token,
			map[string]any{"email": email, "roles": []string{"lease"}, "send_email": mailed})
		if err != nil || status/100 != 2 {
			t.Fatalf("create %s on replica %d: %d %v %v", email, replica, status, out, err)
		}
		id, _ := out["id"].(string)
		if id == "" {
			t.Fatalf("create %s: no id in %v", email, out)
		}
		v := &inv{ID: id, Email: email, Mailed: mailed}
		invMu.Lock()
		invs = append(invs, v)
		invMu.Unlock()
		return v
	}
	revoke := func(replica int, v *inv) {
		t.Helper()
		status, out, err := callJSON(client, http.MethodDelete, bases[replica]+"/api/invitations/"+v.ID, token, nil)
		if err != nil || status/100 != 2 {
			t.Fatalf("revoke %s on replica %d: %d %v %v", v.ID, replica, status, out, err)
		}
		invMu.Lock()
		v.Revoked = true
		invMu.Unlock()
	}

	// The backlog, through all three replicas at once.
	const backlog = 30
	var wg sync.WaitGroup
	for w := range replicas {
		wg.Go(func() {
			for k := w; k < backlog; k += replicas {
				mailed := k%2 == 0
				v := create(k%replicas, fmt.Sprintf("lease-%02d@example.com", k), mailed)
				if !mailed && k%3 == 1 {
					revoke((k+1)%replicas, v)
				}
			}
		})
	}
	wg.Wait()

	// The held invitation: its invitation.created is held by the receiver
	// until its sender is killed.
	heldCh := make(chan *leaseArrival, 1)
	hooks.mu.Lock()
	hooks.holdMail, hooks.held = "lease-held@example.com", heldCh
	hooks.mu.Unlock()
	held := create(0, "lease-held@example.com", true)
	var first *leaseArrival
	select {
	case first = <-heldCh:
	case <-time.After(15 * time.Second):
		t.Fatal("the held invitation's webhook never arrived")
	}
	victim := first.Replica
	if victim < 0 {
		t.Fatal("could not tell which replica sends the held webhook")
	}
	if err := procs[victim].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	<-procs[victim].done
	t.Logf("held %s (webhook-id %s) sent by replica %d: SIGKILLed", held.ID, first.ID, victim)
	live := []int{}
	for i := range replicas {
		if i != victim {
			live = append(live, i)
		}
	}
	revoke(live[0], held)
	for k := range 6 {
		create(live[k%2], fmt.Sprintf("lease-after-%d@example.com", k), k%2 == 0)
	}

	// Wait for every expected webhook to be answered and every mail to come.
	type key struct{ inv, typ string }
	expected := map[key]bool{}
	mailedTo := map[string]bool{} // mailed, and so may get one mail
	mustMail := map[string]bool{} // mailed and not revoked: gets one (a revocation may come first)
	for _, v := range invs {
		expected[key{v.ID, "invitation.created"}] = true
		if v.Revoked {
			expected[key{v.ID, "invitation.revoked"}] = true
		}
		if v.Mailed {
			mailedTo[v.Email] = true
			mustMail[v.Email] = !v.Revoked
		}
	}
	var handOver time.Duration
	var heldMail string
	done := testkit.Within(40*time.Second-time.Since(started), func() bool {
		acked := map[key]bool{}
		for _, a := range hooks.snapshot() {
			if a.AckSeq > 0 {
				acked[key{a.Invitation, a.Type}] = true
				if a.ID == first.ID && handOver == 0 {
					handOver = a.At.Sub(killedAt)
				}
			}
		}
		for k := range expected {
			if !acked[k] {
				return false
			}
		}
		got := map[string]bool{}
		for _, m := range sink.snapshot() {
			got[m.To] = true
		}
		for to, must := range mustMail {
			if must && !got[to] {
				return false
			}
		}
		// The held invitation's mail job, queued as its sender was killed:
		// taken over and sent, or dropped as the invitation was revoked.
		_, out, err := callJSON(client, http.MethodGet, bases[live[0]]+"/api/invitations/"+held.ID, token, nil)
		heldMail, _ = out["email_status"].(string)
		return err == nil && heldMail != "" && heldMail != "queued"
	})
	if !done {
		got := map[string]bool{}
		for _, m := range sink.snapshot() {
			got[m.To] = true
		}
		for _, v := range invs {
			if mustMail[v.Email] && !got[v.Email] {
				_, out, err := callJSON(client, http.MethodGet, bases[live[0]]+"/api/invitations/"+v.ID, token, nil)
				t.Logf("no mail to %s: %v %v", v.Email, out, err)
			}
		}
		t.Fatalf("not everything delivered within the bound: %d arrivals, %d mails", len(hooks.snapshot()), len(sink.snapshot()))
	}
	time.Sleep(testLease + time.Second) // anything delivered twice arrives by now
	arrivals := hooks.snapshot()
	mails := sink.snapshot()

	// Webhooks: once per webhook-id, in order per invitation.
	byID := map[string][]leaseArrival{}
	byInv := map[string][]leaseArrival{}
	for _, a := range arrivals {
		byID[a.ID] = append(byID[a.ID], a)
		byInv[a.Invitation] = append(byInv[a.Invitation], a)
		if !expected[key{a.Invitation, a.Type}] {
			t.Errorf("unexpected webhook %s %s for %s", a.ID, a.Type, a.Invitation)
		}
	}
	redelivered, victimDup := 0, 0
	for id, as := range byID {
		if len(as) == 1 {
			continue
		}
		redelivered++
		switch {
		case id == first.ID:
			if len(as) != 2 || !as[0].Held || as[1].AckSeq == 0 || as[1].Replica == victim {
				t.Errorf("held webhook %s: arrivals %+v, want the held one then one answered from a live replica", id, as)
			}
		case len(as) == 2 && as[0].Replica == victim && as[1].Replica != victim:
			victimDup++ // sent by the killed replica, which died before noting it
		default:
			t.Errorf("webhook-id %s arrived %d times: %+v", id, len(as), as)
		}
	}
	for id, as := range byInv {
		// The webhook-ids in order of first arrival, and each one's first
		// answer: the next may only start after that.
		var order []string
		firstSeq, ackSeq := map[string]int{}, map[string]int{}
		typeOf := map[string]string{}
		for _, a := range as {
			if _, seen := firstSeq[a.ID]; !seen {
				firstSeq[a.ID] = a.Seq
				order = append(order, a.ID)
				typeOf[a.ID] = a.Type
			}
			if a.AckSeq > 0 && ackSeq[a.ID] == 0 {
				ackSeq[a.ID] = a.AckSeq
			}
		}
		if typeOf[order[0]] != "invitation.created" || (len(order) > 1 && typeOf[order[1]] != "invitation.revoked") || len(order) > 2 {
			t.Errorf("invitation %s: webhooks in order %v", id, as)
		}
		for i := 1; i < len(order); i++ {
			if firstSeq[order[i]] < ackSeq[order[i-1]] {
				t.Errorf("invitation %s: %s sent before %s was answered", id, typeOf[order[i]], typeOf[order[i-1]])
			}
		}
	}
	revokedHeld := byInv[held.ID]
	if len(revokedHeld) != 3 {
		t.Errorf("held invitation: %d arrivals, want held created, created again, revoked: %+v", len(revokedHeld), revokedHeld)
	}

	// Mail: one per link; a second only for a link the killed replica may
	// have sent (it was alive while the backlog was mailed).
	perTo := map[string]int{}
	for _, m := range mails {
		perTo[m.To]++
		if !mailedTo[m.To] {
			t.Errorf("mail to %s, whose invitation is not mailed", m.To)
		}
	}
	mailDup := 0
	for to, n := range perTo {
		if n > 1 {
			mailDup += n - 1
			t.Logf("%s mailed %d times", to, n)
			if n > 2 {
				t.Errorf("%s mailed %d times", to, n)
			}
		}
	}
	t.Logf("the held invitation's mail: %s (mailed %d times)", heldMail, perTo[held.Email])
	if mailDup > 0 {
		t.Logf("%d mail(s) sent twice: the killed replica's in-flight sends", mailDup)
	}
	perReplica := make([]int, replicas)
	unknown := 0
	for _, a := range arrivals {
		if a.Replica >= 0 {
			perReplica[a.Replica]++
		} else {
			unknown++
		}
	}
	t.Logf("lease %s: hand-over %s after the kill; %d webhook arrivals for %d webhook-ids (%d redelivered: the held one, %d the killed replica's), by replica %v (%d unknown); %d mails to %d mailed invitations (%d duplicates); total %s",
		testLease, handOver.Round(time.Millisecond), len(arrivals), len(byID), redelivered, victimDup, perReplica, unknown,
		len(mails), len(mailedTo), mailDup, time.Since(started).Round(time.Millisecond))
	if handOver > testLease+3*time.Second {
		t.Errorf("hand-over took %s, lease %s", handOver, testLease)
	}
}
