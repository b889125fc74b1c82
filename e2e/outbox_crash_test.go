package e2e

import (
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"
)

// The outbox's rule, under a crash: no state change exists without its
// events and no event without its state change. usher (the real binary,
// `usher serve`) takes a concurrent load of invitation creates (mailed and
// not), resends and revokes through the admin API and is SIGKILLed with
// requests in flight: once after crashLoadAcks acknowledged requests, and
// again, restarted, while it delivers the backlog the first one left. It is
// restarted once more on the same store and left to drain (see
// usherChildEnv=outbox); then, over everything the store holds (the admin API's
// invitations and audit log), every webhook the receiver got and every mail
// the SMTP server got:
//
//   - every request acknowledged (2xx) before a kill is in the store; a
//     request left without an answer may or may not have landed, nothing else;
//   - every invitation has exactly one invitation.created audit record and
//     webhook (distinct webhook-ids; a redelivery of one is allowed), a revoked
//     one its invitation.revoked record and webhook, every resend its
//     invitation.resent record, and nothing more;
//   - every audit record and webhook names an invitation that exists, in the
//     state it says; the webhook delivery log has nothing left pending;
//   - a mailed invitation's link is mailed once per token (twice only by two
//     processes: one that sent it and was killed before it could note it,
//     then a later one; SMTP has no idempotency), the current token's mail is
//     sent, and nothing is mailed for an invitation that is not mailed or
//     does not exist.
func TestOutboxCrashBolt(t *testing.T) {
	t.Parallel()
	runOutboxCrash(t, fmt.Sprintf("{driver: bolt, path: %q}", filepath.Join(t.TempDir(), "usher.db")))
}

func TestOutboxCrashRedis(t *testing.T) {
	t.Parallel()
	runOutboxCrash(t, fmt.Sprintf(`{driver: redis, redis: {url: "redis://%s/0"}}`, testkit.StartRedis(t)))
}

// On a Redis Cluster the invitation's record and the outbox index
// ({outbox} hash tag) live in different slots: no multi-key step joins them.
func TestOutboxCrashRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := startRedisCluster(t)
	runOutboxCrash(t, fmt.Sprintf(`{driver: redis, redis: {addrs: ["%s"]}}`, strings.Join(addrs, `", "`)))
}

const (
	crashWorkers   = 8
	crashLoadAcks  = 80 // acknowledged requests before the first kill
	crashBusyHooks = 20 // webhooks the second run delivers before it is killed (unless it took crashLoadAcks/2 requests)
)

