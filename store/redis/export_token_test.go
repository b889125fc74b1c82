package redis

// TokenBucket is the ib: bucket of a token hash's bytes.
var TokenBucket = tokenBucket

// ShortTokenEntry is the ih: key (without the prefix) and field of a token hash.
func ShortTokenEntry(s *Store, hash string) (string, string) {
	e := s.tokenForms(hash)
	for _, f := range e {
		if f.short {
			return f.key[len(s.prefix):], f.field
		}
	}
	return "", ""
}

// SetTokenSum makes s pick ih: fields with sum: a test's collisions.
func SetTokenSum(s *Store, sum func(hash string) uint64) { s.tokenSum = sum }

// PackID and UnpackID are idpack.go's.
var PackID, UnpackID = packID, unpackID
