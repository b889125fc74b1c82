package redis_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// countingHook counts the redirects and retryable replies the cluster
// client meets (it sees each attempt of a command, ASK and TRYAGAIN
// included, since the cluster client runs every attempt on a node client).
type countingHook struct {
	ask, moved, tryagain, other atomic.Int64
	mu                          sync.Mutex
	others                      map[string]int
}

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.count(c.Err())
		}
		return err
	}
}

func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.count(err)
		return err
	}
}

func (h *countingHook) count(err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		return
	}
	switch s := err.Error(); {
	case strings.HasPrefix(s, "ASK "):
		h.ask.Add(1)
	case strings.HasPrefix(s, "MOVED "):
		h.moved.Add(1)
	case strings.HasPrefix(s, "TRYAGAIN"):
		h.tryagain.Add(1)
	case strings.HasPrefix(s, "NOSCRIPT"), strings.HasPrefix(s, "ERR unknown subcommand"):
		// a script not cached on a node yet; CLIENT SETINFO and
		// maint_notifications, which go-redis tries on every new connection
	default:
		h.other.Add(1)
		h.mu.Lock()
		if h.others == nil {
			h.others = map[string]int{}
		}
		h.others[s[:min(len(s), 60)]]++
		h.mu.Unlock()
	}
}