func runOutboxCrash(t *testing.T, storeYAML string) {
	began := time.Now()
	rig := newCrashRig(t, storeYAML)
	var (
		invs   []*tracked
		epochs []int // index in the mailbox where each process's mail starts
		hookAt []int
		stats  []loadStats
	)
	// Two runs of the real binary, each SIGKILLed under load. The first one
	// dies under the full load; the second, under a lighter one, once it is
	// busy delivering the first one's backlog (webhooks arrive).
	runs := []struct {
		workers  int
		killWhen func(acks int64) bool
	}{
		{crashWorkers, func(acks int64) bool { return acks >= crashLoadAcks }},
		{3, func(acks int64) bool {
			return acks >= crashLoadAcks/2 || acks >= crashLoadAcks/4 && len(rig.hooks.snapshot()) >= hookAt[1]+crashBusyHooks
		}},
	}
	for phase, run := range runs {
		epochs, hookAt = append(epochs, len(rig.mail.snapshot())), append(hookAt, len(rig.hooks.snapshot()))
		p := rig.startUsher()
		more, st := driveLoad(t, phase+1, rig.base, rig.token(), run.workers, invs, run.killWhen, func() {
			p.cmd.Process.Kill() // SIGKILL, from the worker that saw the last acknowledgement
		})
		<-p.done
		invs, stats = append(invs, more...), append(stats, st)
		// Whatever the killed usher had sent is in once its SMTP sessions are closed.
		testkit.Eventually(t, "the killed usher's SMTP sessions to close", func() bool { return rig.mail.open.Load() == 0 })
	}

	epochs, hookAt = append(epochs, len(rig.mail.snapshot())), append(hookAt, len(rig.hooks.snapshot()))
	restarted := time.Now()
	rig.restart()
	api := rig.token()
	d := rig.dev()
	var atStart, drained outboxState
	lastProbe, probeErr, done := time.Time{}, error(nil), false
	defer func() {
		if !done {
			t.Logf("not drained: %+v (probe error %v)", drained, probeErr)
		}
	}()
	// Wait while the drain makes progress: each wait fails after 20 s
	// without one (the events left, then the mail jobs and webhook lanes,
	// go down), so a slow machine is not a failure and a stuck event is.
	best := [2]int{math.MaxInt, math.MaxInt}
	for !done {
		testkit.Eventually(t, fmt.Sprintf("the outbox, the mail queue and the webhook lanes to drain (left: %v)", best), func() bool {
			if time.Since(lastProbe) < 50*time.Millisecond {
				return false
			}
			lastProbe = time.Now()
			s, n, err := rig.readProbe()
			if probeErr = err; err != nil {
				return false
			}
			atStart, drained = s, n
			left := [2]int{n.events(), n.MailJobs + n.WebhookLanes}
			if left == [2]int{} {
				done = true
				return true
			}
			if left[0] < best[0] || left[0] == best[0] && left[1] < best[1] {
				best = left
				return true
			}
			return false
		})
	}
	drainTook := time.Since(restarted)

	// No event is left to hand over and no webhook lane is queued: a
	// delivery the log still calls pending will never be made.
	log := apiCall(t, d, http.MethodGet, "/api/webhooks/crm/deliveries?limit=1000", api, nil)
	deliveries, _ := log.body["deliveries"].([]any)
	for _, x := range deliveries {
		if dl := x.(map[string]any); dl["status"] != "delivered" {
			t.Errorf("webhook delivery %v (%v) is %v, with nothing left queued to deliver it: %v", dl["id"], dl["event_type"], dl["status"], clipText(fmt.Sprint(dl["payload"])))
		}
	}
	stored := listAll(t, d, "/api/invitations", api, "invitations")
	audit := listAll(t, d, "/api/audit", api, "records")
	hooks := rig.hooks.snapshot()
	mails := rig.mail.snapshot()
	c := crashCheck{t: t, tracked: invs, epochs: epochs}
	c.run(stored, audit, hooks, mails)

	for i, st := range stats {
		t.Logf("run %d: %d workers, killed after %s and %d acknowledgements with %d requests in flight; attempts %v, acknowledged %v, left without an answer %v; it delivered %d webhooks and %d mails",
			i+1, st.workers, st.killedAfter.Round(time.Millisecond), st.ackedBeforeKill, st.inFlightAtKill, st.attempts, st.acked, st.doubt,
			hookAt[i+1]-hookAt[i], epochs[i+1]-epochs[i])
	}
	t.Logf("of the requests left without an answer, landed: %d creates, %d resends, %d revokes",
		c.landed["create"], c.landed["resend"], c.landed["revoke"])
	t.Logf("store at the last restart: %d invitations, %d holding %d undelivered events %v, %d mail jobs, %d webhook lanes",
		atStart.Invitations, atStart.WithEvents, atStart.events(), atStart.Events, atStart.MailJobs, atStart.WebhookLanes)
	last := hookAt[len(hookAt)-1]
	t.Logf("after the last restart: drained in %s: %d webhook deliveries (%d webhook-ids not seen before), %d mails; mails sent again after a kill: %d",
		drainTook.Round(time.Millisecond), len(hooks)-last, newIDsAfter(hooks, last), len(mails)-epochs[len(epochs)-1], c.mailResent)
	t.Logf("totals: %d invitations (%d revoked, %d mailed), %d audit records, %d distinct webhooks in %d deliveries, %d mails; %s",
		len(stored), c.revoked, c.mailed, len(audit), c.distinctHooks, len(hooks), len(mails), time.Since(began).Round(time.Millisecond))
}

// newIDsAfter counts the webhook-ids first delivered at or after index at.
func newIDsAfter(hooks []hookDelivery, at int) int {
	before := map[string]bool{}
	for _, h := range hooks[:at] {
		before[h.ID] = true
	}
	n := map[string]bool{}
	for _, h := range hooks[at:] {
		if !before[h.ID] {
			n[h.ID] = true
		}
	}
	return len(n)
}

