package redis

// TokenBucket is the ib: bucket of a token hash's bytes.
var TokenBucket = tokenBucket