// TestRedemptionsDuringReshard moves the hash slots holding invitations (and
// the grants of the users redeeming them) from one master to another —
// CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE key by key, SETSLOT NODE —
// while concurrent redeemers race for every invitation. Each script still
// runs on one slot (the cluster client follows ASK to the importing node),
// and every invitation is redeemed exactly once: one winner, the others
// refused with ErrInvitationRedeemed, the winner's grant holding the role
// and the invitation once, no other grant holding it, one redeemed event.
func TestRedemptionsDuringReshard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not on PATH (needed to create the cluster)")
	}
	// Cluster mode came with 3.0, MIGRATE … KEYS with 3.0.6.
	if out, err := exec.Command("redis-server", "--version").Output(); err != nil || !atLeast(string(out), 3, 0, 6) {
		t.Skipf("redis-server lacks cluster support or MIGRATE KEYS: %q %v", strings.TrimSpace(string(out)), err)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	addrs := startCluster(t)

	const (
		nInv      = 300 // invitations
		nUsers    = 50  // the redeemers' pool
		racers    = 3   // redeemers per invitation, each another user
		redeemers = 24  // concurrent goroutines
	)

	// One plain client per node, by node ID, for the CLUSTER commands.
	nodes := map[string]*redis.Client{}
	addrOf := map[string]string{}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
		must(t, "cluster myid", err)
		nodes[id], addrOf[id] = c, a
	}
	owner := func(slot int64) string {
		t.Helper()
		ss, err := nodes[anyKey(nodes)].ClusterSlots(ctx).Result()
		must(t, "cluster slots", err)
		for _, s := range ss {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				return s.Nodes[0].ID
			}
		}
		t.Fatalf("nobody owns slot %d", slot)
		return ""
	}

	hook := &countingHook{}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	cc.OnNewNode(func(c *redis.Client) { c.AddHook(hook) })
	prefix := uniquePrefix()
	st := redisstore.New(cc, redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = st.Close() })
	svc := grants.NewService(grants.ServiceOptions{Store: st})

	noMail := false
	type invitation struct {
		id, hash, role string
		slot           int64
	}
	invs := make([]invitation, nInv)
	for i := range invs {
		role := fmt.Sprintf("role-%d", i)
		inv, token, _, err := svc.Create(ctx, grants.CreateRequest{Email: fmt.Sprintf("inv%d@example.com", i),
			Roles: []string{role}, SendEmail: &noMail}, "client:test")
		must(t, "create", err)
		invs[i] = invitation{id: inv.ID, hash: grants.HashToken(token), role: role}
	}
	users := make([]string, nUsers)
	for i := range users {
		users[i] = fmt.Sprintf("usr_reshard%d", i)
	}

	// The key layout: prefix{i:<id>} (store/redis/invitations.go) and
	// prefix{g:<user>}… (users.go). The slot is the server's answer.
	admin := nodes[anyKey(nodes)]
	slotOf := func(key string) int64 {
		n, err := admin.ClusterKeySlot(ctx, key).Result()
		must(t, "cluster keyslot", err)
		return n
	}
	for i := range invs {
		invs[i].slot = slotOf(prefix + "{i:" + invs[i].id + "}")
	}
	if n, err := cc.Exists(ctx, prefix+"{i:"+invs[0].id+"}").Result(); err != nil || n != 1 {
		t.Fatalf("the invitation key layout is not prefix{i:<id>}: %v %v", n, err)
	}
	src := owner(invs[0].slot)
	var dst string
	for id := range nodes {
		if id != src {
			dst = id
			break
		}
	}
	// Every slot of src holding an invitation or a redeemer's grant moves.
	moving := map[int64]bool{}
	movedInvs := 0
	for _, inv := range invs {
		if owner(inv.slot) == src {
			moving[inv.slot] = true
			movedInvs++
		}
	}
	grantSlots, holdsGrant := 0, map[int64]bool{}
	grantSlot := make([]int64, nUsers)
	for i, u := range users {
		grantSlot[i] = slotOf(prefix + "{g:" + u + "}")
		if s := grantSlot[i]; owner(s) == src {
			holdsGrant[s] = true
		}
		if s := grantSlot[i]; owner(s) == src && !moving[s] {
			moving[s] = true
			grantSlots++
		}
	}
	slots := make([]int64, 0, len(moving))
	for s := range moving {
		slots = append(slots, s)
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i] < slots[j] })
	t.Logf("moving %d slots (%d holding %d invitations, %d more holding grants) from %s to %s",
		len(slots), len(slots)-grantSlots, movedInvs, grantSlots, addrOf[src], addrOf[dst])

	var migrated atomic.Int64
	dstHost, dstPortStr, _ := net.SplitHostPort(addrOf[dst])
	dstPort, _ := strconv.Atoi(dstPortStr)
	// migrateKeys moves every every-th key of the slot still on the
	// source, at most limit of them (0: no limit), in one MIGRATE.
	migrateKeys := func(slot int64, every, limit int) int {
		keys, err := nodes[src].ClusterGetKeysInSlot(ctx, int(slot), 1000).Result()
		if err != nil {
			t.Errorf("getkeysinslot: %v", err)
			return 0
		}
		var batch []any
		for i, k := range keys {
			if i%every == 0 && (limit == 0 || len(batch) < limit) {
				batch = append(batch, k)
			}
		}
		if len(batch) == 0 {
			return 0
		}
		args := append([]any{"MIGRATE", dstHost, dstPort, "", 0, 5000, "KEYS"}, batch...)
		if err := nodes[src].Do(ctx, args...).Err(); err != nil {
			t.Errorf("migrate: %v", err)
			return 0
		}
		migrated.Add(int64(len(batch)))
		return len(batch)
	}

	// The redemptions: every invitation raced by `racers` users.
	type task struct{ inv, user int }
	var tasks []task
	for i := range invs {
		for r := range racers {
			tasks = append(tasks, task{i, (i*7 + r*13) % nUsers})
		}
	}
	rand.Shuffle(len(tasks), func(i, j int) { tasks[i], tasks[j] = tasks[j], tasks[i] })
	// The races for an invitation in a moving slot start while that slot is
	// split between the two masters, and so do the redemptions by a user
	// whose grant is in a moving slot; the others run all along the move.
	bySlot := map[int64][]task{}
	var rest []task
	for _, tk := range tasks {
		if sl := invs[tk.inv].slot; moving[sl] {
			bySlot[sl] = append(bySlot[sl], tk)
		} else if sl := grantSlot[tk.user]; moving[sl] {
			bySlot[sl] = append(bySlot[sl], tk)
		} else {
			rest = append(rest, tk)
		}
	}
	type outcome struct {
		user   int
		err    error
		during bool
	}
	var mu sync.Mutex
	outcomes := make([][]outcome, nInv)
	var moveDone atomic.Bool
	queue := make(chan task)
	var wg sync.WaitGroup
	start := time.Now()
	for range redeemers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tk := range queue {
				during := !moveDone.Load()
				_, _, _, err := svc.Redeem(ctx, invs[tk.inv].hash, grants.Redeemer{UserID: users[tk.user],
					Identity: "test|" + users[tk.user], Connection: "test", Email: users[tk.user] + "@example.com"})
				mu.Lock()
				outcomes[tk.inv] = append(outcomes[tk.inv], outcome{tk.user, err, during})
				mu.Unlock()
			}
		}()
	}
	// The move, while they run, slot by slot as redis-cli --cluster reshard
	// does it: IMPORTING on the target, MIGRATING on the source, half the
	// slot's keys, a pause with the slot split between the two masters, the
	// rest one key per MIGRATE, then SETSLOT NODE on every master (target
	// first).
	moveErr, moved := make(chan error, 1), make(chan struct{})
	var inSplit atomic.Int64
	var moveTime time.Duration
	go func() {
		defer close(moved)
		defer moveDone.Store(true)
		for _, s := range slots {
			for _, step := range []struct {
				node string
				args []any
			}{
				{dst, []any{"CLUSTER", "SETSLOT", s, "IMPORTING", src}},
				{src, []any{"CLUSTER", "SETSLOT", s, "MIGRATING", dst}},
			} {
				if err := nodes[step.node].Do(ctx, step.args...).Err(); err != nil {
					moveErr <- fmt.Errorf("%v on %s: %w", step.args, addrOf[step.node], err)
					return
				}
			}
			migrateKeys(s, 2, 0)
			for _, tk := range bySlot[s] {
				queue <- tk
				inSplit.Add(1)
			}
			// A slot holding a grant stays split a while, as a slot holding
			// many keys would: longer than go-redis's own few retries of
			// the TRYAGAIN a grant's script meets meanwhile.
			if holdsGrant[s] {
				time.Sleep(100 * time.Millisecond)
			} else {
				time.Sleep(time.Millisecond)
			}
			for migrateKeys(s, 1, 1) > 0 {
			}
			for _, id := range append([]string{dst, src}, otherIDs(nodes, src, dst)...) {
				if err := nodes[id].Do(ctx, "CLUSTER", "SETSLOT", s, "NODE", dst).Err(); err != nil {
					moveErr <- fmt.Errorf("setslot %d node on %s: %w", s, addrOf[id], err)
					return
				}
			}
		}
		moveTime = time.Since(start)
		moveErr <- nil
	}()
	for _, tk := range rest {
		queue <- tk
		if !moveDone.Load() {
			time.Sleep(time.Millisecond)
		}
	}
	<-moved
	close(queue)
	wg.Wait()
	redeemTime := time.Since(start)
	if err := <-moveErr; err != nil {
		t.Fatal(err)
	}

	// Every invitation: one winner, the others refused as redeemed.
	won := map[int][]int{} // user → invitations won
	during, hard := 0, 0
	for i, res := range outcomes {
		winners := 0
		for _, o := range res {
			if o.during {
				during++
			}
			switch {
			case o.err == nil:
				winners++
				won[o.user] = append(won[o.user], i)
			case errors.Is(o.err, grants.ErrInvitationRedeemed):
			default:
				hard++
				t.Errorf("invitation %d (slot %d, moving %v), user %d: %v", i, invs[i].slot, moving[invs[i].slot], o.user, o.err)
			}
		}
		if winners != 1 && hard == 0 {
			t.Errorf("invitation %d: %d winners", i, winners)
		}
	}
	t.Logf("%d redemptions (%d started during the move, %d of them on an invitation or grant whose slot was split) in %v; move (%d keys) done after %v; redirects: %d ASK, %d MOVED, %d TRYAGAIN replies; %d other errors on the wire; %d hard errors",
		len(tasks), during, inSplit.Load(), redeemTime.Round(time.Millisecond), migrated.Load(), moveTime.Round(time.Millisecond),
		hook.ask.Load(), hook.moved.Load(), hook.tryagain.Load(), hook.other.Load(), hard)

	if len(hook.others) > 0 {
		t.Logf("other errors on the wire: %v", hook.others)
	}

	// The stored state agrees.
	for i, inv := range invs {
		got, err := st.GetInvitation(ctx, inv.id)
		must(t, "get invitation", err)
		var winner string
		for _, o := range outcomes[i] {
			if o.err == nil {
				winner = users[o.user]
			}
		}
		if got.Status != grants.StatusRedeemed || winner != "" && got.RedeemedBy != winner {
			t.Errorf("invitation %d: status %s, redeemed by %q, winner %q", i, got.Status, got.RedeemedBy, winner)
		}
		redeemed := 0
		for _, ev := range got.Outbox {
			if ev.Type == grants.EventInvitationRedeemed {
				redeemed++
			}
		}
		if redeemed != 1 {
			t.Errorf("invitation %d: %d %s events", i, redeemed, grants.EventInvitationRedeemed)
		}
	}
	for u, user := range users {
		g, err := st.GetGrant(ctx, user)
		if errors.Is(err, grants.ErrNotFound) {
			g, err = &grants.Grant{}, nil
		}
		must(t, "get grant", err)
		var wantRoles, wantInvs []string
		for _, i := range won[u] {
			wantRoles = append(wantRoles, invs[i].role)
			wantInvs = append(wantInvs, invs[i].id)
		}
		if !sameSet(g.Roles, wantRoles) || !sameSet(g.Invitations, wantInvs) {
			t.Errorf("grant of %s: roles %v invitations %v, want roles %v invitations %v", user, g.Roles, g.Invitations, wantRoles, wantInvs)
		}
	}

	// The keys now live on the target: it owns the slots and holds every
	// moved invitation; the source holds nothing in them.
	for _, s := range slots {
		if o := owner(s); o != dst {
			t.Errorf("slot %d is owned by %s, want %s", s, addrOf[o], addrOf[dst])
		}
		if n, err := nodes[src].ClusterCountKeysInSlot(ctx, int(s)).Result(); err != nil || n != 0 {
			t.Errorf("slot %d: %d keys left on the source (%v)", s, n, err)
		}
	}
	for _, inv := range invs {
		if !moving[inv.slot] {
			continue
		}
		if n, err := nodes[dst].Exists(ctx, prefix+"{i:"+inv.id+"}").Result(); err != nil || n != 1 {
			t.Errorf("invitation %s (slot %d) not on the target: %d %v", inv.id, inv.slot, n, err)
		}
	}
}

