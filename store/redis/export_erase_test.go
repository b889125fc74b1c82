package redis

// EnsureUserHash is the SHA of the script that creates or refreshes a
// user hash during a sign-in, for tests that step in before it runs.
func EnsureUserHash() string { return ensureUser.Hash() }