// crashCheck holds the invariants' bookkeeping.
type crashCheck struct {
	t       *testing.T
	tracked []*tracked
	epochs  []int // index in the mailbox where each usher process's mail starts

	landed          map[string]int
	revoked, mailed int
	distinctHooks   int
	mailResent      int
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func (c *crashCheck) run(stored, audit []map[string]any, hooks []hookDelivery, mails []receivedMail) {
	t := c.t
	c.landed = map[string]int{}
	byEmail := map[string]*tracked{}
	for _, tr := range c.tracked {
		byEmail[tr.Email] = tr
	}
	byID := map[string]map[string]any{}
	resent := map[string]int{} // resent timeline events per invitation
	mailed := map[string]int{} // mailed timeline events (a send the mailer noted) per invitation
	for _, inv := range stored {
		id, email, status := str(inv, "id"), str(inv, "email"), str(inv, "status")
		if byID[id] != nil {
			t.Errorf("invitation %s listed twice", id)
		}
		byID[id] = inv
		tr := byEmail[email]
		if tr == nil {
			t.Errorf("invitation %s (%s): no request created it", id, email)
			continue
		}
		switch {
		case tr.CreateAck && tr.ID != id:
			t.Errorf("%s: stored as %s, acknowledged as %s", email, id, tr.ID)
		case !tr.CreateAck && !tr.CreateDoubt:
			t.Errorf("%s: stored, yet its create was refused", email)
		case !tr.CreateAck:
			c.landed["create"]++
			tr.ID = id
		}
		for _, e := range inv["events"].([]any) {
			switch str(e.(map[string]any), "type") {
			case "resent":
				resent[id]++
			case "mailed":
				mailed[id]++
			}
		}
		r := resent[id]
		if r < tr.ResendAcks || r > tr.ResendAcks+tr.ResendDoubt {
			t.Errorf("%s: %d resends stored; %d acknowledged, %d without an answer", id, r, tr.ResendAcks, tr.ResendDoubt)
		}
		c.landed["resend"] += r - tr.ResendAcks
		switch {
		case status == "revoked":
			c.revoked++
			if !tr.RevokeAck && !tr.RevokeDoubt {
				t.Errorf("%s: revoked, yet nobody revoked it", id)
			}
			if !tr.RevokeAck {
				c.landed["revoke"]++
			}
		case status != "pending":
			t.Errorf("%s: status %s", id, status)
		case tr.RevokeAck:
			t.Errorf("%s: revocation acknowledged, yet it is %s", id, status)
		}
		es := str(inv, "email_status")
		switch {
		case tr.SendEmail:
			c.mailed++
			if status == "pending" && es != "sent" || status == "revoked" && es != "sent" && es != "failed" {
				t.Errorf("%s (mailed, %s): email_status %q %s", id, status, es, str(inv, "email_error"))
			}
		case es != "not_requested":
			t.Errorf("%s (not mailed): email_status %q", id, es)
		}
	}
	for _, tr := range c.tracked {
		if tr.CreateAck && byID[tr.ID] == nil {
			t.Errorf("invitation %s (%s): created (2xx), and gone", tr.ID, tr.Email)
		}
	}

	// The audit log: one record per event, for invitations that exist, in
	// the state the record says.
	type key struct{ id, action string }
	records := map[key]int{}
	seen := map[string]bool{}
	for _, rec := range audit {
		action, target, actor := str(rec, "action"), str(rec, "target"), str(rec, "actor")
		if seen[str(rec, "id")] {
			t.Errorf("audit record %s listed twice", str(rec, "id"))
		}
		seen[str(rec, "id")] = true
		inv := byID[target]
		if inv == nil {
			t.Errorf("audit %s of %s: no such invitation", action, target)
			continue
		}
		records[key{target, action}]++
		if actor != "client:"+crashClientID {
			t.Errorf("audit %s of %s: actor %q", action, target, actor)
		}
		detail, _ := rec["detail"].(map[string]any)
		switch action {
		case "invitation.created":
			if len(detail) != 2 || str(detail, "email") != str(inv, "email") || str(detail, "roles") != "crash" {
				t.Errorf("audit created of %s: detail %v", target, detail)
			}
		case "invitation.revoked":
			if str(inv, "status") != "revoked" {
				t.Errorf("audit revoked of %s, which is %s", target, str(inv, "status"))
			}
		case "invitation.resent":
		default:
			t.Errorf("audit %s of %s: no such action in this load", action, target)
		}
	}

	// Webhooks: distinct webhook-ids per event; redeliveries of one id are fine.
	hookIDs := map[key]map[string]int{}
	for _, h := range hooks {
		inv := byID[h.Invitation]
		if inv == nil {
			t.Errorf("webhook %s %s of %q: no such invitation", h.ID, h.Type, h.Invitation)
			continue
		}
		if str(h.Data, "email") != str(inv, "email") {
			t.Errorf("webhook %s of %s: email %v, invitation has %s", h.Type, h.Invitation, h.Data["email"], str(inv, "email"))
		}
		switch h.Type {
		case "invitation.created":
		case "invitation.revoked":
			if str(inv, "status") != "revoked" {
				t.Errorf("webhook revoked of %s, which is %s", h.Invitation, str(inv, "status"))
			}
		default:
			t.Errorf("webhook %s of %s: no such event in this load", h.Type, h.Invitation)
		}
		k := key{h.Invitation, h.Type}
		if hookIDs[k] == nil {
			hookIDs[k] = map[string]int{}
		}
		hookIDs[k][h.ID]++
	}
	for id, inv := range byID {
		wantRevoked := 0
		if str(inv, "status") == "revoked" {
			wantRevoked = 1
		}
		for _, w := range []struct {
			action string
			want   int
		}{{"invitation.created", 1}, {"invitation.revoked", wantRevoked}, {"invitation.resent", resent[id]}} {
			if n := records[key{id, w.action}]; n != w.want {
				t.Errorf("%s (%s): %d %s audit records, want %d", id, str(inv, "status"), n, w.action, w.want)
			}
			if w.action == "invitation.resent" {
				continue // resends have no webhook
			}
			if n := len(hookIDs[key{id, w.action}]); n != w.want {
				t.Errorf("%s (%s): %d distinct %s webhooks %v, want %d", id, str(inv, "status"), n, w.action, hookIDs[key{id, w.action}], w.want)
			}
		}
	}
	for _, ids := range hookIDs {
		c.distinctHooks += len(ids)
	}

	// Mail: once per token (a second copy only from another process: one
	// that sent it and was killed before it could note it), the current
	// token's sent.
	epochOf := func(i int) int {
		e := 0
		for e+1 < len(c.epochs) && i >= c.epochs[e+1] {
			e++
		}
		return e
	}
	byAddr := map[string]map[string][]int{} // address → link → epoch of each copy
	for i, m := range mails {
		addr := strings.ToLower(strings.Trim(m.To, "<>"))
		link := inviteLinkRE.FindString(m.Text)
		if byAddr[addr] == nil {
			byAddr[addr] = map[string][]int{}
		}
		byAddr[addr][link] = append(byAddr[addr][link], epochOf(i))
	}
	for addr, links := range byAddr {
		tr := byEmail[addr]
		if tr == nil || !tr.SendEmail || byID[tr.ID] == nil {
			t.Errorf("mail to %s: no mailed invitation has that address", addr)
			continue
		}
		inv := byID[tr.ID]
		var unknown []string
		for link, copies := range links {
			if link == "" {
				t.Errorf("mail to %s without an invitation link", addr)
				continue
			}
			for i := 1; i < len(copies); i++ {
				if copies[i] == copies[i-1] {
					t.Errorf("%s: the mail with link %s went out twice from one usher process (copies in runs %v)", tr.ID, link, copies)
				}
			}
			c.mailResent += len(copies) - 1
			if !slices.Contains(tr.Links, link) {
				unknown = append(unknown, link)
			}
		}
		// A send the mailer noted is not made again: the noted sends are at
		// most the links mailed (the mail of a replaced link is not noted).
		if mailed[tr.ID] > len(links) {
			t.Errorf("%s: %d sends noted for %d links mailed (%v)", tr.ID, mailed[tr.ID], len(links), mapKeys(links))
		}
		// The current token: the last acknowledged one, unless a request
		// without an answer landed and minted another, which nobody saw.
		minted := !tr.CreateAck || resent[tr.ID] > tr.ResendAcks
		switch {
		case len(unknown) > 1 || len(unknown) == 1 && !minted:
			t.Errorf("%s: mails with links nobody was given: %v", tr.ID, unknown)
		case str(inv, "status") == "pending" && !minted && links[tr.Links[len(tr.Links)-1]] == nil:
			t.Errorf("%s: the current link was never mailed (mailed: %v)", tr.ID, mapKeys(links))
		case str(inv, "status") == "pending" && minted && len(unknown) != 1:
			t.Errorf("%s: a token was minted unseen, and its mail never went out (mailed: %v)", tr.ID, mapKeys(links))
		}
	}
	for id, inv := range byID {
		if tr := byEmail[str(inv, "email")]; tr != nil && tr.SendEmail && str(inv, "status") == "pending" && byAddr[str(inv, "email")] == nil {
			t.Errorf("%s: mailed and pending, and no mail reached %s", id, str(inv, "email"))
		}
	}
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