// sameSet reports whether a and b hold the same strings, each once.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b) && len(slices.Compact(a)) == len(b)
}

func anyKey(m map[string]*redis.Client) string {
	for k := range m {
		return k
	}
	return ""
}

func otherIDs(m map[string]*redis.Client, skip ...string) []string {
	var out []string
	for k := range m {
		if !slices.Contains(skip, k) {
			out = append(out, k)
		}
	}
	return out
}

// atLeast reports whether `redis-server --version` output ("… v=7.0.15 …")
// names version major.minor.patch or later.
func atLeast(version string, major, minor, patch int) bool {
	_, v, ok := strings.Cut(version, "v=")
	if !ok {
		return false
	}
	v, _, _ = strings.Cut(v, " ")
	var got [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		n, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		got[i] = n
	}
	return slices.Compare(got[:], []int{major, minor, patch}) >= 0
}

// While a grant's slot is MIGRATING, a script may only touch keys that
// exist on the source: one that empties a key (the redemption's pending
// entry, the last role) and touches it afterwards fails with "non local
// key" after its writes. grantApply reads them before; the merge and the
// role removal succeed, and the grants are whole once the slots have moved.
func TestGrantScriptsOnAMigratingSlot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not on PATH (needed to create the cluster)")
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err != nil || !atLeast(string(out), 3, 0, 6) {
		t.Skipf("redis-server lacks cluster support or MIGRATE KEYS: %q %v", strings.TrimSpace(string(out)), err)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrs := startCluster(t)
	nodes := map[string]*redis.Client{}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { _ = c.Close() })
		id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
		must(t, "cluster myid", err)
		nodes[id] = c
	}
	admin := nodes[anyKey(nodes)]
	ownerOf := func(slot int64) string {
		ss, err := admin.ClusterSlots(ctx).Result()
		must(t, "cluster slots", err)
		for _, s := range ss {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				return s.Nodes[0].ID
			}
		}
		t.Fatalf("nobody owns slot %d", slot)
		return ""
	}
	type move struct {
		slot     int64
		src, dst string
	}
	var moves []move
	// open starts moving key's slot to another master; no key moves yet.
	open := func(key string) {
		slot, err := admin.ClusterKeySlot(ctx, key).Result()
		must(t, "keyslot", err)
		for _, m := range moves {
			if m.slot == slot {
				return
			}
		}
		m := move{slot: slot, src: ownerOf(slot)}
		m.dst = otherIDs(nodes, m.src)[0]
		must(t, "importing", nodes[m.dst].Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", m.src).Err())
		must(t, "migrating", nodes[m.src].Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", m.dst).Err())
		moves = append(moves, m)
	}

	prefix := uniquePrefix()
	const alice, bob = "usr_migrating_a", "usr_migrating_b"
	ga, gb := prefix+"{g:"+alice+"}", prefix+"{g:"+bob+"}"
	var second *beforeCAS // opens alice's move just before her second redemption's CAS
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	cc.AddHook(redis.Hook(hookFunc(func(next redis.ProcessHook) redis.ProcessHook {
		return func(ctx context.Context, cmd redis.Cmder) error {
			if second != nil {
				return second.ProcessHook(next)(ctx, cmd)
			}
			return next(ctx, cmd)
		}
	})))
	st := redisstore.New(cc, redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = st.Close() })
	svc := grants.NewService(grants.ServiceOptions{Store: st})
	noMail := false
	invite := func(role string) (id, hash string) {
		inv, token, _, err := svc.Create(ctx, grants.CreateRequest{Email: role + "@example.com", Roles: []string{role}, SendEmail: &noMail}, "client:test")
		must(t, "create", err)
		return inv.ID, grants.HashToken(token)
	}
	a1, a1h := invite("a")
	a2, a2h := invite("b")
	b1, b1h := invite("c")
	for _, r := range []struct{ user, hash string }{{alice, a1h}, {bob, b1h}} {
		_, _, _, err := svc.Redeem(ctx, r.hash, grants.Redeemer{UserID: r.user, Email: "x@example.com"})
		must(t, "redemption", err)
	}

	// Bob: removing his only role empties the role list. A pending entry
	// keeps every key of the grant present, as a script's keys must be
	// while its slot migrates; the next GetGrant drops it.
	must(t, "pending entry", cc.HSet(ctx, gb+":p", "inv-none", "0").Err())
	open(gb)
	g, err := st.RemoveGrantRole(ctx, bob, "c", time.Now())
	must(t, "remove the last role on a migrating slot", err)
	if len(g.Roles) != 0 {
		t.Fatalf("bob's roles after removing the last: %v", g.Roles)
	}

	// Alice: her second redemption writes its pending entry on the source,
	// then the move opens; the merge clears the entry, emptying the hash.
	second = &beforeCAS{mode: "update", id: a2, fn: func() { open(ga) }}
	_, g, err = st.RedeemInvitation(ctx, a2h, grants.Redemption{UserID: alice, At: time.Now()})
	must(t, "redemption on a migrating slot", err)
	if !sameSet(g.Roles, []string{"a", "b"}) || !sameSet(g.Invitations, []string{a1, a2}) {
		t.Fatalf("alice's grant after the redemption: %+v", g)
	}
	if len(moves) != 2 {
		t.Fatalf("%d slots moving, want 2 (alice's and bob's grants share a slot?)", len(moves))
	}

	// Finish the moves: every key on the target, the grants whole.
	for _, m := range moves {
		keys, err := nodes[m.src].ClusterGetKeysInSlot(ctx, int(m.slot), 100).Result()
		must(t, "getkeysinslot", err)
		if len(keys) > 0 {
			host, port, _ := net.SplitHostPort(nodes[m.dst].Options().Addr)
			args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
			for _, k := range keys {
				args = append(args, k)
			}
			must(t, "migrate", nodes[m.src].Do(ctx, args...).Err())
		}
		for _, id := range append([]string{m.dst, m.src}, otherIDs(nodes, m.src, m.dst)...) {
			must(t, "setslot node", nodes[id].Do(ctx, "CLUSTER", "SETSLOT", m.slot, "NODE", m.dst).Err())
		}
	}
	for _, want := range []struct {
		user, key   string
		roles, invs []string
	}{{alice, ga, []string{"a", "b"}, []string{a1, a2}}, {bob, gb, nil, []string{b1}}} {
		g, err := st.GetGrant(ctx, want.user)
		must(t, "get grant", err)
		if !sameSet(g.Roles, want.roles) || !sameSet(g.Invitations, want.invs) {
			t.Errorf("grant of %s after the move: %+v", want.user, g)
		}
		dst := moves[0].dst
		if want.user == alice {
			dst = moves[1].dst
		}
		if n, err := nodes[dst].Exists(ctx, want.key, want.key+":i").Result(); err != nil || n != 2 {
			t.Errorf("the grant keys of %s on the target: %d %v", want.user, n, err)
		}
	}
}

// hookFunc is a redis.Hook with only a ProcessHook.
type hookFunc func(redis.ProcessHook) redis.ProcessHook

func (h hookFunc) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h hookFunc) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return h(next) }
func (h hookFunc) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
